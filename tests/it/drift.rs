//! `tenant drift` (issue 18): each kind of drift planted by hand in one
//! tenant of a fleet whose majority is untouched, found on that tenant and
//! nowhere else; pending tenants and `--against`; `--sql` repairs run back
//! through `tenant sql` (parts going with their whole, wholes first);
//! default privileges; a tenant not read and JSONL; two servers; PgBouncer
//! in both modes; an adopted ORM master with Prisma-migrated tenants; the
//! scratch database gone after every run, a failed build and an interrupt;
//! bad input.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::{Connection as _, Executor as _};

use crate::servers::TwoServers;
use crate::support::pooler::PgBouncer;
use crate::support::server::PrivateServer;
use crate::support::{Run, TestEnv, block_on, find, wait_with_deadline};

/// The last migration of the drift fixture folder: one object of each
/// kind the embedded schema lacks, so each kind can be both removed and
/// changed in a tenant.
const OBJECTS: &str = r#"
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE reading_kind AS ENUM ('metered', 'estimated');
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW."updatedAt" := now();
    RETURN NEW;
END
$$;
CREATE TRIGGER settings_touch BEFORE UPDATE ON settings
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE FUNCTION site_count() RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT count(*) FROM sites $$;
ALTER TABLE goals ENABLE ROW LEVEL SECURITY;
CREATE POLICY goals_visible ON goals USING (true);
ALTER TABLE goals ADD CONSTRAINT goals_site_deferred FOREIGN KEY ("siteId") REFERENCES sites (id)
    DEFERRABLE INITIALLY DEFERRED;
GRANT SELECT ON settings TO PUBLIC;
"#;

/// The embedded schema plus [`OBJECTS`], in the test's scratch space.
fn drift_folder(env: &TestEnv) -> String {
    env.tenant_schema_plus("drift", "20240201000001_objects.sql", OBJECTS)
}

/// A difference as the tests name it: kind, name, change and (for a
/// changed object) the property.
type Diff = (String, String, String, String);

fn diff(kind: &str, name: &str, change: &str, property: &str) -> Diff {
    (kind.into(), name.into(), change.into(), property.into())
}

/// A tenant's differences in a JSON report, as [`Diff`]s.
fn diffs_of(report: &serde_json::Value, slug: &str) -> BTreeSet<Diff> {
    find(report, slug)["differences"]
        .as_array()
        .unwrap_or_else(|| panic!("no differences for {slug} in {report}"))
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            (s("kind"), s("name"), s("change"), s("property"))
        })
        .collect()
}

/// `tenant drift ARGS` with `more` applied to the command; also returns
/// the process id, which names its scratch database
/// (`tenantctl_drift_<pid>_<hex>`).
fn drift_with(
    env: &TestEnv,
    args: &[&str],
    more: impl FnOnce(&mut std::process::Command),
) -> (Run, u32) {
    let mut cmd = env.cmd();
    more(&mut cmd);
    let child = cmd
        .args(["tenant", "drift"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tenantctl");
    let pid = child.id();
    (wait_with_deadline(child, Duration::from_secs(120)), pid)
}

fn drift(env: &TestEnv, args: &[&str]) -> (Run, u32) {
    drift_with(env, args, |_| {})
}

/// The scratch databases a run with this process id left on the server at
/// `url` (a server root): there must be none.
fn scratch_left(url: &str, pid: u32) -> Vec<String> {
    crate::servers::query_url(
        &format!("{url}/postgres"),
        &format!(
            r"SELECT datname::text FROM pg_database WHERE datname LIKE 'tenantctl\_drift\_{pid}\_%'"
        ),
    )
}

/// Runs one statement expected to fail (a `CREATE UNIQUE INDEX
/// CONCURRENTLY` on duplicate data, which leaves its index INVALID); on
/// its own, so it runs outside a transaction block.
fn exec_failing(env: &TestEnv, db: &str, sql: &str) -> String {
    block_on(async {
        let mut conn = env.connect(db).await;
        let err = conn
            .execute(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql}: expected an error"));
        let _ = conn.close().await;
        err.to_string()
    })
}

/// One kind of drift: a tenant's name, what is done to it, and the
/// differences that must be reported for it.
struct Planted {
    name: &'static str,
    plant: &'static [&'static str],
    found: Vec<Diff>,
}

fn kinds_of_drift() -> Vec<Planted> {
    vec![
        Planted {
            name: "extra-table",
            plant: &["CREATE TABLE scratchpad (note text)"],
            // Its column and its owner's grants come with it: checked apart.
            found: vec![
                diff("table", "scratchpad", "extra", ""),
                diff("column", "scratchpad.note", "extra", ""),
            ],
        },
        Planted {
            name: "dropped-index",
            plant: &["DROP INDEX sites_manager_idx"],
            found: vec![diff("index", "sites_manager_idx", "missing", "")],
        },
        Planted {
            name: "invalid-index",
            // The same index, made again concurrently over duplicates:
            // left INVALID, its definition unchanged.
            plant: &[
                "DROP INDEX users_email_key",
                "INSERT INTO users (email, name) VALUES ('a@example.com', 'A'), ('A@example.com', 'B')",
            ],
            found: vec![diff("index", "users_email_key", "changed", "valid")],
        },
        Planted {
            name: "changed-default",
            plant: &["ALTER TABLE users ALTER COLUMN role SET DEFAULT 'viewer'"],
            found: vec![diff("column", "users.role", "changed", "default")],
        },
        Planted {
            name: "changed-type",
            plant: &["ALTER TABLE sites ALTER COLUMN address TYPE varchar(200)"],
            found: vec![diff("column", "sites.address", "changed", "type")],
        },
        Planted {
            name: "revoked-grant",
            plant: &["REVOKE SELECT ON settings FROM PUBLIC"],
            found: vec![diff(
                "grant",
                "SELECT on table settings to PUBLIC",
                "missing",
                "",
            )],
        },
        Planted {
            name: "new-trigger",
            plant: &[
                "CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch_updated_at()",
            ],
            found: vec![diff("trigger", "users_touch on users", "extra", "")],
        },
        Planted {
            name: "disabled-trigger",
            plant: &["ALTER TABLE settings DISABLE TRIGGER settings_touch"],
            found: vec![diff(
                "trigger",
                "settings_touch on settings",
                "changed",
                "enabled",
            )],
        },
        Planted {
            name: "function-body",
            plant: &[
                "CREATE OR REPLACE FUNCTION site_count() RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT count(*) FROM sites WHERE kind <> 'park' $$",
            ],
            found: vec![diff("function", "site_count()", "changed", "body")],
        },
        Planted {
            name: "new-policy",
            plant: &["CREATE POLICY goals_hidden ON goals AS RESTRICTIVE USING (false)"],
            found: vec![diff("policy", "goals_hidden on goals", "extra", "")],
        },
        Planted {
            name: "no-extension",
            plant: &["DROP EXTENSION citext"],
            found: vec![diff("extension", "citext", "missing", "")],
        },
        Planted {
            name: "enum-label",
            plant: &["ALTER TYPE reading_kind ADD VALUE 'imported'"],
            found: vec![diff("enum", "reading_kind", "changed", "labels")],
        },
        Planted {
            name: "immediate",
            plant: &["ALTER TABLE goals ALTER CONSTRAINT goals_site_deferred NOT DEFERRABLE"],
            found: vec![diff(
                "constraint",
                "goals_site_deferred on goals",
                "changed",
                "deferrable",
            )],
        },
    ]
}

/// Plants a kind of drift in the tenant's database.
fn plant(env: &TestEnv, planted: &Planted) {
    let db = env.db(planted.name);
    for sql in planted.plant {
        env.exec(&db, sql);
    }
    if planted.name == "invalid-index" {
        let err = exec_failing(
            env,
            &db,
            "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (lower(email))",
        );
        assert!(err.contains("could not create unique index"), "{err}");
        assert_eq!(
            env.query(
                &db,
                "SELECT indisvalid::text FROM pg_index WHERE indexrelid = 'users_email_key'::regclass"
            ),
            ["false"]
        );
    }
}

const CLEAN: [&str; 3] = ["clean-a", "clean-b", "clean-c"];

#[test]
fn each_kind_of_drift_is_found_on_its_tenant_and_nothing_on_the_clean_ones() {
    let env = TestEnv::new();
    let dir = drift_folder(&env);
    let planted = kinds_of_drift();
    let mut names: Vec<&str> = CLEAN.to_vec();
    names.extend(planted.iter().map(|p| p.name));
    env.tenants_with(std::path::Path::new(&dir), &names);
    for p in &planted {
        plant(&env, p);
    }

    let (run, pid) = drift(
        &env,
        &["--all", "--output", "json", "--tenant-migrations", &dir],
    );
    let run = run.code(1);
    assert_eq!(run.stderr, "");
    assert!(scratch_left(&env.base_url, pid).is_empty());
    let report = run.json();
    for name in CLEAN {
        let t = find(&report, &env.slug(name));
        assert_eq!(t["drift"], "match", "{t}");
        assert_eq!(t["differences"], serde_json::json!([]), "{t}");
        assert_eq!(
            t["fingerprint"],
            report["drift"]["reference"]["fingerprint"]
        );
    }
    for p in &planted {
        let slug = env.slug(p.name);
        let t = find(&report, &slug);
        assert_eq!(t["drift"], "differs", "{t}");
        assert_ne!(
            t["fingerprint"],
            report["drift"]["reference"]["fingerprint"]
        );
        let mut found = diffs_of(&report, &slug);
        if p.name == "extra-table" {
            // The owner's privileges on the new table are extra grants too.
            assert!(
                found.contains(&diff(
                    "grant",
                    "SELECT on table scratchpad to (owner)",
                    "extra",
                    ""
                )),
                "{found:?}"
            );
            found.retain(|(kind, name, change, _)| {
                !(kind == "grant"
                    && name.ends_with(" on table scratchpad to (owner)")
                    && change == "extra")
            });
        }
        let expected: BTreeSet<Diff> = p.found.iter().cloned().collect();
        assert_eq!(found, expected, "{slug}");
    }
    let summary = &report["drift"];
    assert_eq!(summary["matched"], 3);
    assert_eq!(summary["differ"], planted.len());
    assert_eq!(summary["pending"], 0);
    assert_eq!(summary["reference"]["kind"], "migrations");
    // Each difference once, with the one tenant that has it.
    for group in summary["differences"].as_array().expect("differences") {
        assert_eq!(
            group["tenants"].as_array().map(Vec::len),
            Some(1),
            "{group}"
        );
        // Its id too, the key every `tenants` row has.
        let row = find(&report, group["tenants"][0].as_str().expect("a handle"));
        assert_eq!(
            group["tenant_ids"],
            serde_json::json!([row["id"]]),
            "{group}"
        );
    }

    // The report for people names each tenant on its difference's line.
    let (table, _) = drift(&env, &["--all", "--tenant-migrations", &dir]);
    let table = table.code(1);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(
        lines[1],
        format!(
            "3 match the reference; {} differ; 0 pending; 0 not read",
            planted.len()
        )
    );
    let on = |name: &str| format!("(1 tenant: {})", env.slug(name));
    for expected in [
        format!(
            "table scratchpad not in the reference {}",
            on("extra-table")
        ),
        format!("index sites_manager_idx missing {}", on("dropped-index")),
        format!(
            "index users_email_key valid changed: true (reference) vs false {}",
            on("invalid-index")
        ),
        format!(
            "column users.role default changed: 'member'::text (reference) vs 'viewer'::text {}",
            on("changed-default")
        ),
        format!(
            "column sites.address type changed: text (reference) vs character varying(200) {}",
            on("changed-type")
        ),
        format!(
            "grant SELECT on table settings to PUBLIC missing {}",
            on("revoked-grant")
        ),
        format!(
            "trigger users_touch on users not in the reference {}",
            on("new-trigger")
        ),
        format!(
            "trigger settings_touch on settings enabled changed: enabled (reference) vs disabled {}",
            on("disabled-trigger")
        ),
        format!(
            "policy goals_hidden on goals not in the reference {}",
            on("new-policy")
        ),
        format!("extension citext missing {}", on("no-extension")),
        format!(
            "enum reading_kind labels changed: 'metered', 'estimated' (reference) vs 'metered', 'estimated', 'imported' {}",
            on("enum-label")
        ),
        format!(
            "constraint goals_site_deferred on goals deferrable changed: deferrable initially deferred (reference) vs not deferrable {}",
            on("immediate")
        ),
    ] {
        assert!(
            lines.contains(&expected.as_str()),
            "no line {expected:?} in:\n{}",
            table.stdout
        );
    }
    let body = lines
        .iter()
        .find(|l| l.starts_with("function site_count() body changed: "))
        .unwrap_or_else(|| panic!("no function body line in:\n{}", table.stdout));
    assert!(body.ends_with(&on("function-body")), "{body}");

    // The clean tenants alone: nothing drifted, exit 0.
    let clean: Vec<String> = CLEAN.iter().map(|n| env.slug(n)).collect();
    let mut args = vec!["tenant", "drift"];
    args.extend(clean.iter().map(String::as_str));
    args.extend(["--tenant-migrations", &dir]);
    let objects = report["drift"]["reference"]["objects"].to_string();
    env.expect(&args)
        .with(format!("({objects} objects)"), "({n} objects)")
        .stdout(
            "
            reference: the migrations (built in a scratch database on server default) ({n} objects)
            3 match the reference; 0 differ; 0 pending; 0 not read
            selected 3 of the master's 16 companies: named clean-a-{T}, clean-b-{T}, clean-c-{T}
            ",
        )
        .run();
}

/// The number of objects in the reference a JSON report names.
fn objects(report: &serde_json::Value) -> String {
    report["drift"]["reference"]["objects"].to_string()
}

#[test]
fn a_tenant_behind_is_pending_not_drifted_and_cannot_be_the_reference() {
    let env = TestEnv::new();
    let dir = drift_folder(&env);
    env.tenants_with(std::path::Path::new(&dir), &["up-a", "up-b"]);
    // Made with the embedded migrations: one migration behind the folder,
    // and so without its objects; its schema is not compared at all.
    env.run(&["tenant", "create", &env.slug("behind")]).ok();
    env.exec(&env.db("behind"), "CREATE TABLE by_hand (id int)");

    let (run, pid) = drift(
        &env,
        &["--all", "--output", "json", "--tenant-migrations", &dir],
    );
    let report = run.ok().json();
    assert!(scratch_left(&env.base_url, pid).is_empty());
    let behind = find(&report, &env.slug("behind"));
    assert_eq!(behind["drift"], "pending", "{behind}");
    assert_eq!(behind["pending"], 1, "{behind}");
    assert_eq!(behind["differences"], serde_json::json!([]), "{behind}");
    assert_eq!(find(&report, &env.slug("up-a"))["drift"], "match");
    assert_eq!(find(&report, &env.slug("up-a")).get("pending"), None);
    assert_eq!(report["drift"]["pending"], 1);
    assert_eq!(report["drift"]["differences"], serde_json::json!([]));

    // Pending alone is not drift: exit 0.
    env.expect(&["tenant", "drift", "--all", "--tenant-migrations", &dir])
        .with(format!("({} objects)", objects(&report)), "({n} objects)")
        .stdout(
            "
            reference: the migrations (built in a scratch database on server default) ({n} objects)
            2 match the reference; 0 differ; 1 pending; 0 not read
            pending, not compared (not at the latest migration; `tenantctl tenant migrate` them): behind-{T}
            selected 3 of the master's 3 companies: --all, status active (by default)
            ",
        )
        .stdout_in_any_order()
        .run();

    // A tenant behind cannot be the reference: one line, a usage error.
    env.expect(&[
        "tenant",
        "drift",
        "--all",
        "--against",
        &env.slug("behind"),
        "--tenant-migrations",
        &dir,
    ])
    .stderr(
        "error: --against behind-{T}: that tenant has 1 migration(s) pending, so its schema is not \
             the latest; migrate it first or compare with an up-to-date tenant\n",
    )
    .status(2)
    .run();

    // --against compares with that tenant's schema, not the migrations':
    // up-a's own default is the reference, so the untouched up-b differs.
    env.exec(
        &env.db("up-a"),
        "ALTER TABLE users ALTER COLUMN role SET DEFAULT 'viewer'",
    );
    let against = env
        .run(&[
            "tenant",
            "drift",
            "--all",
            "--against",
            &env.slug("up-a"),
            "--output",
            "json",
            "--tenant-migrations",
            &dir,
        ])
        .code(1)
        .json();
    assert_eq!(against["drift"]["reference"]["kind"], "tenant");
    assert_eq!(against["drift"]["reference"]["tenant"], env.slug("up-a"));
    assert_eq!(
        against["drift"]["reference"]["fingerprint"],
        find(&against, &env.slug("up-a"))["fingerprint"]
    );
    env.expect(&["tenant", "drift", "--all", "--against", &env.slug("up-a"), "--tenant-migrations", &dir])
        .with(format!("({} objects)", objects(&against)), "({n} objects)")
        .stdout(
            "
            reference: tenant up-a-{T} ({n} objects)
            1 match the reference; 1 differ; 1 pending; 0 not read
            column users.role default changed: 'viewer'::text (reference) vs 'member'::text (1 tenant: up-b-{T})
            pending, not compared (not at the latest migration; `tenantctl tenant migrate` them): behind-{T}
            selected 3 of the master's 3 companies: --all, status active (by default)
            ",
        )
        .status(1)
        .run();
}

/// The blocks of a `--sql` script, by tenant slug: each `-- tenant SLUG
/// (...)` line and what follows it up to the next.
fn blocks(script: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in script.lines() {
        if let Some(rest) = line.strip_prefix("-- tenant ") {
            let slug = rest.split(' ').next().expect("slug").to_owned();
            out.push((slug, String::new()));
        }
        if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

#[test]
fn sql_prints_the_repairs_and_running_them_makes_the_tenants_match() {
    let env = TestEnv::new();
    let dir = drift_folder(&env);
    let names = [
        "clean",
        "dropped-index",
        "extra-index",
        "revoked-grant",
        "changed-type",
        "several",
        "statistics",
    ];
    env.tenants_with(std::path::Path::new(&dir), &names);
    env.exec(&env.db("dropped-index"), "DROP INDEX sites_manager_idx");
    env.exec(
        &env.db("extra-index"),
        "CREATE INDEX sites_name_idx ON sites (name)",
    );
    env.exec(
        &env.db("revoked-grant"),
        "REVOKE SELECT ON settings FROM PUBLIC",
    );
    env.exec(
        &env.db("changed-type"),
        "ALTER TABLE sites ALTER COLUMN address TYPE varchar(200)",
    );
    env.exec(
        &env.db("several"),
        "ALTER TABLE users ALTER COLUMN role SET DEFAULT 'viewer';
         ALTER TABLE settings DISABLE TRIGGER settings_touch;
         ALTER TABLE goals ALTER CONSTRAINT goals_site_deferred NOT DEFERRABLE;
         ALTER TABLE goals DISABLE ROW LEVEL SECURITY;
         DROP POLICY goals_visible ON goals;",
    );
    env.exec(
        &env.db("statistics"),
        "ALTER TABLE users ALTER COLUMN email SET STATISTICS 500",
    );

    let script = env
        .expect(&["tenant", "drift", "--all", "--sql", "--tenant-migrations", &dir])
        .stdout(
            "
            -- tenantctl tenant drift: repairs towards the migrations (built in a scratch database on server default); review each block, then run it with `tenantctl tenant sql <tenant> -f FILE`

            -- tenant changed-type-{T} (database tenant_changed_type_{T} on server default): 1 difference(s)
            -- no obvious repair: column sites.address type changed: text (reference) vs character varying(200)

            -- tenant dropped-index-{T} (database tenant_dropped_index_{T} on server default): 1 difference(s)
            SET search_path = ''; SET check_function_bodies = false; SET standard_conforming_strings = on;
            -- index sites_manager_idx missing
            CREATE INDEX sites_manager_idx ON public.sites USING btree (\"managerId\");

            -- tenant extra-index-{T} (database tenant_extra_index_{T} on server default): 1 difference(s)
            SET search_path = ''; SET check_function_bodies = false; SET standard_conforming_strings = on;
            -- index sites_name_idx not in the reference
            DROP INDEX public.sites_name_idx;

            -- tenant revoked-grant-{T} (database tenant_revoked_grant_{T} on server default): 1 difference(s)
            SET search_path = ''; SET check_function_bodies = false; SET standard_conforming_strings = on;
            -- grant SELECT on table settings to PUBLIC missing
            GRANT SELECT ON TABLE public.settings TO PUBLIC;

            -- tenant several-{T} (database tenant_several_{T} on server default): 5 difference(s)
            SET search_path = ''; SET check_function_bodies = false; SET standard_conforming_strings = on;
            -- table goals row level security changed: true (reference) vs false
            ALTER TABLE public.goals ENABLE ROW LEVEL SECURITY;
            -- column users.role default changed: 'member'::text (reference) vs 'viewer'::text
            ALTER TABLE public.users ALTER COLUMN role SET DEFAULT 'member'::text;
            -- constraint goals_site_deferred on goals deferrable changed: deferrable initially deferred (reference) vs not deferrable
            ALTER TABLE public.goals ALTER CONSTRAINT goals_site_deferred DEFERRABLE INITIALLY DEFERRED;
            -- policy goals_visible on goals missing
            CREATE POLICY goals_visible ON public.goals AS PERMISSIVE FOR ALL TO PUBLIC USING (true);
            -- trigger settings_touch on settings enabled changed: enabled (reference) vs disabled
            ALTER TABLE public.settings ENABLE TRIGGER settings_touch;

            -- tenant statistics-{T} (database tenant_statistics_{T} on server default): 1 difference(s)
            SET search_path = ''; SET check_function_bodies = false; SET standard_conforming_strings = on;
            -- column users.email statistics changed: none (reference) vs 500
            ALTER TABLE public.users ALTER COLUMN email SET STATISTICS -1;
            ",
        )
        // Blocks follow the tenants' ids, which sort anywhere.
        .stdout_in_any_order()
        .status(1)
        .run()
        .stdout;

    // Each block run as the operator would, then read again.
    let repaired = run_blocks(&env, &script);
    let expected: Vec<String> = [
        "dropped-index",
        "extra-index",
        "revoked-grant",
        "several",
        "statistics",
    ]
    .iter()
    .map(|n| env.slug(n))
    .collect();
    assert_eq!(repaired, expected);
    let report = env
        .run(&[
            "tenant",
            "drift",
            "--all",
            "--output",
            "json",
            "--tenant-migrations",
            &dir,
        ])
        .code(1)
        .json();
    for name in names {
        let t = find(&report, &env.slug(name));
        let want = if name == "changed-type" {
            "differs"
        } else {
            "match"
        };
        assert_eq!(t["drift"], want, "{name}: {t}");
    }
}

/// Any scratch database left on a private server (no other test uses it).
fn any_scratch_left(base: &str) -> Vec<String> {
    crate::servers::query_url(
        &format!("{base}/postgres"),
        r"SELECT datname::text FROM pg_database WHERE datname LIKE 'tenantctl\_drift\_%'",
    )
}

#[test]
fn tenants_on_two_servers_with_equal_schemas_match_and_drift_on_the_second_is_found() {
    let two = TwoServers::new();
    let env = &two.env;
    two.run(&["master", "migrate"]).ok();
    let dir = drift_folder(env);
    // Alternating servers, eu2 first: other OIDs, other creation order.
    for (name, server) in [
        ("b", "eu2"),
        ("a", "default"),
        ("c", "eu2"),
        ("d", "default"),
        ("e", "eu2"),
    ] {
        two.create(&env.slug(name), server, &dir);
    }
    // c: an index made again (another OID, made last) and a column added
    // and dropped (attisdropped); d: a column dropped and added back (last
    // in the table now). Neither is drift.
    two.eu2_exec(
        &env.db("c"),
        r#"DROP INDEX sites_manager_idx;
           CREATE INDEX sites_manager_idx ON sites ("managerId");
           ALTER TABLE settings ADD COLUMN scratch int;
           ALTER TABLE settings DROP COLUMN scratch;"#,
    );
    env.exec(
        &env.db("d"),
        r#"ALTER TABLE audit_log DROP COLUMN "entityId";
           ALTER TABLE audit_log ADD COLUMN "entityId" text;"#,
    );

    let (run, pid) = drift_with(
        env,
        &["--all", "--output", "json", "--tenant-migrations", &dir],
        |c| two.configure(c),
    );
    let report = run.ok().json();
    assert_eq!(report["drift"]["matched"], 5, "{report}");
    assert!(scratch_left(&env.base_url, pid).is_empty());
    assert!(any_scratch_left(&two.eu2.base_url()).is_empty());
    let fingerprints: BTreeSet<String> = report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["fingerprint"].as_str().expect("fingerprint").to_owned())
        .collect();
    assert_eq!(fingerprints.len(), 1, "{report}");

    // Drift on eu2 is found there, with the reference built on eu2 itself.
    two.eu2_exec(
        &env.db("e"),
        "ALTER TABLE users ALTER COLUMN role SET DEFAULT 'viewer'",
    );
    let (run, pid) = drift_with(
        env,
        &["--all", "--output", "json", "--tenant-migrations", &dir],
        |c| two.configure(c),
    );
    let report = run.code(1).json();
    assert!(scratch_left(&env.base_url, pid).is_empty());
    assert_eq!(find(&report, &env.slug("e"))["server"], "eu2");
    assert_eq!(
        diffs_of(&report, &env.slug("e")),
        BTreeSet::from([diff("column", "users.role", "changed", "default")])
    );
    for name in ["a", "b", "c", "d"] {
        assert_eq!(find(&report, &env.slug(name))["drift"], "match", "{name}");
    }
    two.expect(&["tenant", "drift", "--all", "--server", "eu2", "--tenant-migrations", &dir])
        .with(format!("({} objects)", objects(&report)), "({n} objects)")
        .stdout(
            "
            reference: the migrations (built in a scratch database on server eu2) ({n} objects)
            2 match the reference; 1 differ; 0 pending; 0 not read
            column users.role default changed: 'member'::text (reference) vs 'viewer'::text (1 tenant: e-{T})
            selected 3 of the master's 5 companies: --all, status active (by default), --server eu2
            ",
        )
        .status(1)
        .run();
    assert!(any_scratch_left(&two.eu2.base_url()).is_empty());
}

const APP_PASSWORD: &str = "app-Drift-pw1";

/// A private server with role `app` owning a master database, PgBouncer in
/// front of it in `mode`.
fn pooled(env: &TestEnv, mode: &str) -> (PrivateServer, PgBouncer) {
    let server = PrivateServer::start(&env.token);
    server.exec(
        "postgres",
        &format!("CREATE ROLE app LOGIN CREATEDB PASSWORD '{APP_PASSWORD}'"),
    );
    // Made beforehand, as production has it: a login to a database that
    // does not exist yet makes PgBouncer wait before it tries again.
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    let bouncer = PgBouncer::start(&server, &env.token, mode, &[("app", APP_PASSWORD)]);
    (server, bouncer)
}

/// Three tenants made through the pooler (`through` runs the binary
/// there), globex then drifted by hand; drift through the pooler finds it
/// on globex alone and leaves no scratch database.
fn drift_through_the_pooler(
    env: &TestEnv,
    server: &PrivateServer,
    through: &dyn Fn(&[&str]) -> Run,
) {
    through(&["master", "migrate"]).ok();
    for slug in ["acme", "globex", "initech"] {
        through(&["tenant", "create", slug]).ok();
    }
    let clean = through(&["tenant", "drift", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(clean["drift"]["matched"], 3, "{clean}");
    assert!(any_scratch_left(&server.base_url()).is_empty());

    server.exec(
        "tenant_globex",
        "ALTER TABLE users ALTER COLUMN role SET DEFAULT 'viewer'",
    );
    let report = through(&["tenant", "drift", "--all", "--output", "json"])
        .code(1)
        .json();
    assert!(any_scratch_left(&server.base_url()).is_empty());
    let objects = objects(&report);
    let table = through(&["tenant", "drift", "--all"]).code(1);
    assert_eq!(
        table.stdout,
        format!(
            "reference: the migrations (built in a scratch database on server default) ({objects} objects)\n\
             2 match the reference; 1 differ; 0 pending; 0 not read\n\
             column users.role default changed: 'member'::text (reference) vs 'viewer'::text (1 tenant: globex)\n\
             selected 3 of the master's 3 companies: --all, status active (by default)\n"
        )
    );
    assert!(any_scratch_left(&server.base_url()).is_empty());
    let _ = env;
}

#[test]
fn through_pgbouncer_in_session_mode_drift_is_found() {
    let env = TestEnv::new();
    let (server, bouncer) = pooled(&env, "session");
    let base = bouncer.url_as("app", APP_PASSWORD);
    drift_through_the_pooler(&env, &server, &|args| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &base)
                .env("MASTER_DATABASE_URL", format!("{base}/master"));
        })
    });
}

#[test]
fn through_pgbouncer_in_transaction_mode_declared_or_on_the_url_drift_is_found() {
    let env = TestEnv::new();
    let (server, bouncer) = pooled(&env, "transaction");
    let base = bouncer.url_as("app", APP_PASSWORD);
    // Declared in tenantctl.toml, the URLs bare.
    env.write_config("[servers.default]\npooler = \"transaction\"\n");
    drift_through_the_pooler(&env, &server, &|args| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &base)
                .env("MASTER_DATABASE_URL", format!("{base}/master"));
        })
    });
    // Said on the URLs instead: the same tenants, the same report.
    std::fs::remove_file(env.workdir.path().join("tenantctl.toml")).expect("remove the config");
    let flagged = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", format!("{base}/?pgbouncer=true"))
                .env(
                    "MASTER_DATABASE_URL",
                    format!("{base}/master?pgbouncer=true"),
                );
        })
    };
    let report = flagged(&["tenant", "drift", "--all", "--output", "json"])
        .code(1)
        .json();
    assert_eq!(report["drift"]["matched"], 2, "{report}");
    assert_eq!(
        diffs_of(&report, "globex"),
        BTreeSet::from([diff("column", "users.role", "changed", "default")])
    );
    assert!(any_scratch_left(&server.base_url()).is_empty());
}

#[test]
fn the_scratch_database_is_dropped_also_when_the_migrations_fail() {
    let env = TestEnv::new();
    let good = env.fixture("two-step");
    env.tenants_with(&good, &["one", "two"]);
    let broken = env.fixture("broken");
    let (run, pid) = drift(
        &env,
        &[
            "--all",
            "--tenant-migrations",
            broken.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "error: migrate the scratch database the reference is read from: apply migration \
         20250101000002_broken: relation \"table_that_does_not_exist\" does not exist \
         (SQLSTATE 42P01, at character 135)\n"
    );
    assert!(scratch_left(&env.base_url, pid).is_empty());
}

#[test]
fn bad_input_is_one_line() {
    let env = TestEnv::new();
    env.with_tenants(&["only"]);
    // An unknown tenant, as reference or selected, as every command says it.
    for args in [
        &["tenant", "drift", "--all", "--against", "nosuch"][..],
        &["tenant", "drift", "nosuch"],
    ] {
        env.expect(args)
            .stderr(
                "error: unknown tenant \"nosuch\": no company has that slug, id, database name \
                 or (without a slug) name (see `tenantctl tenant list`)\n",
            )
            .status(1)
            .run();
    }
    env.expect(&["tenant", "drift"])
        .stderr("error: name one or more tenants (slug or id), or pass --all or --status\n")
        .status(2)
        .run();

    // An application command migrates: no reference without --against.
    env.write_config("[tenants.migrator]\nkind = \"command\"\ncommand = [\"true\"]\n");
    env.expect(&["tenant", "drift", "--all"])
        .stderr(
            "error: tenant drift needs a reference: [tenants.migrator] kind = \"command\" makes the \
             tenants' schema with the application's own command, which tenantctl does not run against \
             a scratch database; compare with a tenant you trust: --against SLUG\n",
        )
        .status(2)
        .run();
    env.expect(&["tenant", "drift", "--all", "--against", &env.slug("only")])
        .with(
            format!(
                "({} objects)",
                objects(
                    &env.run(&[
                        "tenant",
                        "drift",
                        "--all",
                        "--against",
                        &env.slug("only"),
                        "--output",
                        "json"
                    ])
                    .ok()
                    .json()
                )
            ),
            "({n} objects)",
        )
        .stdout(
            "
            reference: tenant only-{T} ({n} objects)
            1 match the reference; 0 differ; 0 pending; 0 not read
            selected 1 of the master's 1 companies: --all, status active (by default)
            ",
        )
        .run();
}

/// Runs each block of a `--sql` script on its tenant with `tenant sql -f`;
/// a block of comments only is refused (nothing to run). Returns the
/// slugs whose block ran, sorted.
fn run_blocks(env: &TestEnv, script: &str) -> Vec<String> {
    let mut ran = Vec::new();
    for (slug, block) in blocks(script) {
        let file = env.workdir.path().join(format!("{slug}.sql"));
        std::fs::write(&file, &block).expect("write the block");
        let run = env.run(&["tenant", "sql", &slug, "-f", file.to_str().expect("utf-8")]);
        if block.lines().all(|l| l.is_empty() || l.starts_with("--")) {
            assert_eq!(
                (run.code, run.stderr.as_str()),
                (
                    2,
                    "error: the SQL has no statements, only comments or white space\n"
                )
            );
            continue;
        }
        run.ok();
        ran.push(slug);
    }
    ran.sort();
    ran
}

/// Where `needle` starts in `haystack`; fails the test if it is not there.
#[track_caller]
fn at(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{haystack}"))
}

#[test]
fn sql_repairs_of_parts_go_with_their_whole_which_comes_first() {
    let env = TestEnv::new();
    let dir = drift_folder(&env);
    let names = [
        "extra-wholes",
        "missing-table",
        "missing-wholes",
        "index-for-constraint",
    ];
    env.tenants_with(std::path::Path::new(&dir), &names);
    env.exec(
        &env.db("extra-wholes"),
        "CREATE TABLE scratchpad (id serial, note text);
         CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';
         CREATE SCHEMA archive;
         CREATE TABLE archive.ledger (id bigint GENERATED ALWAYS AS IDENTITY);",
    );
    env.exec(
        &env.db("missing-table"),
        "DROP TABLE settings; DROP TABLE audit_log",
    );
    env.exec(
        &env.db("missing-wholes"),
        "DROP TRIGGER settings_touch ON settings;
         DROP FUNCTION touch_updated_at();
         DROP FUNCTION site_count();",
    );
    // A unique constraint replaced by a unique index of the same name.
    env.exec(
        &env.db("index-for-constraint"),
        r#"ALTER TABLE meters DROP CONSTRAINT "meters_siteId_serial_key";
           CREATE UNIQUE INDEX "meters_siteId_serial_key" ON meters ("siteId", serial);"#,
    );
    let script = env
        .run(&[
            "tenant",
            "drift",
            "--all",
            "--sql",
            "--tenant-migrations",
            &dir,
        ])
        .code(1)
        .stdout;
    let block = |name: &str| -> String {
        let slug = env.slug(name);
        blocks(&script)
            .into_iter()
            .find(|(s, _)| *s == slug)
            .unwrap_or_else(|| panic!("no block for {slug} in:\n{script}"))
            .1
    };

    // Extra wholes: dropping them is the repair; their parts (columns,
    // grants, PUBLIC's EXECUTE on the function, the sequences of serial
    // and identity columns) go with them, with no statement of their own
    // that would fail once the whole is gone; the schema goes once what is
    // in it is gone.
    let extra = block("extra-wholes");
    let statements: Vec<&str> = extra
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("--") && !l.starts_with("SET "))
        .collect();
    assert_eq!(
        statements,
        [
            "DROP FUNCTION public.f();",
            "DROP TABLE archive.ledger;",
            "DROP TABLE public.scratchpad;",
            "DROP SCHEMA archive;"
        ],
        "{extra}"
    );
    for part in [
        "-- column scratchpad.note not in the reference (part of table scratchpad: see above)",
        "-- grant EXECUTE on function f() to PUBLIC not in the reference (part of function f(): see above)",
        "-- grant SELECT on table scratchpad to (owner) not in the reference (part of table scratchpad: see above)",
        "-- sequence scratchpad_id_seq not in the reference (part of table scratchpad: see above)",
        "-- sequence archive.ledger_id_seq not in the reference (part of table archive.ledger: see above)",
    ] {
        assert!(extra.lines().any(|l| l == part), "no {part:?} in:\n{extra}");
    }

    // A missing table has no obvious repair, and neither have its parts.
    let missing = block("missing-table");
    assert!(
        missing
            .lines()
            .any(|l| l == "-- no obvious repair: table settings missing"),
        "{missing}"
    );
    for part in [
        "-- column settings.value missing (part of table settings: see above)",
        "-- trigger settings_touch on settings missing (part of table settings: see above)",
        "-- grant SELECT on table settings to PUBLIC missing (part of table settings: see above)",
        "-- constraint settings_pkey on settings missing (part of table settings: see above)",
        "-- sequence audit_log_id_seq missing (part of table audit_log: see above)",
    ] {
        assert!(
            missing.lines().any(|l| l == part),
            "no {part:?} in:\n{missing}"
        );
    }

    // Missing wholes are made before the parts that name them.
    let wholes = block("missing-wholes");
    assert!(
        at(
            &wholes,
            "CREATE OR REPLACE FUNCTION public.touch_updated_at()"
        ) < at(
            &wholes,
            "CREATE TRIGGER settings_touch BEFORE UPDATE ON public.settings"
        )
    );
    assert!(
        at(&wholes, "CREATE OR REPLACE FUNCTION public.site_count()")
            < at(
                &wholes,
                "GRANT EXECUTE ON FUNCTION public.site_count() TO PUBLIC;"
            )
    );

    // The index goes before the constraint that makes one of its name.
    let replaced = block("index-for-constraint");
    assert!(
        at(&replaced, "DROP INDEX public.\"meters_siteId_serial_key\";")
            < at(
                &replaced,
                "ALTER TABLE public.meters ADD CONSTRAINT \"meters_siteId_serial_key\" UNIQUE (\"siteId\", serial);"
            ),
        "{replaced}"
    );

    // JSON says which whole a part goes with.
    let json = |env: &TestEnv| {
        env.run(&[
            "tenant",
            "drift",
            "--all",
            "--output",
            "json",
            "--tenant-migrations",
            &dir,
        ])
        .code(1)
        .json()
    };
    let report = json(&env);
    let note = find(&report, &env.slug("extra-wholes"))["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .find(|d| d["name"] == "scratchpad.note")
        .cloned()
        .expect("the column");
    assert_eq!(note["with"], "table scratchpad", "{note}");
    assert_eq!(note["repair"], serde_json::Value::Null, "{note}");

    // Every block with statements runs whole, and its tenant then matches.
    let ran = run_blocks(&env, &script);
    assert_eq!(
        ran,
        [
            env.slug("extra-wholes"),
            env.slug("index-for-constraint"),
            env.slug("missing-wholes")
        ]
    );
    let report = json(&env);
    for name in ["extra-wholes", "index-for-constraint", "missing-wholes"] {
        assert_eq!(find(&report, &env.slug(name))["drift"], "match", "{name}");
    }
    assert_eq!(
        find(&report, &env.slug("missing-table"))["drift"],
        "differs"
    );
}

#[test]
fn a_tenant_not_read_fails_the_run_and_jsonl_ends_with_the_summary() {
    // The embedded schema: no --tenant-migrations anywhere.
    let env = TestEnv::new();
    env.with_tenants(&["here", "gone"]);
    env.exec("postgres", &format!("DROP DATABASE \"{}\"", env.db("gone")));
    let missing = "the tenant database tenant_gone_{T} is missing from the server default (dropped by \
                   hand?): connect to database tenant_gone_{T} on {host}:{port}: database \
                   \"tenant_gone_{T}\" does not exist (SQLSTATE 3D000)";
    let report = env
        .run(&["tenant", "drift", "--all", "--output", "json"])
        .code(1)
        .json();
    env.expect(&["tenant", "drift", "--all"])
        .with(format!("({} objects)", objects(&report)), "({n} objects)")
        .stdout(format!(
            "
            reference: the migrations (built in a scratch database on server default) ({{n}} objects)
            1 match the reference; 0 differ; 0 pending; 1 not read
            not read: gone-{{T}}: failed: {missing}
            selected 2 of the master's 2 companies: --all, status active (by default)
            "
        ))
        .stderr(format!("failed: tenant gone-{{T}} (tenant_gone_{{T}}): {missing}\n"))
        .status(1)
        .run();
    let gone = find(&report, &env.slug("gone"));
    assert_eq!(gone["drift"], serde_json::Value::Null, "{gone}");
    assert_eq!(
        gone["problems"],
        serde_json::json!(["database_missing"]),
        "{gone}"
    );

    // JSONL: each tenant, then the summary with the same drift object.
    let run = env
        .run(&["tenant", "drift", "--all", "--output", "jsonl"])
        .code(1);
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    let mut slugs: Vec<&str> = lines[..2]
        .iter()
        .map(|t| t["slug"].as_str().expect("slug"))
        .collect();
    slugs.sort();
    assert_eq!(slugs, [env.slug("gone"), env.slug("here")]);
    assert_eq!(lines[2]["drift"], report["drift"]);
    assert_eq!(
        lines[2]["summary"],
        serde_json::json!({"ok": 1, "failed": 1, "skipped": 0})
    );
}

#[test]
fn an_interrupt_while_the_reference_is_built_stops_the_run_and_drops_the_scratch_database() {
    let env = TestEnv::new();
    // A last migration that waits at a gate until the test opens it (or
    // about a minute): a long migration of the reference.
    let gate = crate::support::Gate::new(&env);
    let dir = env.tenant_schema_plus("gated", "20240301000001_gate.sql", &gate.sql());
    {
        let _open = gate.open(&env);
        env.tenants_with(std::path::Path::new(&dir), &["one", "two"]);
    }
    let child = env
        .cmd()
        .args(["tenant", "drift", "--all", "--tenant-migrations", &dir])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tenantctl");
    let pid = child.id();
    let waiting = gate.wait_for(&env, 1);
    assert!(
        waiting[0].starts_with(&format!("tenantctl_drift_{pid}_")),
        "{waiting:?}"
    );
    let interrupted = std::time::Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    // The migration is cut short once the interrupt's grace (5 s) is over,
    // not waited for: the gate would hold it for a minute.
    let run = wait_with_deadline(child, Duration::from_secs(30));
    assert!(
        interrupted.elapsed() < Duration::from_secs(20),
        "{:?}",
        interrupted.elapsed()
    );
    assert_eq!(run.code, 130, "{}", run.all());
    // The report still comes out: nothing compared, every tenant skipped.
    assert!(
        run.stdout.starts_with(
            "reference: the migrations (interrupted while it was built: nothing compared)"
        ) && run
            .stdout
            .contains("0 match the reference; 0 differ; 0 pending; 2 not read (interrupted)"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stderr,
        "interrupted: starting no new tenant, giving those in flight 5s to finish before \
         cancelling them (interrupt again to cancel them now)\n"
    );
    assert!(scratch_left(&env.base_url, pid).is_empty());
    assert!(
        gate.waiting(&env).is_empty(),
        "the scratch migration's session ended"
    );
}

#[test]
fn default_privileges_count_beyond_the_built_in_ones_and_their_repairs_run() {
    let env = TestEnv::new();
    let names = ["clean", "granted", "revoked", "in-schema"];
    env.with_tenants(&names);
    let role = env
        .query(&env.db("clean"), "SELECT current_user::text")
        .remove(0);
    env.exec(
        &env.db("granted"),
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",
    );
    env.exec(
        &env.db("revoked"),
        "ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
    );
    env.exec(
        &env.db("in-schema"),
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO PUBLIC",
    );
    let report = env
        .run(&["tenant", "drift", "--all", "--output", "json"])
        .code(1)
        .json();
    assert_eq!(find(&report, &env.slug("clean"))["drift"], "match");
    // The role's own privileges that an entry for every schema spells out
    // are no drift: one difference each.
    for (name, expected) in [
        (
            "granted",
            diff(
                "default privileges",
                &format!("SELECT on tables for {role} to PUBLIC"),
                "extra",
                "",
            ),
        ),
        (
            "revoked",
            diff(
                "default privileges revoked",
                &format!("EXECUTE on functions for {role} from PUBLIC"),
                "extra",
                "",
            ),
        ),
        (
            "in-schema",
            diff(
                "default privileges",
                &format!("USAGE on sequences in schema public for {role} to PUBLIC"),
                "extra",
                "",
            ),
        ),
    ] {
        assert_eq!(
            diffs_of(&report, &env.slug(name)),
            BTreeSet::from([expected]),
            "{name}"
        );
    }
    let script = env
        .run(&["tenant", "drift", "--all", "--sql"])
        .code(1)
        .stdout;
    assert!(
        script.contains(&format!(
            "\nALTER DEFAULT PRIVILEGES FOR ROLE {role} GRANT EXECUTE ON FUNCTIONS TO PUBLIC;\n"
        )),
        "{script}"
    );
    let ran = run_blocks(&env, &script);
    assert_eq!(ran.len(), 3, "{script}");
    env.run(&["tenant", "drift", "--all"]).ok();
}

#[test]
fn prisma_migrated_tenants_of_an_adopted_orm_master_are_compared_with_prisma_migrations() {
    use crate::support::prisma::add_migration;
    let env = TestEnv::new();
    env.orm_master(&["provisioning", "active", "failed", "dropped"]);
    env.run(&["master", "migrate"]).ok();
    // The application's Prisma migrations, applied by tenantctl natively.
    let schema = env.workdir.path().join("app");
    std::fs::create_dir_all(schema.join("migrations")).expect("mkdir");
    std::fs::write(
        schema.join("migrations/migration_lock.toml"),
        "provider = \"postgresql\"\n",
    )
    .expect("lock");
    add_migration(
        &schema,
        "20250101000000_invoices",
        "CREATE TABLE \"Invoice\" (\r\n    \"id\" SERIAL NOT NULL,\r\n    \"number\" TEXT NOT NULL,\r\n    \
         CONSTRAINT \"Invoice_pkey\" PRIMARY KEY (\"id\")\r\n);\r\n\
         CREATE UNIQUE INDEX \"Invoice_number_key\" ON \"Invoice\"(\"number\");\r\n",
    );
    env.write_config("[tenants.migrator]\nkind = \"prisma\"\nmigrations = \"app/migrations\"\n");
    env.run(&["tenant", "create", &env.slug("behind")]).ok();
    add_migration(
        &schema,
        "20250201000000_paid",
        "ALTER TABLE \"Invoice\" ADD COLUMN \"paidAt\" TIMESTAMP(3);\r\n",
    );
    for name in ["a", "b", "c"] {
        env.run(&["tenant", "create", &env.slug(name)]).ok();
    }
    env.exec(&env.db("b"), r#"DROP INDEX "Invoice_number_key""#);

    let (run, pid) = drift(&env, &["--all", "--output", "json"]);
    let report = run.code(1).json();
    assert!(scratch_left(&env.base_url, pid).is_empty());
    assert_eq!(find(&report, &env.slug("a"))["drift"], "match");
    assert_eq!(find(&report, &env.slug("c"))["drift"], "match");
    let behind = find(&report, &env.slug("behind"));
    assert_eq!(
        (&behind["drift"], &behind["pending"]),
        (&"pending".into(), &1.into()),
        "{behind}"
    );
    // Prisma's own ledger rows (applied times, checksums) are not schema.
    assert_eq!(
        diffs_of(&report, &env.slug("b")),
        BTreeSet::from([diff("index", "\"Invoice_number_key\"", "missing", "")])
    );
    env.expect(&["tenant", "drift", "--all"])
        .with(format!("({} objects)", objects(&report)), "({n} objects)")
        .stdout(
            "
            reference: the migrations (built in a scratch database on server default) ({n} objects)
            2 match the reference; 1 differ; 1 pending; 0 not read
            index \"Invoice_number_key\" missing (1 tenant: b-{T})
            pending, not compared (not at the latest migration; `tenantctl tenant migrate` them): behind-{T}
            selected 4 of the master's 4 companies: --all, status active (by default)
            ",
        )
        .status(1)
        .run();
}
