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
        env.run(&full)
            .ok()
            .json()
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
    let table = env
        .run(&["tenant", "list", "--status", "failed"])
        .ok()
        .stdout;
    assert!(
        table.contains(&slugs[1]) && !table.contains(&slugs[0]) && !table.contains(&slugs[2]),
        "{table}"
    );
    assert!(table.contains("1 tenant(s)"), "{table}");
    env.run(&["tenant", "list", "--status", "gone"]).code(2);
}
