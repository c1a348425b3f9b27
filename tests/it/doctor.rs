//! `tenantctl doctor` on a server of the test's own, so that only this
//! test's databases count: a clean server passes, and each finding shows
//! in the JSON summary.

use crate::support::TestEnv;
use crate::support::server::PrivateServer;

#[test]
fn doctor_passes_a_clean_server_and_counts_orphans_by_migrations_and_stuck_tenants() {
    let env = TestEnv::new();
    let server = PrivateServer::start(&env.token);
    let base = server.base_url();
    let dir = env.fixture("two-step");
    let dir = dir.to_str().expect("utf-8").to_owned();
    let run = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &base)
                .env("TENANT_MIGRATIONS_DIR", &dir)
                .env_remove("MASTER_DATABASE_URL");
        })
    };
    let sql = |db: &str, sql: &str| {
        crate::support::block_on(async {
            use sqlx::{Connection as _, Executor as _};
            let mut conn = sqlx::postgres::PgConnection::connect(&format!("{base}/{db}"))
                .await
                .expect("connect to the private server");
            conn.execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = conn.close().await;
        });
    };
    run(&["master", "migrate"]).ok();
    for slug in ["acme", "globex"] {
        run(&["tenant", "create", slug]).ok();
    }
    run(&["tenant", "create", "forgotten", "--db-name", "db_forgotten"]).ok();
    // Databases that are not tenants: one empty, one whose migrations
    // share a version with the tenant set but not its checksum.
    sql("postgres", "CREATE DATABASE appdb");
    sql("postgres", "CREATE DATABASE other_app");
    sql(
        "other_app",
        "CREATE TABLE _sqlx_migrations (version bigint PRIMARY KEY, description text NOT NULL,
           installed_on timestamptz NOT NULL DEFAULT now(), success boolean NOT NULL,
           checksum bytea NOT NULL, execution_time bigint NOT NULL);
         INSERT INTO _sqlx_migrations VALUES (20250101000001, 'items', now(), true, '\\x00', 0)",
    );

    let clean = run(&["doctor", "--output", "json"]).ok().json();
    assert_eq!(clean["findings"], serde_json::json!([]), "{clean}");
    assert_eq!(clean["summary"], serde_json::json!({}), "{clean}");
    assert_eq!(clean["tenants"], 3, "{clean}");
    env.expect(&["doctor"])
        .env("POSTGRES_BASE_URL", &base)
        .env("TENANT_MIGRATIONS_DIR", &dir)
        .env_remove("MASTER_DATABASE_URL")
        .stdout("no problems: 3 companies, every database present and up to date\n")
        .run();

    // A company row lost (its database, named without the tenant prefix,
    // holds the tenant migrations), and a create that never finished.
    sql(
        "master",
        r#"DELETE FROM "Company" WHERE slug = 'forgotten';
           UPDATE "Company" SET status = 'provisioning' WHERE slug = 'globex'"#,
    );
    let run_json = run(&["doctor", "--output", "json"]).code(1);
    let report = run_json.json();
    assert_eq!(
        report["summary"],
        serde_json::json!({"orphan_database": 1, "stuck": 1}),
        "{report}"
    );
    assert_eq!(report["tenants"], 2, "{report}");
    let findings = report["findings"].as_array().expect("findings");
    let orphan = findings
        .iter()
        .find(|f| f["kind"] == "orphan_database")
        .expect("orphan");
    assert_eq!(orphan["db_name"], "db_forgotten", "{orphan}");
    assert!(
        orphan["detail"]
            .as_str()
            .is_some_and(|d| d.contains("holds tenant migrations")),
        "{orphan}"
    );
    let stuck = findings
        .iter()
        .find(|f| f["kind"] == "stuck")
        .expect("stuck");
    assert_eq!(stuck["slug"], "globex", "{stuck}");
    assert!(
        stuck["detail"]
            .as_str()
            .is_some_and(|d| d.contains("provisioning") && d.contains("tenant create globex")),
        "{stuck}"
    );

    // Doctor takes the fleet flags every tenant command takes; capped to
    // one database per server and given session limits, it finds the same.
    let capped = run(&[
        "doctor",
        "--per-server",
        "1",
        "--concurrency",
        "2",
        "--lock-timeout",
        "5s",
        "--output",
        "json",
    ])
    .code(1)
    .json();
    assert_eq!(capped, report);
}

/// doctor takes the session limits every fleet command takes: a tenant
/// whose migrations table another session holds locked is reported once
/// `--lock-timeout` runs out, instead of holding the whole check up (as it
/// did before doctor went through the runner), and `--per-server` is
/// accepted with it.
#[test]
fn doctor_gives_up_on_a_locked_tenant_when_its_lock_timeout_runs_out() {
    let env = TestEnv::new();
    let server = PrivateServer::start(&env.token);
    let base = server.base_url();
    let with_server = |c: &mut std::process::Command| {
        c.env("POSTGRES_BASE_URL", &base)
            .env_remove("MASTER_DATABASE_URL");
    };
    env.run_with(&["master", "migrate"], with_server).ok();
    for slug in ["acme", "globex"] {
        env.run_with(&["tenant", "create", slug], with_server).ok();
    }
    // An orphan holding tenant migrations, locked too: a read cut short
    // is reported, never taken for somebody else's database.
    server.exec(
        "postgres",
        "CREATE DATABASE legacy_x TEMPLATE tenant_globex",
    );
    let holders: Vec<std::process::Child> = ["tenant_acme", "legacy_x"]
        .into_iter()
        .map(|db| lock_migrations(&base, db))
        .collect();
    let mut doctor = env.cmd();
    with_server(&mut doctor);
    doctor.args([
        "doctor",
        "--lock-timeout",
        "300ms",
        "--per-server",
        "1",
        "--output",
        "json",
    ]);
    let child = doctor
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tenantctl");
    let run = crate::support::wait_with_deadline(child, std::time::Duration::from_secs(60));
    for mut holder in holders {
        let _ = holder.kill();
        let _ = holder.wait();
    }
    assert_eq!(run.code, 1, "{}", run.all());
    let report = run.json();
    let findings = report["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 2, "{report}");
    let mut dbs: Vec<&str> = findings
        .iter()
        .map(|f| f["db_name"].as_str().unwrap_or_default())
        .collect();
    dbs.sort_unstable();
    assert_eq!(dbs, ["legacy_x", "tenant_acme"], "{report}");
    for finding in findings {
        assert_eq!(finding["kind"], "unreachable", "{report}");
        let detail = finding["detail"].as_str().expect("detail");
        assert!(detail.contains("lock timeout"), "{detail}");
        assert!(detail.contains("55P03"), "{detail}");
    }
}

/// A row of tenantctl.moves edited by hand into names tenantctl refuses
/// (a database name with a space, a server name with capitals) is shown as
/// recorded, by doctor among the rest of the fleet's findings, and by fleet
/// commands as a tenant being moved (skipped), as before the move records
/// were typed: one bad row neither hides the fleet nor changes outcomes.
#[test]
fn a_move_record_edited_into_bad_names_is_reported_not_fatal() {
    let env = TestEnv::new();
    let server = PrivateServer::start(&env.token);
    let base = server.base_url();
    let with_server = |c: &mut std::process::Command| {
        c.env("POSTGRES_BASE_URL", &base)
            .env_remove("MASTER_DATABASE_URL");
    };
    let run = |args: &[&str]| env.run_with(args, with_server);
    run(&["master", "migrate"]).ok();
    for slug in ["a1", "a2", "a3"] {
        run(&["tenant", "create", slug]).ok();
    }
    let id = |slug: &str| {
        run(&["tenant", "list", "--output", "json"]).ok().json()["tenants"]
            .as_array()
            .expect("list")
            .iter()
            .find(|t| t["slug"] == slug)
            .map(|t| {
                t["id"]
                    .as_str()
                    .map_or_else(|| t["id"].to_string(), str::to_owned)
            })
            .expect("listed")
    };
    let (a2, a3) = (id("a2"), id("a3"));
    server.exec(
        "master",
        &format!(
            "INSERT INTO tenantctl.moves (company_id, db_name, from_server, to_server, parked_name, incoming_name, step) VALUES \
             ('{a2}', 'tenant_a2', 'default', 'eu2', 'tenant_a2_moved x', 'tenant_a2_in_x', 'copied'), \
             ('{a3}', 'tenant_a3', 'default', 'Bad Server!', 'tenant_a3_moved', 'tenant_a3_in', 'started')"
        ),
    );

    let report = run(&["doctor", "--output", "json"]).code(1).json();
    let moving: Vec<(String, String)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == "move_in_progress")
        .map(|f| {
            (
                f["slug"].as_str().unwrap_or_default().to_owned(),
                f["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(moving.len(), 2, "{report}");
    assert_eq!(moving[0].0, "a2", "{report}");
    assert!(
        moving[0]
            .1
            .starts_with("being moved to server eu2 (step copied)"),
        "{report}"
    );
    assert_eq!(moving[1].0, "a3", "{report}");
    assert!(
        moving[1]
            .1
            .starts_with("being moved to server Bad Server! (step started)"),
        "{report}"
    );

    let status = run(&["tenant", "status", "--all", "--output", "json"])
        .code(1)
        .json();
    let verdicts: Vec<(String, String)> = status["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap_or_default().to_owned(),
                t["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(status["summary"]["ok"], 1, "{status}");
    assert_eq!(status["summary"]["failed"], 0, "{status}");
    assert_eq!(status["summary"]["skipped"], 2, "{status}");
    let skipped = status["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t.to_string().contains("Bad Server!"))
        .unwrap_or_else(|| panic!("{verdicts:?} {status}"));
    assert!(
        skipped.to_string().contains("moving to server Bad Server!"),
        "{skipped}"
    );
    run(&["tenant", "list"]).ok();
    // Acting on the bad record is refused, naming the tenant and the value.
    for args in [&["--finish"][..], &["--abort"]] {
        let mut argv = vec!["tenant", "move", "a2"];
        argv.extend_from_slice(args);
        let refused = run(&argv).code(1);
        assert!(
            refused.stderr.starts_with(
                "error: tenant a2 (tenant_a2): tenantctl.moves: database \"tenant_a2_moved x\""
            ),
            "{}",
            refused.stderr
        );
    }
}

/// A psql session holding `db`'s `_sqlx_migrations` locked (ACCESS
/// EXCLUSIVE, in an open transaction), returned once the lock is granted.
fn lock_migrations(base: &str, db: &str) -> std::process::Child {
    let holder = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-d",
            &format!("{base}/{db}"),
            "-c",
            "BEGIN; LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120)",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    crate::support::wait_until(
        std::time::Duration::from_secs(20),
        &format!("the lock on {db}'s _sqlx_migrations"),
        || {
            let held = crate::support::block_on(async {
                use sqlx::Connection as _;
                let mut conn = sqlx::postgres::PgConnection::connect(&format!("{base}/{db}"))
                    .await
                    .ok()?;
                let n: i64 = sqlx::query_scalar(
                    // pg_locks is the whole server's, and databases cloned
                    // from one template share their tables' OIDs: this
                    // database's lock only.
                    "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' \
                     AND relation = '_sqlx_migrations'::regclass AND granted \
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                )
                .fetch_one(&mut conn)
                .await
                .ok()?;
                let _ = conn.close().await;
                Some(n)
            });
            (held == Some(1)).then_some(())
        },
    );
    holder
}

/// `tenant drift` builds its reference in a scratch database it drops
/// after; one left behind by a killed run is an orphan doctor names for
/// what it is, and a finished run leaves none.
#[test]
fn doctor_names_a_scratch_database_a_killed_drift_run_left() {
    let env = TestEnv::new();
    let server = PrivateServer::start(&env.token);
    let base = server.base_url();
    let run = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &base)
                .env_remove("MASTER_DATABASE_URL")
                .env_remove("TENANT_MIGRATIONS_DIR");
        })
    };
    run(&["master", "migrate"]).ok();
    run(&["tenant", "create", "acme"]).ok();
    let drift = run(&["tenant", "drift", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(drift["drift"]["matched"], 1, "{drift}");
    let clean = run(&["doctor", "--output", "json"]).ok().json();
    assert_eq!(clean["findings"], serde_json::json!([]), "{clean}");

    crate::support::block_on(async {
        use sqlx::{Connection as _, Executor as _};
        let mut conn = sqlx::postgres::PgConnection::connect(&format!("{base}/postgres"))
            .await
            .expect("connect to the private server");
        conn.execute("CREATE DATABASE tenantctl_drift_999_dead")
            .await
            .expect("create");
        let _ = conn.close().await;
    });
    let report = run(&["doctor", "--output", "json"]).code(1).json();
    let findings = report["findings"].as_array().expect("findings");
    let [orphan] = findings.as_slice() else {
        panic!("one finding: {report}");
    };
    assert_eq!(orphan["kind"], "orphan_database", "{orphan}");
    assert_eq!(orphan["db_name"], "tenantctl_drift_999_dead", "{orphan}");
    assert!(
        orphan["detail"]
            .as_str()
            .is_some_and(|d| d.contains("scratch database `tenant drift`")),
        "{orphan}"
    );
}
