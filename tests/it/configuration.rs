//! Configuration as the book gives it (docs/src/reference.md): flags as well as variables, and
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
    env.expect(&["tenant", "list", &base_flag])
        .env_remove("POSTGRES_BASE_URL")
        .env_remove("MASTER_DATABASE_URL")
        .stderr(
            "error: the master database master does not exist yet; run `tenantctl master migrate` \
             first: connect to database master on {host}:{port}: database \"master\" does not exist \
             (SQLSTATE 3D000)\n",
        )
        .status(1)
        .run();
}

#[test]
fn quiet_drops_the_failure_lines_and_keeps_the_report() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["kept", "gone"]);
    let dir = dir.to_str().expect("utf-8");
    env.exec("postgres", &format!("DROP DATABASE \"{}\"", env.db("gone")));
    let args = ["tenant", "migrate", "--all", "--tenant-migrations", dir];

    let missing = "the tenant database tenant_gone_{T} is missing from the server default (dropped \
                   by hand?): connect to database tenant_gone_{T} on {host}:{port}: database \
                   \"tenant_gone_{T}\" does not exist (SQLSTATE 3D000)";
    let report = |run: u32| {
        let table = "
            ┌──────────┬─────────────────┬─────────┬────────┬────────────┬──────┬─{line}─┐
            │ tenant   ┆ db name         ┆ server  ┆ result ┆ migrations ┆ time ┆ {error} │
            ╞══════════╪═════════════════╪═════════╪════════╪════════════╪══════╪═{double}═╡
            │ gone-{T} ┆ tenant_gone_{T} ┆ default ┆ failed ┆ 0          ┆ {ms} ┆ {missing} │
            │ kept-{T} ┆ tenant_kept_{T} ┆ default ┆ ok     ┆ 0          ┆ {ms} ┆ {empty} │
            └──────────┴─────────────────┴─────────┴────────┴────────────┴──────┴─{line}─┘
            1 ok, 1 failed, 0 skipped; recorded as run {run}
            selected 2 of the master's 2 companies: --all, status active (by default)
            ";
        // The error column is as wide as the error.
        let w = missing.chars().count();
        crate::support::expect::unindent(table)
            .replace("{line}", &"─".repeat(w))
            .replace("{double}", &"═".repeat(w))
            .replace("{error}", &format!("{:w$}", "error"))
            .replace("{empty}", &" ".repeat(w))
            .replace("{missing}", missing)
            .replace("{run}", &run.to_string())
    };
    env.expect(&args)
        .stdout(report(1))
        .stderr(format!(
            "failed: tenant gone-{{T}} (tenant_gone_{{T}}): {missing}\n"
        ))
        .status(1)
        .run();
    assert_eq!(slugs, [env.slug("kept"), env.slug("gone")]);
    for (run, quiet) in [(2, "--quiet"), (3, "-q")] {
        let mut with = args.to_vec();
        with.push(quiet);
        // The report on stdout is all there, and on stderr only the
        // failure's line: --quiet hides progress, never why a run failed.
        env.expect(&with)
            .stdout(report(run))
            .stderr(format!(
                "failed: tenant gone-{{T}} (tenant_gone_{{T}}): {missing}\n"
            ))
            .status(1)
            .run();
    }
}
