//! GitHub Actions workflow commands: an `::error title=...::...` line on
//! stderr for each failed or interrupted tenant (and one for a command that
//! fails outright) when `GITHUB_ACTIONS=true`, which GitHub shows as
//! annotations on the run.
//!
//! Escaped exactly as GitHub's own toolkit (`@actions/core`'s `command.ts`)
//! escapes: a message's `%`, `\r` and `\n`; a property's also `:` and `,`.
//! An error text from a tenant therefore stays on its one line and can
//! never start a workflow command of its own (`::add-mask::`,
//! `::stop-commands::`).

use serde_json::Value;

/// Whether this process runs as a GitHub Actions step.
pub fn in_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// A workflow command's message, escaped as `escapeData` does.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value, escaped as `escapeProperty` does.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// One `::error` line.
pub fn error(title: &str, message: &str) -> String {
    format!(
        "::error title={}::{}",
        escape_property(title),
        escape_data(message)
    )
}

/// The annotations for a run's JSON document: one per failed or
/// interrupted tenant, or one for the error of a command that failed
/// before it had a report.
pub fn annotations(document: &Value, command: &str) -> Vec<String> {
    if let Some(message) = document.get("error").and_then(Value::as_str) {
        return vec![error(&format!("tenantctl {command}"), message)];
    }
    let Some(tenants) = document.get("tenants").and_then(Value::as_array) else {
        return Vec::new();
    };
    tenants
        .iter()
        .filter_map(|tenant| {
            let text = |key: &str| tenant.get(key).and_then(Value::as_str);
            let status = text("status")?;
            if status != "failed" && status != "interrupted" {
                return None;
            }
            let handle = text("slug").or(text("id")).unwrap_or("?");
            Some(error(
                &format!("tenantctl {command}: tenant {handle}"),
                text("error").unwrap_or(status),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_cannot_start_a_command_of_its_own() {
        let line = error("t: a,b", "x\n::add-mask::y\r\n%0A::stop-commands::z");
        assert_eq!(
            line,
            "::error title=t%3A a%2Cb::x%0A::add-mask::y%0D%0A%250A::stop-commands::z"
        );
        assert_eq!(line.lines().count(), 1);
    }
}
