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
    let (url, password) = ctx.connector.tenant_url_split(tenant.server()?, db)?;

    let mut psql = std::process::Command::new("psql");
    psql.arg(url.as_str()).args(&args.psql_args);
    if let Some(password) = password {
        psql.env("PGPASSWORD", password);
    }
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
