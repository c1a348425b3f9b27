//! Template databases (issue 19): `tenant create` clones a per-server
//! template named by its migration set's hash. Every test here works on the
//! private server `eu2`, whose templates no other test shares, with a
//! migration set of its own (a file carrying the test's token), so what it
//! counts and prunes is its own.

use std::time::Duration;

use crate::servers::TwoServers;
use crate::support::{find, wait_with_deadline};

pub(crate) const PREFIX: &str = "tenantctl_template_";

/// The test's migration set: the embedded schema plus `sql` in a file of
/// its own, with the token in it, so the set (and its hash) is the test's.
pub(crate) fn set(s: &TwoServers, folder: &str, sql: &str) -> String {
    s.env.tenant_schema_plus(
        folder,
        "29990101000001_test_extra.sql",
        &format!("-- {}\n{sql}", s.env.token),
    )
}

fn templates(s: &TwoServers) -> Vec<String> {
    s.eu2_query(
        "postgres",
        &format!(
            "SELECT datname || ':' || datistemplate || ':' || datallowconn FROM pg_database \
             WHERE datname LIKE '{PREFIX}%' ORDER BY datname"
        ),
    )
}

pub(crate) fn create(s: &TwoServers, slug: &str, dir: &str, more: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "tenant",
        "create",
        slug,
        "--server",
        "eu2",
        "--tenant-migrations",
        dir,
        "--output",
        "json",
    ];
    args.extend_from_slice(more);
    s.run(&args).ok().json()
}

/// The ledger as sqlx-cli and `status` read it, times aside.
fn ledger(s: &TwoServers, db: &str) -> Vec<String> {
    s.eu2_query(
        db,
        "SELECT version || ' ' || description || ' ' || success || ' ' || encode(checksum, 'hex') \
         FROM _sqlx_migrations ORDER BY version",
    )
}

#[test]
fn two_concurrent_creates_build_the_template_once() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    // Slow enough that the two creates meet while it is built; the row it
    // writes says which build a database came from.
    let dir = set(
        &s,
        "m",
        "CREATE TABLE built (at timestamptz); INSERT INTO built SELECT clock_timestamp() FROM pg_sleep(1);",
    );
    let (a, b) = (s.env.slug("a"), s.env.slug("b"));
    let spawn = |slug: &str| {
        let mut cmd = s.env.cmd();
        s.configure(&mut cmd);
        cmd.args([
            "tenant",
            "create",
            slug,
            "--server",
            "eu2",
            "--tenant-migrations",
            &dir,
            "--output",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn")
    };
    let (first, second) = (spawn(&a), spawn(&b));
    let first = wait_with_deadline(first, Duration::from_secs(60))
        .ok()
        .json();
    let second = wait_with_deadline(second, Duration::from_secs(60))
        .ok()
        .json();
    let template = first["template"].as_str().expect("cloned").to_owned();
    assert!(template.starts_with(PREFIX), "{first}");
    assert_eq!(second["template"], first["template"]);
    assert_eq!(templates(&s), vec![format!("{template}:true:false")]);
    let built_a = s.eu2_query(&s.env.db("a"), "SELECT at::text FROM built");
    let built_b = s.eu2_query(&s.env.db("b"), "SELECT at::text FROM built");
    assert_eq!(built_a.len(), 1);
    assert_eq!(built_a, built_b, "two builds of one template");
}

#[test]
fn a_clone_records_its_migrations_as_a_tenant_migrated_in_place() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(&s, "m", "CREATE TABLE extra (id int);");
    let before = s.eu2_query("postgres", "SELECT now()::text");
    let cloned = create(&s, &s.env.slug("c"), &dir, &[]);
    let in_place = create(&s, &s.env.slug("p"), &dir, &["--no-template"]);
    assert!(cloned["template"].is_string(), "{cloned}");
    assert!(in_place.get("template").is_none(), "{in_place}");
    assert_eq!(cloned["applied"], in_place["applied"]);
    let (c, p) = (s.env.db("c"), s.env.db("p"));
    assert_eq!(ledger(&s, &c), ledger(&s, &p));
    assert_eq!(ledger(&s, &c).len(), 7);
    // Applied when the tenant was made, not when its template was.
    let stale = s.eu2_query(
        &c,
        &format!(
            "SELECT version::text FROM _sqlx_migrations WHERE installed_on < '{}'",
            before[0]
        ),
    );
    assert!(stale.is_empty(), "installed before the create: {stale:?}");
    // What status, drift and sqlx-cli's ledger see: no difference.
    let status = s
        .run(&[
            "tenant",
            "status",
            "--all",
            "--tenant-migrations",
            &dir,
            "--output",
            "json",
        ])
        .ok()
        .json();
    for slug in [s.env.slug("c"), s.env.slug("p")] {
        assert_eq!(find(&status, &slug)["pending"], 0, "{status}");
    }
    s.run(&["tenant", "drift", "--all", "--tenant-migrations", &dir])
        .ok();
}

#[test]
fn a_clone_gets_the_templates_database_level_grants_and_settings() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let role = format!("reader_{}", s.env.token);
    s.eu2.exec("postgres", &format!("CREATE ROLE \"{role}\""));
    // What a migration may do to its own database, which a clone does
    // not copy: grants, revokes, settings for all and for one role.
    let dir = set(
        &s,
        "m",
        &format!(
            r#"DO $$ BEGIN
  EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I WITH GRANT OPTION', current_database(), '{role}');
  EXECUTE format('ALTER DATABASE %I SET work_mem = %L', current_database(), '3MB');
  EXECUTE format('ALTER DATABASE %I SET search_path = "$user", public, %I', current_database(), 'odd, "x"');
  EXECUTE format('ALTER ROLE %I IN DATABASE %I SET statement_timeout = %L', '{role}', current_database(), '7s');
END $$;"#
        ),
    );
    create(&s, &s.env.slug("c"), &dir, &[]);
    create(&s, &s.env.slug("p"), &dir, &["--no-template"]);
    let level = |db: &str| {
        s.eu2_query(
            "postgres",
            &format!(
                "SELECT coalesce(pg_get_userbyid(a.grantee), 'PUBLIC') || ':' || a.privilege_type || ':' || a.is_grantable \
                 FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = '{db}' \
                 UNION ALL SELECT coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '*') || '=' || array_to_string(s.setconfig, ';') \
                 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{db}' \
                 ORDER BY 1"
            ),
        )
    };
    let (c, p) = (s.env.db("c"), s.env.db("p"));
    let in_place = level(&p);
    assert!(
        in_place
            .iter()
            .any(|l| l.contains(&role) && l.contains("CONNECT:true")),
        "{in_place:?}"
    );
    assert!(
        in_place.iter().any(|l| l.contains("work_mem=3MB")),
        "{in_place:?}"
    );
    assert_eq!(level(&c), in_place);
    // PUBLIC lost CONNECT on the clone too.
    let public = s.eu2_query(
        "postgres",
        &format!("SELECT has_database_privilege('public', '{c}', 'CONNECT')::text"),
    );
    assert_eq!(public, vec!["false"]);
    // The list setting survived as a list, odd name included.
    let path = s.eu2_query(&c, "SELECT current_setting('search_path')");
    assert_eq!(path, vec![r#""$user", public, "odd, ""x""""#]);
}

#[test]
fn a_template_takes_no_connections_and_is_no_tenant() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(&s, "m", "CREATE TABLE extra (id int);");
    let created = create(&s, &s.env.slug("a"), &dir, &[]);
    let template = created["template"].as_str().expect("cloned").to_owned();
    let refused = crate::support::block_on(async {
        use sqlx::Connection as _;
        sqlx::postgres::PgConnection::connect(&s.eu2_url(&template))
            .await
            .err()
            .map(|e| e.to_string())
    });
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("not currently accepting connections")),
        "{refused:?}"
    );
    // A company row naming the template gets no tenant command, drop
    // included: the template stays.
    let slug = s.env.slug("fake");
    s.env.exec(
        &s.env.master,
        &format!(
            r#"INSERT INTO "Company" (id, slug, name, "dbName", "dbServer", status) VALUES ('{slug}', '{slug}', '{slug}', '{template}', 'eu2', 'active')"#
        ),
    );
    let status = s
        .run_with(&["tenant", "status", &slug], |_| {})
        .code(1)
        .all();
    assert!(status.contains("template databases"), "{status}");
    let dropped = s.run(&["tenant", "drop", &slug, "--yes"]);
    assert_ne!(dropped.code, 0, "{}", dropped.all());
    assert_eq!(templates(&s), vec![format!("{template}:true:false")]);
}

#[test]
fn a_changed_set_gets_a_template_of_its_own_and_prune_drops_the_old() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let old = set(&s, "old", "CREATE TABLE extra (id int);");
    let new = set(&s, "new", "CREATE TABLE extra (id int, note text);");
    let a = create(&s, &s.env.slug("a"), &old, &[]);
    let b = create(&s, &s.env.slug("b"), &new, &[]);
    let (old_t, new_t) = (
        a["template"].as_str().expect("cloned").to_owned(),
        b["template"].as_str().expect("cloned").to_owned(),
    );
    assert_ne!(old_t, new_t);
    assert_eq!(templates(&s).len(), 2);
    let listed = s
        .run(&[
            "template",
            "list",
            "--server",
            "eu2",
            "--tenant-migrations",
            &new,
            "--output",
            "json",
        ])
        .ok()
        .json();
    let current: Vec<(String, bool)> = listed["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().expect("name").to_owned(),
                t["current"] == true,
            )
        })
        .collect();
    assert!(current.contains(&(new_t.clone(), true)), "{listed}");
    assert!(current.contains(&(old_t.clone(), false)), "{listed}");
    // A dry run drops nothing.
    let dry = s
        .run(&[
            "template",
            "prune",
            "--server",
            "eu2",
            "--tenant-migrations",
            &new,
            "--dry-run",
        ])
        .ok()
        .all();
    assert!(dry.contains("would drop"), "{dry}");
    assert_eq!(templates(&s).len(), 2);
    s.run(&[
        "template",
        "prune",
        "--server",
        "eu2",
        "--tenant-migrations",
        &new,
    ])
    .ok();
    assert_eq!(templates(&s), vec![format!("{new_t}:true:false")]);
    // The tenants themselves are untouched, and the old set still creates
    // (building its template again).
    assert!(s.on_eu2(&s.env.db("a")));
    let c = create(&s, &s.env.slug("c"), &old, &[]);
    assert_eq!(c["template"].as_str(), Some(old_t.as_str()));
}

#[test]
fn a_half_built_template_is_reported_rebuilt_and_pruned() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(&s, "m", "CREATE TABLE extra (id int);");
    let a = create(&s, &s.env.slug("a"), &dir, &[]);
    let template = a["template"].as_str().expect("cloned").to_owned();
    // As a build that died would leave it: unsealed, with something in it
    // the migrations never made.
    s.eu2.exec(
        "postgres",
        &format!("ALTER DATABASE \"{template}\" WITH IS_TEMPLATE false ALLOW_CONNECTIONS true"),
    );
    s.eu2_exec(&template, "CREATE TABLE leftover (id int)");
    let doctor = s.run(&["doctor", "--tenant-migrations", &dir]).all();
    assert!(
        doctor.contains(&template) && doctor.contains("never sealed"),
        "{doctor}"
    );
    let listed = s
        .run(&[
            "template",
            "list",
            "--server",
            "eu2",
            "--tenant-migrations",
            &dir,
        ])
        .ok()
        .all();
    assert!(listed.contains("half-built"), "{listed}");
    // The next create builds it again rather than clone what it holds.
    create(&s, &s.env.slug("b"), &dir, &[]);
    let leftover = s.eu2_query(&s.env.db("b"), "SELECT to_regclass('leftover')::text");
    assert_eq!(leftover, vec![""]);
    assert_eq!(templates(&s), vec![format!("{template}:true:false")]);
    // A database named like a template that this master's builds did not
    // make (another installation's, a stranger's) is not pruned.
    let stray = format!("{PREFIX}00000000deadbeef");
    s.eu2
        .exec("postgres", &format!("CREATE DATABASE \"{stray}\""));
    let pruned = s
        .run(&[
            "template",
            "prune",
            "--server",
            "eu2",
            "--tenant-migrations",
            &dir,
        ])
        .ok()
        .all();
    assert!(pruned.contains("not this master's"), "{pruned}");
    assert_eq!(
        templates(&s),
        vec![
            format!("{stray}:false:true"),
            format!("{template}:true:false")
        ]
    );
}

#[test]
fn a_migration_that_fails_leaves_no_template_and_the_create_resumable() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(&s, "m", "SELECT 1/0;");
    let slug = s.env.slug("a");
    let failed = s
        .run(&[
            "tenant",
            "create",
            &slug,
            "--server",
            "eu2",
            "--tenant-migrations",
            &dir,
        ])
        .code(1)
        .all();
    assert!(failed.contains("division by zero"), "{failed}");
    assert!(templates(&s).is_empty(), "{:?}", templates(&s));
    // Fixed, the same create finishes the job.
    std::fs::write(
        std::path::Path::new(&dir).join("29990101000001_test_extra.sql"),
        format!("-- {}\nSELECT 1;", s.env.token),
    )
    .expect("fix the migration");
    let done = create(&s, &slug, &dir, &[]);
    assert_eq!(done["status"], "active", "{done}");
    assert_eq!(ledger(&s, &s.env.db("a")).len(), 7);
}

#[test]
fn an_interrupt_during_a_build_drops_the_template_and_ends_its_migration() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(&s, "m", "SELECT pg_sleep(60);");
    let slug = s.env.slug("a");
    let mut cmd = s.env.cmd();
    s.configure(&mut cmd);
    let child = cmd
        .args([
            "tenant",
            "create",
            &slug,
            "--server",
            "eu2",
            "--tenant-migrations",
            &dir,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let sleeping = || {
        s.eu2_query(
            "postgres",
            &format!(
                "SELECT datname::text FROM pg_stat_activity WHERE datname LIKE '{PREFIX}%' \
                 AND query LIKE '%pg_sleep(60)%'"
            ),
        )
    };
    crate::support::wait_until(Duration::from_secs(30), "the build's migration", || {
        (!sleeping().is_empty()).then_some(())
    });
    for _ in 0..2 {
        nix_kill(child.id());
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = wait_with_deadline(child, Duration::from_secs(30));
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(templates(&s).is_empty(), "{:?}", templates(&s));
    assert!(
        sleeping().is_empty(),
        "the migration runs on: {:?}",
        sleeping()
    );
    assert_eq!(s.env.status_of(&slug), ["failed"]);
    // Fixed, the same create finishes the job.
    std::fs::write(
        std::path::Path::new(&dir).join("29990101000001_test_extra.sql"),
        format!("-- {}\nSELECT 1;", s.env.token),
    )
    .expect("fix the migration");
    let done = create(&s, &slug, &dir, &[]);
    assert_eq!(done["status"], "active", "{done}");
}

fn nix_kill(pid: u32) {
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
}

#[test]
fn a_tenant_may_not_be_named_like_tenantctls_own_databases() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    for name in [
        format!("{PREFIX}00000000deadbeef"),
        format!("{PREFIX}x_{}", s.env.token),
        format!("tenantctl_drift_1_{}", s.env.token),
    ] {
        let slug = s.env.slug("a");
        let refused = s
            .run(&[
                "tenant",
                "create",
                &slug,
                "--db-name",
                &name,
                "--server",
                "eu2",
            ])
            .code(2);
        assert!(
            refused.stderr.contains("tenantctl's own"),
            "{}",
            refused.stderr
        );
        assert!(!s.on_eu2(&name));
        let rows = s.env.query(
            &s.env.master,
            &format!(r#"SELECT count(*)::text FROM "Company" WHERE slug = '{slug}'"#),
        );
        assert_eq!(rows, ["0"]);
    }
}
