//! `tenant drift` attacked as a hostile user would: settings a database
//! carries that change how the catalog is printed, drift the catalog keeps
//! where the first read did not look, names and values built to mislead the
//! report or break a repair, and an interrupt while the reference is built.

use crate::support::TestEnv;

/// How many objects the reference the migrations in `dir` make has, as the
/// first line of the report says it (`(147 objects)`): the expected reports
/// name it `({n} objects)`, so they do not change with each kind of object
/// drift learns to compare.
fn objects(env: &TestEnv, dir: &str) -> String {
    let run = env.run(&["tenant", "drift", "--all", "--tenant-migrations", dir]);
    let first = run.stdout.lines().next().unwrap_or_default().to_owned();
    let start = first
        .rfind(" (")
        .expect("the reference line ends with its object count");
    first[start + 1..].to_owned()
}

/// A migration whose defaults print otherwise under another IntervalStyle,
/// bytea_output or standard_conforming_strings.
const CONSTANTS: &str = r"CREATE TABLE spans (
    id integer PRIMARY KEY,
    span interval DEFAULT '1 day 02:00:00',
    blob bytea DEFAULT '\x0102',
    note text DEFAULT E'a\\b'
);
";

#[test]
fn database_settings_that_change_how_the_catalog_prints_are_not_drift_of_every_object() {
    let env = TestEnv::new();
    let dir = env.tenant_schema_plus("constants", "20990101000001_constants.sql", CONSTANTS);
    env.tenants_with(std::path::Path::new(&dir), &["clean", "settings"]);
    let db = env.db("settings");
    // Each is a real difference, reported once as a database setting; none
    // may make the same schema read as another: quote_all_identifiers used
    // to make `public` and `plpgsql` read as `"public"` and `"plpgsql"`,
    // the whole schema missing and extra, with `DROP EXTENSION "plpgsql"`
    // and `DROP SCHEMA "public"` as its repairs.
    for setting in [
        "quote_all_identifiers = on",
        "IntervalStyle = iso_8601",
        "bytea_output = escape",
        "standard_conforming_strings = off",
    ] {
        env.exec(
            "postgres",
            &format!("ALTER DATABASE \"{db}\" SET {setting}"),
        );
    }
    let n = objects(&env, &dir);
    env.expect(&["tenant", "drift", "--all", "--tenant-migrations", &dir])
        .with(n, "({n} objects)")
        .stdout(
            "
            reference: the migrations (built in a scratch database on server default) ({n} objects)
            1 match the reference; 1 differ; 0 pending; 0 not read
            database setting IntervalStyle not in the reference (1 tenant: settings-{T})
            database setting bytea_output not in the reference (1 tenant: settings-{T})
            database setting quote_all_identifiers not in the reference (1 tenant: settings-{T})
            database setting standard_conforming_strings not in the reference (1 tenant: settings-{T})
            selected 2 of the master's 2 companies: --all, status active (by default)
            ",
        )
        .status(1)
        .run();
}

/// A migration that sleeps only in drift's scratch database: tenants are
/// created at once, the reference takes seconds to build.
const SLOW_IN_SCRATCH: &str = r"DO $$
BEGIN
    IF current_database() LIKE 'tenantctl\_drift\_%' THEN
        PERFORM pg_sleep(4);
    END IF;
END
$$;
";

#[test]
fn an_interrupt_while_the_reference_is_built_still_prints_the_report_and_drops_the_scratch_database()
 {
    let env = TestEnv::new();
    let dir = env.tenant_schema_plus("slow", "20990101000001_slow.sql", SLOW_IN_SCRATCH);
    let slugs = env.tenants_with(std::path::Path::new(&dir), &["one", "two"]);
    let scratch = || {
        env.query(
            "postgres",
            "SELECT datname::text FROM pg_stat_activity WHERE datname LIKE 'tenantctl\\_drift\\_%' AND query LIKE '%pg_sleep%'",
        )
    };
    for output in ["json", "table"] {
        let child = env.spawn(&[
            "tenant",
            "drift",
            "--all",
            "--tenant-migrations",
            &dir,
            "--output",
            output,
        ]);
        let started = std::time::Instant::now();
        let building = loop {
            let found = scratch();
            if !found.is_empty() || started.elapsed() > std::time::Duration::from_secs(20) {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert_eq!(building.len(), 1, "the reference is being built");
        let status = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let run = crate::support::Run::from(child.wait_with_output().expect("wait"));
        assert_eq!(run.code, 130, "{}{}", run.stdout, run.stderr);
        if output == "json" {
            let report = run.json();
            assert_eq!(report["interrupted"], true, "{report}");
            for slug in &slugs {
                let tenant = crate::support::find(&report, slug);
                assert_eq!(tenant["status"], "skipped", "{report}");
                assert_eq!(tenant["drift"], serde_json::Value::Null, "{report}");
            }
            assert_eq!(report["drift"]["matched"], 0, "{report}");
        } else {
            assert!(
                run.stdout.contains(
                    "0 match the reference; 0 differ; 0 pending; 2 not read (interrupted)"
                ),
                "{}",
                run.stdout
            );
        }
        assert!(
            !env.database_exists(&building[0]),
            "{} was left behind",
            building[0]
        );
    }
}

/// A function with an argument default, beside the embedded schema.
const GREET: &str = r"CREATE FUNCTION greet(name text DEFAULT 'world') RETURNS text
    LANGUAGE sql AS $$ SELECT 'hi ' || name $$;
";

/// Drops the cluster-wide role a test made, however the test ends
/// (declared before the test's `TestEnv`, so its databases, where the role
/// may still hold a grant, are gone by then); never panics.
struct Role(String);

impl Drop for Role {
    fn drop(&mut self) {
        let url = format!("{}/postgres", crate::support::base_url());
        let sql = format!("DROP ROLE IF EXISTS \"{}\"", self.0);
        crate::support::block_on(async {
            use sqlx::{Connection as _, Executor as _};
            if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                let _ = conn.execute(sql.as_str()).await;
                let _ = conn.close().await;
            }
        });
    }
}

#[test]
fn drift_the_first_read_missed_and_values_that_read_alike_are_told_apart() {
    let _role = Role("select".to_owned());
    let env = TestEnv::new();
    let dir = env.tenant_schema_plus("greet", "20990101000001_greet.sql", GREET);
    let names = [
        "clean", "fk-off", "args", "newline", "space", "role", "hidden", "member",
    ];
    env.tenants_with(std::path::Path::new(&dir), &names);
    // DISABLE TRIGGER ALL disables the triggers that enforce goals' foreign
    // key: rows pointing nowhere go in, and the catalog read skipped them.
    env.exec(&env.db("fk-off"), "ALTER TABLE goals DISABLE TRIGGER ALL");
    // The signature (argument types) is the same; what a caller gets when
    // it leaves the argument out is not.
    env.exec(
        &env.db("args"),
        "CREATE OR REPLACE FUNCTION greet(name text DEFAULT 'there') RETURNS text LANGUAGE sql AS $$ SELECT 'hi ' || name $$",
    );
    // Two defaults that differ by a newline for a space.
    env.exec(
        &env.db("newline"),
        "ALTER TABLE users ALTER COLUMN email SET DEFAULT E'a\\nb'",
    );
    env.exec(
        &env.db("space"),
        "ALTER TABLE users ALTER COLUMN email SET DEFAULT 'a b'",
    );
    // A zero-width space: shown escaped, or 'x\u{200b}' reads as 'x'. Its
    // UTF-8 bytes, not U&'\200B', which a SQL_ASCII cluster (CI's, with no
    // locale set) refuses.
    env.exec(
        &env.db("hidden"),
        "ALTER TABLE users ALTER COLUMN name SET DEFAULT E'x\\xe2\\x80\\x8b'",
    );
    // A table made a member of an extension (ALTER EXTENSION ... ADD, which
    // the owner of a trusted extension like pgcrypto may do): an extension's
    // objects are not compared one by one, so it used to vanish from the
    // comparison.
    env.exec(
        &env.db("member"),
        "CREATE TABLE hidden_t (id int); ALTER EXTENSION plpgsql ADD TABLE hidden_t",
    );
    // A role named like a reserved word: its REVOKE must parse.
    env.exec(
        "postgres",
        "DO $$ BEGIN CREATE ROLE \"select\"; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    );
    env.exec(&env.db("role"), "GRANT SELECT ON settings TO \"select\"");
    let n = objects(&env, &dir);
    env.expect(&["tenant", "drift", "--all", "--tenant-migrations", &dir])
        .with(n, "({n} objects)")
        .stdout(
            r#"
            reference: the migrations (built in a scratch database on server default) ({n} objects)
            1 match the reference; 7 differ; 0 pending; 0 not read
            column users.email default changed: none (reference) vs 'a\nb'::text (1 tenant: newline-{T})
            column users.email default changed: none (reference) vs 'a b'::text (1 tenant: space-{T})
            column users.name default changed: none (reference) vs 'x\u{200b}'::text (1 tenant: hidden-{T})
            constraint "goals_siteId_fkey" on goals triggers changed: enabled (reference) vs disabled (1 tenant: fk-off-{T})
            extension member plpgsql: table public.hidden_t not in the reference (1 tenant: member-{T})
            function greet(name text) arguments changed: name text DEFAULT 'world'::text (reference) vs name text DEFAULT 'there'::text (1 tenant: args-{T})
            grant SELECT on table settings to "select" not in the reference (1 tenant: role-{T})
            selected 8 of the master's 8 companies: --all, status active (by default)
            "#,
        )
        .status(1)
        .run();

    // The REVOKE runs, and the tenant then matches.
    let role = env.slug("role");
    let sql = env
        .expect(&["tenant", "drift", &role, "--sql", "--tenant-migrations", &dir])
        .stdout(
            r#"
            -- tenantctl tenant drift: repairs towards the migrations (built in a scratch database on server default); review each block, then run it with `tenantctl tenant sql <tenant> -f FILE`

            -- tenant role-{T} (database tenant_role_{T} on server default): 1 difference(s)
            SET search_path = ''; SET check_function_bodies = false; SET standard_conforming_strings = on;
            -- grant SELECT on table settings to "select" not in the reference
            REVOKE SELECT ON TABLE public.settings FROM "select";
            "#,
        )
        .status(1)
        .run();
    let file = env.workdir.path().join("repair.sql");
    std::fs::write(&file, sql.stdout).expect("write the script");
    let file = file.to_str().expect("utf-8 path");
    let ran = env.run(&["tenant", "sql", &role, "-f", file]);
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    let after = env.run(&["tenant", "drift", &role, "--tenant-migrations", &dir]);
    assert_eq!(after.code, 0, "{}{}", after.stdout, after.stderr);
}

#[test]
fn a_repair_names_the_objects_the_reference_meant_whatever_the_tenants_search_path() {
    let env = TestEnv::new();
    env.with_tenants(&["shadowed"]);
    let (slug, db) = (env.slug("shadowed"), env.db("shadowed"));
    // Another `sites` ahead of public's on the database's search_path, and
    // the foreign key to public's gone.
    env.exec(
        &db,
        r#"CREATE SCHEMA shadow; CREATE TABLE shadow.sites (id uuid PRIMARY KEY);
           ALTER TABLE goals DROP CONSTRAINT "goals_siteId_fkey";"#,
    );
    env.exec(
        "postgres",
        &format!("ALTER DATABASE \"{db}\" SET search_path = shadow, public"),
    );
    let script = env.run(&["tenant", "drift", &slug, "--sql"]).code(1).stdout;
    // What an operator keeps of the block: the settings line and the one
    // repair wanted (dropping the schema is another decision).
    let kept: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("SET ") || l.contains("ADD CONSTRAINT"))
        .collect();
    assert_eq!(
        kept,
        [
            "SET search_path = ''; SET check_function_bodies = false; SET standard_conforming_strings = on;",
            r#"ALTER TABLE public.goals ADD CONSTRAINT "goals_siteId_fkey" FOREIGN KEY ("siteId") REFERENCES public.sites(id) ON DELETE CASCADE;"#,
        ],
        "{script}"
    );
    let file = env.workdir.path().join("repair.sql");
    std::fs::write(&file, kept.join("\n")).expect("write the script");
    env.run(&["tenant", "sql", &slug, "-f", file.to_str().expect("utf-8")])
        .ok();
    // public.sites, not shadow.sites: the key is the reference's again.
    assert_eq!(
        env.query(
            &db,
            "SELECT c.confrelid::regclass::text FROM pg_constraint c WHERE c.conname = 'goals_siteId_fkey'",
        ),
        ["public.sites"]
    );
    let after = env.run(&["tenant", "drift", &slug]).code(1).stdout;
    assert!(!after.contains("goals_siteId_fkey"), "{after}");
}

#[test]
fn a_server_the_reference_cannot_be_built_on_costs_its_own_tenants_not_the_report() {
    let env = TestEnv::new();
    env.with_tenants(&["here"]);
    // `there` on a second server name (the same server while it is made).
    let there = env.slug("there");
    env.run_with(&["tenant", "create", &there, "--server", "eu2"], |c| {
        c.env("POSTGRES_BASE_URL_EU2", &env.base_url);
    })
    .ok();
    // Then eu2 is down: nothing listens on its port.
    let mut down = url::Url::parse(&env.base_url).expect("base URL");
    down.set_host(Some("127.0.0.1")).expect("host");
    down.set_port(Some(crate::support::server::free_port()))
        .expect("port");
    let run = env.run_with(&["tenant", "drift", "--all", "--output", "json"], |c| {
        c.env("POSTGRES_BASE_URL_EU2", down.as_str());
    });
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let report = run.json();
    let here = crate::support::find(&report, &env.slug("here"));
    assert_eq!(here["drift"], "match", "{report}");
    let there = crate::support::find(&report, &there);
    assert_eq!(there["status"], "failed", "{report}");
    assert_eq!(there["drift"], serde_json::Value::Null, "{report}");
    assert_eq!(report["drift"]["matched"], 1, "{report}");
    let servers = report["drift"]["reference"]["servers"]
        .as_array()
        .expect("servers");
    assert_eq!(servers.len(), 1, "{report}");
    assert_eq!(servers[0]["server"], "default", "{report}");
}

/// What a hostile owner of a tenant database plants: a function and an
/// operator that shadow PostgreSQL's own for the statements tenantctl
/// sends (an exact match for `oid >= 16384`, where the built-in needs a
/// cast; `encode(bytea, text)` ahead of pg_catalog on the search_path),
/// each counting its calls and trying to make its owner a superuser.
fn plant(env: &TestEnv, db: &str, role: &str) {
    env.exec(
        "postgres",
        &format!("CREATE ROLE \"{role}\" LOGIN; ALTER DATABASE \"{db}\" OWNER TO \"{role}\""),
    );
    env.exec(
        db,
        &format!(
            r#"GRANT CREATE ON SCHEMA public TO "{role}";
            SET ROLE "{role}";
            CREATE SEQUENCE public.calls;
            CREATE FUNCTION public.escalate() RETURNS void LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_catalog.nextval('public.calls');
                IF pg_catalog.current_setting('is_superuser') = 'on' THEN
                    EXECUTE 'ALTER ROLE "{role}" SUPERUSER';
                END IF;
            END $$;
            CREATE FUNCTION public.oid_ge_int(oid, integer) RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN PERFORM public.escalate(); RETURN $1::int8 >= $2; END $$;
            CREATE OPERATOR public.>= (LEFTARG = oid, RIGHTARG = integer, FUNCTION = public.oid_ge_int);
            CREATE FUNCTION public.encode(bytea, text) RETURNS text LANGUAGE plpgsql AS $$
            BEGIN PERFORM public.escalate(); RETURN pg_catalog.encode($1, $2); END $$;
            ALTER DATABASE "{db}" SET search_path = public, pg_catalog;
            RESET ROLE;"#
        ),
    );
}

#[test]
fn a_tenant_databases_owner_cannot_run_code_as_tenantctl_through_drift() {
    // Declared before the environment, so it goes after the databases.
    let role = Role(format!(
        "hostile_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    let env = TestEnv::new();
    env.with_tenants(&["hostile"]);
    let (slug, db) = (env.slug("hostile"), env.db("hostile"));
    plant(&env, &db, &role.0);
    // The report is read (what was planted is drift), and nothing planted
    // ran: not in the migrations check, not in the catalog read.
    let run = env.run(&["tenant", "drift", &slug, "--output", "json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(crate::support::find(&report, &slug)["drift"], "differs");
    assert_eq!(
        env.query(&db, "SELECT is_called::text FROM public.calls"),
        ["false"],
        "a planted function ran"
    );
    assert_eq!(
        env.query(
            "postgres",
            &format!(
                "SELECT rolsuper::text FROM pg_roles WHERE rolname = '{}'",
                role.0
            )
        ),
        ["false"]
    );
}

#[test]
fn a_scratch_build_that_fails_with_the_password_in_its_error_shows_it_masked() {
    let env = TestEnv::new();
    env.with_tenants(&["one"]);
    let password = crate::support::password();
    // A migration whose error quotes a connection string, as a failing
    // dblink or a RAISE of a setting would.
    let boom = format!(
        "DO $$ BEGIN RAISE EXCEPTION '%', 'cannot reach postgresql://app:{}@db/x'; END $$;\n",
        password.replace('\'', "''")
    );
    let dir = env.tenant_schema_plus("boom", "20990101000001_boom.sql", &boom);
    for output in ["table", "json"] {
        let run = env.run(&[
            "tenant",
            "drift",
            "--all",
            "--tenant-migrations",
            &dir,
            "--output",
            output,
        ]);
        assert_eq!(run.code, 1, "{}", run.all());
        assert!(!run.all().contains(&password), "{}", run.all());
        assert!(
            run.all().contains("cannot reach postgresql://app:***@db/x"),
            "{}",
            run.all()
        );
    }
}
