//! The connection floor for `just bench`: connect to each database and
//! close again, nothing else, through the same connector and fleet runner
//! as `tenantctl tenant migrate`, C at a time. What `migrate` does on an
//! up-to-date tenant beyond this is its one query.
//!
//! Usage: `POSTGRES_BASE_URL=... connect_floor C DB...`; prints seconds.

use std::time::{Duration, Instant};

use sqlx::Connection as _;
use tenantctl::connect::{Connector, SessionLimits};
use tenantctl::fleet::{self, FleetOptions, Silent, Stop};
use tenantctl::tenant::Tenant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let concurrency: usize = args.next().unwrap_or_default().parse()?;
    let base = std::env::var("POSTGRES_BASE_URL")?;
    let connector = Connector::new(&base, None, Duration::from_secs(10))?;
    let tenants: Vec<Tenant> = args
        .map(|db| {
            Tenant::new(
                db.clone(),
                Some(db.clone()),
                Some(db.clone()),
                Some(db),
                Some("active".into()),
                Some(chrono::Utc::now()),
            )
        })
        .collect();
    let total = tenants.len();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let run = runtime.block_on(fleet::run(
        tenants,
        FleetOptions {
            concurrency,
            per_server: None,
            fail_fast: false,
        },
        &Stop::default(),
        &Silent,
        move |tenant| {
            let connector = connector.clone();
            async move {
                fleet::attempt(
                    async {
                        let conn = connector
                            .connect_tenant(
                                tenant.server()?,
                                tenant.db_name()?,
                                &SessionLimits::default(),
                            )
                            .await?;
                        conn.close().await?;
                        Ok(())
                    }
                    .await,
                )
            }
        },
    ));
    let seconds = started.elapsed().as_secs_f64();
    let ok = run.count(fleet::Verdict::Ok);
    anyhow::ensure!(ok == total, "{} of {total} connections failed", total - ok);
    println!("{seconds:.4}");
    Ok(())
}
