//! Tenants in flight at once: `--concurrency`, `TENANTCTL_CONCURRENCY`,
//! and `--fail-fast` letting in-flight tenants finish. Each is observed in
//! `pg_stat_activity`, with migrations held at a [`Gate`].

use std::io::BufRead as _;
use std::time::{Duration, Instant};

use crate::support::{Gate, TestEnv, find, wait_with_deadline};

#[test]
fn concurrency_runs_that_many_tenants_at_once_and_no_more() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let names = ["a", "b", "c", "d", "e"];
    let slugs = env.tenants_with(&dir, &names);
    let dbs: Vec<String> = names.iter().map(|n| env.db(n)).collect();
    let gate = Gate::new(&env);
    std::fs::write(dir.join("20250101000003_gated.sql"), gate.sql()).expect("write");
    let dir_str = dir.to_str().expect("utf-8");
    let args = [
        "tenant",
        "migrate",
        "--all",
        "--output",
        "json",
        "--tenant-migrations",
        dir_str,
    ];
    // Sessions of tenantctl on this test's tenant databases.
    let connected = format!(
        "SELECT count(*)::text FROM pg_stat_activity WHERE application_name LIKE 'tenantctl%' AND datname IN ('{}')",
        dbs.join("', '")
    );

    // --concurrency 2: two tenants at the gate together; while they are
    // held there, no third tenant starts (watched for a second: a run that
    // ignored the flag would have started its other workers at once).
    let mut flagged = args.to_vec();
    flagged.extend(["--concurrency", "2"]);
    let child = env.spawn(&flagged);
    let at_gate = gate.wait_for(&env, 2);
    assert_eq!(at_gate.len(), 2, "{at_gate:?}");
    let watch_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < watch_until {
        assert_eq!(
            env.query("postgres", &connected),
            ["2"],
            "more than 2 in flight"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let open = gate.open(&env);
    let report = wait_with_deadline(child, Duration::from_secs(60))
        .ok()
        .json();
    drop(open);
    assert_eq!(report["summary"]["ok"], 5, "{report}");

    // TENANTCTL_CONCURRENCY=5, above the default of 4: all five at the gate
    // at once, which only the variable allows.
    std::fs::write(dir.join("20250101000004_gated.sql"), gate.sql()).expect("write");
    let child = env
        .cmd()
        .args(args)
        .env("TENANTCTL_CONCURRENCY", "5")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut at_gate = gate.wait_for(&env, 5);
    at_gate.sort();
    assert_eq!(at_gate, dbs);
    let open = gate.open(&env);
    let report = wait_with_deadline(child, Duration::from_secs(60))
        .ok()
        .json();
    drop(open);
    for slug in &slugs {
        assert_eq!(
            find(&report, slug)["applied"],
            serde_json::json!([20_250_101_000_004_i64])
        );
    }
}

#[test]
fn fail_fast_lets_tenants_in_flight_finish() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b", "c", "d"]);
    let gate = Gate::new(&env);
    std::fs::write(
        dir.join("20250101000003_gated.sql"),
        format!("CREATE TABLE in_flight (id int);\n{}", gate.sql()),
    )
    .expect("write");
    let dir = dir.to_str().expect("utf-8");
    // a fails at once; b and c are then in flight, held at the gate.
    env.exec("postgres", &format!("DROP DATABASE \"{}\"", env.db("a")));
    let mut child = env.spawn(&[
        "tenant",
        "migrate",
        "--all",
        "--concurrency",
        "3",
        "--fail-fast",
        "--output",
        "jsonl",
        "--tenant-migrations",
        dir,
    ]);
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || -> serde_json::Value {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a JSONL line");
        serde_json::from_str(&line).expect("JSON")
    };
    let mut at_gate = gate.wait_for(&env, 2);
    at_gate.sort();
    assert_eq!(at_gate, [env.db("b"), env.db("c")]);
    // While b and c are held: a has failed and d was never started.
    let (first, second) = (next(), next());
    assert_eq!(
        (first["slug"].as_str(), first["status"].as_str()),
        (Some(slugs[0].as_str()), Some("failed")),
        "{first}"
    );
    assert_eq!(
        (second["slug"].as_str(), second["status"].as_str()),
        (Some(slugs[3].as_str()), Some("skipped")),
        "{second}"
    );

    // Let b and c go on: they finish and commit.
    let open = gate.open(&env);
    let run = wait_with_deadline(child, Duration::from_secs(60)).code(1);
    drop(open);
    let mut rest: Vec<serde_json::Value> = rx
        .iter()
        .map(|l| serde_json::from_str(&l).expect("JSON"))
        .collect();
    let summary = rest.pop().expect("summary line");
    assert_eq!(
        summary["summary"],
        serde_json::json!({"ok": 2, "failed": 1, "skipped": 1}),
        "{}",
        run.stderr
    );
    assert_eq!(rest.len(), 2, "{rest:?}");
    for report in &rest {
        assert_eq!(report["status"], "ok", "{report}");
        assert_eq!(
            report["applied"],
            serde_json::json!([20_250_101_000_003_i64])
        );
    }
    for name in ["b", "c"] {
        assert_eq!(env.applied(&env.db(name)).len(), 3, "{name}");
    }
    assert_eq!(env.applied(&env.db("d")).len(), 2, "d never started");
}
