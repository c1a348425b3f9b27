//! What tenantctl tells a shell about itself, from the clap definitions
//! alone: `tenantctl completions SHELL` prints a completion script and
//! `tenantctl man DIR` writes the manual pages. Both run before any
//! configuration is read, so a packager or a fresh machine with no
//! `POSTGRES_BASE_URL` can use them.
//!
//! The pages are made by the binary, not by `build.rs`: the command line
//! is defined inside the crate, and a build script cannot use the crate it
//! builds without compiling the whole command tree twice. A packager runs
//! `tenantctl man DIR` once after `cargo install`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, ValueEnum};

use crate::cli::Cli;
use crate::error::Outcome;
use crate::output::line;

/// The shells `clap_complete` writes scripts for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(shell: Shell) -> Self {
        match shell {
            Shell::Bash => Self::Bash,
            Shell::Zsh => Self::Zsh,
            Shell::Fish => Self::Fish,
            Shell::Powershell => Self::PowerShell,
            Shell::Elvish => Self::Elvish,
        }
    }
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in; e.g. `tenantctl completions bash >
    /// ~/.local/share/bash-completion/completions/tenantctl`
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Folder to write the pages into (made if missing): tenantctl.1,
    /// tenantctl-tenant.1, tenantctl-tenant-migrate.1, ...; put its parent's
    /// `man1` on MANPATH, e.g. `tenantctl man ~/.local/share/man/man1`
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Prints the completion script for `shell` on stdout.
pub fn completions(args: &CompletionsArgs) -> Outcome {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(args.shell),
        &mut cmd,
        "tenantctl",
        &mut script,
    );
    // One write through the output layer, so a closed pipe is noticed
    // rather than a panic.
    line(String::from_utf8_lossy(&script).trim_end());
    Outcome::Success
}

/// Writes one manual page per command into `args.dir`.
pub fn man(args: &ManArgs) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&args.dir).with_context(|| {
        format!(
            "create {}: pass a folder you may write to",
            args.dir.display()
        )
    })?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, &args.dir).with_context(|| {
        format!(
            "write the manual pages into {}: pass a folder you may write to",
            args.dir.display()
        )
    })?;
    line(format!(
        "wrote the manual pages into {}; e.g. `man {}/tenantctl-tenant-migrate.1`",
        args.dir.display(),
        args.dir.display()
    ));
    Ok(Outcome::Success)
}
