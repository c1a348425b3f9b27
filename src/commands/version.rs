//! What `--version` says: the crate's version, and which migrations this
//! binary carries. Two builds of one version can embed different
//! migration folders (a migration added since, a local build): the hash
//! tells an operator which set a CI runner's binary will apply before it
//! touches a tenant.

use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

use crate::migrations::MigrationSet;

/// The version alone, as the man pages print it.
pub fn short() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The text after `tenantctl ` in `--version`: the version, then one line
/// per embedded migration set with its count, newest version and hash.
/// When `TENANT_MIGRATIONS_DIR` is set (in the environment or a `.env`),
/// tenant commands apply that folder instead, so the line says so rather
/// than vouch for a set the runner will not apply.
pub fn long() -> String {
    let mut text = format!(
        "{}\ntenant migrations: {}\nmaster migrations: {}",
        short(),
        describe(&MigrationSet::embedded_tenant()),
        describe(&MigrationSet::embedded_master()),
    );
    if let Some(dir) = std::env::var_os("TENANT_MIGRATIONS_DIR").filter(|d| !d.is_empty()) {
        let _ = write!(
            text,
            "\nTENANT_MIGRATIONS_DIR={} is set: tenant commands apply that folder's migrations, not the embedded ones",
            crate::text::shown(&dir.to_string_lossy())
        );
    }
    text
}

/// `7 up to 20250901000001, sha256 1a2b3c4d5e6f`: over each up
/// migration's version, description and checksum (what sqlx compares
/// with a tenant's ledger), so an edited script changes it too.
fn describe(set: &MigrationSet) -> String {
    let mut hash = Sha256::new();
    let mut count = 0usize;
    let mut newest = None;
    for m in set.iter() {
        hash.update(m.version.to_be_bytes());
        hash.update(m.description.as_bytes());
        hash.update([0]);
        hash.update(&m.checksum);
        count += 1;
        newest = newest.max(Some(m.version));
    }
    let hex = hash
        .finalize()
        .iter()
        .take(6)
        .fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
    match newest {
        Some(v) => format!("{count} up to {v}, sha256 {hex}"),
        None => format!("none, sha256 {hex}"),
    }
}
