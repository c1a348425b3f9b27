//! The library used directly, the way the commands use it.

use std::time::Duration;

use sqlx::Connection as _;
use tenantctl::connect::{Connector, SessionLimits};
use tenantctl::dbname::DbName;
use tenantctl::migrations::{self, MigrationSet, Problem};
use tenantctl::servers::ServerName;

use crate::support::{TestEnv, block_on};

#[test]
fn apply_reports_partial_progress_and_plan_sees_problems() {
    let env = TestEnv::new();
    let (name, connector) = env.scratch_db("lib");
    let broken = env.fixture("broken");
    block_on(async {
        let set = MigrationSet::from_dir(&broken).await.expect("fixture");
        let mut conn = connector
            .connect_tenant(&ServerName::default(), &name, &SessionLimits::default())
            .await
            .expect("connect");

        let plan = migrations::plan(&mut conn, &set).await.expect("plan");
        assert_eq!(plan.pending, [20_250_101_000_001, 20_250_101_000_002]);

        let mut applied = migrations::Done::default();
        let err = migrations::apply(&mut conn, &name, &set, None, &mut applied)
            .await
            .expect_err("second migration fails");
        assert_eq!(
            applied.versions,
            [20_250_101_000_001],
            "the first one stays applied and is reported"
        );
        let text = tenantctl::error::render(&err);
        assert!(
            text.contains("table_that_does_not_exist") && text.contains("42P01"),
            "{text}"
        );
        assert_eq!(
            text.matches("does not exist").count(),
            1,
            "no message printed twice: {text}"
        );

        // Tamper with the recorded checksum: plan reports it, apply refuses.
        sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00'")
            .execute(&mut conn)
            .await
            .expect("tamper");
        let plan = migrations::plan(&mut conn, &set).await.expect("plan");
        assert!(matches!(
            plan.problems.as_slice(),
            [Problem::ChecksumMismatch {
                version: 20_250_101_000_001,
                ..
            }]
        ));
        // Refused for the checksum, with the broken migration still
        // pending: problems stop a run that has work to do, too.
        let mut applied = migrations::Done::default();
        let err = migrations::apply(&mut conn, &name, &set, None, &mut applied)
            .await
            .expect_err("checksum mismatch");
        let text = tenantctl::error::render(&err);
        assert!(
            text.contains("20250101000001") && text.contains("checksum mismatch"),
            "{text}"
        );
        assert!(applied.versions.is_empty());
        let _ = conn.close().await;
    });
}

#[test]
fn connector_refuses_master_and_names_missing_database() {
    let env = TestEnv::new();
    let connector = Connector::new(
        &env.base_url,
        Some(&env.master_url()),
        Duration::from_secs(5),
    )
    .expect("connector");
    let master = DbName::parse(&env.master).expect("valid");
    assert!(
        connector
            .for_tenant(&ServerName::default(), &master)
            .is_err()
    );
    let missing = DbName::parse(&format!("missing_{}", env.token)).expect("valid");
    let err = block_on(connector.connect_tenant(
        &ServerName::default(),
        &missing,
        &SessionLimits::default(),
    ))
    .expect_err("missing");
    let text = tenantctl::error::render(&err);
    assert!(
        text.contains("missing from the server") && text.contains(missing.as_str()),
        "{text}"
    );
    assert!(tenantctl::connect::is_missing_database(&err));
}

#[test]
fn migration_lock_is_the_one_sqlx_cli_takes() {
    use sqlx::migrate::Migrate as _;

    let env = TestEnv::new();
    let (name, connector) = env.scratch_db("lock");
    let db = name.to_string();
    let dir = env.fixture("two-step");
    block_on(async {
        let set = MigrationSet::from_dir(&dir).await.expect("fixture");
        // sqlx's own lock, as sqlx's Migrator takes it.
        let mut holder = env.connect(&db).await;
        holder.lock().await.expect("sqlx lock");

        let mut conn = connector
            .connect_tenant(&ServerName::default(), &name, &SessionLimits::default())
            .await
            .expect("connect");
        let pid: (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .expect("pid");
        let mut applied = migrations::Done::default();
        let mut applying = Box::pin(migrations::apply(
            &mut conn,
            &name,
            &set,
            None,
            &mut applied,
        ));
        // Waiting on an advisory lock, not working or stuck elsewhere.
        let waits_for_the_lock = format!(
            "SELECT count(*)::text FROM pg_locks WHERE pid = {} AND locktype = 'advisory' AND NOT granted",
            pid.0
        );
        let mut observer = env.connect(&db).await;
        let mut waiting = false;
        for _ in 0..600 {
            let step = tokio::time::timeout(Duration::from_millis(50), applying.as_mut()).await;
            assert!(
                step.is_err(),
                "apply must wait while sqlx holds the lock: {step:?}"
            );
            let (count,): (String,) = sqlx::query_as(&waits_for_the_lock)
                .fetch_one(&mut observer)
                .await
                .expect("pg_locks");
            if count == "1" {
                waiting = true;
                break;
            }
        }
        assert!(waiting, "apply never waited on the advisory lock");

        // Released: the same call goes on and applies everything.
        holder.unlock().await.expect("sqlx unlock");
        tokio::time::timeout(Duration::from_secs(30), applying)
            .await
            .expect("apply goes on once the lock is released")
            .expect("apply");
        assert_eq!(applied.versions, [20_250_101_000_001, 20_250_101_000_002]);
        assert_eq!(
            (applied.before, applied.after),
            (None, Some(20_250_101_000_002))
        );
        // The rows are what sqlx writes: `sqlx migrate run` would find nothing to do.
        let plan = migrations::plan(&mut conn, &set).await.expect("plan");
        assert!(plan.pending.is_empty() && plan.problems.is_empty());
        let _ = conn.close().await;
        let _ = holder.close().await;
        let _ = observer.close().await;
    });
}

#[test]
fn sqlx_own_migrator_accepts_what_tenantctl_recorded() {
    let env = TestEnv::new();
    let (name, connector) = env.scratch_db("interop");
    let db = name.to_string();
    let dir = env.fixture("two-step");
    let rows =
        "SELECT string_agg(version::text || ':' || installed_on::text, ',') FROM _sqlx_migrations";
    let set = block_on(MigrationSet::from_dir(&dir)).expect("fixture");
    block_on(async {
        let mut conn = connector
            .connect_tenant(&ServerName::default(), &name, &SessionLimits::default())
            .await
            .expect("connect");
        let mut applied = migrations::Done::default();
        migrations::apply(&mut conn, &name, &set, None, &mut applied)
            .await
            .expect("apply");
        let _ = conn.close().await;
    });
    let before = env.query(&db, rows);
    // sqlx's Migrator validates every recorded checksum and would apply
    // anything it thinks is missing.
    block_on(async {
        let mut conn = env.connect(&db).await;
        sqlx::migrate::Migrator::new(dir.as_path())
            .await
            .expect("migrator")
            .run(&mut conn)
            .await
            .expect("sqlx accepts the recorded migrations");
        let _ = conn.close().await;
    });
    assert_eq!(before, env.query(&db, rows), "sqlx applied nothing again");
}

#[test]
fn revert_does_nothing_when_the_tenant_changed_since_its_plan() {
    let env = TestEnv::new();
    let (name, connector) = env.scratch_db("replan");
    let dir = env.fixture("reversible");
    block_on(async {
        let set = MigrationSet::from_dir(&dir).await.expect("fixture");
        let mut conn = connector
            .connect_tenant(&ServerName::default(), &name, &SessionLimits::default())
            .await
            .expect("connect");
        let mut done = migrations::Done::default();
        migrations::apply(&mut conn, &name, &set, None, &mut done)
            .await
            .expect("apply");
        let all = done.versions.clone();
        assert_eq!(all.len(), 5);
        // Planned when only 5 was newer than 3; by now 4 is newer too.
        let target = tenantctl::revert::Target::Version(all[2]);
        let err = tenantctl::revert::revert(
            &mut conn,
            &name,
            &set,
            &target,
            &[all[4]],
            &SessionLimits::default(),
            &mut done,
        )
        .await
        .expect_err("the plan no longer holds");
        let text = tenantctl::error::render(&err);
        assert!(
            text.contains(&format!(
                "would now revert {}, {}, not {}",
                all[4], all[3], all[4]
            )),
            "{text}"
        );
        assert!(done.versions.is_empty());
        assert_eq!(done.after, Some(all[4]));
        let plan = migrations::plan(&mut conn, &set).await.expect("plan");
        assert_eq!(plan.applied, all, "nothing was reverted");
        // The plan as it now stands goes ahead.
        tenantctl::revert::revert(
            &mut conn,
            &name,
            &set,
            &target,
            &[all[4], all[3]],
            &SessionLimits::default(),
            &mut done,
        )
        .await
        .expect("revert");
        assert_eq!(done.versions, [all[4], all[3]]);
        assert_eq!((done.before, done.after), (Some(all[4]), Some(all[2])));
        let _ = conn.close().await;
    });
}
