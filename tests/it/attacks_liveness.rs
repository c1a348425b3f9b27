//! A hostile pass over run liveness and take-over (`runs.alive_at`, the
//! heartbeat, `tenant revert` meeting a run still `running`): each test is
//! a defect found, kept so it stays fixed.
//!
//! The fixture `reversible` gives versions 1 (plain) to 5 (reversible);
//! the gated fleet has tenants a to d at V2 and a V3 that waits at a gate.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Gate, TestEnv, wait_until, wait_with_deadline};

const V1: i64 = 20_250_101_000_001;
const V2: i64 = 20_250_101_000_002;
const V3: i64 = 20_250_101_000_003;

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Tenants a to d at V2, and a folder whose V3 waits at the gate (the
/// deploy tests' fleet).
fn gated_fleet(env: &TestEnv) -> (Gate, PathBuf) {
    let (gate, gated, _) = crate::deploy::gated_fleet(env);
    (gate, gated)
}

fn migrate_args<'a>(dir: &'a Path, label: &'a str) -> Vec<&'a str> {
    crate::deploy::migrate_args(dir, label)
}

fn signal(pid: u32, name: &str) {
    let sent = std::process::Command::new("kill")
        .args([name, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill {name} {pid}");
}

fn last_run(env: &TestEnv) -> String {
    env.query(&env.master, "SELECT max(id)::text FROM tenantctl.runs")[0].clone()
}

fn outcome(env: &TestEnv, id: &str) -> Vec<String> {
    env.query(
        &env.master,
        &format!("SELECT outcome FROM tenantctl.runs WHERE id = {id}"),
    )
}

/// Opens the gate until the sessions a killed or cut-off run left waiting
/// there are gone (the test's databases can be dropped then).
/// A labelled run killed outright (SIGKILL) while its first tenant waits
/// at the gate; its run id.
fn killed_at_the_gate(env: &TestEnv, gate: &Gate, gated: &Path, label: &str) -> String {
    let killed = env.spawn(&migrate_args(gated, label));
    gate.wait_for(env, 1);
    signal(killed.id(), "-KILL");
    let _ = killed.wait_with_output();
    last_run(env)
}

fn drain(env: &TestEnv, gate: &Gate) {
    let open = gate.open(env);
    wait_until(Duration::from_secs(60), "no session at the gate", || {
        gate.waiting(env).is_empty().then_some(())
    });
    drop(open);
}

/// A run recorded by the previous release (which inserted its record
/// without `alive_at`, and never renews it) is still running while a
/// rollback job of the new release reverts its label. The column's
/// `DEFAULT now()` gave that record a sign of life its run never renews,
/// so the revert waited 30 s, took the live run for killed, and went
/// ahead while it kept migrating: such a record must read as one without
/// a sign of life (`--label` refuses).
#[test]
fn a_run_recorded_by_the_previous_release_is_never_taken_for_killed() {
    let env = TestEnv::new();
    let base = env.reversible_upto("base", V2);
    env.tenants_with(&base, &["a"]);
    // What the previous release's RunLog::insert wrote (666794d), on the
    // tables `master migrate` made.
    let old_run = |label: &str| {
        env.query(
            &env.master,
            &format!(
                "INSERT INTO tenantctl.runs (command, target, undoes_run, tenants, selection, label) \
                 VALUES ('migrate', NULL, NULL, 1, NULL, '{label}') RETURNING id::text"
            ),
        )[0]
        .clone()
    };
    let refused = |label: &str, id: &str| {
        let started = Instant::now();
        let refused = env
            .run(&[
                "tenant",
                "revert",
                "--label",
                label,
                "--yes",
                "--tenant-migrations",
                s(&base),
            ])
            .code(2);
        assert!(
            refused.stderr.contains("kept no sign of life"),
            "{}",
            refused.stderr
        );
        assert!(started.elapsed() < Duration::from_secs(20), "it waited");
        assert_eq!(outcome(&env, id), ["running"]);
    };
    let id = old_run("old-release");
    refused("old-release", &id);
    // Tables as the first tenantctl that kept a sign of life made them
    // (with the default): `master migrate` as their owner drops it.
    env.exec(
        &env.master,
        "ALTER TABLE tenantctl.runs ALTER COLUMN alive_at SET DEFAULT now()",
    );
    env.run(&["master", "migrate"]).ok();
    let id = old_run("old-release-2");
    refused("old-release-2", &id);
}

/// A TCP proxy to the test server whose connections can all be cut at
/// once, new ones refused from then on: the master out of reach of one
/// process (a network partition between a CI runner and the master).
struct Cuttable {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Cuttable {
    fn new(env: &TestEnv) -> Self {
        let url = url::Url::parse(&env.base_url).expect("base url");
        let upstream = format!(
            "{}:{}",
            url.host_str().expect("a TCP host"),
            url.port().unwrap_or(5432)
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (is_cut, streams) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut kept = streams.lock().expect("streams");
                kept.push(client.try_clone().expect("clone"));
                kept.push(server.try_clone().expect("clone"));
                pipe(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                pipe(server, client);
            }
        });
        Self { port, cut, open }
    }

    /// The master's URL through this proxy.
    fn master_url(&self, env: &TestEnv) -> String {
        let mut url = url::Url::parse(&env.master_url()).expect("master url");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(self.port)).expect("port");
        url.to_string()
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().expect("streams").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// A live run cut off from the master (its tenants still in reach) can
/// renew no sign of life; 30 s on, a rollback job takes it for killed and
/// takes back what it recorded. The run went on migrating every tenant
/// after that, none of them recorded (the master was out of reach), so
/// the "reverted" deploy was in fact applied everywhere. A run that has
/// not renewed its record for a while must stop on its own, before a
/// revert may take it over.
#[test]
fn a_run_cut_off_from_the_master_stops_before_a_revert_may_take_it_over() {
    let env = TestEnv::new();
    let (gate, gated) = gated_fleet(&env);
    let proxy = Cuttable::new(&env);
    let master = proxy.master_url(&env);
    let child = {
        let mut cmd = env.cmd();
        cmd.env("MASTER_DATABASE_URL", &master)
            .args(migrate_args(&gated, "cut-off"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().expect("spawn tenantctl")
    };
    gate.wait_for(&env, 1);
    let id = last_run(&env);
    proxy.cut();
    let taken = env.run(&[
        "tenant",
        "revert",
        "--label",
        "cut-off",
        "--yes",
        "--tenant-migrations",
        s(&gated),
    ]);
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    assert!(
        taken.stderr.contains("taken for killed"),
        "{}",
        taken.stderr
    );
    assert_eq!(outcome(&env, &id), ["interrupted"]);
    // Whatever the run still does once its tenant's wait ends.
    let open = gate.open(&env);
    let run = wait_with_deadline(child, Duration::from_secs(120));
    drop(open);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("so it stops now"), "{}", run.stderr);
    // The failed renewals' errors (connections to a master URL holding
    // the password) name no password, in any channel.
    let secret = crate::support::password();
    for channel in [&run.stdout, &run.stderr, &taken.stdout, &taken.stderr] {
        assert!(!channel.contains(&secret), "{channel}");
    }
    for name in ["a", "b", "c", "d"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2], "{name}");
    }
}

/// A run whose record a revert ended (it had been paused, or cut off from
/// the master, past the silence limit) that gets to its own end before a
/// heartbeat notices reported success and exited 0: a CI deploy step
/// green while the rollback job was taking the deploy back. Its end must
/// say so and fail.
#[test]
fn a_run_that_ends_after_its_record_was_taken_over_does_not_succeed() {
    let env = TestEnv::new();
    let (gate, gated) = gated_fleet(&env);
    let mut args = migrate_args(&gated, "late");
    args.extend(["--output", "json"]);
    let child = env.spawn(&args);
    gate.wait_for(&env, 1);
    let id = last_run(&env);
    // What runs::take_over writes, as a revert that found the record
    // silent long enough would (the run was paused meanwhile).
    env.exec(
        &env.master,
        &format!(
            "UPDATE tenantctl.runs SET outcome = 'interrupted', incomplete = true, finished_at = now() WHERE id = {id}"
        ),
    );
    let open = gate.open(&env);
    let run = wait_with_deadline(child, Duration::from_secs(120));
    drop(open);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("tenant revert"), "{}", run.stderr);
    assert_eq!(outcome(&env, &id), ["interrupted"]);
}

/// Ctrl-C while a revert waits to tell whether an unfinished run is alive:
/// the revert stops at once, and ends no record.
#[test]
fn an_interrupt_during_the_wait_for_a_silent_run_ends_no_record() {
    let env = TestEnv::new();
    let (gate, gated) = gated_fleet(&env);
    let id = killed_at_the_gate(&env, &gate, &gated, "interrupted-wait");
    let report = env.workdir.path().join("interrupted-wait.json");
    let revert = env.spawn(&[
        "tenant",
        "revert",
        "--label",
        "interrupted-wait",
        "--yes",
        "--output",
        "json",
        "--report-file",
        s(&report),
        "--tenant-migrations",
        s(&gated),
    ]);
    std::thread::sleep(Duration::from_secs(3));
    let interrupted = Instant::now();
    signal(revert.id(), "-INT");
    let stopped = wait_with_deadline(revert, Duration::from_secs(60));
    assert!(
        interrupted.elapsed() < Duration::from_secs(10),
        "took {:?}: {}",
        interrupted.elapsed(),
        stopped.stderr
    );
    // Exit 130 with its report, in the file as on stdout, as on every
    // other exit path (the wait came before the signals were listened to,
    // so the interrupt killed the process: no report at all).
    assert_eq!(stopped.code, 130, "{}", stopped.stderr);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("the report file"))
            .expect("a JSON report");
    assert!(
        written["error"]
            .as_str()
            .is_some_and(|e| e.contains("interrupted")),
        "{written}"
    );
    assert_eq!(stopped.json()["error"], written["error"]);
    assert_eq!(outcome(&env, &id), ["running"]);
    drain(&env, &gate);
    for name in ["a", "b", "c", "d"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2], "{name}");
    }
}

/// Behind PgBouncer in transaction mode with a pool of one server
/// connection (the record's connection commits statement by statement):
/// a live run's record is renewed through the pooler, so a revert of its
/// label is refused, and once the run is killed outright the revert
/// takes it for killed. (A class tried that held.)
#[test]
fn through_pgbouncer_in_transaction_mode_a_live_run_refuses_and_a_killed_one_is_taken_over() {
    use crate::support::pooler::PgBouncer;
    use crate::support::server::PrivateServer;
    const PW: &str = "app-Live-pw1";
    let env = TestEnv::new();
    let server = PrivateServer::start(&env.token);
    server.exec(
        "postgres",
        &format!("CREATE ROLE app LOGIN CREATEDB PASSWORD '{PW}'"),
    );
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    let bouncer = PgBouncer::start(&server, &env.token, "transaction", &[("app", PW)]);
    let base = format!("{}/?pgbouncer=true", bouncer.url_as("app", PW));
    let master = format!("{}/master?pgbouncer=true", bouncer.url_as("app", PW));
    let configure = |c: &mut std::process::Command| {
        c.env("POSTGRES_BASE_URL", &base)
            .env("MASTER_DATABASE_URL", &master);
    };
    let through = |args: &[&str]| env.run_with(args, configure);
    through(&["master", "migrate"]).ok();
    for slug in ["acme", "globex"] {
        through(&["tenant", "create", slug]).ok();
    }
    let slow = env.tenant_schema_plus(
        "slow",
        "29990101000003_slow.up.sql",
        "SELECT pg_sleep(14); CREATE TABLE flags (name text PRIMARY KEY);",
    );
    std::fs::write(
        Path::new(&slow).join("29990101000003_slow.down.sql"),
        "DROP TABLE flags;",
    )
    .expect("down script");
    let spawn = |label: &str| {
        let mut cmd = env.cmd();
        configure(&mut cmd);
        cmd.args(migrate_args(Path::new(&slow), label))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let revert = |label: &str| {
        through(&[
            "tenant",
            "revert",
            "--label",
            label,
            "--yes",
            "--tenant-migrations",
            &slow,
        ])
    };
    let live = spawn("live");
    std::thread::sleep(Duration::from_secs(2));
    let refused = revert("live").code(2);
    assert!(
        refused.stderr.contains("still running"),
        "{}",
        refused.stderr
    );
    let done = wait_with_deadline(live, Duration::from_secs(120));
    assert_eq!(done.code, 0, "{}", done.stderr);

    // A second slow migration, for a run to kill in it.
    std::fs::write(
        Path::new(&slow).join("29990101000004_slower.up.sql"),
        "SELECT pg_sleep(14); CREATE TABLE more_flags (name text);",
    )
    .expect("second migration");
    std::fs::write(
        Path::new(&slow).join("29990101000004_slower.down.sql"),
        "DROP TABLE more_flags;",
    )
    .expect("its down script");
    let killed = spawn("killed");
    std::thread::sleep(Duration::from_secs(2));
    signal(killed.id(), "-KILL");
    let _ = killed.wait_with_output();
    let taken = revert("killed");
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    assert!(
        taken.stderr.contains("taken for killed"),
        "{}",
        taken.stderr
    );
}

/// A revert that does not go ahead (no `--yes` and no terminal, the
/// operator answering no, a tenant that cannot be reverted) changes
/// nothing, the record of a run it took for killed included: that record
/// was ended before the plan and the question, and a run merely paused
/// then stopped for a revert that never happened.
#[test]
fn a_revert_that_does_not_go_ahead_ends_no_record() {
    let env = TestEnv::new();
    let (gate, gated) = gated_fleet(&env);
    // One tenant done and recorded, the next one in flight when killed.
    let a = env.slug("a");
    let open = gate.open(&env);
    env.run(&[
        "tenant",
        "migrate",
        &a,
        "--label",
        "no-go",
        "--tenant-migrations",
        s(&gated),
    ])
    .ok();
    drop(open);
    let id = killed_at_the_gate(&env, &gate, &gated, "no-go");
    let refused = env
        .run(&[
            "tenant",
            "revert",
            "--label",
            "no-go",
            "--tenant-migrations",
            s(&gated),
        ])
        .code(2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(outcome(&env, &id), ["running"], "{}", refused.stderr);
    drain(&env, &gate);
    assert_eq!(env.applied(&env.db("a")), [V1, V2, V3]);
}

/// The record's master connection ended by the server mid-run
/// (`pg_terminate_backend`, a failover, an idle timeout), on a master
/// whose sessions run with unusual clock settings (time zone, date and
/// interval styles): the heartbeat opens a fresh connection and renews the
/// sign of life, so the run is never taken for killed while it lives.
/// (A class tried that held.)
#[test]
fn a_live_run_whose_record_connection_is_terminated_keeps_its_sign_of_life() {
    let env = TestEnv::new();
    let (gate, gated) = gated_fleet(&env);
    env.exec(
        "postgres",
        &format!(
            "ALTER DATABASE \"{m}\" SET TimeZone = 'Pacific/Chatham';
             ALTER DATABASE \"{m}\" SET DateStyle = 'SQL, DMY';
             ALTER DATABASE \"{m}\" SET IntervalStyle = 'sql_standard'",
            m = env.master
        ),
    );
    let live = env.spawn(&migrate_args(&gated, "terminated"));
    gate.wait_for(&env, 1);
    let id = last_run(&env);
    let alive_at = || {
        env.query(
            &env.master,
            &format!("SELECT alive_at::text FROM tenantctl.runs WHERE id = {id}"),
        )
    };
    let before = alive_at();
    let ended = env.query(
        "postgres",
        &format!(
            "SELECT count(pg_terminate_backend(pid))::text FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            env.master
        ),
    );
    assert_ne!(ended, ["0"], "no master session to end");
    wait_until(Duration::from_secs(20), "the sign of life renewed", || {
        (alive_at() != before).then_some(())
    });
    let refused = env
        .run(&[
            "tenant",
            "revert",
            "--label",
            "terminated",
            "--yes",
            "--tenant-migrations",
            s(&gated),
        ])
        .code(2);
    assert!(
        refused.stderr.contains("still running"),
        "{}",
        refused.stderr
    );
    let open = gate.open(&env);
    let done = wait_with_deadline(live, Duration::from_secs(120));
    drop(open);
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(outcome(&env, &id), ["succeeded"]);
    for name in ["a", "b", "c", "d"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2, V3], "{name}");
    }
}

/// A master role that may INSERT and UPDATE the run tables but not read
/// them: the run is refused before any tenant is touched, and the error
/// names every right the record needs (the UPDATE ... WHERE of each
/// renewal and the INSERT ... RETURNING read the table too).
#[test]
fn a_master_role_without_select_on_the_run_tables_is_told_every_right_it_needs() {
    let env = TestEnv::new();
    let base = env.reversible_upto("base", V2);
    let full = env.reversible_upto("full", V3);
    env.tenants_with(&base, &["a"]);
    let role = crate::support::role_with_password(&env, "blind", "blind-pw");
    env.exec(
        &env.master,
        &format!(
            r#"GRANT SELECT, UPDATE ON "Company" TO "blind_{t}";
               GRANT SELECT ON ALL TABLES IN SCHEMA public TO "blind_{t}";
               GRANT USAGE ON SCHEMA tenantctl TO "blind_{t}";
               GRANT SELECT ON ALL TABLES IN SCHEMA tenantctl TO "blind_{t}";
               REVOKE SELECT ON tenantctl.runs, tenantctl.run_tenants FROM "blind_{t}";
               GRANT INSERT, UPDATE ON tenantctl.runs, tenantctl.run_tenants TO "blind_{t}";"#,
            t = env.token,
        ),
    );
    env.exec(
        &env.db("a"),
        &format!(r#"GRANT ALL ON SCHEMA public TO "blind_{}""#, env.token),
    );
    let refused = env.run_with(
        &[
            "tenant",
            "migrate",
            "--all",
            "--tenant-migrations",
            s(&full),
        ],
        role.configure(),
    );
    assert_ne!(refused.code, 0, "{}", refused.stderr);
    assert!(refused.stderr.contains("SELECT"), "{}", refused.stderr);
    assert_eq!(env.applied(&env.db("a")), [V1, V2]);
}

/// Two rollback jobs of one label started together after a shard was
/// killed: both wait out its silence; one ends its record and takes the
/// label back, the other is refused (exit 2) saying the record changed,
/// and nothing is taken back twice. (A class tried that held.)
#[test]
fn two_rollback_jobs_racing_after_a_kill_take_the_label_back_once() {
    let env = TestEnv::new();
    let (gate, gated) = gated_fleet(&env);
    let a = env.slug("a");
    let open = gate.open(&env);
    env.run(&[
        "tenant",
        "migrate",
        &a,
        "--label",
        "race",
        "--tenant-migrations",
        s(&gated),
    ])
    .ok();
    drop(open);
    let id = killed_at_the_gate(&env, &gate, &gated, "race");
    let job = || {
        env.spawn(&[
            "tenant",
            "revert",
            "--label",
            "race",
            "--yes",
            "--tenant-migrations",
            s(&gated),
        ])
    };
    let (first, second) = (job(), job());
    let first = wait_with_deadline(first, Duration::from_secs(120));
    let second = wait_with_deadline(second, Duration::from_secs(120));
    let mut codes = [first.code, second.code];
    codes.sort_unstable();
    assert_eq!(codes, [0, 2], "{}\n---\n{}", first.stderr, second.stderr);
    let refused = if first.code == 2 { &first } else { &second };
    assert!(
        refused.stderr.contains("nothing was reverted")
            || refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert_eq!(outcome(&env, &id), ["interrupted"]);
    drain(&env, &gate);
    for name in ["a", "b", "c", "d"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2], "{name}");
    }
}

/// A rollback job waits out a killed shard's silence (up to 30 s) with the
/// list of the label's runs it read before; a shard retried meanwhile
/// (a new migrate run under the label) finished its tenants inside that
/// wait, and the revert then took back only the runs on its old list: the
/// label "taken back", exit 0, with the retried shard's tenants still
/// migrated. The runs recorded under the label while it waited must be
/// taken back too (or, still running, refuse the revert).
#[test]
fn a_run_of_the_label_recorded_while_the_revert_waits_is_taken_back_too() {
    let env = TestEnv::new();
    let (gate, gated) = gated_fleet(&env);
    let a = env.slug("a");
    let open = gate.open(&env);
    env.run(&[
        "tenant",
        "migrate",
        &a,
        "--label",
        "retried",
        "--tenant-migrations",
        s(&gated),
    ])
    .ok();
    drop(open);
    killed_at_the_gate(&env, &gate, &gated, "retried");
    let revert = env.spawn(&[
        "tenant",
        "revert",
        "--label",
        "retried",
        "--yes",
        "--tenant-migrations",
        s(&gated),
    ]);
    std::thread::sleep(Duration::from_secs(1));
    // The shard's job retried, its tenants done well within the wait.
    let open = gate.open(&env);
    let retried = env.run(&migrate_args(&gated, "retried")).ok();
    drop(open);
    let undone = wait_with_deadline(revert, Duration::from_secs(120));
    // The retried run ended within the wait: taken back with the rest.
    assert_eq!(undone.code, 0, "{}\n{}", undone.stderr, retried.stderr);
    for name in ["a", "b", "c", "d"] {
        assert_eq!(
            env.applied(&env.db(name)),
            [V1, V2],
            "{name}: {}",
            undone.stderr
        );
    }
}
