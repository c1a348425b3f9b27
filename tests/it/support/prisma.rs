//! The real Prisma CLI (6.19.3, from `tests/prisma-kit`, a copy of the
//! team's shared kit), run as the seed application runs it: `DATABASE_URL`
//! set to `${POSTGRES_BASE_URL}/${dbName}`, `migrate deploy` per tenant.
//!
//! `scripts/prereqs.sh test` installs the kit (`tests/prisma-kit/setup.sh`,
//! npm registry only); a test that needs it fails with that command named
//! rather than passing without Prisma.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Run, TestEnv};

/// The kit's folder in this repository.
pub fn kit() -> PathBuf {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prisma-kit");
    assert!(
        kit.join("node_modules/.prisma-kit-stamp").is_file(),
        "the Prisma kit is not installed: run scripts/prereqs.sh test (or tests/prisma-kit/setup.sh)"
    );
    kit
}

/// The kit's example schema folders (`schema.prisma` + `migrations/`):
/// `master` (the seed's `Company`) or `tenant` (`Site`, `Meter`, `Reading`).
pub fn example(name: &str) -> PathBuf {
    kit().join(name)
}

/// Copies a schema folder (`schema.prisma` and `migrations/`) into the
/// test's scratch directory under `name`, so a test can add migrations to
/// it; returns the copy.
pub fn copy_schema(env: &TestEnv, from: &Path, name: &str) -> PathBuf {
    let to = env.workdir.path().join(name);
    copy_dir(from, &to);
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).expect("read folder") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            if entry.file_name() == "generated" {
                continue;
            }
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Adds `<name>/migration.sql` holding `sql` to a schema folder's
/// migrations, as `prisma migrate dev --create-only` would lay it out.
pub fn add_migration(schema: &Path, name: &str, sql: &str) -> PathBuf {
    let dir = schema.join("migrations").join(name);
    std::fs::create_dir_all(&dir).expect("create migration folder");
    std::fs::write(dir.join("migration.sql"), sql).expect("write migration.sql");
    dir
}

/// The Prisma CLI on `schema` (a folder) against database `db` of the
/// test's server, run through the kit's `run.sh`.
pub fn prisma(env: &TestEnv, schema: &Path, db: &str, args: &[&str]) -> Run {
    prisma_with(env, schema, &env.db_url(db), args, |_| {})
}

/// [`prisma`] with a `DATABASE_URL` of the caller's and any more settings.
pub fn prisma_with(
    env: &TestEnv,
    schema: &Path,
    database_url: &str,
    args: &[&str],
    configure: impl FnOnce(&mut Command),
) -> Run {
    let mut cmd = Command::new("bash");
    cmd.arg(kit().join("run.sh"))
        .arg(schema)
        .args(args)
        .current_dir(env.workdir.path())
        .env("DATABASE_URL", database_url)
        .env_remove("SHADOW_DATABASE_URL")
        .stdin(std::process::Stdio::null());
    configure(&mut cmd);
    Run::from(cmd.output().expect("run the Prisma CLI"))
}

/// The `[tenants.migrator]` section for a Prisma schema folder, with
/// tenantctl applying its `migration.sql` files itself.
pub fn migrator_toml(schema: &Path) -> String {
    format!(
        "[tenants.migrator]\nkind = \"prisma\"\nmigrations = \"{}\"\n",
        schema.join("migrations").display()
    )
}

/// The kit's Prisma client example (`client.ts`: `findMany` over the
/// master's companies, as the seed's application reads them) against the
/// test's master; `args` as client.ts takes them. The client is generated
/// once per checkout, under a lock (tests run in parallel processes).
pub fn client(env: &TestEnv, args: &[&str]) -> Run {
    let kit = kit();
    let generated = kit.join("master/generated/client.ts");
    if !generated.is_file() {
        let status = Command::new("flock")
            .arg(kit.join("node_modules/.generate.lock"))
            .arg("bash")
            .arg("-c")
            .arg(format!(
                "[ -f '{0}/master/generated/client.ts' ] && [ -f '{0}/tenant/generated/client.ts' ] || \
                 {{ '{0}/run.sh' master generate && '{0}/run.sh' tenant generate; }}",
                kit.display()
            ))
            .env_remove("DATABASE_URL")
            .output()
            .expect("run prisma generate");
        assert!(
            status.status.success(),
            "prisma generate failed:\n{}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        );
    }
    let mut cmd = Command::new(kit.join("node_modules/.bin/tsx"));
    cmd.arg(kit.join("client.ts"))
        .args(args)
        .current_dir(env.workdir.path())
        .env("DATABASE_URL", env.master_url())
        .env_remove("POSTGRES_BASE_URL")
        .stdin(std::process::Stdio::null());
    Run::from(cmd.output().expect("run the Prisma client"))
}
