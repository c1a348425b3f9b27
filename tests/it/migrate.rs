//! `tenant migrate`: what it refuses, and the table it prints.

use crate::support::TestEnv;

#[test]
fn migrate_refuses_dirty_and_unknown_rows_and_prints_its_table() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["dirty", "fine", "unknown"]);
    std::fs::write(
        dir.join("20250101000003_more.sql"),
        "CREATE TABLE more (id int);",
    )
    .expect("write");
    let dir = dir.to_str().expect("utf-8");
    env.exec(
        &env.db("dirty"),
        "UPDATE _sqlx_migrations SET success = false WHERE version = 20250101000002",
    );
    env.exec(
        &env.db("unknown"),
        "INSERT INTO _sqlx_migrations VALUES (20240101000000, 'elsewhere', now(), true, '\\x00', 0)",
    );

    let run = env
        .run(&["tenant", "migrate", "--all", "--tenant-migrations", dir])
        .code(1);
    // Each refusal says why, on its own failure line.
    let failure = |slug: &str| -> String {
        run.stderr
            .lines()
            .find(|l| l.starts_with(&format!("failed: tenant {slug}")))
            .unwrap_or_else(|| panic!("no failure line for {slug}: {}", run.stderr))
            .to_owned()
    };
    let dirty = failure(&slugs[0]);
    assert!(
        dirty.contains("migration 20250101000002") && dirty.contains("dirty"),
        "{dirty}"
    );
    let unknown = failure(&slugs[2]);
    assert!(
        unknown.contains("migration 20240101000000")
            && unknown.contains("missing from the migrations in use"),
        "{unknown}"
    );
    // Nothing applied to either; the fine tenant went ahead.
    let more = "SELECT coalesce(to_regclass('more')::text, '')";
    for name in ["dirty", "unknown"] {
        assert_eq!(env.query(&env.db(name), more), [""], "{name}");
    }
    assert_eq!(env.query(&env.db("fine"), more), ["more"]);

    // The table: tenant, database, result, migrations applied, time (and
    // the error, since there is one), one row per tenant.
    let header = run
        .stdout
        .lines()
        .find(|l| l.contains("tenant"))
        .expect("header row");
    let columns: Vec<&str> = header
        .split(['│', '┆'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        [
            "tenant",
            "db name",
            "server",
            "result",
            "migrations",
            "time",
            "error"
        ],
        "{}",
        run.stdout
    );
    let row = |slug: &str| -> Vec<String> {
        run.stdout
            .lines()
            .find(|l| l.contains(slug))
            .unwrap_or_else(|| panic!("no row for {slug}: {}", run.stdout))
            .split(['│', '┆'])
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect()
    };
    let fine = row(&slugs[1]);
    assert_eq!(
        fine[..5],
        [
            slugs[1].clone(),
            env.db("fine"),
            "default".to_owned(),
            "ok".to_owned(),
            "applied 1: 20250101000003".to_owned()
        ],
        "{}",
        run.stdout
    );
    assert_eq!(row(&slugs[0])[3], "failed", "{}", run.stdout);
    assert!(
        run.stdout.contains("1 ok, 2 failed, 0 skipped"),
        "{}",
        run.stdout
    );
}
