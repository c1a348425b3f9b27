//! `tenant baseline`: what it refuses, and that a refusal records nothing.

use crate::support::TestEnv;

#[test]
fn baseline_refuses_a_version_recorded_differently_and_records_none_of_the_others() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    std::fs::write(
        dir.join("20250101000003_more.sql"),
        "CREATE TABLE more (id int);",
    )
    .expect("write");
    let dir = dir.to_str().expect("utf-8");
    env.run(&["master", "migrate"]).ok();
    // A database another tool made, adopted up to the second migration...
    let legacy = format!("legacy_{}", env.token);
    env.exec("postgres", &format!("CREATE DATABASE \"{legacy}\""));
    let slug = env.slug("legacy");
    env.exec(
        &env.master,
        &format!(r#"INSERT INTO "Company" VALUES ('legacy-id', '{slug}', 'Legacy', '{legacy}', 'active', now(), now())"#),
    );
    let baseline = |to: &str| {
        env.run(&[
            "tenant",
            "baseline",
            &slug,
            "--to",
            to,
            "--output",
            "json",
            "--tenant-migrations",
            dir,
        ])
    };
    baseline("20250101000002").ok();
    // ...then its bookkeeping went astray: the first migration's row is
    // gone and the second's records another checksum.
    env.exec(
        &legacy,
        "DELETE FROM _sqlx_migrations WHERE version = 20250101000001;
         UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 20250101000002",
    );
    let rows = "SELECT string_agg(version::text || ':' || encode(checksum, 'hex'), ',' ORDER BY version) FROM _sqlx_migrations";
    let before = env.query(&legacy, rows);

    let run = baseline("20250101000003").code(1);
    let tenant = run.json()["tenants"][0].clone();
    assert_eq!(tenant["status"], "failed", "{tenant}");
    assert!(
        tenant["error"]
            .as_str()
            .is_some_and(|e| e.contains("20250101000002") && e.contains("recorded differently")),
        "{tenant}"
    );
    assert_eq!(tenant["recorded"], serde_json::json!([]), "{tenant}");
    // Neither the missing first migration nor the third was recorded.
    assert_eq!(env.query(&legacy, rows), before);
    assert_eq!(before, ["20250101000002:00"]);
}
