//! Asking the operator before destructive work. On a terminal the operator
//! types a word to go ahead; without one, only `--yes` goes ahead.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use crate::error::UsageError;

/// Goes ahead if `yes`, or if the operator types `expected` at the prompt.
/// Without a terminal to ask on, refuses (a usage error: pass `--yes`).
pub fn confirm(action: &str, expected: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(UsageError(format!(
            "refusing to {action} without confirmation: no terminal to ask on; pass --yes"
        ))
        .into());
    }
    let mut stderr = std::io::stderr();
    write!(stderr, "About to {action}.\nType {expected} to continue: ")?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    anyhow::ensure!(
        answer.trim() == expected,
        "not confirmed; nothing was changed"
    );
    Ok(())
}
