//! `tenantctl tenant url <slug|id> [--show-password]`.

use clap::Args;

use crate::commands::context::Context;
use crate::error::Outcome;
use crate::output::{OutputMode, document, line, print_json};

#[derive(Debug, Args)]
pub struct UrlArgs {
    /// Tenant slug or id
    #[arg(value_name = "SLUG|ID")]
    pub tenant: String,

    /// Print the password instead of ***
    #[arg(long)]
    pub show_password: bool,
}

pub async fn run(args: UrlArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    if args.show_password && crate::output::sink::writes_report() {
        return Err(crate::error::UsageError(
            "--show-password with --report-file would write the password into the report file: leave out one of them".into(),
        )
        .into());
    }
    let tenant = ctx.tenant(&args.tenant).await?;
    let db = tenant.db_name()?;
    let url = if args.show_password {
        ctx.connector.tenant_url(tenant.server()?, db)?.to_string()
    } else {
        ctx.connector.tenant_url_redacted(tenant.server()?, db)?
    };
    let value = serde_json::json!({
        "slug": tenant.slug, "db_name": db.as_str(), "server": tenant.server_label(), "url": url,
    });
    document(ctx.output, &value);
    match ctx.output {
        OutputMode::Table | OutputMode::Junit => {
            line(&url);
        }
        OutputMode::Jsonl => print_json(ctx.output, &value),
        OutputMode::Json => {}
    }
    Ok(Outcome::Success)
}
