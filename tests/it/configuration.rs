//! Configuration as the README gives it: flags as well as variables, and
//! `--quiet`.

use crate::support::{TestEnv, find};

#[test]
fn base_url_and_master_url_work_as_flags_and_win_over_the_environment() {
    let env = TestEnv::new();
    let nowhere = "postgresql://nobody:pw@127.0.0.1:1";
    let master_flag = format!("--master-url={}", env.master_url());
    let base_flag = format!("--base-url={}", env.base_url);
    // Neither variable set: the flags alone are enough.
    let alone = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env_remove("POSTGRES_BASE_URL")
                .env_remove("MASTER_DATABASE_URL");
        })
    };
    alone(&["master", "migrate", &base_flag, &master_flag]).ok();
    let slug = env.slug("flagged");
    alone(&["tenant", "create", &slug, &base_flag, &master_flag]).ok();
    assert!(env.database_exists(&env.db("flagged")));
    // Both variables pointing nowhere: the flags win.
    let report = env
        .run_with(
            &[
                "tenant",
                "status",
                "--all",
                "--output",
                "json",
                &base_flag,
                &master_flag,
            ],
            |c| {
                c.env("POSTGRES_BASE_URL", nowhere)
                    .env("MASTER_DATABASE_URL", format!("{nowhere}/master"));
            },
        )
        .ok()
        .json();
    assert_eq!(find(&report, &slug)["status"], "ok", "{report}");
    // --master-url names the master; without it the base URL's "master"
    // database is used, which this server does not have.
    let run = alone(&["tenant", "list", &base_flag]).code(1);
    assert!(
        run.stderr.contains("master database master does not exist"),
        "{}",
        run.stderr
    );
}

#[test]
fn quiet_drops_the_failure_lines_and_keeps_the_report() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["kept", "gone"]);
    let dir = dir.to_str().expect("utf-8");
    env.exec("postgres", &format!("DROP DATABASE \"{}\"", env.db("gone")));
    let args = ["tenant", "migrate", "--all", "--tenant-migrations", dir];

    let loud = env.run(&args).code(1);
    assert!(
        loud.stderr
            .contains(&format!("failed: tenant {}", slugs[1])),
        "{}",
        loud.stderr
    );
    for quiet in ["--quiet", "-q"] {
        let mut with = args.to_vec();
        with.push(quiet);
        let run = env.run(&with).code(1);
        assert!(run.stderr.is_empty(), "{quiet}: {}", run.stderr);
        // The report on stdout is still all there.
        for slug in &slugs {
            assert!(run.stdout.contains(slug.as_str()), "{}", run.stdout);
        }
        assert!(
            run.stdout.contains("1 ok, 1 failed, 0 skipped"),
            "{}",
            run.stdout
        );
    }
}
