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

    let dirty = "migration 20250101000002 failed part-way and is marked dirty; repair the schema \
                 by hand, then delete its row from _sqlx_migrations";
    let unknown = "migration 20240101000000 is applied in the database but missing from the \
                   migrations in use; use the folder that has it";
    // The error column is as wide as the longer error.
    let w = dirty.len();
    // Each refusal says why, on its own failure line; the table has one
    // row per tenant: tenant, database, server, result, migrations applied,
    // time, and the error, since there is one.
    env.expect(&["tenant", "migrate", "--all", "--tenant-migrations", dir])
        .stdout(
            "
            ┌─────────────┬────────────────────┬─────────┬────────┬───────────────────────────┬──────┬─{line}─┐
            │ tenant      ┆ db name            ┆ server  ┆ result ┆ migrations                ┆ time ┆ {error} │
            ╞═════════════╪════════════════════╪═════════╪════════╪═══════════════════════════╪══════╪═{double}═╡
            │ dirty-{T}   ┆ tenant_dirty_{T}   ┆ default ┆ failed ┆ 0                         ┆ {ms} ┆ {dirty} │
            │ fine-{T}    ┆ tenant_fine_{T}    ┆ default ┆ ok     ┆ applied 1: 20250101000003 ┆ {ms} ┆ {empty} │
            │ unknown-{T} ┆ tenant_unknown_{T} ┆ default ┆ failed ┆ 0                         ┆ {ms} ┆ {unknown} │
            └─────────────┴────────────────────┴─────────┴────────┴───────────────────────────┴──────┴─{line}─┘
            1 ok, 2 failed, 0 skipped; recorded as run 1
            selected 3 of the master's 3 companies: --all, status active (by default)
            "
            .replace("{line}", &"─".repeat(w))
            .replace("{double}", &"═".repeat(w))
            .replace("{error}", &format!("{:w$}", "error"))
            .replace("{empty}", &" ".repeat(w))
            .replace("{dirty}", dirty)
            .replace("{unknown}", &format!("{unknown:w$}")),
        )
        .stderr(format!(
            "failed: tenant dirty-{{T}} (tenant_dirty_{{T}}): {dirty}\n\
             failed: tenant unknown-{{T}} (tenant_unknown_{{T}}): {unknown}\n\
             run 1 did not succeed everywhere and changed 1 tenant(s); to take exactly those back \
             to where they were: tenantctl tenant revert --run 1\n"
        ))
        .stderr_in_any_order()
        .status(1)
        .run();
    assert_eq!(
        slugs,
        [env.slug("dirty"), env.slug("fine"), env.slug("unknown")]
    );
    // Nothing applied to either; the fine tenant went ahead.
    let more = "SELECT coalesce(to_regclass('more')::text, '')";
    for name in ["dirty", "unknown"] {
        assert_eq!(env.query(&env.db(name), more), [""], "{name}");
    }
    assert_eq!(env.query(&env.db("fine"), more), ["more"]);
}
