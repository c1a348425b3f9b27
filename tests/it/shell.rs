//! What tenantctl tells a shell and an operator about itself: completion
//! scripts and manual pages made from the clap definitions, `--version`
//! with the embedded migration sets, and `--verbose`'s statement log.

use clap::CommandFactory as _;
use tenantctl::cli::Cli;

use crate::support::{TestEnv, password};

/// Every command path under `tenantctl` (`["tenant", "migrate"]`, ...),
/// from the definitions the binary is built from.
fn command_paths() -> Vec<(Vec<String>, clap::Command)> {
    fn walk(cmd: &clap::Command, path: &[String], out: &mut Vec<(Vec<String>, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let mut here = path.to_vec();
            here.push(sub.get_name().to_owned());
            out.push((here.clone(), sub.clone()));
            walk(sub, &here, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), &[], &mut out);
    out
}

/// The completion commands need no configuration: a fresh machine with no
/// base URL gets a script.
fn completions(env: &TestEnv, shell: &str) -> String {
    let run = env
        .run_with(&["completions", shell], |c| {
            c.env_remove("POSTGRES_BASE_URL")
                .env_remove("MASTER_DATABASE_URL");
        })
        .ok();
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    run.stdout
}

/// What bash offers for the words typed so far (the last one partial),
/// from the script `tenantctl completions bash` printed: the real
/// completion function run by a real bash.
fn bash_offers(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let words: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
         COMP_POINT=${{#COMP_LINE}}; _tenantctl tenantctl \"${{COMP_WORDS[COMP_CWORD]}}\" \
         \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words.join(" "),
        words.len() - 1
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_every_subcommand_and_each_shell_gets_a_script() {
    let env = TestEnv::new();
    let script = env.workdir.path().join("tenantctl.bash");
    std::fs::write(&script, completions(&env, "bash")).expect("write the script");
    let paths = command_paths();
    assert!(paths.len() > 20, "{} commands", paths.len());
    // `tenantctl tenant mi<TAB>` offers migrate, and so for every command:
    // its first two letters, after its parents, offer it.
    assert_eq!(
        bash_offers(&script, &["tenantctl", "tenant", "mi"]),
        ["migrate"]
    );
    for (path, _) in &paths {
        let name = path.last().expect("a name");
        let mut words: Vec<&str> = vec!["tenantctl"];
        words.extend(path[..path.len() - 1].iter().map(String::as_str));
        let typed: String = name.chars().take(2).collect();
        words.push(&typed);
        let offered = bash_offers(&script, &words);
        assert!(
            offered.contains(name),
            "`{}<TAB>` offers {offered:?}, not {name}",
            words.join(" ")
        );
    }
    // Flags too: `tenantctl tenant migrate --sh<TAB>`.
    assert_eq!(
        bash_offers(&script, &["tenantctl", "tenant", "migrate", "--sh"]),
        ["--shard"]
    );
    for (shell, mark) in [
        ("zsh", "#compdef tenantctl"),
        ("fish", "complete -c tenantctl"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[tenantctl]"),
    ] {
        let text = completions(&env, shell);
        assert!(
            text.contains(mark),
            "{shell}: {}",
            &text[..text.len().min(200)]
        );
        assert!(text.contains("migrate"), "{shell}");
    }
    let refused = env.run(&["completions", "tcsh"]).code(2);
    assert!(refused.stderr.contains("tcsh"), "{}", refused.stderr);
}

#[test]
fn man_writes_one_page_per_command_naming_its_flags() {
    let env = TestEnv::new();
    let dir = env.workdir.path().join("man/man1");
    let run = env
        .run_with(&["man", dir.to_str().expect("utf-8")], |c| {
            c.env_remove("POSTGRES_BASE_URL")
                .env_remove("MASTER_DATABASE_URL");
        })
        .ok();
    assert!(
        run.stdout.contains("tenantctl-tenant-migrate.1"),
        "{}",
        run.stdout
    );
    let top = std::fs::read_to_string(dir.join("tenantctl.1")).expect("tenantctl.1");
    assert!(top.contains("tenantctl"), "{top}");
    let mut pages = 1;
    for (path, cmd) in command_paths() {
        let file = dir.join(format!("tenantctl-{}.1", path.join("-")));
        let page =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        pages += 1;
        // roff spells a hyphen `\-`.
        let page = page.replace("\\-", "-");
        assert!(page.contains(".TH "), "{}", file.display());
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                assert!(
                    page.contains(&format!("--{long}")),
                    "{} does not name --{long}",
                    file.display()
                );
            }
        }
    }
    let written = std::fs::read_dir(&dir).expect("man dir").count();
    assert_eq!(written, pages, "one page per command and no other");
    let migrate = std::fs::read_to_string(dir.join("tenantctl-tenant-migrate.1"))
        .expect("the migrate page")
        .replace("\\-", "-");
    for flag in ["--all", "--shard", "--to", "--dry-run", "--concurrency"] {
        assert!(migrate.contains(flag), "{flag}");
    }
}

/// `sha256` of the embedded migrations, as `--version` prints it: count,
/// newest version, and a hash that is the same for the same files.
#[test]
fn version_names_the_embedded_migration_sets() {
    let env = TestEnv::new();
    let run = env
        .run_with(&["--version"], |c| {
            c.env_remove("POSTGRES_BASE_URL");
        })
        .ok();
    let ups: Vec<i64> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tenant-migrations"))
            .expect("tenant-migrations")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                if name.ends_with(".down.sql") {
                    return None;
                }
                name.split('_').next()?.parse().ok()
            })
            .collect();
    let newest = ups.iter().max().expect("a migration");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], format!("tenantctl {}", env!("CARGO_PKG_VERSION")));
    let tenant = lines
        .iter()
        .find(|l| l.starts_with("tenant migrations: "))
        .expect("the tenant set");
    assert!(
        tenant.starts_with(&format!(
            "tenant migrations: {} up to {newest}, sha256 ",
            ups.len()
        )),
        "{tenant}"
    );
    let hash = tenant.rsplit(' ').next().expect("a hash");
    assert_eq!(hash.len(), 12, "{hash}");
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    assert!(
        lines.iter().any(|l| l.starts_with("master migrations: ")),
        "{}",
        run.stdout
    );
    // `-V` stays one line for scripts that read it.
    let short = env.run(&["-V"]).ok();
    assert_eq!(
        short.stdout.trim(),
        format!("tenantctl {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn verbose_prints_each_statement_where_it_went_and_masks_passwords() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let slug = env.slug("a");
    let secret = password();
    let script = format!(
        "SELECT 'marker-{token}', '{secret}'; CREATE TEMP TABLE r (pw text); \
         COMMENT ON TABLE r IS 'x'; DO $$ BEGIN PERFORM 1; END $$; \
         SELECT 'ALTER ROLE x PASSWORD ' || quote_literal('plain')",
        token = env.token
    );
    let run = env
        .run(&["-v", "tenant", "sql", &slug, "-c", &script, "--dry-run"])
        .ok();
    let sent: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with(&format!("[tenant {slug}] ")))
        .collect();
    assert!(
        sent.iter()
            .any(|l| l.contains(&format!("'marker-{}'", env.token)) && l.contains(" ms: ")),
        "the script, with its time, under its tenant:\n{}",
        run.stderr
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("[master] ") && l.contains("\"Company\"")),
        "the master's read, under the master:\n{}",
        run.stderr
    );
    if !secret.is_empty() {
        assert!(!run.stderr.contains(&secret), "{}", run.stderr);
    }
    // A role's password in a script the tenant runs is masked whatever it is.
    let role = format!("r_{}", env.token);
    let literal = format!("Lit-{}-pw", env.token);
    let run = env
        .run(&[
            "--verbose",
            "tenant",
            "sql",
            &slug,
            "--dry-run",
            "-c",
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{literal}'"),
        ])
        .ok();
    assert!(!run.stderr.contains(&literal), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("CREATE ROLE {role} LOGIN PASSWORD '***'")),
        "{}",
        run.stderr
    );
    // A run's record is written to the master during each tenant's turn:
    // said as the master's, never as the tenant's.
    let run = env.run(&["-v", "tenant", "migrate", "--all"]).ok();
    let record: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("tenantctl.run"))
        .collect();
    assert!(
        record.len() >= 2,
        "the run's start and end:\n{}",
        run.stderr
    );
    for line in record {
        assert!(line.starts_with("[master] "), "{line}");
    }
    // Without the flag, nothing of the kind.
    let quiet = env
        .run(&["tenant", "sql", &slug, "-c", "SELECT 1", "--dry-run"])
        .ok();
    assert!(!quiet.stderr.contains(" ms: "), "{}", quiet.stderr);
}
