//! `tenant move`: a tenant's database copied to another server and the
//! master repointed; interrupted (SIGINT, kill -9) at each step and rerun;
//! a copy that does not verify. The default server is the source, the
//! private `eu2` the target.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::servers::TwoServers;
use crate::support::Run;

const ITEMS: &str = "\
CREATE TABLE items (id bigserial PRIMARY KEY, label text NOT NULL, payload jsonb, at timestamptz);
CREATE TABLE \"Odd Name\" (\"Key\" text PRIMARY KEY, n int);
CREATE SEQUENCE counter START 100;";

/// Master, one migration folder, and a tenant on default with data.
fn with_tenant(two: &TwoServers, name: &str) -> String {
    let env = &two.env;
    let dir = env.workdir.path().join("move-migrations");
    if !dir.exists() {
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("20250101000001_items.sql"), ITEMS).expect("write");
        two.run(&["master", "migrate"]).ok();
    }
    let slug = env.slug(name);
    two.run(&[
        "tenant",
        "create",
        &slug,
        "--server",
        "default",
        "--tenant-migrations",
        dir.to_str().expect("utf-8"),
    ])
    .ok();
    env.exec(
        &env.db(name),
        "INSERT INTO items (label, payload, at) \
           SELECT 'item ' || g || CASE WHEN g % 7 = 0 THEN ' ünï ''q''' ELSE '' END, \
                  CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('g', g) END, \
                  timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour' \
           FROM generate_series(1, 300) g; \
         DELETE FROM items WHERE id % 11 = 0; \
         INSERT INTO \"Odd Name\" VALUES ('a', 1), ('b', NULL); \
         SELECT nextval('counter'), nextval('counter');",
    );
    slug
}

const ROWS: &str =
    "SELECT concat_ws('|', id, label, payload::text, at::text) FROM items ORDER BY id";

/// Every row of the tenant's tables and its sequences, as text.
fn contents(query: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    let mut all = query(ROWS);
    all.extend(query(
        r#"SELECT concat_ws('|', "Key", n) FROM "Odd Name" ORDER BY "Key""#,
    ));
    all.extend(query(
        "SELECT last_value || '/' || is_called FROM counter \
         UNION ALL SELECT last_value || '/' || is_called FROM items_id_seq",
    ));
    all.extend(query(
        "SELECT version || description || encode(checksum, 'hex') FROM _sqlx_migrations ORDER BY version",
    ));
    all
}

fn on_default(two: &TwoServers, name: &str) -> Vec<String> {
    contents(|sql| two.env.query(&two.env.db(name), sql))
}

fn on_eu2(two: &TwoServers, name: &str) -> Vec<String> {
    contents(|sql| two.eu2_query(&two.env.db(name), sql))
}

/// The tenant's move record: step, parked name, incoming name.
fn record(two: &TwoServers, slug: &str) -> Option<(String, String, String)> {
    let env = &two.env;
    env.query(
        &env.master,
        &format!(
            r#"SELECT concat_ws(',', m.step, m.parked_name, m.incoming_name) FROM tenantctl.moves m
               JOIN "Company" c ON c.id = m.company_id WHERE c.slug = '{slug}'"#
        ),
    )
    .first()
    .map(|row| {
        let parts: Vec<&str> = row.split(',').collect();
        (parts[0].into(), parts[1].into(), parts[2].into())
    })
}

fn databases_like(two: &TwoServers, on_eu2: bool, pattern: &str) -> Vec<String> {
    let sql =
        format!("SELECT datname::text FROM pg_database WHERE datname LIKE '{pattern}' ORDER BY 1");
    if on_eu2 {
        two.eu2_query("postgres", &sql)
    } else {
        two.env.query("postgres", &sql)
    }
}

/// Asserts the tenant is back on default exactly as before and nothing
/// of the move is left on either server.
#[track_caller]
fn assert_untouched(two: &TwoServers, name: &str, before: &[String]) {
    let env = &two.env;
    let slug = env.slug(name);
    let db = env.db(name);
    assert_eq!(two.placement(&slug), "", "still placed on default");
    assert_eq!(record(two, &slug), None, "the move is forgotten");
    assert_eq!(on_default(two, name), before, "the source is as it was");
    assert_eq!(
        env.query(
            "postgres",
            &format!("SELECT datallowconn::text FROM pg_database WHERE datname = '{db}'")
        ),
        ["true"]
    );
    assert_eq!(
        databases_like(two, false, &format!("{db}_mov%")),
        Vec::<String>::new()
    );
    assert_eq!(
        databases_like(two, true, &format!("{db}%")),
        Vec::<String>::new()
    );
    let list = two.run(&["tenant", "list", "--output", "json"]).ok().json()["tenants"].clone();
    let row = list
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["slug"] == slug.as_str())
        .expect("listed");
    assert_eq!(row["status"], "active");
    assert_eq!(row["server"], "default");
}

/// Asserts the tenant lives on eu2 with the data it had.
#[track_caller]
fn assert_moved(two: &TwoServers, name: &str, before: &[String]) {
    let env = &two.env;
    let slug = env.slug(name);
    assert_eq!(two.placement(&slug), "eu2");
    assert_eq!(
        on_eu2(two, name),
        before,
        "row by row, sequences, migrations"
    );
    assert!(
        !env.database_exists(&env.db(name)),
        "no longer under its name on default"
    );
    assert_eq!(
        databases_like(two, true, &format!("{}_mov%", env.db(name))),
        Vec::<String>::new()
    );
}

/// A running move paused at a step (see `moves::pause`).
struct Paused {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Paused {
    fn start(two: &TwoServers, args: &[&str], step: &str, resume: Option<&Path>) -> Self {
        let mut cmd = two.env.cmd();
        two.configure(&mut cmd);
        cmd.env("TENANTCTL_TEST_MOVE_PAUSE", step);
        if let Some(file) = resume {
            cmd.env("TENANTCTL_TEST_MOVE_RESUME", file);
        }
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut paused = Self {
            child,
            lines,
            stderr: Vec::new(),
        };
        paused.wait_for(&format!("paused after {step}"));
        paused
    }

    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.stderr.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("never saw {text:?}; stderr:\n{}", self.stderr.join("\n"));
                }
            }
        }
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process and returns what it printed.
    fn finish(mut self) -> Run {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "the move did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = self.child.wait_with_output().expect("output");
        let mut run = Run::from(output);
        // The reader thread has everything once the pipe closes.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr.push(line);
        }
        run.stderr = self.stderr.join("\n");
        run
    }
}

#[test]
fn a_move_copies_verifies_switches_and_keeps_the_source_until_finished() {
    let two = TwoServers::new();
    let env = &two.env;
    let slug = with_tenant(&two, "acme");
    with_tenant(&two, "bystander");
    let db = env.db("acme");
    let before = on_default(&two, "acme");
    assert!(before.len() > 270, "{}", before.len());

    // --dry-run: the plan and the size, nothing touched.
    let plan = two
        .run(&[
            "tenant",
            "move",
            &slug,
            "--to",
            "eu2",
            "--dry-run",
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(plan["action"], "planned");
    assert!(plan["bytes"].as_i64().expect("size") > 1_000_000, "{plan}");
    assert!(plan["plan"]["problem"].is_null(), "{plan}");
    let table = two
        .run(&["tenant", "move", &slug, "--to", "eu2", "--dry-run"])
        .ok();
    assert!(table.stdout.contains("would move"), "{}", table.stdout);
    assert!(env.database_exists(&db) && !two.on_eu2(&db));

    let moved = two
        .run(&["tenant", "move", &slug, "--to", "eu2", "--output", "json"])
        .ok();
    let report = moved.json();
    assert_eq!(report["action"], "moved");
    assert_eq!(report["from"], "default");
    assert_eq!(report["to"], "eu2");
    assert!(report["bytes"].as_i64().expect("bytes") > 0);
    assert!(report["mb_per_s"].as_f64().is_some(), "{report}");
    for step in ["closed the source", "copied", "verified", "switched"] {
        assert!(moved.stderr.contains(step), "{step}: {}", moved.stderr);
    }
    assert_moved(&two, "acme", &before);

    // The source is kept, renamed and closed to connections.
    let parked = report["source_kept_as"].as_str().expect("kept").to_owned();
    assert!(parked.starts_with(&format!("{db}_moved_")), "{parked}");
    assert_eq!(
        env.query(
            "postgres",
            &format!("SELECT datallowconn::text FROM pg_database WHERE datname = '{parked}'")
        ),
        ["false"]
    );
    // Fleet commands find it on eu2; the bystander stays on default.
    let dir = env.workdir.path().join("move-migrations");
    let dir = dir.to_str().expect("utf-8");
    let migrated = two
        .run(&[
            "tenant",
            "status",
            "--all",
            "--output",
            "json",
            "--tenant-migrations",
            dir,
        ])
        .ok()
        .json();
    assert_eq!(crate::support::find(&migrated, &slug)["server"], "eu2");
    assert_eq!(
        crate::support::find(&migrated, &env.slug("bystander"))["server"],
        "default"
    );
    // doctor does not take the kept source for an orphan.
    let doctor = two
        .run(&["doctor", "--output", "json", "--tenant-migrations", dir])
        .json();
    assert!(
        !doctor["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| f["db_name"] == parked.as_str() || f["slug"] == slug.as_str()),
        "{doctor}"
    );

    // A rerun says it is done; --finish drops the source.
    let again = two
        .run(&["tenant", "move", &slug, "--to", "eu2", "--output", "json"])
        .ok()
        .json();
    assert_eq!(again["resumed"], true);
    let finished = two
        .run(&["tenant", "move", &slug, "--finish", "--output", "json"])
        .ok()
        .json();
    assert_eq!(finished["action"], "finished");
    assert!(!env.database_exists(&parked));
    assert_moved(&two, "acme", &before);

    // And back, dropping the source at once.
    let back = two
        .run(&[
            "tenant",
            "move",
            &slug,
            "--to",
            "default",
            "--drop-source",
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(back["source_dropped"], true);
    assert_eq!(on_default(&two, "acme"), before);
    assert_eq!(
        databases_like(&two, true, &format!("{db}%")),
        Vec::<String>::new()
    );
    assert_eq!(two.placement(&slug), "");

    // Refusals: the server it is on, an unknown one.
    let same = two
        .run(&["tenant", "move", &slug, "--to", "default"])
        .code(1);
    assert!(
        same.stderr.contains("already on server default"),
        "{}",
        same.stderr
    );
    let unknown = two.run(&["tenant", "move", &slug, "--to", "eu3"]).code(1);
    assert!(
        unknown
            .stderr
            .contains("server eu3 is not configured: set POSTGRES_BASE_URL_EU3"),
        "{}",
        unknown.stderr
    );
}

/// SIGINT at each step before the switch undoes the move; at the last
/// ones it finishes.
#[test]
fn an_interrupted_move_undoes_itself() {
    let two = TwoServers::new();
    for step in [
        "started",
        "source_closed",
        "copied",
        "verified",
        "switching",
    ] {
        let name = format!("int-{}", step.replace('_', "-"));
        let slug = with_tenant(&two, &name);
        let before = on_default(&two, &name);
        let paused = Paused::start(&two, &["tenant", "move", &slug, "--to", "eu2"], step, None);
        paused.signal("-INT");
        let run = paused.finish().code(130);
        two.assert_no_password(&run);
        assert!(run.stderr.contains("undone"), "{step}: {}", run.stderr);
        assert_untouched(&two, &name, &before);
        // A later move goes through.
        two.run(&["tenant", "move", &slug, "--to", "eu2"]).ok();
        assert_moved(&two, &name, &before);
    }
    for step in ["target_renamed", "switched"] {
        let name = format!("int-{}", step.replace('_', "-"));
        let slug = with_tenant(&two, &name);
        let before = on_default(&two, &name);
        let paused = Paused::start(&two, &["tenant", "move", &slug, "--to", "eu2"], step, None);
        paused.signal("-INT");
        let run = paused.finish();
        assert!(matches!(run.code, 0 | 130), "{step}: {}", run.all());
        assert_moved(&two, &name, &before);
    }
}

/// kill -9 at each step leaves the move recorded (the tenant `moving`,
/// skipped by fleet commands); a rerun finishes it, or --abort undoes it.
#[test]
fn a_killed_move_is_finished_by_a_rerun_or_undone_by_abort() {
    let two = TwoServers::new();
    let env = &two.env;
    for step in [
        "started",
        "source_closed",
        "copied",
        "verified",
        "switching",
        "target_renamed",
    ] {
        let name = format!("kill-{}", step.replace('_', "-"));
        let slug = with_tenant(&two, &name);
        let before = on_default(&two, &name);
        let paused = Paused::start(&two, &["tenant", "move", &slug, "--to", "eu2"], step, None);
        paused.signal("-KILL");
        let _ = paused.finish();
        assert!(record(&two, &slug).is_some(), "{step}: recorded");
        // Moving: fleet commands skip it and say why.
        let status = two
            .run(&["tenant", "status", &slug, "--output", "json"])
            .code(1)
            .json();
        let report = crate::support::find(&status, &slug);
        assert_eq!(report["status"], "skipped", "{step}: {status}");
        assert!(
            report["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("moving to server eu2")),
            "{status}"
        );
        // Another target is refused while it is unfinished.
        let other = two
            .run(&["tenant", "move", &slug, "--to", "default"])
            .code(1);
        assert!(other.stderr.contains("--abort"), "{}", other.stderr);

        let rerun = two
            .run(&["tenant", "move", &slug, "--to", "eu2", "--output", "json"])
            .ok();
        two.assert_no_password(&rerun);
        assert_eq!(rerun.json()["resumed"], true, "{step}");
        assert_moved(&two, &name, &before);
    }

    // --abort after a kill: back where it was.
    for step in ["copied", "switching", "target_renamed"] {
        let name = format!("abort-{}", step.replace('_', "-"));
        let slug = with_tenant(&two, &name);
        let before = on_default(&two, &name);
        let paused = Paused::start(&two, &["tenant", "move", &slug, "--to", "eu2"], step, None);
        paused.signal("-KILL");
        let _ = paused.finish();
        let aborted = two
            .run(&["tenant", "move", &slug, "--abort", "--output", "json"])
            .ok()
            .json();
        assert_eq!(aborted["action"], "aborted");
        assert_untouched(&two, &name, &before);
    }
    // Nothing left to abort.
    let slug = env.slug("abort-copied");
    two.run(&["tenant", "move", &slug, "--abort"]).code(1);
}

#[test]
fn a_copy_that_does_not_verify_leaves_the_source_as_it_was() {
    let two = TwoServers::new();
    let env = &two.env;
    let slug = with_tenant(&two, "drift");
    let before = on_default(&two, "drift");
    let resume = env.workdir.path().join("resume");
    let paused = Paused::start(
        &two,
        &["tenant", "move", &slug, "--to", "eu2"],
        "copied",
        Some(&resume),
    );
    // Someone writes to the copy before it is verified.
    let (_, _, incoming) = record(&two, &slug).expect("recorded");
    two.eu2_exec(&incoming, "DELETE FROM items WHERE id = 1");
    std::fs::write(&resume, "").expect("resume");
    let run = paused.finish().code(1);
    two.assert_no_password(&run);
    let rows = env.query(&env.db("drift"), "SELECT count(*)::text FROM items");
    let expected = format!(
        "table public.items has {} rows on the source and {} on the copy",
        rows[0],
        rows[0].parse::<i64>().expect("count") - 1
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(
        run.stderr.contains("failed and was undone"),
        "{}",
        run.stderr
    );
    assert_untouched(&two, "drift", &before);
}

/// The source is read for the verification while it is copied; the copy
/// alone is read after. A sequence moved on the copy, or a row the copy
/// gained, still fails the move and undoes it; so does a row it lost when
/// a rerun picks the move up at `copied` (both sides read afresh then).
#[test]
fn a_copy_with_a_moved_sequence_or_a_lost_row_fails_the_move_and_is_undone() {
    let two = TwoServers::new();
    let env = &two.env;
    let slug = with_tenant(&two, "seq");
    let before = on_default(&two, "seq");
    let last = env.query(&env.db("seq"), "SELECT last_value::text FROM counter");
    let resume = env.workdir.path().join("resume-seq");
    let paused = Paused::start(
        &two,
        &["tenant", "move", &slug, "--to", "eu2"],
        "copied",
        Some(&resume),
    );
    let (_, _, incoming) = record(&two, &slug).expect("recorded");
    two.eu2_exec(
        &incoming,
        "SELECT setval('counter', 5000); INSERT INTO \"Odd Name\" VALUES ('c', 3)",
    );
    std::fs::write(&resume, "").expect("resume");
    let run = paused.finish().code(1);
    two.assert_no_password(&run);
    for expected in [
        format!(
            "sequence public.counter is at {} on the source and 5000 on the copy",
            last[0]
        ),
        "table public.\"Odd Name\" has 2 rows on the source and 3 on the copy".to_owned(),
        "failed and was undone".to_owned(),
    ] {
        assert!(run.stderr.contains(&expected), "{expected}: {}", run.stderr);
    }
    assert_untouched(&two, "seq", &before);

    // Killed at `copied`, a row deleted from the copy, then rerun.
    let slug = with_tenant(&two, "seq-rerun");
    let before = on_default(&two, "seq-rerun");
    let rows = env.query(&env.db("seq-rerun"), "SELECT count(*)::text FROM items");
    let paused = Paused::start(
        &two,
        &["tenant", "move", &slug, "--to", "eu2"],
        "copied",
        None,
    );
    paused.signal("-KILL");
    let _ = paused.finish();
    let (_, _, incoming) = record(&two, &slug).expect("recorded");
    two.eu2_exec(&incoming, "DELETE FROM items WHERE id = 1");
    let run = two.run(&["tenant", "move", &slug, "--to", "eu2"]).code(1);
    let expected = format!(
        "table public.items has {} rows on the source and {} on the copy",
        rows[0],
        rows[0].parse::<i64>().expect("count") - 1
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(
        run.stderr.contains("failed and was undone"),
        "{}",
        run.stderr
    );
    assert_untouched(&two, "seq-rerun", &before);
}

/// The source's side of the verification is read in the transaction whose
/// snapshot pg_dump copies, which then stays open, idle, until the copy
/// ends: a source database that ends idle transactions quickly still moves.
#[test]
fn a_source_that_ends_idle_transactions_at_once_still_moves() {
    let two = TwoServers::new();
    let env = &two.env;
    let slug = with_tenant(&two, "idle");
    let before = on_default(&two, "idle");
    env.exec(
        "postgres",
        &format!(
            "ALTER DATABASE \"{}\" SET idle_in_transaction_session_timeout = '10ms'",
            env.db("idle")
        ),
    );
    let run = two
        .run(&[
            "tenant",
            "move",
            &slug,
            "--to",
            "eu2",
            "--drop-source",
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(run["action"], "moved", "{run}");
    assert_moved(&two, "idle", &before);
}

/// An interrupt while the source's side of the verification waits (here on
/// a lock another session holds on the parked source, as pg_dump does)
/// cancels that read on the server: the move is undone then, not once the
/// lock goes ten minutes later.
#[test]
fn an_interrupt_cancels_the_source_read_that_waits_on_a_lock() {
    let two = TwoServers::new();
    let env = &two.env;
    let slug = with_tenant(&two, "int-read");
    let before = on_default(&two, "int-read");
    let resume = env.workdir.path().join("resume-int-read");
    let paused = Paused::start(
        &two,
        &["tenant", "move", &slug, "--to", "eu2"],
        "source_closed",
        Some(&resume),
    );
    let (_, parked, _) = record(&two, &slug).expect("recorded");
    let mut holder = std::process::Command::new("psql")
        .args(["-X", "-q", "-d", &env.db_url(&parked), "-c"])
        .arg("LOCK TABLE items IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600)")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    let waiting = |mode: &str, granted: bool| {
        env.query(
            &parked,
            &format!(
                "SELECT count(*)::text FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE c.relname = 'items' AND l.mode = '{mode}' AND l.granted = {granted} \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
        )[0]
        .parse::<i64>()
        .expect("count")
    };
    crate::support::wait_until(Duration::from_secs(20), "psql to hold the lock", || {
        (waiting("AccessExclusiveLock", true) == 1).then_some(())
    });
    std::fs::write(&resume, "").expect("resume");
    // pg_dump and the verification's read both wait for the table.
    crate::support::wait_until(Duration::from_secs(60), "the copy to wait", || {
        (waiting("AccessShareLock", false) == 2).then_some(())
    });
    paused.signal("-INT");
    let run = paused.finish().code(130);
    assert!(run.stderr.contains("undone"), "{}", run.stderr);
    // Reopening the source ended the holder's session.
    let _ = holder.kill();
    let _ = holder.wait();
    assert_untouched(&two, "int-read", &before);
}

/// A copy that fails halfway (the source grants to a role the target does
/// not have, so pg_restore stops) is dropped, and the source reopened.
#[test]
fn a_failed_copy_is_undone_and_a_bad_target_refused_up_front() {
    let two = TwoServers::new();
    let env = &two.env;
    let slug = with_tenant(&two, "grants");
    let role = format!("reader_{}", env.token);
    env.exec("postgres", &format!("CREATE ROLE \"{role}\""));
    env.exec(
        &env.db("grants"),
        &format!("GRANT SELECT ON items TO \"{role}\""),
    );
    let before = on_default(&two, "grants");
    let run = two.run(&["tenant", "move", &slug, "--to", "eu2"]).code(1);
    assert!(
        run.stderr.contains("copy the database: pg_restore failed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&role), "says why: {}", run.stderr);
    assert!(
        run.stderr.contains("failed and was undone"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr
            .trim()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1
    );
    assert_untouched(&two, "grants", &before);

    // Tools that are not there: refused before anything is recorded.
    let missing = two
        .run(&[
            "tenant",
            "move",
            &slug,
            "--to",
            "eu2",
            "--pg-bin",
            "/nonexistent",
        ])
        .code(1);
    assert!(missing.stderr.contains("pg_dump"), "{}", missing.stderr);
    assert_untouched(&two, "grants", &before);
}

/// The application repoints the company while its database is copied: the
/// switch reads the row again under its lock and refuses, placing nothing
/// on the target; `--abort` then puts the source back.
#[test]
fn a_row_repointed_during_the_copy_is_not_switched() {
    let two = TwoServers::new();
    let env = &two.env;
    let slug = with_tenant(&two, "acme");
    let resume = env.workdir.path().join("resume");
    let paused = Paused::start(
        &two,
        &["tenant", "move", &slug, "--to", "eu2"],
        "target_renamed",
        Some(&resume),
    );
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET "dbName" = 'elsewhere_{}' WHERE slug = '{slug}'"#,
            env.token
        ),
    );
    std::fs::write(&resume, "").expect("resume");
    let run = paused.finish();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("changed during the move"),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.query(
            &env.master,
            &format!(
                r#"SELECT coalesce("dbServer", 'default') FROM "Company" WHERE slug = '{slug}'"#
            )
        ),
        ["default"],
        "nothing placed on eu2"
    );
}
