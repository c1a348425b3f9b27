//! `tenant drift` on an adopted Prisma master's tenants: the reference is
//! the Prisma migrations applied natively in a scratch database, and a
//! tenant the real `prisma migrate deploy` migrated compares equal to it;
//! drift planted in one tenant is found on that tenant only; a tenant with
//! a Prisma migration pending is not compared; a non-public schema
//! (Prisma's `?schema=`) works the same; and with an application command
//! as the migrator, only `--against` gives a reference.

use std::path::Path;

use crate::support::TestEnv;
use crate::support::prisma::{add_migration, copy_schema, example, kit, migrator_toml, prisma};

const REFERENCE: &str = "reference: the migrations (built in a scratch database on server default)";
const SELECTED_5: &str =
    "selected 5 of the master's 5 companies: --all, status active (by default)";

/// The kit's Prisma master, set up by the application's own `migrate
/// deploy`, then adopted by tenantctl.
fn kit_master(env: &TestEnv) {
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    prisma(env, &example("master"), &env.master, &["migrate", "deploy"]).ok();
    env.run(&["master", "migrate"]).ok();
}

/// The real Prisma CLI as the command that migrates: `prisma migrate
/// deploy` on the schema folder, with the tenant's `DATABASE_URL`.
fn deploy_command(schema: &Path) -> String {
    format!(
        "command = [\"bash\", \"{}\", \"{}\", \"migrate\", \"deploy\"]\n",
        kit().join("run.sh").display(),
        schema.display()
    )
}

fn by_db<'a>(report: &'a serde_json::Value, db: &str) -> &'a serde_json::Value {
    report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["db_name"] == db)
        .unwrap_or_else(|| panic!("{db} not in {report}"))
}

#[test]
fn prisma_tenants_match_the_native_reference_and_planted_drift_is_found_on_its_tenant_only() {
    let env = TestEnv::new();
    kit_master(&env);
    let schema = copy_schema(&env, &example("tenant"), "app");
    // Tenant p: migrated by the real `prisma migrate deploy`, not tenantctl.
    env.write_config(format!(
        "{}apply = \"command\"\n{}",
        migrator_toml(&schema),
        deploy_command(&schema)
    ));
    // tenantctl applied nothing itself: Prisma's own rows are the history.
    env.expect(&["tenant", "create", &env.slug("p")])
        .stdout("created tenant p-{T} (id {uuid}, database tenant_p_{T} on server default): applied 0 Prisma migration(s)\n")
        .run();
    assert_eq!(
        env.query(
            &env.db("p"),
            "SELECT count(*)::text FROM _prisma_migrations WHERE finished_at IS NOT NULL"
        ),
        ["2"]
    );
    let status = prisma(&env, &schema, &env.db("p"), &["migrate", "status"]).ok();
    assert!(
        status.stdout.contains("Database schema is up to date"),
        "{}",
        status.all()
    );
    // The others: Prisma's migrations applied natively by tenantctl.
    env.write_config(migrator_toml(&schema));
    for name in ["a", "b", "c", "d"] {
        env.run(&["tenant", "create", &env.slug(name)]).ok();
    }

    env.expect(&["tenant", "drift", "--all"])
        .stdout(format!(
            "{REFERENCE} ({{n}} objects)\n5 match the reference; 0 differ; 0 pending; 0 not read\n{SELECTED_5}\n"
        ))
        .run();

    // A support engineer drops an index in b; a hotfix changes a default in c.
    env.exec(&env.db("b"), "DROP INDEX \"Meter_siteId_idx\"");
    env.exec(
        &env.db("c"),
        "ALTER TABLE \"Site\" ALTER COLUMN timezone SET DEFAULT 'Europe/Paris'",
    );
    env.expect(&["tenant", "drift", "--all"])
        .stdout(format!(
            "
            {REFERENCE} ({{n}} objects)
            3 match the reference; 2 differ; 0 pending; 0 not read
            column \"Site\".timezone default changed: 'UTC'::text (reference) vs 'Europe/Paris'::text (1 tenant: c-{{T}})
            index \"Meter_siteId_idx\" missing (1 tenant: b-{{T}})
            {SELECTED_5}
            "
        ))
        .status(1)
        .run();
    // The repairs, one tenant at a time (blocks follow the report's order,
    // which follows the companies' ids: uuids here).
    let header = "-- tenantctl tenant drift: repairs towards the migrations (built in a scratch database on server default); review each block, then run it with `tenantctl tenant sql <tenant> -f FILE`";
    env.expect(&["tenant", "drift", &env.slug("b"), "--sql"])
        .stdout(format!(
            "
            {header}

            -- tenant b-{{T}} (database tenant_b_{{T}} on server default): 1 difference(s)
            SET search_path = ''; SET check_function_bodies = false; SET standard_conforming_strings = on;
            -- index \"Meter_siteId_idx\" missing
            CREATE INDEX \"Meter_siteId_idx\" ON public.\"Meter\" USING btree (\"siteId\");
            "
        ))
        .status(1)
        .run();
    env.expect(&["tenant", "drift", &env.slug("c"), "--sql"])
        .stdout(format!(
            "
            {header}

            -- tenant c-{{T}} (database tenant_c_{{T}} on server default): 1 difference(s)
            SET search_path = ''; SET check_function_bodies = false; SET standard_conforming_strings = on;
            -- column \"Site\".timezone default changed: 'UTC'::text (reference) vs 'Europe/Paris'::text
            ALTER TABLE public.\"Site\" ALTER COLUMN timezone SET DEFAULT 'UTC'::text;
            "
        ))
        .status(1)
        .run();

    // A new Prisma migration, applied to all but d (p through tenantctl
    // this time: both appliers write the same history).
    add_migration(
        &schema,
        "20270101000000_meter_note",
        "-- AlterTable\nALTER TABLE \"Meter\" ADD COLUMN \"note\" TEXT;\n",
    );
    let (a, b, c, p) = (env.slug("a"), env.slug("b"), env.slug("c"), env.slug("p"));
    env.run(&["tenant", "migrate", &a, &b, &c, &p]).ok();
    env.expect(&["tenant", "drift", "--all"])
        .stdout(format!(
            "
            {REFERENCE} ({{n}} objects)
            2 match the reference; 2 differ; 1 pending; 0 not read
            column \"Site\".timezone default changed: 'UTC'::text (reference) vs 'Europe/Paris'::text (1 tenant: c-{{T}})
            index \"Meter_siteId_idx\" missing (1 tenant: b-{{T}})
            pending, not compared (not at the latest migration; `tenantctl tenant migrate` them): d-{{T}}
            {SELECTED_5}
            "
        ))
        .status(1)
        .run();
    let report = env
        .run(&["tenant", "drift", "--all", "--output", "json"])
        .code(1)
        .json();
    let servers = &report["drift"]["reference"]["servers"];
    assert_eq!(servers[0]["server"], "default", "{servers}");
    // As many objects as the reference line says (the count follows the
    // server's version: its built-in grants, plpgsql's objects).
    assert!(
        servers[0]["objects"].as_u64().is_some_and(|n| n > 0),
        "{servers}"
    );
    assert_eq!(
        servers[0]["objects"],
        report["drift"]["reference"]["objects"]
    );
    let reference = servers[0]["fingerprint"].clone();
    for name in ["a", "p"] {
        let row = by_db(&report, &env.db(name));
        assert_eq!(row["drift"], "match", "{row}");
        assert_eq!(row["fingerprint"], reference, "{row}");
        assert_eq!(row["differences"], serde_json::json!([]), "{row}");
    }
    let pending = by_db(&report, &env.db("d"));
    assert_eq!(pending["drift"], "pending", "{pending}");
    assert_eq!(pending["pending"], 1, "{pending}");
    assert!(pending.get("fingerprint").is_none(), "{pending}");
    let dropped = by_db(&report, &env.db("b"));
    assert_eq!(
        dropped["differences"],
        serde_json::json!([{
            "kind": "index",
            "name": "\"Meter_siteId_idx\"",
            "change": "missing",
            "repair": "CREATE INDEX \"Meter_siteId_idx\" ON public.\"Meter\" USING btree (\"siteId\");",
        }]),
        "{dropped}"
    );
    assert_eq!(
        (
            &report["drift"]["matched"],
            &report["drift"]["differ"],
            &report["drift"]["pending"]
        ),
        (&2.into(), &2.into(), &1.into()),
        "{}",
        report["drift"]
    );

    // Once d is migrated too, and b and c repaired with the printed
    // statements, the whole fleet matches again.
    env.run(&["tenant", "migrate", &env.slug("d")]).ok();
    env.exec(
        &env.db("b"),
        "CREATE INDEX \"Meter_siteId_idx\" ON public.\"Meter\" USING btree (\"siteId\")",
    );
    env.exec(
        &env.db("c"),
        "ALTER TABLE public.\"Site\" ALTER COLUMN timezone SET DEFAULT 'UTC'::text",
    );
    env.expect(&["tenant", "drift", "--all"])
        .stdout(format!(
            "{REFERENCE} ({{n}} objects)\n5 match the reference; 0 differ; 0 pending; 0 not read\n{SELECTED_5}\n"
        ))
        .run();
}

/// `schema = "app"` (Prisma's `?schema=`): the tables and
/// `_prisma_migrations` live in `app`, the reference is built there too,
/// tenants match, and drift in `app` or beside it is found.
#[test]
fn a_non_public_prisma_schema_matches_and_its_drift_is_found() {
    let env = TestEnv::new();
    kit_master(&env);
    let schema = copy_schema(&env, &example("tenant"), "app");
    env.write_config(format!("{}schema = \"app\"\n", migrator_toml(&schema)));
    for name in ["a", "b", "c"] {
        env.run(&["tenant", "create", &env.slug(name)]).ok();
    }
    assert_eq!(
        env.query(
            &env.db("a"),
            "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'app'"
        ),
        ["Meter,Reading,Site,_prisma_migrations"]
    );
    let selected = "selected 3 of the master's 3 companies: --all, status active (by default)";
    env.expect(&["tenant", "drift", "--all"])
        .stdout(format!(
            "{REFERENCE} ({{n}} objects)\n3 match the reference; 0 differ; 0 pending; 0 not read\n{selected}\n"
        ))
        .run();

    env.exec(&env.db("b"), "DROP INDEX app.\"Meter_siteId_idx\"");
    // In c, a hotfix in app and a table of the same name in public (the
    // reference's public is empty): reported as one table, not piece by
    // piece.
    env.exec(
        &env.db("c"),
        "ALTER TABLE app.\"Site\" ALTER COLUMN timezone SET DEFAULT 'CET'; \
         CREATE TABLE public.\"Site\" (id text PRIMARY KEY)",
    );
    env.expect(&["tenant", "drift", "--all"])
        .stdout(format!(
            "
            {REFERENCE} ({{n}} objects)
            1 match the reference; 2 differ; 0 pending; 0 not read
            column app.\"Site\".timezone default changed: 'UTC'::text (reference) vs 'CET'::text (1 tenant: c-{{T}})
            index app.\"Meter_siteId_idx\" missing (1 tenant: b-{{T}})
            table \"Site\" not in the reference (1 tenant: c-{{T}})
            {selected}
            "
        ))
        .status(1)
        .run();

    // The repairs name the schema; the extra table's is one statement,
    // its parts comments under it.
    let (b, c) = (env.slug("b"), env.slug("c"));
    let header = "-- tenantctl tenant drift: repairs towards the migrations (built in a scratch database on server default); review each block, then run it with `tenantctl tenant sql <tenant> -f FILE`";
    env.expect(&["tenant", "drift", &b, "--sql"])
        .stdout(format!(
            "
            {header}

            -- tenant b-{{T}} (database tenant_b_{{T}} on server default): 1 difference(s)
            SET search_path = ''; SET check_function_bodies = false; SET standard_conforming_strings = on;
            -- index app.\"Meter_siteId_idx\" missing
            CREATE INDEX \"Meter_siteId_idx\" ON app.\"Meter\" USING btree (\"siteId\");
            "
        ))
        .status(1)
        .run();
    env.expect(&["tenant", "drift", &c, "--sql"])
        .stdout(format!(
            "
            {header}

            -- tenant c-{{T}} (database tenant_c_{{T}} on server default): 11 difference(s)
            SET search_path = ''; SET check_function_bodies = false; SET standard_conforming_strings = on;
            -- table \"Site\" not in the reference
            DROP TABLE public.\"Site\";
            -- column \"Site\".id not in the reference (part of table \"Site\": see above)
            -- constraint \"Site_pkey\" on \"Site\" not in the reference (part of table \"Site\": see above)
            -- grant DELETE on table \"Site\" to (owner) not in the reference (part of table \"Site\": see above)
            -- grant INSERT on table \"Site\" to (owner) not in the reference (part of table \"Site\": see above)
            -- grant REFERENCES on table \"Site\" to (owner) not in the reference (part of table \"Site\": see above)
            -- grant SELECT on table \"Site\" to (owner) not in the reference (part of table \"Site\": see above)
            -- grant TRIGGER on table \"Site\" to (owner) not in the reference (part of table \"Site\": see above)
            -- grant TRUNCATE on table \"Site\" to (owner) not in the reference (part of table \"Site\": see above)
            -- grant UPDATE on table \"Site\" to (owner) not in the reference (part of table \"Site\": see above)
            -- column app.\"Site\".timezone default changed: 'UTC'::text (reference) vs 'CET'::text
            ALTER TABLE app.\"Site\" ALTER COLUMN timezone SET DEFAULT 'UTC'::text;
            "
        ))
        .status(1)
        .run();
    // Run as printed, the repairs leave c matching.
    env.exec(
        &env.db("c"),
        "ALTER TABLE app.\"Site\" ALTER COLUMN timezone SET DEFAULT 'UTC'::text; DROP TABLE public.\"Site\";",
    );
    let report = env
        .run(&["tenant", "drift", &c, "--output", "json"])
        .ok()
        .json();
    assert_eq!(by_db(&report, &env.db("c"))["drift"], "match", "{report}");

    // Pending is read from app._prisma_migrations: c, not migrated, is
    // pending and its drift not reported until it is.
    add_migration(
        &schema,
        "20270101000000_meter_note",
        "ALTER TABLE \"Meter\" ADD COLUMN \"note\" TEXT;\n",
    );
    env.run(&["tenant", "migrate", &env.slug("a"), &b]).ok();
    env.expect(&["tenant", "drift", "--all"])
        .stdout(format!(
            "
            {REFERENCE} ({{n}} objects)
            1 match the reference; 1 differ; 1 pending; 0 not read
            index app.\"Meter_siteId_idx\" missing (1 tenant: b-{{T}})
            pending, not compared (not at the latest migration; `tenantctl tenant migrate` them): c-{{T}}
            {selected}
            "
        ))
        .status(1)
        .run();
}

/// `kind = "command"` (here the real `prisma migrate deploy` run by the
/// application's command): tenantctl cannot build the reference, so drift
/// without `--against` is a usage error; with it, a tenant's schema is the
/// reference.
#[test]
fn a_command_migrator_needs_against_and_compares_with_the_named_tenant() {
    let env = TestEnv::new();
    kit_master(&env);
    let schema = copy_schema(&env, &example("tenant"), "app");
    env.write_config(format!(
        "[tenants.migrator]\nkind = \"command\"\n{}",
        deploy_command(&schema)
    ));
    for name in ["a", "b", "c"] {
        env.run(&["tenant", "create", &env.slug(name)]).ok();
    }
    env.expect(&["tenant", "drift", "--all"])
        .stderr(
            "error: tenant drift needs a reference: [tenants.migrator] kind = \"command\" makes the tenants' schema with the application's own command, which tenantctl does not run against a scratch database; compare with a tenant you trust: --against SLUG\n",
        )
        .status(2)
        .run();

    let a = env.slug("a");
    let selected = "selected 3 of the master's 3 companies: --all, status active (by default)";
    env.expect(&["tenant", "drift", "--all", "--against", &a])
        .stdout(format!(
            "reference: tenant a-{{T}} ({{n}} objects)\n3 match the reference; 0 differ; 0 pending; 0 not read\n{selected}\n"
        ))
        .run();

    env.exec(
        &env.db("b"),
        "ALTER TABLE \"Meter\" ALTER COLUMN unit DROP NOT NULL",
    );
    env.exec(
        &env.db("c"),
        "CREATE INDEX \"Site_name_idx\" ON \"Site\"(name)",
    );
    env.expect(&["tenant", "drift", "--all", "--against", &a])
        .stdout(format!(
            "
            reference: tenant a-{{T}} ({{n}} objects)
            1 match the reference; 2 differ; 0 pending; 0 not read
            column \"Meter\".unit not null changed: true (reference) vs false (1 tenant: b-{{T}})
            index \"Site_name_idx\" not in the reference (1 tenant: c-{{T}})
            {selected}
            "
        ))
        .status(1)
        .run();
    // A drifted tenant as the reference: the others differ from it.
    let c = env.slug("c");
    env.expect(&["tenant", "drift", &a, &c, "--against", &c])
        .stdout(
            "
            reference: tenant c-{T} ({n} objects)
            1 match the reference; 1 differ; 0 pending; 0 not read
            index \"Site_name_idx\" missing (1 tenant: a-{T})
            selected 2 of the master's 3 companies: named a-{T}, c-{T}
            ",
        )
        .status(1)
        .run();
}
