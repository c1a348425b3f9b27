//! The happy path, as an operator runs it.

use crate::support::TestEnv;

#[test]
fn end_to_end_create_list_migrate_settings() {
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

    // list: table and JSON
    let table = env.run(&["tenant", "list"]).ok();
    assert!(
        table.stdout.contains(&acme) && table.stdout.contains("Acme Inc"),
        "{}",
        table.stdout
    );
    let list = env.run(&["tenant", "list", "--output", "json"]).ok().json();
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
    let id = rows[1]["id"].as_str().expect("id");
    let one = env
        .run(&["tenant", "migrate", id, "--output", "json"])
        .ok()
        .json();
    assert_eq!(one["tenants"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["tenants"][0]["slug"], globex);

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
    let theme = env.run(&["tenant", "settings", "get", &acme, "theme"]).ok();
    assert_eq!(theme.stdout.trim(), r#""light""#);
    // By id: set, get and list reach globex's database, and only it.
    env.run(&["tenant", "settings", "set", id, "region", "eu"])
        .ok();
    assert_eq!(
        env.query(
            &env.db("globex"),
            "SELECT value::text FROM settings WHERE key = 'region'"
        ),
        [r#""eu""#]
    );
    let region = env.run(&["tenant", "settings", "get", id, "region"]).ok();
    assert_eq!(region.stdout.trim(), r#""eu""#);
    let by_id = env
        .run(&["tenant", "settings", "list", id, "--output", "json"])
        .ok()
        .json();
    assert_eq!(by_id[0]["key"], "region", "{by_id}");
    let limits = env
        .run(&[
            "tenant", "settings", "get", id, "limits", "--output", "json",
        ])
        .code(1);
    assert!(
        limits.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("no setting \"limits\"")),
        "limits was set on acme, not on globex: {}",
        limits.stdout
    );
    let limits = env
        .run(&[
            "tenant", "settings", "get", &acme, "limits", "--output", "json",
        ])
        .ok()
        .json();
    assert_eq!(limits, serde_json::json!({"users": 10}));
    let stored = env.query(
        &env.db("acme"),
        "SELECT jsonb_typeof(value) FROM settings WHERE key = 'limits'",
    );
    assert_eq!(stored, ["object"]);
    let all = env
        .run(&["tenant", "settings", "list", &acme, "--output", "json"])
        .ok()
        .json();
    let keys: Vec<&str> = all
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["key"].as_str())
        .collect();
    assert_eq!(keys, ["limits", "theme"]);
    let missing = env
        .run(&["tenant", "settings", "get", &acme, "nope"])
        .code(1);
    assert!(missing.stderr.contains("no setting"), "{}", missing.stderr);
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
    let run = env.run_with(&["tenant", "list"], |c| {
        c.env_remove("POSTGRES_BASE_URL");
        c.env(
            "MASTER_DATABASE_URL",
            "postgresql://nobody@127.0.0.1:1/master",
        );
    });
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("127.0.0.1:1"), "{}", run.stderr);
}
