//! Database names PostgreSQL reserves are never a tenant's.

use crate::support::{TestEnv, find};

#[test]
fn template_and_maintenance_databases_are_refused_as_tenant_databases() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    for reserved in ["template0", "template1", "postgres"] {
        env.expect(&["tenant", "create", &env.slug("t"), "--db-name", reserved])
            .stderr(format!(
                "error: --db-name: database name {reserved:?} is reserved by PostgreSQL\n"
            ))
            .status(2)
            .run();
    }
    assert_eq!(
        env.query(&env.master, r#"SELECT count(*)::text FROM "Company""#),
        ["0"],
        "no company recorded"
    );

    // Rows another tool wrote, naming them: each fails by itself, and
    // (read-only status, so nothing could be written there) is never
    // connected to.
    for (n, reserved) in ["template0", "template1", "postgres"].iter().enumerate() {
        env.exec(
            &env.master,
            &format!(
                r#"INSERT INTO "Company" (id, slug, name, "dbName", status, "updatedAt")
                   VALUES ('r{n}', 'reserved-{n}', 'x', '{reserved}', 'active', now())"#
            ),
        );
    }
    let report = env
        .run(&["tenant", "status", "--all", "--output", "json"])
        .code(1)
        .json();
    assert_eq!(report["summary"]["failed"], 3, "{report}");
    for (n, reserved) in ["template0", "template1", "postgres"].iter().enumerate() {
        let tenant = find(&report, &format!("reserved-{n}"));
        assert!(
            tenant["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("{reserved:?} is reserved"))),
            "{tenant}"
        );
    }
}
