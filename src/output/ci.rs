//! What tenantctl knows of the CI system running it and of the run it
//! reports to that system, for the report writers (`junit`, `markdown`,
//! `github`, `sink`) to share without depending on one another.

use std::time::Duration;

/// What the writers of a run's reports know of it besides its document.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The command, as typed: `tenant migrate`.
    pub command: String,
    /// How long the process has run.
    pub elapsed: Duration,
    /// When it started, as RFC 3339 in UTC.
    pub started_at: String,
    /// What was selected and why, in words, when a selection was made.
    pub selection: Option<String>,
}

/// Whether a CI system runs us: `CI` set to anything but empty, `false`
/// or `0`, or one of the variables the common CI systems set.
pub fn in_ci() -> bool {
    let set = |name: &str| {
        std::env::var_os(name).is_some_and(|v| {
            let v = v.to_string_lossy();
            let v = v.trim();
            !v.is_empty() && !v.eq_ignore_ascii_case("false") && v != "0"
        })
    };
    [
        "CI",
        "BUILDKITE",
        "GITLAB_CI",
        "GITHUB_ACTIONS",
        "TF_BUILD",
        "JENKINS_URL",
    ]
    .into_iter()
    .any(set)
}
