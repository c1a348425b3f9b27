//! The application's migrator owns the tenants' schema (`[tenants.migrator]`):
//! Prisma's migrations applied natively and checked against the real Prisma
//! CLI, and any command run with the tenant's connection.

use std::path::PathBuf;

use crate::support::TestEnv;
use crate::support::prisma::{add_migration, copy_schema, example, prisma};

/// A Prisma schema of our own (not the kit's example): `schema.prisma` and
/// one migration, laid out as `prisma migrate dev` leaves them.
fn own_schema(env: &TestEnv, name: &str) -> PathBuf {
    let dir = env.workdir.path().join(name);
    std::fs::create_dir_all(dir.join("migrations")).expect("mkdir");
    std::fs::write(
        dir.join("schema.prisma"),
        "generator client {\n  provider = \"prisma-client-js\"\n  engineType = \"client\"\n}\n\n\
         datasource db {\n  provider = \"postgresql\"\n  url      = env(\"DATABASE_URL\")\n}\n\n\
         model Invoice {\n  id     Int    @id @default(autoincrement())\n  number String @unique\n}\n",
    )
    .expect("schema");
    std::fs::write(
        dir.join("migrations/migration_lock.toml"),
        "provider = \"postgresql\"\n",
    )
    .expect("lock");
    add_migration(
        &dir,
        "20250101000000_invoices",
        "-- CreateTable\r\nCREATE TABLE \"Invoice\" (\r\n    \"id\" SERIAL NOT NULL,\r\n    \"number\" TEXT NOT NULL,\r\n    CONSTRAINT \"Invoice_pkey\" PRIMARY KEY (\"id\")\r\n);\r\n\r\n-- CreateIndex\r\nCREATE UNIQUE INDEX \"Invoice_number_key\" ON \"Invoice\"(\"number\");\r\n",
    );
    dir
}

fn prisma_toml(migrations: &str) -> String {
    format!("[tenants.migrator]\nkind = \"prisma\"\nmigrations = \"{migrations}\"\n")
}

fn has_table(env: &TestEnv, db: &str, table: &str) -> bool {
    !env.query(
        db,
        &format!("SELECT to_regclass('public.\"{table}\"')::text"),
    )[0]
    .is_empty()
}

/// `tenant create` runs Prisma's migrations natively and nothing of
/// tenantctl's goes into the tenant; the real `prisma migrate status` and
/// `deploy` then agree there is nothing to do; a new migration reaches the
/// fleet through `tenant migrate --all` and Prisma sees it applied.
#[test]
fn create_and_migrate_through_prisma_migrations_that_prisma_agrees_with() {
    let env = TestEnv::new();
    let schema = copy_schema(&env, &example("tenant"), "app");
    // Relative to the toml file's folder.
    env.write_config(prisma_toml("app/migrations"));
    env.run(&["master", "migrate"]).ok();
    let (a, b) = (env.slug("a"), env.slug("b"));
    let created = env
        .run(&["tenant", "create", &a, "--output", "json"])
        .ok()
        .json();
    assert_eq!(created["migrator"], "prisma");
    // A clone of the set's template, which the real Prisma CLI below
    // finds up to date.
    assert!(
        created["template"]
            .as_str()
            .is_some_and(|t| t.starts_with("tenantctl_template_")),
        "{created}"
    );
    assert_eq!(
        created["applied_migrations"],
        serde_json::json!(["20261205064509_init", "20261205064704_site_timezone"])
    );
    env.run(&["tenant", "create", &b]).ok();
    let db_a = env.db("a");
    assert!(!has_table(&env, &db_a, "_sqlx_migrations"));
    assert_eq!(
        env.query(
            &db_a,
            "SELECT count(*)::text FROM _prisma_migrations \
             WHERE finished_at IS NOT NULL AND applied_steps_count = 1 AND logs IS NULL AND rolled_back_at IS NULL"
        ),
        ["2"]
    );
    let status = prisma(&env, &schema, &db_a, &["migrate", "status"]).ok();
    assert!(
        status.stdout.contains("Database schema is up to date"),
        "{}",
        status.all()
    );

    // One more migration, written with Windows line endings.
    add_migration(
        &schema,
        "20270101000000_meter_note",
        "-- AlterTable\r\nALTER TABLE \"Meter\" ADD COLUMN \"note\" TEXT;\r\n",
    );
    let planned = env
        .run(&[
            "tenant",
            "migrate",
            "--all",
            "--dry-run",
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(
        crate::support::find(&planned, &a)["pending"],
        serde_json::json!(["20270101000000_meter_note"])
    );
    let report = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .ok()
        .json();
    for slug in [&a, &b] {
        assert_eq!(
            crate::support::find(&report, slug)["applied"],
            serde_json::json!(["20270101000000_meter_note"]),
            "{report}"
        );
    }
    let deploy = prisma(&env, &schema, &env.db("b"), &["migrate", "deploy"]).ok();
    assert!(
        deploy.stdout.contains("No pending migrations to apply"),
        "{}",
        deploy.all()
    );
    // An up-to-date fleet: nothing applied, still one report per tenant.
    let again = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        crate::support::find(&again, &a)["applied"],
        serde_json::json!([])
    );
    // doctor reads the same history: nothing behind, nothing wrong (other
    // tests' databases on this server may show up as orphans).
    let doctor = env.run(&["doctor", "--output", "json"]).json();
    let ours: Vec<&serde_json::Value> = doctor["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["slug"] == a.as_str() || f["slug"] == b.as_str())
        .collect();
    assert!(ours.is_empty(), "{doctor}");
    let state = env
        .run(&["tenant", "status", "--all", "--output", "json"])
        .ok()
        .json();
    let row = crate::support::find(&state, &a);
    assert_eq!(row["applied"].as_array().map(Vec::len), Some(3), "{row}");
    assert_eq!(row["pending"], serde_json::json!([]));
    assert_eq!(row["checksum_changed"], serde_json::json!([]));
}

/// One tenant's migration fails: the others are migrated, the run fails
/// with exit 1 naming the tenant, and Prisma itself sees the failure
/// (status, P3009 on deploy); after `prisma migrate resolve --rolled-back`
/// tenantctl sees the migration pending again. A schema with tables but no
/// `_prisma_migrations` is refused as Prisma refuses it (P3005).
#[test]
fn a_failing_migration_in_one_tenant_is_what_prisma_calls_failed() {
    let env = TestEnv::new();
    let schema = own_schema(&env, "billing");
    env.write_config(prisma_toml(
        &schema.join("migrations").display().to_string(),
    ));
    env.run(&["master", "migrate"]).ok();
    let (ok, bad, bare) = (env.slug("ok"), env.slug("bad"), env.slug("bare"));
    for slug in [&ok, &bad, &bare] {
        env.run(&["tenant", "create", slug]).ok();
    }
    let (db_ok, db_bad, db_bare) = (env.db("ok"), env.db("bad"), env.db("bare"));
    env.exec(&db_bad, "CREATE TABLE \"Payment\" (id int)");
    env.exec(&db_bare, "DROP TABLE _prisma_migrations");
    let name = "20250201000000_payments";
    add_migration(
        &schema,
        name,
        "CREATE TABLE \"Payment\" (\"id\" SERIAL PRIMARY KEY, \"invoiceId\" INTEGER NOT NULL);\nCREATE INDEX \"Payment_invoiceId_idx\" ON \"Payment\"(\"invoiceId\");\n",
    );
    let run = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .code(1);
    let report = run.json();
    assert_eq!(
        crate::support::find(&report, &ok)["applied"],
        serde_json::json!([name])
    );
    let failed = crate::support::find(&report, &bad);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().unwrap_or_default().contains(name)
            && failed["error"]
                .as_str()
                .unwrap_or_default()
                .contains("already exists"),
        "{failed}"
    );
    let refused = crate::support::find(&report, &bare);
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("P3005"),
        "{refused}"
    );
    assert!(!run.all().contains(&crate::support::password()));
    assert_eq!(
        env.query(
            &db_bad,
            &format!(
                "SELECT (finished_at IS NULL AND rolled_back_at IS NULL AND logs LIKE '%already exists%')::text \
                 FROM _prisma_migrations WHERE migration_name = '{name}'"
            )
        ),
        ["true"]
    );
    assert!(has_table(&env, &db_ok, "Payment"));

    let doctor = env.run(&["doctor", "--output", "json"]).code(1);
    assert!(
        doctor.stdout.contains("migration_problem") && doctor.stdout.contains("P3009"),
        "{}",
        doctor.all()
    );
    // Prisma's own view of the failed tenant.
    let status = prisma(&env, &schema, &db_bad, &["migrate", "status"]);
    assert_ne!(status.code, 0, "{}", status.all());
    assert!(
        status.all().contains(name) && status.all().to_lowercase().contains("fail"),
        "{}",
        status.all()
    );
    // tenantctl refuses to go past it, as P3009 does; the status fails it.
    let state = env
        .run(&["tenant", "status", &bad, "--output", "json"])
        .code(1)
        .json();
    assert_eq!(
        crate::support::find(&state, &bad)["failed"],
        serde_json::json!([name])
    );
    let again = env.run(&["tenant", "migrate", &bad]).code(1);
    assert!(again.stderr.contains("P3009"), "{}", again.all());

    // Resolved the way Prisma says (`prisma migrate resolve --rolled-back`,
    // which the kit's WebAssembly engine cannot run: it looks for a native
    // schema-engine binary; this is the UPDATE it makes): pending again for
    // both tools.
    env.exec(&db_bad, "DROP TABLE \"Payment\"");
    env.exec(
        &db_bad,
        &format!(
            "UPDATE _prisma_migrations SET rolled_back_at = now() \
             WHERE migration_name = '{name}' AND finished_at IS NULL AND rolled_back_at IS NULL"
        ),
    );
    let state = env
        .run(&["tenant", "status", &bad, "--output", "json"])
        .ok()
        .json();
    let row = crate::support::find(&state, &bad);
    assert_eq!(row["rolled_back"], serde_json::json!([name]), "{row}");
    assert_eq!(row["pending"], serde_json::json!([name]), "{row}");
    assert_eq!(row["failed"], serde_json::json!([]), "{row}");
    // Pending is what Prisma's deploy makes of it too: it applies it again.
    // (Prisma's `migrate status` says "up to date" here: it counts any row,
    // rolled back or not; its deploy does not.)
    let deploy = prisma(&env, &schema, &db_bad, &["migrate", "deploy"]).ok();
    assert!(deploy.all().contains(name), "{}", deploy.all());
    let state = env
        .run(&["tenant", "status", &bad, "--output", "json"])
        .ok()
        .json();
    let row = crate::support::find(&state, &bad);
    assert_eq!(row["pending"], serde_json::json!([]), "{row}");
    assert_eq!(row["applied"].as_array().map(Vec::len), Some(2), "{row}");
    let report = env
        .run(&["tenant", "migrate", &bad, "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        crate::support::find(&report, &bad)["applied"],
        serde_json::json!([])
    );
}

/// `apply = "command"`: the real `prisma migrate deploy` creates the
/// tenant (and runs only where something is pending); then status, native,
/// reads the rows Prisma wrote: a migration Prisma applied from a CRLF file
/// still matches once git turns the file into LF (Prisma compares all
/// three line endings), a real edit is reported as changed, and a migration
/// not yet applied is pending.
#[test]
fn status_reads_what_prisma_recorded() {
    let env = TestEnv::new();
    let schema = own_schema(&env, "books");
    let run_sh = crate::support::prisma::kit().join("run.sh");
    env.write_config(format!(
        "{}apply = \"command\"\ncommand = [\"bash\", \"{}\", \"books\", \"migrate\", \"deploy\"]\n",
        prisma_toml("books/migrations"),
        run_sh.display()
    ));
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("s");
    env.run(&["tenant", "create", &slug]).ok();
    let db = env.db("s");
    assert!(has_table(&env, &db, "Invoice"));
    assert!(!has_table(&env, &db, "_sqlx_migrations"));
    // Up to date: one query, no process.
    let report = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(crate::support::find(&report, &slug)["ran_command"], false);

    env.write_config(prisma_toml("books/migrations"));
    let first = schema.join("migrations/20250101000000_invoices/migration.sql");
    let crlf = std::fs::read_to_string(&first).expect("read");
    assert!(crlf.contains("\r\n"));
    std::fs::write(&first, crlf.replace("\r\n", "\n")).expect("write LF");
    add_migration(
        &schema,
        "20250301000000_notes",
        "ALTER TABLE \"Invoice\" ADD COLUMN \"note\" TEXT;\n",
    );
    let state = env
        .run(&["tenant", "status", &slug, "--output", "json"])
        .ok()
        .json();
    let row = crate::support::find(&state, &slug);
    assert_eq!(
        row["applied"],
        serde_json::json!(["20250101000000_invoices"]),
        "{row}"
    );
    assert_eq!(row["pending"], serde_json::json!(["20250301000000_notes"]));
    assert_eq!(row["checksum_changed"], serde_json::json!([]), "{row}");

    std::fs::write(
        &first,
        crlf.replace("TEXT NOT NULL", "VARCHAR(40) NOT NULL"),
    )
    .expect("edit");
    let table = env.run(&["tenant", "status", &slug]).ok();
    assert!(
        table
            .stdout
            .contains("checksum changed: 20250101000000_invoices"),
        "{}",
        table.all()
    );
}

fn dump_env_command(env: &TestEnv, exit: i32) -> String {
    let _ = env;
    format!(
        "[tenants.migrator]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"env > env.$TENANT_SLUG.txt; psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE TABLE IF NOT EXISTS app_made (x int)' && echo migrated $TENANT_DB_NAME; exit {exit}\"]\n"
    )
}

/// kind = "command": create and migrate run the application's command in
/// the toml's folder with the tenant's connection (`DATABASE_URL`, libpq
/// variables) and none of the operator's other secrets; nothing of
/// tenantctl's goes into the tenant; a failing command fails its tenant
/// with its (redacted) output; status says it cannot know.
#[test]
fn a_command_migrator_gets_the_tenant_connection_and_nothing_else() {
    let env = TestEnv::new();
    env.write_config(dump_env_command(&env, 0));
    env.run(&["master", "migrate"]).ok();
    let (a, b) = (env.slug("a"), env.slug("b"));
    let other = "postgresql://someone:other-sekret-9@elsewhere:5432/app";
    for slug in [&a, &b] {
        env.run_with(&["tenant", "create", slug], |c| {
            c.env("DIRECT_URL", other);
        })
        .ok();
    }
    let db_a = env.db("a");
    assert!(has_table(&env, &db_a, "app_made"));
    assert!(!has_table(&env, &db_a, "_sqlx_migrations"));
    let dumped = std::fs::read_to_string(env.workdir.path().join(format!("env.{a}.txt")))
        .expect("the command ran in the toml's folder");
    assert!(
        dumped.lines().any(
            |l| l.starts_with("DATABASE_URL=postgresql://") && l.ends_with(&format!("/{db_a}"))
        ),
        "{dumped}"
    );
    assert!(dumped.contains(&format!("TENANT_DB_NAME={db_a}")));
    assert!(!dumped.contains("other-sekret-9"), "{dumped}");
    // Emptied rather than removed (a dotenv loader would fill them back).
    for line in dumped.lines() {
        if line.starts_with("MASTER_DATABASE_URL") || line.starts_with("POSTGRES_BASE_URL") {
            assert!(line.ends_with('='), "{dumped}");
        }
    }

    // Every selected tenant, whatever it has (tenantctl cannot know).
    std::fs::remove_file(env.workdir.path().join(format!("env.{a}.txt"))).expect("rm");
    let run = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .ok();
    assert!(
        run.stderr.contains("cannot know what is pending"),
        "{}",
        run.stderr
    );
    let report = run.json();
    assert_eq!(crate::support::find(&report, &b)["ran_command"], true);
    assert!(env.workdir.path().join(format!("env.{a}.txt")).is_file());

    // A command that fails: its tenant fails, with its output, redacted.
    env.write_config("[tenants.migrator]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo boom $PGPASSWORD >&2; exit 3\"]\n",
    );
    let run = env
        .run(&["tenant", "migrate", &a, "--output", "json"])
        .code(1);
    let failed = crate::support::find(&run.json(), &a).clone();
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("boom") && error.contains('3'), "{failed}");
    assert!(
        !run.all().contains(&crate::support::password()),
        "{}",
        run.all()
    );

    let status = env.run(&["tenant", "status", "--all"]).code(2);
    assert!(status.stderr.contains("cannot know"), "{}", status.stderr);
    assert_eq!(status.stderr.trim().lines().count(), 1, "{}", status.stderr);
}

/// Inconsistent migrator settings, and sqlx-only commands with an
/// application's migrator: one line naming the key (or the kind), exit 2,
/// nothing created.
#[test]
fn migrator_configuration_errors_are_one_line_naming_the_key() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("x");
    for (toml, names) in [
        ("[tenants.migrator]\nkind = \"prisma\"\n", "migrations"),
        ("[tenants.migrator]\nkind = \"command\"\n", "command"),
        (
            "[tenants.migrator]\nkind = \"command\"\ncommand = [\"x\"]\nmigrations = \"m\"\n",
            "migrations",
        ),
        ("[tenants.migrator]\nkind = \"liquibase\"\n", "liquibase"),
        (
            "[tenants.migrator]\nkind = \"prisma\"\nmigrations = \"m\"\ncomand = [\"x\"]\n",
            "comand",
        ),
        (
            "[tenants.migrator]\nkind = \"prisma\"\nmigrations = \"nowhere/migrations\"\n",
            "nowhere",
        ),
    ] {
        env.write_config(toml);
        let run = env.run(&["tenant", "create", &slug]).code(2);
        assert!(run.stderr.contains(names), "{toml}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
    assert!(!env.database_exists(&env.db("x")));

    env.write_config(prisma_toml("nowhere"));
    let both = env
        .run(&["tenant", "status", "--all", "--tenant-migrations", "m"])
        .code(2);
    assert!(
        both.stderr.contains("--tenant-migrations") && both.stderr.contains("prisma"),
        "{}",
        both.stderr
    );
    for args in [
        &["tenant", "revert", "--all", "--to", "0", "--yes"][..],
        &["tenant", "baseline", "--all", "--to", "1"][..],
        &["tenant", "migrate", "--all", "--to", "1"][..],
    ] {
        let run = env.run(args).code(2);
        assert!(
            run.stderr.contains("kind = \"prisma\""),
            "{args:?}: {}",
            run.stderr
        );
    }
}

/// tenantctl waits for the advisory lock Prisma's schema engine takes
/// (72707369), so it and a `prisma migrate deploy` running at the same
/// time never both apply (the kit's `migrate deploy` was seen waiting on
/// the same key).
#[test]
fn native_apply_waits_for_prismas_own_lock() {
    let env = TestEnv::new();
    let schema = own_schema(&env, "locked");
    env.write_config(prisma_toml("locked/migrations"));
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("l");
    env.run(&["tenant", "create", &slug]).ok();
    let db = env.db("l");
    add_migration(
        &schema,
        "20250401000000_more",
        "ALTER TABLE \"Invoice\" ADD COLUMN \"more\" TEXT;\n",
    );
    let mut holder = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-d",
            &env.db_url(&db),
            "-c",
            "SELECT pg_advisory_lock(72707369), pg_sleep(3)",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    crate::support::wait_until(
        std::time::Duration::from_secs(10),
        "psql to hold the lock",
        || {
            (env.query(
            &db,
            "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND objid = 72707369 AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )[0]
            == "1")
            .then_some(())
        },
    );
    let report = env
        .run(&["tenant", "migrate", &slug, "--output", "json"])
        .ok()
        .json();
    // The holder's session ends with its statement; tenantctl could only
    // finish after that.
    let holder_done = holder.try_wait().expect("psql").is_some();
    let _ = holder.wait();
    assert_eq!(
        crate::support::find(&report, &slug)["applied"],
        serde_json::json!(["20250401000000_more"])
    );
    assert!(holder_done, "applied while Prisma's lock was held");
    // Nothing of the session is left behind: the lock is given back.
    assert_eq!(
        env.query(
            &db,
            "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND objid = 72707369 \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        ["0"]
    );
}

/// A script cut short (here by --statement-timeout, as by an interrupt's
/// cancel) that the server undid whole is marked rolled back, so the next
/// run applies it; one that committed part of itself (its own COMMIT)
/// stays failed, as Prisma leaves it, for a person to look at.
#[test]
fn a_script_cut_short_is_rolled_back_only_when_the_server_undid_it_whole() {
    let env = TestEnv::new();
    let schema = own_schema(&env, "slow");
    env.write_config(prisma_toml("slow/migrations"));
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("w");
    env.run(&["tenant", "create", &slug]).ok();
    let db = env.db("w");
    let whole = "20250501000000_slow";
    add_migration(
        &schema,
        whole,
        "ALTER TABLE \"Invoice\" ADD COLUMN \"slow\" TEXT;\nSELECT pg_sleep(3);\n",
    );
    let cut = env
        .run(&["tenant", "migrate", &slug, "--statement-timeout", "300ms"])
        .code(1);
    assert!(cut.stderr.contains("next run applies it"), "{}", cut.stderr);
    let state = env
        .run(&["tenant", "status", &slug, "--output", "json"])
        .ok()
        .json();
    let row = crate::support::find(&state, &slug);
    assert_eq!(row["pending"], serde_json::json!([whole]), "{row}");
    assert_eq!(row["rolled_back"], serde_json::json!([whole]), "{row}");
    env.run(&["tenant", "migrate", &slug]).ok();
    assert!(
        env.query(
            &db,
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'Invoice'"
        )
        .contains(&"slow".to_owned())
    );

    let partial = "20250601000000_partial";
    add_migration(
        &schema,
        partial,
        "ALTER TABLE \"Invoice\" ADD COLUMN \"early\" TEXT;\nCOMMIT;\nSELECT pg_sleep(3);\n",
    );
    let cut = env
        .run(&["tenant", "migrate", &slug, "--statement-timeout", "300ms"])
        .code(1);
    assert!(cut.stderr.contains("recorded as failed"), "{}", cut.stderr);
    let state = env
        .run(&["tenant", "status", &slug, "--output", "json"])
        .code(1)
        .json();
    assert_eq!(
        crate::support::find(&state, &slug)["failed"],
        serde_json::json!([partial])
    );
}

/// A failing application migrator fails the create as today's does: the
/// company is left failed, and the same create finishes it once the
/// migrator works.
#[test]
fn a_failing_app_migrator_leaves_the_create_failed_and_resumable() {
    let env = TestEnv::new();
    env.write_config("[tenants.migrator]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo cannot migrate >&2; exit 4\"]\n",
    );
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("f");
    let failed = env.run(&["tenant", "create", &slug]).code(1);
    assert!(
        failed.stderr.contains("cannot migrate") && failed.stderr.contains("provisioning failed"),
        "{}",
        failed.stderr
    );
    assert_eq!(env.status_of(&slug), ["failed"]);
    env.write_config(dump_env_command(&env, 0));
    let finished = env.run(&["tenant", "create", &slug]).ok();
    assert!(finished.stdout.contains("finished"), "{}", finished.all());
    assert_eq!(env.status_of(&slug), ["active"]);
    assert!(has_table(&env, &env.db("f"), "app_made"));
}

/// Through PgBouncer in transaction mode, declared (`?pgbouncer=true`: all
/// of a tenant's work in one transaction, locks and settings local to it)
/// and not (session-level lock and settings on one server process, cleared
/// after; PgBouncer resets nothing between clients in this mode): the
/// Prisma migrations are applied and recorded, and the next client of the
/// pool's server connection finds none of tenantctl's session state.
#[test]
fn prisma_migrations_through_pgbouncer_leave_no_session_state() {
    use crate::support::pooler::PgBouncer;
    use crate::support::server::PrivateServer;
    const PW: &str = "app-Prisma-pw7";
    for (mode, declared) in [("transaction", true), ("transaction", false)] {
        let env = TestEnv::new();
        let server = PrivateServer::start(&env.token);
        server.exec(
            "postgres",
            &format!("CREATE ROLE app LOGIN CREATEDB PASSWORD '{PW}'"),
        );
        let bouncer = PgBouncer::start(&server, &env.token, mode, &[("app", PW)]);
        server.exec("postgres", "CREATE DATABASE master OWNER app");
        let query = if declared { "?pgbouncer=true" } else { "" };
        let base = format!("{}/{query}", bouncer.url_as("app", PW));
        let master = format!("{}/master{query}", bouncer.url_as("app", PW));
        let schema = own_schema(&env, "pooled");
        env.write_config(prisma_toml("pooled/migrations"));
        let through = |args: &[&str]| {
            env.run_with(args, |c| {
                c.env("POSTGRES_BASE_URL", &base)
                    .env("MASTER_DATABASE_URL", &master);
            })
        };
        through(&["master", "migrate"]).ok();
        for slug in ["acme", "globex"] {
            through(&["tenant", "create", slug]).ok();
        }
        add_migration(
            &schema,
            "20250701000000_due",
            "ALTER TABLE \"Invoice\" ADD COLUMN \"due\" DATE;\n",
        );
        let report = through(&[
            "tenant",
            "migrate",
            "--all",
            "--statement-timeout",
            "7s",
            "--output",
            "json",
        ])
        .ok()
        .json();
        assert_eq!(report["summary"]["ok"], 2, "{mode}: {report}");
        assert_eq!(
            crate::support::find(&report, "acme")["applied"],
            serde_json::json!(["20250701000000_due"]),
            "{mode}"
        );
        let seen = crate::support::block_on(async {
            use sqlx::{Connection as _, Row as _};
            let options: sqlx::postgres::PgConnectOptions =
                format!("{}/tenant_acme", bouncer.url_as("app", PW))
                    .parse()
                    .expect("url");
            let mut conn =
                sqlx::postgres::PgConnection::connect_with(&options.extra_float_digits(None))
                    .await
                    .expect("connect through the pooler");
            let mut seen = Vec::new();
            for sql in [
                "SHOW search_path",
                "SHOW statement_timeout",
                "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                "SELECT count(*)::text FROM _prisma_migrations WHERE finished_at IS NOT NULL",
            ] {
                let row = sqlx::query(sql)
                    .persistent(false)
                    .fetch_one(&mut conn)
                    .await
                    .expect(sql);
                seen.push(row.get::<String, _>(0));
            }
            let _ = conn.close().await;
            seen
        });
        assert_eq!(
            seen,
            ["\"$user\", public", "0", "0", "2"],
            "{mode}: what the next client sees"
        );
    }
}

/// Interrupted in the middle of a Prisma migration: the statement is
/// cancelled on the server, the run reports and exits 130, the migration
/// (undone whole by the server) is marked rolled back and the rerun
/// applies it; nothing of tenantctl's is left on the server.
#[test]
fn an_interrupted_prisma_migration_is_undone_and_the_rerun_applies_it() {
    let env = TestEnv::new();
    let schema = own_schema(&env, "intr");
    env.write_config(prisma_toml("intr/migrations"));
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("i");
    env.run(&["tenant", "create", &slug]).ok();
    let db = env.db("i");
    let name = "20250801000000_long";
    let dir = add_migration(
        &schema,
        name,
        "ALTER TABLE \"Invoice\" ADD COLUMN \"long\" TEXT;\nSELECT pg_sleep(60);\n",
    );
    let child = env
        .cmd()
        .args(["tenant", "migrate", "--all", "--output", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tenantctl");
    crate::support::wait_until(
        std::time::Duration::from_secs(20),
        "the migration to be running",
        || {
            (!env
                .query(
                    &db,
                    "SELECT pid::text FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' \
                     AND pid <> pg_backend_pid()",
                )
                .is_empty())
            .then_some(())
        },
    );
    for _ in 0..2 {
        assert!(
            std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .expect("kill")
                .success()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let run = crate::support::wait_with_deadline(child, std::time::Duration::from_secs(20));
    assert_eq!(run.code, 130, "{}", run.all());
    assert_eq!(run.json()["interrupted"], true, "{}", run.stdout);
    assert_eq!(
        env.query(
            &db,
            &format!(
                "SELECT (rolled_back_at IS NOT NULL AND finished_at IS NULL)::text \
                 FROM _prisma_migrations WHERE migration_name = '{name}'"
            )
        ),
        ["true"]
    );
    assert_eq!(
        env.query(
            &db,
            "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        ["0"]
    );
    std::fs::write(
        dir.join("migration.sql"),
        "ALTER TABLE \"Invoice\" ADD COLUMN \"long\" TEXT;\n",
    )
    .expect("write");
    let report = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        crate::support::find(&report, &slug)["applied"],
        serde_json::json!([name])
    );
}

/// `kind = "sqlx"` (the default) may name its folder in the toml, relative
/// to the toml's folder, as `--tenant-migrations` does.
#[test]
fn a_sqlx_migrator_folder_named_in_the_toml_is_used() {
    let env = TestEnv::new();
    env.tenant_schema_plus(
        "own",
        "29990101000000_extra.sql",
        "CREATE TABLE extra (x int);",
    );
    env.write_config("[tenants.migrator]\nkind = \"sqlx\"\nmigrations = \"own\"\n");
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("q");
    env.run(&["tenant", "create", &slug]).ok();
    assert!(env.applied(&env.db("q")).contains(&29990101000000));
    assert!(has_table(&env, &env.db("q"), "extra"));
}

/// Ctrl-C during `tenant create` with a command migrator stops the
/// command (a process group of its own, which the terminal's interrupt
/// does not reach), and the company is left failed, to be finished by the
/// same create.
#[test]
fn an_interrupted_create_stops_the_migrator_command() {
    let env = TestEnv::new();
    env.write_config(format!(
            "[tenants.migrator]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 60; echo {}\"]\n",
            env.token
        ),
    );
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("c");
    let child = env
        .cmd()
        .args(["tenant", "create", &slug])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tenantctl");
    let running = || {
        std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep 60; echo {}", env.token)])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    crate::support::wait_until(
        std::time::Duration::from_secs(20),
        "the migrator command to start",
        || running().then_some(()),
    );
    for _ in 0..2 {
        assert!(
            std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .expect("kill")
                .success()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let run = crate::support::wait_with_deadline(child, std::time::Duration::from_secs(20));
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(!running(), "the migrator command outlived tenantctl");
    assert_eq!(env.status_of(&slug), ["failed"], "{}", run.all());
}

/// Migrations Prisma users write that are not plain DDL batches: an empty
/// draft (`migrate dev --create-only` with no change) and `CREATE INDEX
/// CONCURRENTLY` alone in its file (which must run outside a transaction
/// block, as Prisma's single-statement query does); the real Prisma then
/// agrees there is nothing to apply.
#[test]
fn empty_and_concurrent_index_migrations_apply_as_prisma_applies_them() {
    let env = TestEnv::new();
    let schema = own_schema(&env, "odd");
    add_migration(
        &schema,
        "20250102000000_empty",
        "-- This is an empty migration.",
    );
    add_migration(
        &schema,
        "20250103000000_concurrent",
        "CREATE INDEX CONCURRENTLY \"Invoice_number_idx\" ON \"Invoice\"(\"number\");\n",
    );
    env.write_config(prisma_toml("odd/migrations"));
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("o");
    let created = env
        .run(&["tenant", "create", &slug, "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        created["applied_migrations"].as_array().map(Vec::len),
        Some(3),
        "{created}"
    );
    let db = env.db("o");
    assert_eq!(
        env.query(
            &db,
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indexrelid = to_regclass('public.\"Invoice_number_idx\"')"
        )
        .len(),
        1
    );
    let deploy = prisma(&env, &schema, &db, &["migrate", "deploy"]).ok();
    assert!(
        deploy.stdout.contains("No pending migrations"),
        "{}",
        deploy.all()
    );
}
