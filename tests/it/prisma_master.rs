//! The application's own Prisma on a master tenantctl has adopted: its
//! `migrate dev`, `db pull` and `db push` see no table of tenantctl's, so
//! none offers to reset the schema or drop tenantctl's records; and a
//! master an older tenantctl set up moves its tables out of the way with
//! one `master migrate`, nothing lost.

use crate::support::TestEnv;
use crate::support::prisma::{copy_schema, example, prisma};

/// Tables and the like of the master in each schema, as `schema.name`.
fn relations(env: &TestEnv) -> Vec<String> {
    env.query(
        &env.master,
        "SELECT r FROM (SELECT format('%s.%s', n.nspname, c.relname) AS r FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
            AND c.relkind IN ('r', 'p', 'v', 'm')) x
          ORDER BY r COLLATE \"C\"",
    )
}

fn own_rows(env: &TestEnv) -> Vec<String> {
    env.query(
        &env.master,
        "SELECT format('runs=%s run_tenants=%s lifecycle=%s placement=%s',
                (SELECT count(*) FROM tenantctl.runs), (SELECT count(*) FROM tenantctl.run_tenants),
                (SELECT count(*) FROM tenantctl.lifecycle), (SELECT count(*) FROM tenantctl.placement))",
    )
}

/// A Prisma master (the kit's, or one with another shape) set up by the
/// app's own `migrate deploy`, adopted by tenantctl, with a tenant and a
/// recorded run; then the developer's next `migrate dev`, `db pull` and
/// `db push`.
fn prisma_workflow_leaves_tenantctl_alone(env: &TestEnv, schema: &std::path::Path, model: &str) {
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    prisma(env, schema, &env.master, &["migrate", "deploy"]).ok();
    env.run(&["master", "migrate"]).ok();
    let created = env.run(&["tenant", "create", &env.slug("acme")]).ok();
    env.run(&["tenant", "migrate", "--all"]).ok();
    let before = own_rows(env);
    assert!(
        before[0].starts_with("runs=1 "),
        "{before:?} {}",
        created.stdout
    );

    // Nothing of tenantctl's in the app's schema.
    let public: Vec<String> = relations(env)
        .into_iter()
        .filter(|r| r.starts_with("public."))
        .collect();
    assert_eq!(
        public,
        [
            format!("public.{model}"),
            "public._prisma_migrations".to_owned()
        ],
        "only the app's tables in public"
    );

    // The next migration, as a developer adds a field: no drift, no reset.
    let file = schema.join("schema.prisma");
    let text = std::fs::read_to_string(&file).expect("read schema");
    let text = text.replacen(
        &format!("model {model} {{"),
        &format!("model {model} {{\n  plan String?"),
        1,
    );
    std::fs::write(&file, text).expect("write schema");
    let dev = prisma(
        env,
        schema,
        &env.master,
        &["migrate", "dev", "--name", "add_plan"],
    );
    assert_eq!(
        dev.code,
        0,
        "prisma migrate dev must not see drift:\n{}",
        dev.all()
    );
    assert!(!dev.all().contains("Drift detected"), "{}", dev.all());
    assert_eq!(
        env.query(
            &env.master,
            &format!("SELECT count(*)::text FROM information_schema.columns WHERE table_name = '{model}' AND column_name = 'plan'"),
        ),
        ["1"],
        "the app's migration was applied"
    );

    // db pull: only the app's model.
    let pulled = prisma(env, schema, &env.master, &["db", "pull", "--print"]).ok();
    assert!(
        pulled.stdout.contains(&format!("model {model} ")),
        "{}",
        pulled.stdout
    );
    for ours in [
        "lifecycle",
        "placement",
        "moves",
        "runs",
        "run_tenants",
        "_sqlx_migrations",
        "tenantctl",
    ] {
        assert!(
            !pulled.stdout.contains(&format!("model {ours} "))
                && !pulled.stdout.contains(&format!("\"{ours}\"")),
            "db pull must not show tenantctl's {ours}:\n{}",
            pulled.stdout
        );
    }

    // db push of a further change, data loss accepted: tenantctl's records stay.
    let text = std::fs::read_to_string(&file).expect("read schema");
    std::fs::write(
        &file,
        text.replacen("  plan String?", "  plan String?\n  tier Int?", 1),
    )
    .expect("write schema");
    prisma(
        env,
        schema,
        &env.master,
        &["db", "push", "--accept-data-loss", "--skip-generate"],
    )
    .ok();
    assert_eq!(own_rows(env), before, "tenantctl's records survive db push");
    // And tenantctl still works on the master.
    env.run(&["tenant", "list"]).ok();
    env.run(&["tenant", "migrate", "--all"]).ok();
}

#[test]
fn prisma_migrate_dev_db_pull_and_db_push_on_an_adopted_master_see_nothing_of_tenantctl() {
    let env = TestEnv::new();
    let schema = copy_schema(&env, &example("master"), "master");
    prisma_workflow_leaves_tenantctl_alone(&env, &schema, "Company");
}

#[test]
fn another_prisma_master_shape_with_a_slug_and_a_mapped_table_name() {
    // Another app: the model is `Tenant`, mapped to table "Company" is not
    // needed: tenantctl.toml names the table; a slug column; status text.
    let env = TestEnv::new();
    let schema = env.workdir.path().join("app");
    std::fs::create_dir_all(schema.join("migrations/20260101000000_init")).expect("mkdir");
    std::fs::write(
        schema.join("schema.prisma"),
        "datasource db {\n  provider = \"postgresql\"\n  url = env(\"DATABASE_URL\")\n}\n\n\
         model Tenant {\n  id String @id @default(cuid())\n  slug String @unique\n  name String\n  \
         database String @unique\n  createdAt DateTime @default(now())\n}\n",
    )
    .expect("write schema");
    std::fs::write(
        schema.join("migrations/20260101000000_init/migration.sql"),
        "CREATE TABLE \"Tenant\" (\n    \"id\" TEXT NOT NULL,\n    \"slug\" TEXT NOT NULL,\n    \"name\" TEXT NOT NULL,\n    \"database\" TEXT NOT NULL,\n    \"createdAt\" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,\n\n    CONSTRAINT \"Tenant_pkey\" PRIMARY KEY (\"id\")\n);\n\n\
         CREATE UNIQUE INDEX \"Tenant_slug_key\" ON \"Tenant\"(\"slug\");\n\n\
         CREATE UNIQUE INDEX \"Tenant_database_key\" ON \"Tenant\"(\"database\");\n",
    )
    .expect("write migration");
    std::fs::write(
        schema.join("migrations/migration_lock.toml"),
        "provider = \"postgresql\"\n",
    )
    .expect("write lock");
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[master]\ntable = \"Tenant\"\n",
    )
    .expect("write tenantctl.toml");
    prisma_workflow_leaves_tenantctl_alone(&env, &schema, "Tenant");
}

/// A master an older tenantctl set up (its tables beside the companies
/// table, its master ledger in `public._sqlx_migrations`): every command
/// but `master migrate` refuses it, and `master migrate` moves everything
/// into the `tenantctl` schema with every row, after which runs recorded
/// before still revert.
#[test]
fn an_older_masters_tables_move_into_the_tenantctl_schema_with_every_row() {
    for adopted in [false, true] {
        let env = TestEnv::new();
        if adopted {
            env.orm_master(&["provisioning", "ACTIVE", "SUSPENDED"]);
        }
        env.with_tenants(&["a", "b"]);
        env.run(&["tenant", "migrate", "--all"]).ok();
        let before = own_counts(&env);
        // Put everything back where an older version kept it.
        env.exec(
            &env.master,
            "DO $$ DECLARE t text; BEGIN
               -- Claims came with the schema: older versions had none.
               DROP TABLE IF EXISTS tenantctl.claims;
               FOR t IN SELECT relname FROM pg_class WHERE relnamespace = 'tenantctl'::regnamespace AND relkind = 'r' LOOP
                 EXECUTE format('ALTER TABLE tenantctl.%I SET SCHEMA public', t);
                 IF t <> '_sqlx_migrations' THEN
                   EXECUTE format('ALTER TABLE public.%I RENAME TO %I', t, '_tenantctl_' || t);
                 END IF;
               END LOOP;
               DROP SCHEMA tenantctl;
             END $$",
        );
        // A role that runs tenantctl without owning its tables, granted
        // rights on them where they were: it keeps them after the move.
        let reader = crate::support::role_with_password(&env, "reader", "reader-pw");
        env.exec(
            &env.master,
            &format!(
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{}\"",
                reader.role
            ),
        );
        let refused = env.run(&["tenant", "list"]).code(2);
        assert!(
            refused.stderr.contains("master migrate") && refused.stderr.contains("_tenantctl_"),
            "{}",
            refused.stderr
        );
        let moved = env.run(&["master", "migrate"]).ok();
        assert!(moved.stdout.contains("moved"), "{}", moved.stdout);
        assert_eq!(own_counts(&env), before, "adopted: {adopted}");
        let public: Vec<String> = relations(&env)
            .into_iter()
            .filter(|r| r.starts_with("public.") && !r.contains("Company"))
            .collect();
        assert!(public.is_empty(), "adopted: {adopted}: {public:?}");
        // A second master migrate finds nothing to move and nothing to apply.
        let again = env.run(&["master", "migrate"]).ok();
        assert!(!again.stdout.contains("moved"), "{}", again.stdout);
        assert!(!again.stdout.contains("applied"), "{}", again.stdout);
        // The run recorded before the move is still there to undo.
        env.run(&["tenant", "runs"]).ok();
        let listed = env
            .run_with(&["tenant", "list", "--output", "json"], reader.configure())
            .ok();
        assert!(listed.stdout.contains(&env.slug("a")), "{}", listed.stdout);
        let runs = env.run_with(&["tenant", "runs"], reader.configure()).ok();
        assert!(runs.stdout.contains("migrate"), "{}", runs.stdout);
    }
}

fn own_counts(env: &TestEnv) -> Vec<String> {
    env.query(
        &env.master,
        "SELECT string_agg(format('%s=%s', c.relname,
                  (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text),
                  ' ' ORDER BY c.relname COLLATE \"C\")
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'r' AND (n.nspname = 'tenantctl' OR c.relname LIKE '\\_tenantctl\\_%' OR c.relname = '_sqlx_migrations')",
    )
    .into_iter()
    .map(|s| s.replace("_tenantctl_", ""))
    .collect()
}
