//! Attacks on template databases (issue 19): what a clone must carry that
//! the template holds at the database level, who may drop a template, and
//! names a tenant must never take. Each test works on the private server
//! `eu2` with a migration set of its own (see `template.rs`).

use std::time::Duration;

use crate::servers::TwoServers;
use crate::support::wait_with_deadline;
use crate::template::{PREFIX, create, set};

fn templates(s: &TwoServers) -> Vec<String> {
    s.eu2_query(
        "postgres",
        &format!("SELECT datname::text FROM pg_database WHERE datname LIKE '{PREFIX}%' ORDER BY 1"),
    )
}

/// Every database-level attribute a clone could miss, as one sorted list.
fn attributes(s: &TwoServers, db: &str) -> Vec<String> {
    s.eu2_query(
        "postgres",
        &format!(
            "SELECT 'owner ' || pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{db}' \
             UNION ALL SELECT 'limit ' || datconnlimit FROM pg_database WHERE datname = '{db}' \
             UNION ALL SELECT 'comment ' || coalesce(shobj_description(oid, 'pg_database'), '-') \
               FROM pg_database WHERE datname = '{db}' \
             UNION ALL SELECT 'grant ' || coalesce(pg_get_userbyid(nullif(a.grantee, 0)), 'PUBLIC') \
               || ':' || a.privilege_type || ':' || a.is_grantable \
               FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = '{db}' \
             UNION ALL SELECT 'setting ' || coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '*') \
               || '=' || array_to_string(s.setconfig, ';') \
               FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
               WHERE d.datname = '{db}' \
             ORDER BY 1"
        ),
    )
}

/// Revoking CONNECT from PUBLIC (the commonest hardening) leaves PUBLIC's
/// TEMPORARY first in the template's ACL, where a replay appends it last:
/// the check compared the lists in that order and failed every create.
/// A comment and a connection limit were not replayed at all.
#[test]
fn a_clone_has_every_database_level_attribute_an_in_place_create_has() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(
        &s,
        "m",
        r#"DO $$ BEGIN
  EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', current_database());
  EXECUTE format('COMMENT ON DATABASE %I IS %L', current_database(), 'it''s a \ {db}; tenant');
  EXECUTE format('ALTER DATABASE %I CONNECTION LIMIT 7', current_database());
  EXECUTE format('ALTER DATABASE %I SET app.note TO %L', current_database(), 'a''b\c;{db}');
  EXECUTE format('ALTER DATABASE %I SET app.empty TO %L', current_database(), '');
END $$;"#,
    );
    let cloned = create(&s, &s.env.slug("c"), &dir, &[]);
    assert!(cloned["template"].is_string(), "{cloned}");
    create(&s, &s.env.slug("p"), &dir, &["--no-template"]);
    let in_place = attributes(&s, &s.env.db("p"));
    for expected in [
        "limit 7",
        "comment it's a \\ {db}; tenant",
        "grant PUBLIC:TEMPORARY:false",
    ] {
        assert!(
            in_place.iter().any(|a| a == expected),
            "{expected}: {in_place:?}"
        );
    }
    assert_eq!(attributes(&s, &s.env.db("c")), in_place);
}

/// Settings the migrations leave for later sessions reached the session
/// that stamps the clone's ledger (made after they were replayed), where
/// the in-place migrations' session never saw them: a read-only default
/// or a `search_path` without `public` failed the create.
#[test]
fn the_clones_stamp_sees_the_database_as_the_migrations_did() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(
        &s,
        "m",
        r#"CREATE SCHEMA app;
DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only TO on', current_database());
  EXECUTE format('ALTER DATABASE %I SET search_path TO app', current_database());
END $$;"#,
    );
    let slug = s.env.slug("c");
    let cloned = create(&s, &slug, &dir, &[]);
    assert!(cloned["template"].is_string(), "{cloned}");
    assert_eq!(cloned["status"], "active", "{cloned}");
    assert_eq!(attributes(&s, &s.env.db("c")), {
        create(&s, &s.env.slug("p"), &dir, &["--no-template"]);
        attributes(&s, &s.env.db("p"))
    });
    // Stamped: applied now, not when the template was built.
    let stamped = s.eu2_query(
        &s.env.db("c"),
        "SELECT count(*)::text FROM public._sqlx_migrations WHERE installed_on > now() - interval '1 minute'",
    );
    assert_eq!(stamped, vec!["7"]);
}

/// Two installations (two masters) on one server: each one's `template
/// prune` saw the other's templates as "not current" and dropped them,
/// a build in progress included, failing the other's create.
#[test]
fn prune_never_drops_another_masters_templates() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let other_master = format!("{}/{}_b", s.env.base_url, s.env.master);
    let as_other = |args: &[&str]| {
        s.env.run_with(args, |cmd| {
            s.configure(cmd);
            cmd.env("MASTER_DATABASE_URL", &other_master);
        })
    };
    as_other(&["master", "migrate"]).ok();
    let ours = set(&s, "a", "SELECT pg_sleep(3);");
    let theirs = set(&s, "b", "CREATE TABLE b (id int);");
    let stranger = format!("{PREFIX}00000000deadbeef");
    s.eu2
        .exec("postgres", &format!("CREATE DATABASE \"{stranger}\""));
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
            &ours,
        ])
        .args(["--output", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    crate::support::wait_until(Duration::from_secs(30), "the build", || {
        let building = s.eu2_query(
            "postgres",
            &format!(
                "SELECT datname::text FROM pg_stat_activity WHERE datname LIKE '{PREFIX}%\\_%' \
                 AND query LIKE '%pg_sleep(3)%'"
            ),
        );
        (!building.is_empty()).then_some(())
    });
    let pruned = as_other(&[
        "template",
        "prune",
        "--server",
        "eu2",
        "--tenant-migrations",
        &theirs,
    ])
    .ok()
    .all();
    assert!(pruned.contains("not this master's"), "{pruned}");
    let created = wait_with_deadline(child, Duration::from_secs(60))
        .ok()
        .json();
    let template = created["template"].as_str().expect("cloned").to_owned();
    // The other master's prune leaves our sealed template and a stranger's
    // database alone; our own prune drops neither of those it did not make.
    as_other(&[
        "template",
        "prune",
        "--server",
        "eu2",
        "--tenant-migrations",
        &theirs,
    ])
    .ok();
    assert_eq!(templates(&s), {
        let mut both = vec![stranger.clone(), template.clone()];
        both.sort();
        both
    });
    let mine = s
        .run(&[
            "template",
            "prune",
            "--server",
            "eu2",
            "--tenant-migrations",
            &theirs,
        ])
        .ok()
        .all();
    assert!(mine.contains("dropped"), "{mine}");
    assert_eq!(templates(&s), vec![stranger]);
}

/// A tenant's database named like a template was created, then refused by
/// every tenant command, `drop` included, and left behind for `template
/// prune` to drop as half-built: refused before anything is made.
#[test]
fn a_template_name_is_no_tenant_database_name() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(&s, "m", "SELECT 1;");
    let name = format!("{PREFIX}0123456789abcdef");
    let slug = s.env.slug("a");
    let refused = s
        .run(&[
            "tenant",
            "create",
            &slug,
            "--server",
            "eu2",
            "--tenant-migrations",
            &dir,
            "--db-name",
            &name,
        ])
        .code(2)
        .all();
    assert!(refused.contains("--db-name"), "{refused}");
    assert!(s.env.status_of(&slug).is_empty());
    assert!(templates(&s).is_empty(), "{:?}", templates(&s));
}

/// A build killed between its seal and its rename leaves a sealed
/// template under its building name: `doctor` skipped it as a template
/// (template0's kind), so nothing reported it.
#[test]
fn doctor_reports_a_template_sealed_but_never_renamed() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let left = format!("{PREFIX}0123456789abcdef_0badf00d");
    s.eu2
        .exec("postgres", &format!("CREATE DATABASE \"{left}\""));
    s.eu2.exec(
        "postgres",
        &format!("ALTER DATABASE \"{left}\" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"),
    );
    let doctor = s.run(&["doctor"]).all();
    assert!(
        doctor.contains(&left) && doctor.contains("never sealed and renamed"),
        "{doctor}"
    );
    s.eu2.exec(
        "postgres",
        &format!("ALTER DATABASE \"{left}\" WITH IS_TEMPLATE false"),
    );
}

/// `pg_database_size` needs CONNECT: a database with the template prefix
/// whose CONNECT is revoked from PUBLIC (another role's template whose
/// migrations harden it, a stranger's) made listing the templates fail,
/// and with it every create on the server by any other role.
#[test]
fn a_template_another_role_may_not_connect_to_blocks_no_create() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(&s, "m", "SELECT 1;");
    let role = format!("builder_{}", s.env.token);
    s.eu2.exec(
        "postgres",
        &format!("CREATE ROLE \"{role}\" LOGIN CREATEDB PASSWORD 'builder-pw'"),
    );
    let hardened = format!("{PREFIX}00000000deadbeef");
    s.eu2
        .exec("postgres", &format!("CREATE DATABASE \"{hardened}\""));
    s.eu2.exec(
        "postgres",
        &format!("REVOKE CONNECT ON DATABASE \"{hardened}\" FROM PUBLIC"),
    );
    let as_role = format!("postgresql://{role}:builder-pw@127.0.0.1:{}", s.eu2.port);
    let slug = s.env.slug("a");
    let run = |args: &[&str]| {
        s.env.run_with(args, |cmd| {
            cmd.env("POSTGRES_BASE_URL_EU2", &as_role);
        })
    };
    let created = run(&[
        "tenant",
        "create",
        &slug,
        "--server",
        "eu2",
        "--tenant-migrations",
        &dir,
        "--output",
        "json",
    ])
    .ok()
    .json();
    assert!(created["template"].is_string(), "{created}");
    let listed = run(&[
        "template",
        "list",
        "--server",
        "eu2",
        "--tenant-migrations",
        &dir,
        "--output",
        "json",
    ])
    .ok()
    .json();
    let sizes: Vec<(String, bool)> = listed["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or("").to_owned(),
                t["size_bytes"].is_null(),
            )
        })
        .collect();
    assert!(sizes.contains(&(hardened, true)), "{listed}");
    assert!(
        sizes
            .iter()
            .any(|(n, unknown)| n != &format!("{PREFIX}00000000deadbeef") && !unknown),
        "{listed}"
    );
}

/// Any role with CREATEDB can make a sealed template under any name. One
/// made under the name of this set's template (the role's, the set's hash)
/// was cloned into every new tenant, its objects and data with it, and its
/// owner replayed: the tenant's database was the stranger's. Now it is
/// neither cloned nor dropped, and the create says why.
#[test]
fn a_template_planted_by_another_role_is_never_cloned() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(&s, "m", "CREATE TABLE extra (id int);");
    let built = s
        .run(&[
            "template",
            "build",
            "--server",
            "eu2",
            "--tenant-migrations",
            &dir,
            "--output",
            "json",
        ])
        .ok()
        .json();
    let name = built["templates"][0]["name"]
        .as_str()
        .expect("built")
        .to_owned();
    s.eu2.exec(
        "postgres",
        &format!("ALTER DATABASE \"{name}\" WITH IS_TEMPLATE false"),
    );
    s.eu2.exec("postgres", &format!("DROP DATABASE \"{name}\""));
    // The stranger plants its own, sealed, under that name.
    let stranger = format!("stranger_{}", s.env.token);
    s.eu2.exec(
        "postgres",
        &format!("CREATE ROLE \"{stranger}\" LOGIN CREATEDB PASSWORD 'stranger-pw'"),
    );
    let as_stranger = format!(
        "postgresql://{stranger}:stranger-pw@127.0.0.1:{}",
        s.eu2.port
    );
    crate::servers::exec_url(
        &format!("{as_stranger}/postgres"),
        &format!("CREATE DATABASE \"{name}\""),
    );
    crate::servers::exec_url(
        &format!("{as_stranger}/{name}"),
        "CREATE TABLE backdoor (x int)",
    );
    crate::servers::exec_url(
        &format!("{as_stranger}/postgres"),
        &format!("ALTER DATABASE \"{name}\" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"),
    );
    let slug = s.env.slug("a");
    let refused = s
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
    assert!(
        refused.contains(&stranger) && refused.contains("neither clones nor drops"),
        "{refused}"
    );
    assert!(!s.on_eu2(&s.env.db("a")), "no database made from it");
    assert_eq!(
        templates(&s),
        vec![name.clone()],
        "the stranger's database stays"
    );
    // Gone, the create builds this role's own.
    s.eu2.exec(
        "postgres",
        &format!("ALTER DATABASE \"{name}\" WITH IS_TEMPLATE false"),
    );
    s.eu2.exec("postgres", &format!("DROP DATABASE \"{name}\""));
    let done = create(&s, &slug, &dir, &[]);
    assert_eq!(done["template"].as_str(), Some(name.as_str()), "{done}");
    let owner = s.eu2_query(
        "postgres",
        &format!(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = '{}'",
            s.env.db("a")
        ),
    );
    assert_ne!(owner, vec![stranger]);
}

/// A set whose migrations give the database another owner cannot have a
/// template (one not owned by the role that built it is never cloned):
/// the create says so and how to go on, and leaves no template.
#[test]
fn a_set_that_changes_the_databases_owner_is_refused_a_template() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let app = format!("app_{}", s.env.token);
    s.eu2.exec("postgres", &format!("CREATE ROLE \"{app}\""));
    let dir = set(
        &s,
        "m",
        &format!(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I OWNER TO %I', current_database(), '{app}'); END $$;"
        ),
    );
    let slug = s.env.slug("a");
    let refused = s
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
    assert!(refused.contains("--no-template"), "{refused}");
    assert!(templates(&s).is_empty(), "{:?}", templates(&s));
    let done = create(&s, &slug, &dir, &["--no-template"]);
    assert_eq!(done["status"], "active", "{done}");
}

/// A create that died after its clone, before the template's
/// database-level state was given to it, was resumed in place: nothing
/// left to migrate, marked `active`, its grants and settings missing.
#[test]
fn a_create_resumed_after_its_clone_gets_the_templates_database_level_state() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(
        &s,
        "m",
        r#"DO $$ BEGIN
  EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', current_database());
  EXECUTE format('ALTER DATABASE %I SET app.note TO %L', current_database(), 'x');
END $$;"#,
    );
    let built = s
        .run(&[
            "template",
            "build",
            "--server",
            "eu2",
            "--tenant-migrations",
            &dir,
            "--output",
            "json",
        ])
        .ok()
        .json();
    let template = built["templates"][0]["name"]
        .as_str()
        .expect("built")
        .to_owned();
    // What the dead create left: its row, failed, and the bare clone.
    let (slug, db) = (s.env.slug("c"), s.env.db("c"));
    s.env.exec(
        &s.env.master,
        &format!(
            r#"INSERT INTO "Company" (id, slug, name, "dbName", "dbServer", status) VALUES ('{slug}', '{slug}', '{slug}', '{db}', 'eu2', 'failed')"#
        ),
    );
    s.eu2.exec(
        "postgres",
        &format!("CREATE DATABASE \"{db}\" TEMPLATE \"{template}\""),
    );
    let resumed = create(&s, &slug, &dir, &[]);
    assert_eq!(resumed["status"], "active", "{resumed}");
    create(&s, &s.env.slug("p"), &dir, &["--no-template"]);
    let in_place = attributes(&s, &s.env.db("p"));
    assert!(
        in_place.iter().any(|a| a == "setting *=app.note=x"),
        "{in_place:?}"
    );
    assert_eq!(attributes(&s, &db), in_place);
}

/// The template's key named the role, not where its sessions put
/// unqualified names: after `ALTER ROLE ... SET search_path`, new tenants
/// were still clones of a schema built under the old path.
#[test]
fn a_roles_new_search_path_gets_a_template_of_its_own() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(
        &s,
        "m",
        "CREATE SCHEMA IF NOT EXISTS app; CREATE TABLE t (id int);",
    );
    let role = format!("builder_{}", s.env.token);
    s.eu2.exec(
        "postgres",
        &format!("CREATE ROLE \"{role}\" LOGIN CREATEDB PASSWORD 'builder-pw'"),
    );
    let as_role = format!("postgresql://{role}:builder-pw@127.0.0.1:{}", s.eu2.port);
    let create_as = |name: &str, more: &[&str]| {
        let slug = s.env.slug(name);
        let mut args = vec![
            "tenant",
            "create",
            &slug,
            "--server",
            "eu2",
            "--tenant-migrations",
            &dir,
        ];
        args.extend_from_slice(more);
        s.env
            .run_with(&args, |cmd| {
                cmd.env("POSTGRES_BASE_URL_EU2", &as_role);
            })
            .ok();
        s.eu2_query(
            &s.env.db(name),
            "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 't'",
        )
    };
    assert_eq!(create_as("a", &[]), vec!["public"]);
    s.eu2.exec(
        "postgres",
        &format!("ALTER ROLE \"{role}\" SET search_path = app, public"),
    );
    let in_place = create_as("p", &["--no-template"]);
    assert_eq!(in_place, vec!["app"]);
    assert_eq!(create_as("b", &[]), in_place);
}

/// A create waiting for another process's build of the template (as long
/// as the whole migration set takes) died on SIGTERM with nothing
/// reported, its company left `provisioning`.
#[test]
fn an_interrupt_while_waiting_for_another_build_is_reported() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(&s, "m", "SELECT pg_sleep(4);");
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
        ])
        .args(["--output", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn")
    };
    let building = spawn(&s.env.slug("a"));
    crate::support::wait_until(Duration::from_secs(30), "the build", || {
        let sleeping = s.eu2_query(
            "postgres",
            "SELECT pid::text FROM pg_stat_activity WHERE query LIKE '%pg_sleep(4)%' AND pid <> pg_backend_pid()",
        );
        (!sleeping.is_empty()).then_some(())
    });
    let slug = s.env.slug("b");
    let waiting = spawn(&slug);
    // Its row claimed, it goes on to the template and waits there.
    crate::support::wait_until(Duration::from_secs(30), "the second create's row", || {
        (!s.env.status_of(&slug).is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &waiting.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let run = wait_with_deadline(waiting, Duration::from_secs(10));
    assert_eq!(run.code, 130, "{}", run.all());
    assert_eq!(run.json()["kind"], "interrupted", "{}", run.all());
    assert_eq!(s.env.status_of(&slug), ["failed"]);
    wait_with_deadline(building, Duration::from_secs(60)).ok();
}

/// Two roles on one master (an operator's and the deploy's) each have
/// their set's template: each one's prune took the other's for a stale
/// set and dropped it (a superuser) or failed on it (anyone else).
#[test]
fn prune_leaves_another_roles_templates_alone() {
    let s = TwoServers::new();
    s.run(&["master", "migrate"]).ok();
    let dir = set(&s, "m", "SELECT 1;");
    let role = format!("builder_{}", s.env.token);
    s.eu2.exec(
        "postgres",
        &format!("CREATE ROLE \"{role}\" LOGIN CREATEDB PASSWORD 'builder-pw'"),
    );
    let as_role = format!("postgresql://{role}:builder-pw@127.0.0.1:{}", s.eu2.port);
    let run_as_role = |args: &[&str]| {
        s.env.run_with(args, |cmd| {
            cmd.env("POSTGRES_BASE_URL_EU2", &as_role);
        })
    };
    let build = [
        "template",
        "build",
        "--server",
        "eu2",
        "--tenant-migrations",
        &dir,
    ];
    s.run(&build).ok();
    run_as_role(&build).ok();
    assert_eq!(templates(&s).len(), 2);
    let prune = [
        "template",
        "prune",
        "--server",
        "eu2",
        "--tenant-migrations",
        &dir,
    ];
    let by_role = run_as_role(&prune).ok().all();
    assert!(by_role.contains("another role's"), "{by_role}");
    let by_superuser = s.run(&prune).ok().all();
    assert!(by_superuser.contains("another role's"), "{by_superuser}");
    assert_eq!(templates(&s).len(), 2);
}
