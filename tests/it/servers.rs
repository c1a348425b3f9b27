//! Several servers: the default one (the suite's server) and a private one
//! named `eu2`, started for the test. Placement on create, fleet commands
//! across both, `--server`, `--per-server`, an unconfigured server,
//! `server list` and `doctor` per server.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

use crate::support::server::{PrivateServer, SUPERUSER_PASSWORD};
use crate::support::{Run, TestEnv, base_password, block_on, find};

/// A test's master on the default server, plus the private server `eu2`.
pub struct TwoServers {
    pub env: TestEnv,
    pub eu2: PrivateServer,
}

impl TwoServers {
    pub fn new() -> Self {
        let env = TestEnv::new();
        let eu2 = PrivateServer::start(&env.token);
        Self { env, eu2 }
    }

    pub fn configure(&self, cmd: &mut Command) {
        cmd.env("POSTGRES_BASE_URL_EU2", self.eu2.base_url());
    }

    /// `tenant create SLUG --server SERVER` with the migrations in `dir`.
    pub fn create(&self, slug: &str, server: &str, dir: &str) {
        self.run(&[
            "tenant",
            "create",
            slug,
            "--server",
            server,
            "--tenant-migrations",
            dir,
        ])
        .ok();
    }

    /// [`TestEnv::expect`] with eu2 configured; eu2's address shows as
    /// `127.0.0.1:{eu2_port}`.
    pub fn expect<'a>(&'a self, args: &[&str]) -> crate::support::expect::Expect<'a> {
        self.env
            .expect(args)
            .configure(|cmd| self.configure(cmd))
            .with(
                format!("127.0.0.1:{}", self.eu2.port),
                "127.0.0.1:{eu2_port}",
            )
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let run = self.env.run_with(args, |cmd| self.configure(cmd));
        self.assert_no_password(&run);
        run
    }

    pub fn run_with(&self, args: &[&str], more: impl FnOnce(&mut Command)) -> Run {
        let run = self.env.run_with(args, |cmd| {
            self.configure(cmd);
            more(cmd);
        });
        self.assert_no_password(&run);
        run
    }

    /// Neither server's password in anything tenantctl printed.
    #[track_caller]
    pub fn assert_no_password(&self, run: &Run) {
        let all = run.all();
        assert!(
            !all.contains(SUPERUSER_PASSWORD),
            "eu2's password shown:\n{all}"
        );
        if let Some(password) = base_password() {
            assert!(
                !all.contains(&password),
                "the default password shown:\n{all}"
            );
        }
    }

    pub fn eu2_url(&self, db: &str) -> String {
        format!("{}/{db}", self.eu2.base_url())
    }

    /// First column of every row, as text, from a database on eu2.
    pub fn eu2_query(&self, db: &str, sql: &str) -> Vec<String> {
        query_url(&self.eu2_url(db), sql)
    }

    pub fn eu2_exec(&self, db: &str, sql: &str) {
        exec_url(&self.eu2_url(db), sql);
    }

    pub fn on_eu2(&self, db: &str) -> bool {
        !self
            .eu2_query(
                "postgres",
                &format!("SELECT datname::text FROM pg_database WHERE datname = '{db}'"),
            )
            .is_empty()
    }

    /// The company's recorded server ("" for NULL).
    pub fn placement(&self, slug: &str) -> String {
        self.env
            .query(
                &self.env.master,
                &format!(r#"SELECT "dbServer" FROM "Company" WHERE slug = '{slug}'"#),
            )
            .join(",")
    }
}

pub fn query_url(url: &str, sql: &str) -> Vec<String> {
    block_on(async {
        let mut conn = PgConnection::connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let rows: Vec<(Option<String>,)> = sqlx::query_as(sql)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
        rows.into_iter().map(|(v,)| v.unwrap_or_default()).collect()
    })
}

pub fn exec_url(url: &str, sql: &str) {
    block_on(async {
        let mut conn = PgConnection::connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        conn.execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
    });
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).expect("write");
}

fn servers_of(report: &serde_json::Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| {
            (
                t["slug"].as_str().expect("slug").to_owned(),
                t["server"].as_str().expect("server").to_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn create_places_tenants_explicitly_or_on_the_least_used_server_that_accepts_new_ones() {
    let two = TwoServers::new();
    let env = &two.env;
    two.run(&["master", "migrate"]).ok();
    let dir = env.fixture("two-step");
    let dir = dir.to_str().expect("utf-8");
    let create = |name: &str, more: &[&str]| -> serde_json::Value {
        let slug = env.slug(name);
        let mut args = vec![
            "tenant",
            "create",
            &slug,
            "--output",
            "json",
            "--tenant-migrations",
            dir,
        ];
        args.extend_from_slice(more);
        two.run(&args).ok().json()
    };

    // Both empty: the tie goes to default by name; then the emptier one.
    assert_eq!(create("a", &[])["server"], "default");
    assert_eq!(create("b", &[])["server"], "eu2");
    assert_eq!(create("c", &["--server", "eu2"])["server"], "eu2");
    assert_eq!(create("d", &[])["server"], "default");
    assert_eq!(create("e", &[])["server"], "default", "2 on each: default");

    // Each database is on its server only, and the master says where
    // (NULL for default, as rows from before servers).
    for (name, server) in [
        ("a", "default"),
        ("b", "eu2"),
        ("c", "eu2"),
        ("d", "default"),
    ] {
        let db = env.db(name);
        assert_eq!(env.database_exists(&db), server == "default", "{db}");
        assert_eq!(two.on_eu2(&db), server == "eu2", "{db}");
        let recorded = two.placement(&env.slug(name));
        assert_eq!(recorded, if server == "eu2" { "eu2" } else { "" });
    }
    assert_eq!(
        two.eu2_query(
            &env.db("b"),
            "SELECT count(*)::text FROM _sqlx_migrations WHERE success"
        ),
        ["2"]
    );

    // default closed to new tenants: the next goes to eu2 although eu2
    // has as many; with both closed, create needs --server.
    write(
        env.workdir.path(),
        "tenantctl.toml",
        "[servers.default]\naccepts_new = false\n",
    );
    assert_eq!(create("f", &[])["server"], "eu2");
    write(
        env.workdir.path(),
        "tenantctl.toml",
        "[servers.default]\naccepts_new = false\n[servers.eu2]\naccepts_new = false\n",
    );
    let slug = env.slug("g");
    two.expect(&["tenant", "create", &slug, "--tenant-migrations", dir])
        .stderr(
            "error: no configured server accepts new tenants (tenantctl.toml sets accepts_new = \
             false on all of them); pick one with --server\n",
        )
        .status(2)
        .run();
    assert_eq!(create("g", &["--server", "default"])["server"], "default");

    // An unknown server is refused before anything is recorded.
    let slug = env.slug("h");
    two.expect(&["tenant", "create", &slug, "--server", "eu3"])
        .stderr("error: server eu3 is not configured: set POSTGRES_BASE_URL_EU3\n")
        .status(1)
        .run();
    assert!(two.placement(&slug).is_empty());

    // The list shows each tenant's server.
    let list = two.run(&["tenant", "list", "--output", "json"]).ok().json()["tenants"].clone();
    let b = list
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["slug"] == env.slug("b"))
        .expect("b listed");
    assert_eq!(b["server"], "eu2");
    two.expect(&["tenant", "list"])
        .stdout(
            "
            ┌────────┬───────┬───────┬──────────────┬─────────┬────────┬─────────┐
            │ id     ┆ slug  ┆ name  ┆ db name      ┆ server  ┆ status ┆ created │
            ╞════════╪═══════╪═══════╪══════════════╪═════════╪════════╪═════════╡
            │ {uuid} ┆ a-{T} ┆ a-{T} ┆ tenant_a_{T} ┆ default ┆ active ┆ {time}  │
            │ {uuid} ┆ b-{T} ┆ b-{T} ┆ tenant_b_{T} ┆ eu2     ┆ active ┆ {time}  │
            │ {uuid} ┆ c-{T} ┆ c-{T} ┆ tenant_c_{T} ┆ eu2     ┆ active ┆ {time}  │
            │ {uuid} ┆ d-{T} ┆ d-{T} ┆ tenant_d_{T} ┆ default ┆ active ┆ {time}  │
            │ {uuid} ┆ e-{T} ┆ e-{T} ┆ tenant_e_{T} ┆ default ┆ active ┆ {time}  │
            │ {uuid} ┆ f-{T} ┆ f-{T} ┆ tenant_f_{T} ┆ eu2     ┆ active ┆ {time}  │
            │ {uuid} ┆ g-{T} ┆ g-{T} ┆ tenant_g_{T} ┆ default ┆ active ┆ {time}  │
            └────────┴───────┴───────┴──────────────┴─────────┴────────┴─────────┘
            7 tenant(s)
            ",
        )
        .run();
}

#[test]
fn a_failed_create_resumes_on_the_server_it_recorded() {
    let two = TwoServers::new();
    let env = &two.env;
    two.run(&["master", "migrate"]).ok();
    let broken = env.fixture("broken");
    let broken = broken.to_str().expect("utf-8");
    let slug = env.slug("acme");
    let failed = two
        .run(&[
            "tenant",
            "create",
            &slug,
            "--server",
            "eu2",
            "--tenant-migrations",
            broken,
            // In place, so the half-migrated database is there to resume.
            "--no-template",
        ])
        .code(1);
    assert!(failed.stderr.contains("status failed"), "{}", failed.stderr);
    assert_eq!(two.placement(&slug), "eu2", "recorded before the database");
    assert!(two.on_eu2(&env.db("acme")));
    assert!(!env.database_exists(&env.db("acme")));

    // Another server asked for: refused; none asked for: eu2 again, though
    // default has fewer tenants.
    two.expect(&["tenant", "create", &slug, "--server", "default"])
        .stderr(
            "error: tenant acme-{T} is already recorded on server eu2; rerun without --server (or \
             with that server) to finish it\n",
        )
        .status(1)
        .run();
    let fixed = env.fixture("two-step");
    let done = two
        .run(&[
            "tenant",
            "create",
            &slug,
            "--output",
            "json",
            "--tenant-migrations",
            fixed.to_str().expect("utf-8"),
        ])
        .ok()
        .json();
    assert_eq!(done["server"], "eu2");
    assert_eq!(done["resumed"], true);
    assert!(!env.database_exists(&env.db("acme")));
}

#[test]
fn fleet_commands_reach_both_servers_select_by_server_and_fail_loudly_on_an_unconfigured_one() {
    let two = TwoServers::new();
    let env = &two.env;
    two.run(&["master", "migrate"]).ok();
    let dir = env.fixture("two-step");
    let dir_s = dir.to_str().expect("utf-8");
    for (name, server) in [
        ("a", "default"),
        ("b", "eu2"),
        ("c", "default"),
        ("d", "eu2"),
    ] {
        two.create(&env.slug(name), server, dir_s);
    }
    write(
        &dir,
        "20250101000003_notes.sql",
        "CREATE TABLE notes (id bigint PRIMARY KEY);",
    );

    // --server narrows --all to eu2's tenants.
    let eu2_only = two
        .run(&[
            "tenant",
            "migrate",
            "--all",
            "--server",
            "eu2",
            "--output",
            "json",
            "--tenant-migrations",
            dir_s,
        ])
        .ok()
        .json();
    assert_eq!(
        servers_of(&eu2_only),
        [(env.slug("b"), "eu2".into()), (env.slug("d"), "eu2".into())]
    );
    assert_eq!(env.applied(&env.db("a")).len(), 2, "default untouched");
    // ... and narrows named tenants too.
    let named = two
        .run(&[
            "tenant",
            "status",
            &env.slug("a"),
            &env.slug("b"),
            "--server",
            "default",
            "--output",
            "json",
            "--tenant-migrations",
            dir_s,
        ])
        .ok()
        .json();
    assert_eq!(servers_of(&named), [(env.slug("a"), "default".into())]);
    // A server nobody configured or uses is a usage error.
    two.expect(&["tenant", "migrate", "--all", "--server", "eu9"])
        .stderr(
            "error: --server eu9: no such server is configured and no company is placed on it \
             (configured: default, eu2)\n",
        )
        .status(2)
        .run();

    // A tenant placed on a server this environment does not configure.
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET "dbServer" = 'eu3' WHERE slug = '{}'"#,
            env.slug("c")
        ),
    );
    let all = two
        .run(&[
            "tenant",
            "migrate",
            "--all",
            "--output",
            "json",
            "--tenant-migrations",
            dir_s,
        ])
        .code(1);
    let report = all.json();
    assert_eq!(report["summary"]["ok"], 3);
    assert_eq!(report["summary"]["failed"], 1);
    let c = find(&report, &env.slug("c"));
    assert_eq!(c["status"], "failed");
    assert_eq!(c["server"], "eu3");
    assert_eq!(
        c["error"],
        "server eu3 is not configured: set POSTGRES_BASE_URL_EU3"
    );
    assert_eq!(find(&report, &env.slug("a"))["server"], "default");
    assert_eq!(env.applied(&env.db("a")).len(), 3, "default reached");
    for name in ["b", "d"] {
        assert_eq!(
            two.eu2_query(
                &env.db(name),
                "SELECT count(*)::text FROM _sqlx_migrations WHERE success"
            ),
            ["3"],
            "eu2 reached"
        );
    }
    assert_eq!(env.applied(&env.db("c")).len(), 2, "never sent to default");
    // The table report has a server column and says why.
    two.expect(&["tenant", "migrate", "--all", "--tenant-migrations", dir_s])
        .stdout(
            "
            ┌────────┬──────────────┬─────────┬────────┬────────────┬──────┬─────────────────────────────────────────────────────────┐
            │ tenant ┆ db name      ┆ server  ┆ result ┆ migrations ┆ time ┆ error                                                   │
            ╞════════╪══════════════╪═════════╪════════╪════════════╪══════╪═════════════════════════════════════════════════════════╡
            │ a-{T}  ┆ tenant_a_{T} ┆ default ┆ ok     ┆ 0          ┆ {ms} ┆                                                         │
            │ b-{T}  ┆ tenant_b_{T} ┆ eu2     ┆ ok     ┆ 0          ┆ {ms} ┆                                                         │
            │ c-{T}  ┆ tenant_c_{T} ┆ eu3     ┆ failed ┆ 0          ┆ {ms} ┆ server eu3 is not configured: set POSTGRES_BASE_URL_EU3 │
            │ d-{T}  ┆ tenant_d_{T} ┆ eu2     ┆ ok     ┆ 0          ┆ {ms} ┆                                                         │
            └────────┴──────────────┴─────────┴────────┴────────────┴──────┴─────────────────────────────────────────────────────────┘
            3 ok, 1 failed, 0 skipped; recorded as run 3
            selected 4 of the master's 4 companies: --all, status active (by default)
            ",
        )
        .stderr(
            "failed: tenant c-{T} (tenant_c_{T}): server eu3 is not configured: set \
             POSTGRES_BASE_URL_EU3\n",
        )
        .status(1)
        .run();
    // doctor says so too.
    let doctor = two.run(&["doctor", "--output", "json"]).code(1).json();
    let finding = doctor["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["kind"] == "server_not_configured")
        .unwrap_or_else(|| panic!("{doctor}"));
    assert_eq!(finding["slug"], env.slug("c"));
    assert_eq!(finding["server"], "eu3");

    // exec gets each tenant's own server.
    let exec = two
        .run(&[
            "tenant",
            "exec",
            "--all",
            "--server",
            "eu2",
            "--output",
            "json",
            "--",
            "sh",
            "-c",
            "echo $PGPORT",
        ])
        .ok()
        .json();
    assert_eq!(
        find(&exec, &env.slug("b"))["stdout"]
            .as_str()
            .map(str::trim),
        Some(two.eu2.port.to_string().as_str())
    );
}

/// Sessions tenantctl holds in these databases, per server, sampled while
/// a slow migration runs.
#[test]
fn per_server_caps_each_server_and_both_are_busy_at_once() {
    let two = TwoServers::new();
    let env = &two.env;
    two.run(&["master", "migrate"]).ok();
    let dir = env.fixture("two-step");
    let dir_s = dir.to_str().expect("utf-8");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for (i, name) in names.iter().enumerate() {
        let server = if i % 2 == 0 { "default" } else { "eu2" };
        two.create(&env.slug(name), server, dir_s);
    }
    write(
        &dir,
        "20250101000003_slow.sql",
        "SELECT pg_sleep(1.5); CREATE TABLE slow (id int);",
    );
    let dbs: Vec<String> = names.iter().map(|n| env.db(n)).collect();
    let in_list = dbs
        .iter()
        .map(|d| format!("'{d}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let count_sql = format!(
        "SELECT count(*)::int FROM pg_stat_activity WHERE application_name LIKE 'tenantctl%' AND datname IN ({in_list})"
    );

    let mut cmd = env.cmd();
    two.configure(&mut cmd);
    let child = cmd
        .args([
            "tenant",
            "migrate",
            "--all",
            "--concurrency",
            "8",
            "--per-server",
            "2",
            "--output",
            "json",
            "--tenant-migrations",
            dir_s,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let default_url = env.db_url("postgres");
    let eu2_url = two.eu2_url("postgres");
    let (samples, output) = block_on(async {
        let mut on_default = PgConnection::connect(&default_url).await.expect("default");
        let mut on_eu2 = PgConnection::connect(&eu2_url).await.expect("eu2");
        let mut samples: Vec<(i32, i32)> = Vec::new();
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "migrate did not finish");
            let d: i32 = sqlx::query_scalar(&count_sql)
                .fetch_one(&mut on_default)
                .await
                .expect("sample default");
            let e: i32 = sqlx::query_scalar(&count_sql)
                .fetch_one(&mut on_eu2)
                .await
                .expect("sample eu2");
            samples.push((d, e));
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        (samples, child.wait_with_output().expect("output"))
    });
    let run = Run::from(output).ok();
    two.assert_no_password(&run);
    let report = run.json();
    assert_eq!(report["summary"]["ok"], 8, "{report}");
    let max_default = samples.iter().map(|s| s.0).max().unwrap_or(0);
    let max_eu2 = samples.iter().map(|s| s.1).max().unwrap_or(0);
    assert!(
        max_default <= 2 && max_eu2 <= 2,
        "--per-server 2 exceeded: {samples:?}"
    );
    assert!(
        samples.iter().any(|&(d, e)| d >= 1 && e >= 1),
        "never both servers at once: {samples:?}"
    );
    assert!(
        max_default == 2 || max_eu2 == 2,
        "never 2 on one server, so the cap was not what limited it: {samples:?}"
    );
}

#[test]
fn server_list_and_doctor_look_at_every_server() {
    let two = TwoServers::new();
    let env = &two.env;
    two.run(&["master", "migrate"]).ok();
    let dir = env.fixture("two-step");
    let dir_s = dir.to_str().expect("utf-8");
    for (name, server) in [("a", "default"), ("b", "eu2"), ("c", "eu2")] {
        two.create(&env.slug(name), server, dir_s);
    }
    let list = two.run(&["server", "list", "--output", "json"]).ok().json();
    let servers = list["servers"].as_array().expect("servers");
    let eu2 = servers
        .iter()
        .find(|s| s["name"] == "eu2")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(eu2["reachable"], true);
    assert_eq!(eu2["host"], "127.0.0.1");
    assert_eq!(eu2["port"], two.eu2.port);
    assert_eq!(eu2["tenants"], 2);
    assert_eq!(eu2["databases"], 2);
    assert!(eu2["size_bytes"].as_i64().expect("size") > 1_000_000);
    assert!(eu2["connections"].as_i64().expect("connections") >= 1);
    assert_eq!(eu2["max_connections"], 50);
    assert!(
        eu2["version"]
            .as_str()
            .expect("version")
            .starts_with(char::is_numeric)
    );
    let default = servers
        .iter()
        .find(|s| s["name"] == "default")
        .expect("default");
    assert_eq!(default["tenants"], 1);
    let table = two.run(&["server", "list"]).ok();
    assert!(
        table
            .stdout
            .contains(&format!("127.0.0.1:{}", two.eu2.port)),
        "{}",
        table.stdout
    );

    // Drift for doctor: an orphan on eu2, a copy of a's database on eu2,
    // c's database gone from eu2 but present on default.
    two.eu2_exec(
        "postgres",
        &format!("CREATE DATABASE \"tenant_orphan_{}\"", env.token),
    );
    two.eu2_exec("postgres", &format!("CREATE DATABASE \"{}\"", env.db("a")));
    two.eu2_exec("postgres", &format!("DROP DATABASE \"{}\"", env.db("c")));
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.db("c")));
    let doctor = two
        .run(&["doctor", "--output", "json", "--tenant-migrations", dir_s])
        .code(1)
        .json();
    let findings = doctor["findings"].as_array().expect("findings");
    let has = |kind: &str, db: &str, server: &str| {
        findings
            .iter()
            .any(|f| f["kind"] == kind && f["db_name"] == db && f["server"] == server)
    };
    assert!(
        has(
            "orphan_database",
            &format!("tenant_orphan_{}", env.token),
            "eu2"
        ),
        "{doctor}"
    );
    assert!(
        has("database_on_other_server", &env.db("a"), "default"),
        "{doctor}"
    );
    assert!(
        has("database_on_other_server", &env.db("c"), "eu2"),
        "{doctor}"
    );
    assert!(
        !has("missing_database", &env.db("c"), "eu2"),
        "one finding: {doctor}"
    );
    // b is fine.
    assert!(
        !findings.iter().any(|f| f["slug"] == env.slug("b")),
        "{doctor}"
    );

    // A server that does not answer, and one named in tenantctl.toml whose
    // variable is not set.
    write(
        env.workdir.path(),
        "tenantctl.toml",
        "[servers.eu4]\nurl_env = \"PG_EU4_URL\"\n",
    );
    let down = |cmd: &mut Command| {
        cmd.env(
            "POSTGRES_BASE_URL_DOWN",
            "postgresql://postgres:Down-pw-123456@127.0.0.1:1",
        )
        .env("TENANTCTL_CONNECT_TIMEOUT", "3s");
    };
    let listed = two
        .run_with(&["server", "list", "--output", "json"], down)
        .code(1);
    assert!(!listed.all().contains("Down-pw-123456"), "{}", listed.all());
    let listed = listed.json();
    let servers = listed["servers"].as_array().expect("servers");
    let down_row = servers.iter().find(|s| s["name"] == "down").expect("down");
    assert_eq!(down_row["reachable"], false);
    assert!(
        down_row["error"]
            .as_str()
            .expect("error")
            .contains("127.0.0.1:1")
    );
    let eu4 = servers.iter().find(|s| s["name"] == "eu4").expect("eu4");
    assert_eq!(eu4["error"], "server eu4 is not configured: set PG_EU4_URL");
    let doctor = two
        .run_with(
            &["doctor", "--output", "json", "--tenant-migrations", dir_s],
            down,
        )
        .code(1);
    assert!(!doctor.all().contains("Down-pw-123456"));
    let doctor = doctor.json();
    let kinds: Vec<(&str, &str)> = doctor["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["slug"].is_null() && f["db_name"].is_null())
        .map(|f| {
            (
                f["kind"].as_str().expect("kind"),
                f["server"].as_str().expect("server"),
            )
        })
        .collect();
    assert!(kinds.contains(&("server_unreachable", "down")), "{doctor}");
    assert!(
        kinds.contains(&("server_not_configured", "eu4")),
        "{doctor}"
    );
}

/// An application's master: the server kept in tenantctl's own
/// `tenantctl.placement` (its table unchanged), or in a column the
/// configuration names.
#[test]
fn an_adopted_master_records_servers_beside_or_in_its_table() {
    let two = TwoServers::new();
    let env = &two.env;
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    env.exec(
        &env.master,
        "CREATE SCHEMA app;
         CREATE TABLE app.tenants (
             id bigserial PRIMARY KEY,
             database_name varchar(63) NOT NULL UNIQUE,
             region text);",
    );
    write(
        env.workdir.path(),
        "tenantctl.toml",
        "[master]\ntable = \"app.tenants\"\n[master.columns]\ndb_name = \"database_name\"\n",
    );
    let adopted = two.run(&["master", "migrate"]).ok();
    assert!(
        adopted.stdout.contains("tenantctl.placement"),
        "{}",
        adopted.stdout
    );
    let columns = || {
        env.query(
            &env.master,
            "SELECT string_agg(attname::text, ',' ORDER BY attnum) FROM pg_attribute \
             WHERE attrelid = 'app.tenants'::regclass AND attnum > 0",
        )
    };
    assert_eq!(
        columns(),
        ["id,database_name,region"],
        "the table is unchanged"
    );
    let dir = env.fixture("two-step");
    let dir = dir.to_str().expect("utf-8");
    let slug = env.slug("acme");
    let created = two
        .run(&[
            "tenant",
            "create",
            &slug,
            "--server",
            "eu2",
            "--output",
            "json",
            "--tenant-migrations",
            dir,
        ])
        .ok()
        .json();
    assert_eq!(created["server"], "eu2");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(
        env.query(
            &env.master,
            &format!("SELECT server FROM tenantctl.placement WHERE company_id = '{id}'")
        ),
        ["eu2"]
    );
    assert!(two.on_eu2(&env.db("acme")));
    let report = two
        .run(&[
            "tenant",
            "migrate",
            "--all",
            "--output",
            "json",
            "--tenant-migrations",
            dir,
        ])
        .ok()
        .json();
    assert_eq!(report["tenants"][0]["server"], "eu2");
    // Moved home: no placement row means default.
    two.run(&["tenant", "move", &id, "--to", "default", "--drop-source"])
        .ok();
    assert_eq!(
        env.query(
            &env.master,
            "SELECT count(*)::text FROM tenantctl.placement"
        ),
        ["0"]
    );
    assert!(env.database_exists(&env.db("acme")) && !two.on_eu2(&env.db("acme")));

    // With the application's own column named in tenantctl.toml.
    write(
        env.workdir.path(),
        "tenantctl.toml",
        "[master]\ntable = \"app.tenants\"\n[master.columns]\ndb_name = \"database_name\"\nserver = \"region\"\n",
    );
    let slug = env.slug("beta");
    two.create(&slug, "eu2", dir);
    assert_eq!(
        env.query(
            &env.master,
            &format!(
                "SELECT region FROM app.tenants WHERE database_name = '{}'",
                env.db("beta")
            )
        ),
        ["eu2"]
    );
    assert!(two.on_eu2(&env.db("beta")));
}
