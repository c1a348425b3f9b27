//! What the master does not show us, and the master changing under two
//! of us at once (issue 15): row-level security and views that hide
//! companies, tenant databases marked as templates or closed to
//! connections, and concurrent `master migrate` runs.

use crate::support::{RoleUrls, Run, TestEnv, role_with_password, wait_with_deadline};

/// A master with `acme`, `globex` and `ghost`, created by a role of the
/// test's own that owns the tenant databases and may read and write every
/// table of the master, but does not own the companies table.
fn fleet_as_role(env: &TestEnv) -> (RoleUrls, [String; 3]) {
    fleet_as_role_with(env, &[])
}

/// [`fleet_as_role`], each `tenant create` given these arguments too.
fn fleet_as_role_with(env: &TestEnv, create_args: &[&str]) -> (RoleUrls, [String; 3]) {
    env.run(&["master", "migrate"]).ok();
    let ops = role_with_password(env, "ops", "ops-pw-4k9");
    env.exec(
        &env.master,
        &format!(
            r#"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{r}";
               GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{r}";
               GRANT USAGE ON SCHEMA tenantctl TO "{r}";
               GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tenantctl TO "{r}";"#,
            r = ops.role
        ),
    );
    let slugs = ["acme", "globex", "ghost"].map(|n| env.slug(n));
    for slug in &slugs {
        let mut args = vec!["tenant", "create", slug.as_str()];
        args.extend_from_slice(create_args);
        env.run_with(&args, ops.configure()).ok();
    }
    (ops, slugs)
}

fn as_role(env: &TestEnv, urls: &RoleUrls, args: &[&str]) -> Run {
    env.run_with(args, urls.configure())
}

/// Row security that applies must refuse every whole-fleet selection with
/// exit 2 and a message that names the role, the table and the way out.
#[track_caller]
fn assert_refused(run: Run, role: &str, table: &str) -> Run {
    let run = run.code(2);
    for needle in [
        "row-level security applies to role",
        role,
        table,
        "BYPASSRLS",
        "USING (true)",
    ] {
        assert!(run.stderr.contains(needle), "{needle:?} in\n{}", run.stderr);
    }
    run
}

/// The whole-fleet selections of every fleet command.
fn fleet_commands() -> Vec<Vec<&'static str>> {
    vec![
        vec!["tenant", "migrate", "--all"],
        vec!["tenant", "migrate", "--status", "active"],
        vec!["tenant", "status", "--all"],
        vec!["tenant", "status", "--status", "failed"],
        vec!["tenant", "sql", "--all", "-c", "SELECT 1"],
        vec!["tenant", "settings", "get", "--all", "theme"],
        vec!["tenant", "settings", "set", "--all", "theme", "dark"],
        vec!["tenant", "exec", "--all", "--", "true"],
        vec!["tenant", "revert", "--all", "--to", "0", "--dry-run"],
        vec!["tenant", "baseline", "--all", "--to", "20240101000001"],
        vec!["doctor"],
    ]
}

#[test]
fn row_level_security_hiding_a_company_refuses_the_whole_fleet_and_doctor_but_not_named_tenants() {
    let env = TestEnv::new();
    let (ops, [acme, _globex, ghost]) = fleet_as_role(&env);
    let ghost_db = env.db("ghost");
    env.exec(
        &env.master,
        &format!(
            r#"ALTER TABLE "Company" ENABLE ROW LEVEL SECURITY;
               CREATE POLICY hide_ghost ON "Company" TO "{}" USING (slug <> '{ghost}');"#,
            ops.role
        ),
    );
    for args in fleet_commands() {
        let run = assert_refused(as_role(&env, &ops, &args), &ops.role, "\"Company\"");
        assert!(!run.all().contains(&ghost_db), "{args:?}: {}", run.all());
        assert!(!run.stdout.contains("orphan"), "{args:?}: {}", run.stdout);
    }
    // Under --output json the refusal is the usual error object.
    let json = as_role(
        &env,
        &ops,
        &["tenant", "migrate", "--all", "--output", "json"],
    )
    .code(2)
    .json();
    assert_eq!(json["kind"], "usage", "{json}");
    let doctor = as_role(&env, &ops, &["doctor", "--output", "json"])
        .code(2)
        .json();
    assert_eq!(doctor["kind"], "usage", "{doctor}");
    assert!(doctor.get("findings").is_none(), "{doctor}");

    // A tenant named explicitly is either the row we see, acted on
    // exactly, or an error that says row security may hide it.
    as_role(&env, &ops, &["tenant", "migrate", &acme]).ok();
    as_role(&env, &ops, &["tenant", "status", &acme]).ok();
    let hidden = as_role(&env, &ops, &["tenant", "status", &ghost]);
    assert_ne!(hidden.code, 0, "{}", hidden.all());
    assert!(
        hidden.stderr.contains("unknown tenant") && hidden.stderr.contains("row-level security"),
        "{}",
        hidden.stderr
    );
    // `tenant list` shows what it can, and says it may not be everything.
    let list = as_role(&env, &ops, &["tenant", "list"]).ok();
    assert!(!list.stdout.contains(&ghost), "{}", list.stdout);
    assert!(
        list.stderr.contains("row-level security applies to role"),
        "{}",
        list.stderr
    );
    // The superuser running the same commands is not subject to it.
    let all = env
        .run(&["tenant", "status", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(all["tenants"].as_array().map(Vec::len), Some(3), "{all}");
}

#[test]
fn revert_run_says_row_security_may_hide_a_company_the_run_changed() {
    let env = TestEnv::new();
    let dir = env.fixture("reversible");
    let dir = dir.to_str().expect("utf-8 path").to_owned();
    // The fixture's first two migrations for the tenants, all five for the run.
    let base = env.workdir.path().join("base");
    std::fs::create_dir_all(&base).expect("base folder");
    for entry in std::fs::read_dir(&dir).expect("fixture") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        if name.starts_with("20250101000001") || name.starts_with("20250101000002") {
            std::fs::copy(&path, base.join(&name)).expect("copy");
        }
    }
    let base = base.to_str().expect("utf-8 path").to_owned();
    let (ops, [_, _, ghost]) = fleet_as_role_with(&env, &["--tenant-migrations", &base]);
    let run = as_role(
        &env,
        &ops,
        &[
            "tenant",
            "migrate",
            "--all",
            "--tenant-migrations",
            &dir,
            "--output",
            "json",
        ],
    )
    .ok()
    .json();
    let id = run["run_id"].as_i64().expect("run id").to_string();
    env.exec(
        &env.master,
        &format!(
            r#"ALTER TABLE "Company" ENABLE ROW LEVEL SECURITY;
               CREATE POLICY hide_ghost ON "Company" TO "{}" USING (slug <> '{ghost}');"#,
            ops.role
        ),
    );
    let plan = as_role(
        &env,
        &ops,
        &[
            "tenant",
            "revert",
            "--run",
            &id,
            "--dry-run",
            "--tenant-migrations",
            &dir,
            "--output",
            "json",
        ],
    );
    assert_eq!(plan.code, 1, "{}", plan.all());
    let report = plan.json();
    let skipped: Vec<&serde_json::Value> = report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter(|t| t["db_name"] == env.db("ghost").as_str())
        .collect();
    assert_eq!(skipped.len(), 1, "{report}");
    assert_eq!(skipped[0]["status"], "skipped", "{report}");
    assert!(
        skipped[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("row-level security") && e.contains(&ops.role)),
        "{report}"
    );
}

#[test]
fn row_level_security_variants_that_refuse_and_exemptions_that_work() {
    let env = TestEnv::new();
    let (ops, [_, _, ghost]) = fleet_as_role(&env);
    let role = ops.role.clone();
    let sees_all = |why: &str| {
        let run = as_role(
            &env,
            &ops,
            &["tenant", "status", "--all", "--output", "json"],
        );
        let run = run.ok();
        let json = run.json();
        assert_eq!(
            json["tenants"].as_array().map(Vec::len),
            Some(3),
            "{why}: {json}"
        );
        assert!(
            !run.stderr.contains("row-level security"),
            "{why}: {}",
            run.stderr
        );
    };
    let refused = |why: &str, table: &str| -> Run {
        let run = as_role(&env, &ops, &["tenant", "status", "--all"]);
        assert!(run.code == 2, "{why}: {}", run.all());
        assert_refused(run, &role, table)
    };
    let master = |sql: &str| env.exec(&env.master, sql);

    // A policy that hides nothing today: row security still applies, and
    // what it hides tomorrow cannot be known, so it is refused.
    master(&format!(
        r#"ALTER TABLE "Company" ENABLE ROW LEVEL SECURITY;
           CREATE POLICY shows_most ON "Company" TO "{role}" USING (slug <> 'nobody-has-this-slug')"#
    ));
    refused("a policy that hides nothing", "\"Company\"");
    // No policy at all for the role: every row hidden, --all would find
    // "no companies"; refused the same way.
    master(r#"DROP POLICY shows_most ON "Company""#);
    refused("no policy", "\"Company\"");

    // The documented exemptions. A permissive policy that shows the role
    // every row (next to one that hides a company):
    master(&format!(
        r#"CREATE POLICY hide_ghost ON "Company" TO "{role}" USING (slug <> '{ghost}');
           CREATE POLICY tenantctl_reads_all ON "Company" FOR SELECT TO "{role}" USING (true)"#
    ));
    sees_all("a USING (true) policy for the role");
    // ... unless a restrictive policy narrows it again.
    master(&format!(
        r#"CREATE POLICY only_some ON "Company" AS RESTRICTIVE TO "{role}" USING (slug <> '{ghost}')"#
    ));
    refused("a restrictive policy", "\"Company\"");
    master(r#"DROP POLICY only_some ON "Company"; DROP POLICY tenantctl_reads_all ON "Company""#);
    refused("back to hiding", "\"Company\"");

    // BYPASSRLS.
    master(&format!(r#"ALTER ROLE "{role}" BYPASSRLS"#));
    sees_all("BYPASSRLS");
    master(&format!(r#"ALTER ROLE "{role}" NOBYPASSRLS"#));
    refused("NOBYPASSRLS again", "\"Company\"");

    // The table's owner is exempt, until FORCE ROW LEVEL SECURITY.
    master(&format!(r#"ALTER TABLE "Company" OWNER TO "{role}""#));
    sees_all("the owner");
    master(r#"ALTER TABLE "Company" FORCE ROW LEVEL SECURITY"#);
    let forced = refused("the owner under FORCE", "\"Company\"");
    assert!(
        forced.stderr.contains("NO FORCE ROW LEVEL SECURITY"),
        "{}",
        forced.stderr
    );
    master(r#"ALTER TABLE "Company" NO FORCE ROW LEVEL SECURITY"#);
    sees_all("the owner without FORCE");
}

#[test]
fn a_view_as_the_companies_table_withholds_orphans_and_row_security_beneath_it_is_refused() {
    let env = TestEnv::new();
    let (ops, [_, _, ghost]) = fleet_as_role(&env);
    let role = ops.role.clone();
    let ghost_db = env.db("ghost");
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[master]\ntable = \"visible_companies\"\n",
    )
    .expect("write tenantctl.toml");
    // A view that leaves a company out by its own WHERE: the fleet it
    // defines is the operator's choice, but a database it does not name is
    // not thereby an orphan.
    env.exec(
        &env.master,
        &format!(
            r#"CREATE VIEW visible_companies AS SELECT * FROM "Company" WHERE slug <> '{ghost}';
               GRANT SELECT ON visible_companies TO "{role}""#
        ),
    );
    let status = env
        .run(&["tenant", "status", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        status["tenants"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    let doctor = env.run(&["doctor", "--output", "json"]);
    let report = doctor.json();
    assert_eq!(report["orphans_checked"], false, "{report}");
    let findings = report["findings"].as_array().expect("findings");
    assert!(
        !findings.iter().any(|f| f["kind"] == "orphan_database"),
        "{report}"
    );
    assert!(!doctor.stdout.contains(&ghost_db), "{}", doctor.stdout);
    let table = env.run(&["doctor"]);
    assert!(
        table
            .stderr
            .contains("orphan databases were not looked for"),
        "{}",
        table.stderr
    );

    // Row security beneath the view, applying to the view's owner (whose
    // rights the view reads with): refused, naming the view.
    env.exec(
        &env.master,
        &format!(
            r#"ALTER TABLE "Company" ENABLE ROW LEVEL SECURITY;
               CREATE POLICY hide_ghost ON "Company" TO "{role}" USING (slug <> '{ghost}');
               ALTER VIEW visible_companies OWNER TO "{role}""#
        ),
    );
    for args in fleet_commands() {
        let run = assert_refused(env.run(&args), &role, "\"Company\"");
        assert!(
            run.stderr.contains("visible_companies"),
            "{args:?}: {}",
            run.stderr
        );
    }
    // A security_invoker view reads with the reader's rights: the
    // superuser running tenantctl bypasses row security, the role does not.
    env.exec(
        &env.master,
        "ALTER VIEW visible_companies SET (security_invoker = on)",
    );
    env.run(&["tenant", "status", "--all"]).ok();
    assert_refused(
        as_role(&env, &ops, &["tenant", "status", "--all"]),
        &role,
        "\"Company\"",
    );
}

/// Makes a database an ordinary one again when the test ends (pass or
/// fail): the harness cannot drop a template.
struct Untemplate<'a>(&'a TestEnv, String);

impl Drop for Untemplate<'_> {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.0.exec(
                "postgres",
                &format!(
                    "ALTER DATABASE \"{}\" IS_TEMPLATE false ALLOW_CONNECTIONS true",
                    self.1
                ),
            );
        }));
    }
}

#[test]
fn doctor_reports_template_and_closed_tenant_databases_as_what_they_are() {
    let env = TestEnv::new();
    env.with_tenants(&["tmpl", "closed", "frozen", "fine"]);
    let (tmpl, closed, frozen) = (env.db("tmpl"), env.db("closed"), env.db("frozen"));
    let _guards = [&tmpl, &closed, &frozen].map(|db| Untemplate(&env, db.clone()));
    env.exec(
        "postgres",
        &format!(
            r#"ALTER DATABASE "{tmpl}" IS_TEMPLATE true;
               ALTER DATABASE "{closed}" ALLOW_CONNECTIONS false;
               ALTER DATABASE "{frozen}" IS_TEMPLATE true ALLOW_CONNECTIONS false"#
        ),
    );
    let report = env.run(&["doctor", "--output", "json"]).code(1).json();
    let kinds = |name: &str| -> Vec<String> {
        let slug = env.slug(name);
        let mut kinds: Vec<String> = report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .filter(|f| f["slug"] == slug.as_str())
            .map(|f| f["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        kinds.sort();
        kinds
    };
    assert_eq!(kinds("tmpl"), ["database_is_template"], "{report}");
    assert_eq!(
        kinds("closed"),
        ["database_not_accepting_connections"],
        "{report}"
    );
    assert_eq!(
        kinds("frozen"),
        ["database_is_template", "database_not_accepting_connections"],
        "{report}"
    );
    assert!(kinds("fine").is_empty(), "{report}");
    let detail = |name: &str, kind: &str| -> String {
        let slug = env.slug(name);
        report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| f["slug"] == slug.as_str() && f["kind"] == kind)
            .and_then(|f| f["detail"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        detail("tmpl", "database_is_template")
            .contains(&format!("ALTER DATABASE \"{tmpl}\" IS_TEMPLATE false")),
        "{report}"
    );
    assert!(
        detail("closed", "database_not_accepting_connections").contains(&format!(
            "ALTER DATABASE \"{closed}\" ALLOW_CONNECTIONS true"
        )),
        "{report}"
    );
    // The table names them too.
    let table = env.run(&["doctor"]).code(1);
    for needle in ["database_is_template", "database_not_accepting_connections"] {
        assert!(table.stdout.contains(needle), "{}", table.stdout);
    }

    // Other commands: a template still accepts connections, so it is
    // migrated and read like any tenant; a closed one fails, saying so.
    let tmpl_slug = env.slug("tmpl");
    env.run(&["tenant", "status", &tmpl_slug]).ok();
    env.run(&["tenant", "migrate", &tmpl_slug]).ok();
    env.run(&["tenant", "sql", &tmpl_slug, "-c", "SELECT 1"])
        .ok();
    let closed_run = env.run(&["tenant", "status", &env.slug("closed")]);
    assert_ne!(closed_run.code, 0, "{}", closed_run.all());
    assert!(
        closed_run
            .all()
            .contains("not currently accepting connections"),
        "{}",
        closed_run.all()
    );
}

/// Starts `n` copies of the command at once and waits for all of them.
fn at_once(env: &TestEnv, n: usize, args: &[&str]) -> Vec<Run> {
    let children: Vec<_> = (0..n).map(|_| env.spawn(args)).collect();
    children
        .into_iter()
        .map(|c| wait_with_deadline(c, std::time::Duration::from_secs(60)))
        .collect()
}

#[track_caller]
fn all_ok(runs: &[Run], what: &str) {
    for run in runs {
        assert_eq!(
            run.code, 0,
            "{what}: one of them failed\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
    }
}

fn tables(env: &TestEnv) -> Vec<String> {
    env.query(
        &env.master,
        "SELECT format('%s.%s', n.nspname, c.relname) FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname IN ('public', 'tenantctl') AND c.relkind = 'r'
          ORDER BY n.nspname COLLATE \"C\", c.relname COLLATE \"C\"",
    )
}

#[test]
fn concurrent_master_migrate_on_a_fresh_master_all_succeed() {
    for round in 0..6 {
        let env = TestEnv::new();
        let runs = at_once(&env, 5, &["master", "migrate"]);
        all_ok(&runs, &format!("round {round}"));
        assert_eq!(
            tables(&env),
            [
                "public.Company",
                "tenantctl._sqlx_migrations",
                "tenantctl.moves",
                "tenantctl.run_tenants",
                "tenantctl.runs",
            ],
            "round {round}"
        );
        assert_eq!(
            env.query(
                &env.master,
                "SELECT count(*)::text FROM tenantctl._sqlx_migrations WHERE success"
            ),
            ["2"],
            "round {round}"
        );
        // Exactly one of them created the database and applied the
        // migrations; the others found them done.
        let created = runs
            .iter()
            .filter(|r| r.stdout.contains("created master database"))
            .count();
        assert_eq!(created, 1, "round {round}");
        env.run(&["tenant", "create", &env.slug("after")]).ok();
    }
}

#[test]
fn concurrent_master_migrate_on_an_adopted_prisma_master_all_succeed() {
    for round in 0..8 {
        let env = TestEnv::new();
        env.orm_master(&["provisioning", "ACTIVE", "SUSPENDED"]);
        let before = env.query(
            &env.master,
            r#"SELECT format('%s %s %s', attname, format_type(atttypid, atttypmod), attnotnull)
                 FROM pg_attribute WHERE attrelid = '"Company"'::regclass AND attnum > 0 ORDER BY attnum"#,
        );
        let runs = at_once(&env, 6, &["master", "migrate"]);
        all_ok(&runs, &format!("round {round}"));
        assert_eq!(
            tables(&env),
            [
                "public.Company",
                "tenantctl.claims",
                "tenantctl.lifecycle",
                "tenantctl.moves",
                "tenantctl.placement",
                "tenantctl.run_tenants",
                "tenantctl.runs",
            ],
            "round {round}"
        );
        let after = env.query(
            &env.master,
            r#"SELECT format('%s %s %s', attname, format_type(atttypid, atttypmod), attnotnull)
                 FROM pg_attribute WHERE attrelid = '"Company"'::regclass AND attnum > 0 ORDER BY attnum"#,
        );
        assert_eq!(
            before, after,
            "round {round}: the application's table changed"
        );
        for run in &runs {
            assert!(run.stdout.contains("adopted"), "{}", run.stdout);
        }
        env.run(&["tenant", "create", &env.slug("after")]).ok();
    }
}

#[test]
fn concurrent_first_runs_and_master_migrates_create_the_run_tables_once() {
    for round in 0..3 {
        let env = TestEnv::new();
        env.with_tenants(&["a", "b"]);
        env.exec(
            &env.master,
            "DROP TABLE tenantctl.run_tenants, tenantctl.runs, tenantctl.moves",
        );
        let mut children: Vec<_> = (0..3)
            .map(|_| env.spawn(&["tenant", "migrate", "--all"]))
            .collect();
        children.extend((0..3).map(|_| env.spawn(&["master", "migrate"])));
        let runs: Vec<Run> = children
            .into_iter()
            .map(|c| wait_with_deadline(c, std::time::Duration::from_secs(60)))
            .collect();
        all_ok(&runs, &format!("round {round}"));
        assert_eq!(
            env.query(&env.master, "SELECT count(*)::text FROM tenantctl.runs"),
            ["3"],
            "round {round}: one record per run"
        );
        assert!(tables(&env).contains(&"tenantctl.moves".to_owned()));
    }
}

#[test]
fn a_master_migrate_that_fails_keeps_nothing_of_what_it_did() {
    // A domain named like tenantctl's last table makes its CREATE TABLE
    // fail after everything else was done: on a fresh master (the
    // companies table, its migrations) and on an adopted one (tenantctl's
    // own tables beside the application's).
    for adopted in [false, true] {
        let env = TestEnv::new();
        if adopted {
            env.orm_master(&["provisioning", "ACTIVE", "SUSPENDED"]);
        } else {
            env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
        }
        env.exec(
            &env.master,
            "CREATE SCHEMA tenantctl; CREATE DOMAIN tenantctl.run_tenants AS int",
        );
        let before = tables(&env);
        let run = env.run(&["master", "migrate"]).code(1);
        assert!(run.stderr.contains("tenantctl.run"), "{}", run.stderr);
        assert_eq!(tables(&env), before, "adopted: {adopted}");
        env.exec(&env.master, "DROP DOMAIN tenantctl.run_tenants");
        env.run(&["master", "migrate"]).ok();
        assert!(
            tables(&env).contains(&"tenantctl.run_tenants".to_owned()),
            "adopted: {adopted}"
        );
    }
}

#[test]
fn a_materialized_view_as_the_companies_table_is_not_trusted_with_orphans_either() {
    let env = TestEnv::new();
    env.with_tenants(&["kept", "left-out"]);
    let left_out = env.slug("left-out");
    // Refreshed before `left-out` existed, as far as it knows.
    env.exec(
        &env.master,
        &format!(r#"CREATE MATERIALIZED VIEW company_snapshot AS SELECT * FROM "Company" WHERE slug <> '{left_out}'"#),
    );
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[master]\ntable = \"company_snapshot\"\n",
    )
    .expect("write tenantctl.toml");
    let doctor = env.run(&["doctor", "--output", "json"]);
    let report = doctor.json();
    assert_eq!(report["orphans_checked"], false, "{report}");
    assert_eq!(report["tenants"], 1, "{report}");
    assert!(!doctor.stdout.contains(&env.db("left-out")), "{report}");
}
