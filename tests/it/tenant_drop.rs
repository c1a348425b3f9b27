//! `tenant drop` when the master will not take the change.

use crate::support::TestEnv;

#[test]
fn drop_refused_by_the_master_says_why_and_changes_nothing() {
    let env = TestEnv::new();
    // An ORM-made master whose status enum has no 'dropped'.
    env.orm_master(&["provisioning", "active", "failed"]);
    let slug = env.slug("keep");
    env.run(&["tenant", "create", &slug]).ok();
    let run = env
        .run(&["tenant", "drop", &slug, "--yes", "--keep-row"])
        .code(1);
    // The master's own refusal, not some other failure on the way.
    assert!(
        run.stderr
            .contains("invalid input value for enum \"CompanyStatus\": \"dropped\""),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        env.database_exists(&env.db("keep")),
        "database dropped although the row could not be updated"
    );
    assert_eq!(env.status_of(&slug), ["active"]);
}
