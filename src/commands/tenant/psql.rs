//! `tenantctl tenant psql <slug|id> [-- psql args]`: psql connected to the
//! tenant, with the password in its environment rather than its arguments.

use clap::Args;

use crate::commands::context::Context;
use crate::error::Outcome;

#[derive(Debug, Args)]
pub struct PsqlArgs {
    /// Tenant slug or id
    #[arg(value_name = "SLUG|ID")]
    pub tenant: String,

    /// More arguments for psql, after `--`
    #[arg(last = true, value_name = "PSQL_ARGS")]
    pub psql_args: Vec<String>,
}

pub async fn run(args: PsqlArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let tenant = ctx.tenant(&args.tenant).await?;
    let db = tenant.db_name()?;
    // The tenant's connection as libpq's own variables, password included
    // (never in the arguments, which /proc shows to every user), in place
    // of any the operator's shell has (another server's PGHOST, PGSERVICE),
    // and none of the other servers' URLs.
    let env = ctx.connector.tenant_env(tenant.server()?, db)?;
    let mut psql = std::process::Command::new("psql");
    ctx.connector.child_env().scrub(&mut psql);
    psql.envs(
        env.iter()
            .filter(|(name, _)| name.starts_with("PG"))
            .map(|(name, value)| (name, value)),
    )
    .args(&args.psql_args);
    // Become psql rather than wait for it: Ctrl-C then cancels psql's query
    // as the user expects, instead of also reaching tenantctl's handler.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let err = psql.exec();
        Err(anyhow::Error::new(err)
            .context("run psql (is the PostgreSQL client installed and on PATH?)"))
    }
    #[cfg(not(unix))]
    {
        use anyhow::Context as _;
        let status = psql
            .status()
            .context("run psql (is the PostgreSQL client installed and on PATH?)")?;
        Ok(if status.success() {
            Outcome::Success
        } else {
            Outcome::Failed
        })
    }
}
