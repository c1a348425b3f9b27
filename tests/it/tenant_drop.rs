//! `tenant drop` when the master will not take the change.

use crate::support::TestEnv;

#[test]
fn drop_keep_row_on_a_status_enum_without_dropped_is_refused_and_changes_nothing() {
    let env = TestEnv::new();
    // An ORM-made master whose status enum has no 'dropped': a kept row
    // would still read `active` to the application, with no database
    // behind it, so --keep-row is refused (naming the setting), and
    // nothing is changed; a plain drop deletes the row.
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
    let refused = env
        .run(&["tenant", "drop", &slug, "--yes", "--keep-row"])
        .code(2);
    assert!(
        refused.stderr.contains("[master.statuses]")
            && refused.stderr.contains("without --keep-row"),
        "{}",
        refused.stderr
    );
    assert!(env.database_exists(&env.db("keep")));
    assert_eq!(env.status_of(&slug), ["active"]);
    env.run(&["tenant", "drop", &slug, "--yes"]).ok();
    assert!(!env.database_exists(&env.db("keep")));
    assert!(env.status_of(&slug).is_empty());
}
