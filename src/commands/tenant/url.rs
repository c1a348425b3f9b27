//! `tenantctl tenant url <slug|id> [--show-password]`.

use clap::Args;

use crate::commands::context::Context;
use crate::error::Outcome;
use crate::output::{OutputMode, line, print_json};

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
    let tenant = ctx.tenant(&args.tenant).await?;
    let db = tenant.db_name()?;
    let url = if args.show_password {
        ctx.connector.tenant_url(tenant.server()?, db)?.to_string()
    } else {
        ctx.connector.tenant_url_redacted(tenant.server()?, db)?
    };
    match ctx.output {
        OutputMode::Table => {
            line(&url);
        }
        mode @ (OutputMode::Json | OutputMode::Jsonl) => print_json(
            mode,
            &serde_json::json!({
                "slug": tenant.slug, "db_name": db.as_str(), "server": tenant.server_label(), "url": url,
            }),
        ),
    }
    Ok(Outcome::Success)
}
