//! `tenant drop` when the master will not take the change.

use crate::support::TestEnv;

#[test]
fn drop_keep_row_on_a_status_enum_without_dropped_is_recorded_by_tenantctl() {
    let env = TestEnv::new();
    // An ORM-made master whose status enum has no 'dropped': tenantctl
    // keeps that state in its own table rather than fail or alter the enum.
    env.orm_master(&["provisioning", "active", "failed"]);
    let slug = env.slug("keep");
    let run = env.run(&["tenant", "create", &slug]).code(2);
    assert!(
        run.stderr.contains("tenantctl master migrate"),
        "{}",
        run.stderr
    );
    env.run(&["master", "migrate"]).ok();
    env.run(&["tenant", "create", &slug]).ok();
    env.run(&["tenant", "drop", &slug, "--yes", "--keep-row"])
        .ok();
    assert!(!env.database_exists(&env.db("keep")));
    assert_eq!(
        env.status_of(&slug),
        ["active"],
        "the enum column is left alone"
    );
    assert_eq!(
        env.query(&env.master, "SELECT lifecycle FROM tenantctl.lifecycle"),
        ["dropped"]
    );
    let list = env
        .run(&["tenant", "list", "--status", "dropped", "--output", "json"])
        .ok()
        .json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}
