//! The happy path, as an operator runs it.

use crate::support::TestEnv;

#[test]
fn master_migrate_creates_the_master_once_and_reports_it() {
    let env = TestEnv::new();
    let master = env
        .run(&["master", "migrate", "--output", "json"])
        .ok()
        .json();
    assert_eq!(master["created"], true);
    // The companies table, then its "dbServer" column.
    assert_eq!(master["applied"].as_array().map(Vec::len), Some(2));
    // Running it again changes nothing.
    let again = env.run(&["master", "migrate", "--output", "jsonl"]).ok();
    assert_eq!(
        again.stdout.lines().count(),
        1,
        "jsonl is one line: {}",
        again.stdout
    );
    let again: serde_json::Value = serde_json::from_str(&again.stdout).expect("json");
    assert_eq!(again["created"], false);
    assert_eq!(again["applied"], serde_json::json!([]));
}

/// `master migrate`, then acme (named "Acme Inc") and globex, created as
/// an operator would; returns their slugs.
fn acme_and_globex(env: &TestEnv) -> (String, String) {
    env.run(&["master", "migrate"]).ok();
    let (acme, globex) = (env.slug("acme"), env.slug("globex"));
    let created = env
        .run(&[
            "tenant", "create", &acme, "--name", "Acme Inc", "--output", "json",
        ])
        .ok()
        .json();
    assert_eq!(created["db_name"], env.db("acme"));
    assert_eq!(created["status"], "active");
    let embedded = env.applied(&env.db("acme"));
    assert!(embedded.len() >= 4, "{embedded:?}");
    assert_eq!(
        created["applied"].as_array().map(Vec::len),
        Some(embedded.len())
    );
    env.run(&["tenant", "create", &globex]).ok();
    (acme, globex)
}

/// The id the master gave a tenant.
fn id_of(env: &TestEnv, slug: &str) -> String {
    env.query(
        &env.master,
        &format!(r#"SELECT id FROM "Company" WHERE slug = '{slug}'"#),
    )
    .pop()
    .expect("id")
}

#[test]
fn tenant_list_shows_every_company_as_a_table_and_as_json() {
    let env = TestEnv::new();
    let (acme, _) = acme_and_globex(&env);
    env.expect(&["tenant", "list"])
        .with(id_of(&env, &acme), "{acme_id}")
        .with(id_of(&env, &env.slug("globex")), "{globex_id}")
        .stdout(
            "
            ┌─────────────┬────────────┬────────────┬───────────────────┬─────────┬────────┬─────────┐
            │ id          ┆ slug       ┆ name       ┆ db name           ┆ server  ┆ status ┆ created │
            ╞═════════════╪════════════╪════════════╪═══════════════════╪═════════╪════════╪═════════╡
            │ {acme_id}   ┆ acme-{T}   ┆ Acme Inc   ┆ tenant_acme_{T}   ┆ default ┆ active ┆ {time}  │
            │ {globex_id} ┆ globex-{T} ┆ globex-{T} ┆ tenant_globex_{T} ┆ default ┆ active ┆ {time}  │
            └─────────────┴────────────┴────────────┴───────────────────┴─────────┴────────┴─────────┘
            2 tenant(s)
            ",
        )
        .run();
    let list = env.run(&["tenant", "list", "--output", "json"]).ok().json()["tenants"].clone();
    let rows = list.as_array().expect("array");
    assert_eq!(rows.len(), 2);
    let keys: Vec<&str> = rows[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "slug",
            "name",
            "db_name",
            "server",
            "status",
            "created_at"
        ]
    );
    assert_eq!(rows[0]["server"], "default");
    assert_eq!(rows[0]["slug"], acme);
    assert_eq!(rows[0]["status"], "active");
}

#[test]
fn tenant_migrate_reaches_all_tenants_or_one_by_id() {
    let env = TestEnv::new();
    let (_, globex) = acme_and_globex(&env);
    // migrate --all with nothing pending
    let report = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(report["summary"]["ok"], 2);
    assert_eq!(report["summary"]["failed"], 0);
    let tenant = &report["tenants"][0];
    for key in [
        "slug",
        "db_name",
        "status",
        "applied",
        "error",
        "duration_ms",
    ] {
        assert!(tenant.get(key).is_some(), "missing {key} in {tenant}");
    }
    assert_eq!(tenant["applied"], serde_json::json!([]));

    // migrate one tenant by id
    let id = id_of(&env, &globex);
    let one = env
        .run(&["tenant", "migrate", &id, "--output", "json"])
        .ok()
        .json();
    assert_eq!(one["tenants"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["tenants"][0]["slug"], globex);
}

#[test]
fn settings_hold_json_values_and_plain_strings_per_tenant() {
    let env = TestEnv::new();
    let (acme, globex) = acme_and_globex(&env);
    let id = id_of(&env, &globex);
    // settings: JSON values and plain strings
    env.run(&["tenant", "settings", "set", &acme, "theme", "dark"])
        .ok();
    env.run(&[
        "tenant",
        "settings",
        "set",
        &acme,
        "limits",
        r#"{"users": 10}"#,
    ])
    .ok();
    env.run(&["tenant", "settings", "set", &acme, "theme", "light"])
        .ok();
    env.expect(&["tenant", "settings", "get", &acme, "theme"])
        .stdout("\"light\"\n")
        .run();
    // By id: set, get and list reach globex's database, and only it.
    env.run(&["tenant", "settings", "set", &id, "region", "eu"])
        .ok();
    assert_eq!(
        env.query(
            &env.db("globex"),
            "SELECT value::text FROM settings WHERE key = 'region'"
        ),
        [r#""eu""#]
    );
    env.expect(&["tenant", "settings", "get", &id, "region"])
        .stdout("\"eu\"\n")
        .run();
    let by_id = env
        .run(&["tenant", "settings", "list", &id, "--output", "json"])
        .ok()
        .json();
    assert_eq!(by_id["settings"][0]["key"], "region", "{by_id}");
    // limits was set on acme, not on globex.
    env.expect(&[
        "tenant", "settings", "get", &id, "limits", "--output", "json",
    ])
    .stdout(
        r#"
        {
          "schema_version": 1,
          "error": "tenant globex-{T} (tenant_globex_{T}): no setting \"limits\"",
          "kind": "failure"
        }
        "#,
    )
    .stderr("error: tenant globex-{T} (tenant_globex_{T}): no setting \"limits\"\n")
    .status(1)
    .run();
    let limits = env
        .run(&[
            "tenant", "settings", "get", &acme, "limits", "--output", "json",
        ])
        .ok()
        .json();
    assert_eq!(
        limits["value"],
        serde_json::json!({"users": 10}),
        "{limits}"
    );
    assert_eq!(limits["key"], "limits");
    let stored = env.query(
        &env.db("acme"),
        "SELECT jsonb_typeof(value) FROM settings WHERE key = 'limits'",
    );
    assert_eq!(stored, ["object"]);
    let all = env
        .run(&["tenant", "settings", "list", &acme, "--output", "json"])
        .ok()
        .json();
    let keys: Vec<&str> = all["settings"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["key"].as_str())
        .collect();
    assert_eq!(keys, ["limits", "theme"]);
    env.expect(&["tenant", "settings", "get", &acme, "nope"])
        .stderr("error: tenant acme-{T} (tenant_acme_{T}): no setting \"nope\"\n")
        .status(1)
        .run();
}

#[test]
fn tenant_migrations_folder_overrides_embedded_schema() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let dir = dir.to_str().expect("utf-8 path");
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("custom");
    env.run(&["tenant", "create", &slug, "--tenant-migrations", dir])
        .ok();
    assert_eq!(
        env.applied(&env.db("custom")),
        [20_250_101_000_001, 20_250_101_000_002]
    );
    // The env var works the same way, and sees nothing pending.
    let report = env
        .run_with(&["tenant", "migrate", &slug, "--output", "json"], |c| {
            c.env("TENANT_MIGRATIONS_DIR", dir);
        })
        .ok()
        .json();
    assert_eq!(report["tenants"][0]["applied"], serde_json::json!([]));
}

#[test]
fn explicit_db_name_and_derived_name_collisions() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    let custom = format!("db_custom_{}", env.token);
    let slug = env.slug("named");
    let created = env
        .run(&[
            "tenant",
            "create",
            &slug,
            "--db-name",
            &custom,
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(created["db_name"], custom);
    assert!(env.database_exists(&custom));

    // A stranger's database with the derived name is never adopted.
    let taken = env.db("taken");
    env.exec("postgres", &format!("CREATE DATABASE \"{taken}\""));
    env.exec(&taken, "CREATE TABLE precious (id int)");
    let created = env
        .run(&["tenant", "create", &env.slug("taken"), "--output", "json"])
        .ok()
        .json();
    assert_eq!(created["db_name"], format!("{taken}_2"));
    assert_eq!(
        env.query(&taken, "SELECT to_regclass('_sqlx_migrations')::text"),
        [""],
        "the stranger's database was left alone"
    );
}

#[test]
fn dotenv_is_loaded_and_real_environment_wins() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    std::fs::write(
        env.workdir.path().join(".env"),
        format!(
            "POSTGRES_BASE_URL={}\nMASTER_DATABASE_URL={}\n",
            env.base_url,
            env.master_url()
        ),
    )
    .expect("write .env");
    env.run_with(&["tenant", "list"], |c| {
        c.env_remove("POSTGRES_BASE_URL")
            .env_remove("MASTER_DATABASE_URL");
    })
    .ok();
    env.expect(&["tenant", "list"])
        .env_remove("POSTGRES_BASE_URL")
        .env(
            "MASTER_DATABASE_URL",
            "postgresql://nobody@127.0.0.1:1/master",
        )
        .stderr(
            "note: loaded {workdir}/.env, which sets POSTGRES_BASE_URL (MASTER_DATABASE_URL already \
             set in the environment, which wins)\n\
             error: connect to database master on 127.0.0.1:1: error communicating with database: \
             Connection refused (os error 111)\n",
        )
        .status(1)
        .run();
}
