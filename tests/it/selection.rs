//! Choosing companies by status: `tenant list --status`.

use crate::support::TestEnv;

#[test]
fn tenant_list_filters_by_status() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b", "c"]);
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET status = 'failed' WHERE slug = '{}';
               UPDATE "Company" SET status = 'dropped' WHERE slug = '{}'"#,
            slugs[1], slugs[2]
        ),
    );
    let listed = |args: &[&str]| -> Vec<(String, String)> {
        let mut full = vec!["tenant", "list", "--output", "json"];
        full.extend_from_slice(args);
        env.run(&full).ok().json()["tenants"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["slug"].as_str().expect("slug").to_owned(),
                    r["status"].as_str().expect("status").to_owned(),
                )
            })
            .collect()
    };
    let pair = |i: usize, status: &str| (slugs[i].clone(), status.to_owned());
    assert_eq!(
        listed(&[]),
        [pair(0, "active"), pair(1, "failed"), pair(2, "dropped")],
        "without --status, every company"
    );
    assert_eq!(listed(&["--status", "failed"]), [pair(1, "failed")]);
    assert_eq!(
        listed(&["--status", "dropped", "--status", "active"]),
        [pair(0, "active"), pair(2, "dropped")]
    );
    assert_eq!(listed(&["--status", "provisioning"]), []);
    // The table shows the same selection.
    assert_eq!(slugs[1], env.slug("b"));
    env.expect(&["tenant", "list", "--status", "failed"])
        .stdout(
            "
            ┌────────┬───────┬───────┬──────────────┬─────────┬────────┬─────────┐
            │ id     ┆ slug  ┆ name  ┆ db name      ┆ server  ┆ status ┆ created │
            ╞════════╪═══════╪═══════╪══════════════╪═════════╪════════╪═════════╡
            │ {uuid} ┆ b-{T} ┆ b-{T} ┆ tenant_b_{T} ┆ default ┆ failed ┆ {time}  │
            └────────┴───────┴───────┴──────────────┴─────────┴────────┴─────────┘
            1 tenant(s)
            ",
        )
        .run();
    env.expect(&["tenant", "list", "--status", "gone"])
        .stderr(
            "error: --status gone: not a tenantctl status (provisioning, active, failed, dropped, \
             moving) nor a value of Company's status column (active, dropped, failed)\n",
        )
        .status(2)
        .run();
}
