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
    env.expect(&["tenant", "create", &slug])
        .stderr(
            "error: the master table Company cannot hold tenantctl's lifecycle states and \
             tenantctl's own tenantctl.lifecycle table is not there yet; run `tenantctl master \
             migrate` (it adds that table and leaves Company as it is)\n",
        )
        .status(2)
        .run();
    env.run(&["master", "migrate"]).ok();
    env.run(&["tenant", "create", &slug]).ok();
    env.expect(&["tenant", "drop", &slug, "--yes", "--keep-row"])
        .stderr(
            "error: --keep-row: the master's Company cannot mark a company dropped: its status \
             column \"status\" has no value for dropped, so the row would still look live to the \
             application; map one of the application's inactive statuses in tenantctl.toml \
             (`[master.statuses]` dropped = \"...\"), or drop without --keep-row (the row is \
             deleted); nothing was changed\n",
        )
        .status(2)
        .run();
    assert!(env.database_exists(&env.db("keep")));
    assert_eq!(env.status_of(&slug), ["active"]);
    env.run(&["tenant", "drop", &slug, "--yes"]).ok();
    assert!(!env.database_exists(&env.db("keep")));
    assert!(env.status_of(&slug).is_empty());
}
