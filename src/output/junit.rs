//! `--output junit`: a fleet run as `JUnit` XML, which GitLab, Jenkins, Azure
//! DevOps and GitHub's test-report actions read: one `<testsuite>` for the
//! command run, each tenant a `<testcase>`.
//!
//! Rendered from the run's JSON document (the same one `--output json`
//! prints), so the two can never disagree. Written with quick-xml, which
//! escapes every text and attribute; characters XML 1.0 cannot hold at all
//! (control characters) are dropped first, so an error text from a tenant
//! can neither break the document nor add markup to it.

use std::io::Cursor;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde_json::Value;

use super::ci::RunInfo;

/// One tenant's test case.
struct Case {
    name: String,
    classname: String,
    time: f64,
    outcome: CaseOutcome,
}

enum CaseOutcome {
    Passed,
    Failed(String),
    Errored(String),
    Skipped(Option<String>),
}

#[derive(Default)]
struct Counts {
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
}

/// The `JUnit` document for a run's JSON document: its tenants as test
/// cases, or (for a command that failed before it had a report) one test
/// case naming the command, with the error.
pub fn render(document: &Value, info: &RunInfo) -> String {
    let cases = cases(document, info);
    let mut counts = Counts::default();
    for case in &cases {
        counts.tests += 1;
        match case.outcome {
            CaseOutcome::Passed => {}
            CaseOutcome::Failed(_) => counts.failures += 1,
            CaseOutcome::Errored(_) => counts.errors += 1,
            CaseOutcome::Skipped(_) => counts.skipped += 1,
        }
    }
    let time = format!("{:.3}", info.elapsed.as_secs_f64());
    let suite_name = format!("tenantctl {}", info.command);
    let mut writer = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
    let written = (|| -> std::io::Result<()> {
        writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        writer.write_event(Event::Start(with_counts(
            BytesStart::new("testsuites"),
            &suite_name,
            &counts,
            &time,
        )))?;
        let mut suite = with_counts(BytesStart::new("testsuite"), &suite_name, &counts, &time);
        suite.push_attribute(("timestamp", info.started_at.as_str()));
        writer.write_event(Event::Start(suite))?;
        for case in &cases {
            write_case(&mut writer, case)?;
        }
        writer.write_event(Event::End(BytesEnd::new("testsuite")))?;
        writer.write_event(Event::End(BytesEnd::new("testsuites")))?;
        Ok(())
    })();
    if let Err(err) = written {
        // Writing to memory does not fail; say so if it ever does.
        return format!(
            "<!-- cannot write JUnit XML: {} -->",
            xml_safe(&err.to_string())
        );
    }
    String::from_utf8_lossy(&writer.into_inner().into_inner()).into_owned()
}

fn with_counts<'a>(
    mut start: BytesStart<'a>,
    name: &str,
    counts: &Counts,
    time: &str,
) -> BytesStart<'a> {
    start.push_attribute(attribute("name", name));
    start.push_attribute(("tests", counts.tests.to_string().as_str()));
    start.push_attribute(("failures", counts.failures.to_string().as_str()));
    start.push_attribute(("errors", counts.errors.to_string().as_str()));
    start.push_attribute(("skipped", counts.skipped.to_string().as_str()));
    start.push_attribute(("time", time));
    start
}

fn write_case(writer: &mut Writer<Cursor<Vec<u8>>>, case: &Case) -> std::io::Result<()> {
    let mut start = BytesStart::new("testcase");
    start.push_attribute(attribute("name", &case.name));
    start.push_attribute(attribute("classname", &case.classname));
    start.push_attribute(("time", format!("{:.3}", case.time).as_str()));
    let (tag, text) = match &case.outcome {
        CaseOutcome::Passed => return writer.write_event(Event::Empty(start)),
        CaseOutcome::Skipped(None) => {
            writer.write_event(Event::Start(start))?;
            writer.write_event(Event::Empty(BytesStart::new("skipped")))?;
            return writer.write_event(Event::End(BytesEnd::new("testcase")));
        }
        CaseOutcome::Skipped(Some(text)) => ("skipped", text),
        CaseOutcome::Failed(text) => ("failure", text),
        CaseOutcome::Errored(text) => ("error", text),
    };
    writer.write_event(Event::Start(start))?;
    let first = text.lines().next().unwrap_or_default();
    let mut inner = BytesStart::new(tag);
    inner.push_attribute(attribute("message", first));
    if tag != "skipped" {
        inner.push_attribute(("type", tag));
    }
    writer.write_event(Event::Start(inner))?;
    writer.write_event(Event::Text(BytesText::from_escaped(one_line(text))))?;
    writer.write_event(Event::End(BytesEnd::new(tag)))?;
    writer.write_event(Event::End(BytesEnd::new("testcase")))
}

/// The test cases of a document: its tenants, or the command itself when
/// the document is an error.
fn cases(document: &Value, info: &RunInfo) -> Vec<Case> {
    let command = info
        .command
        .strip_prefix("tenant ")
        .unwrap_or(&info.command);
    let command = command.replace(' ', "-");
    if let Some(error) = document.get("error").and_then(Value::as_str) {
        let kind = document.get("kind").and_then(Value::as_str);
        let text = error.to_owned();
        return vec![Case {
            name: format!("tenantctl {}", info.command),
            classname: format!("tenantctl.{command}"),
            time: info.elapsed.as_secs_f64(),
            outcome: if kind == Some("interrupted") {
                CaseOutcome::Errored(text)
            } else {
                CaseOutcome::Failed(text)
            },
        }];
    }
    let tenants = document
        .get("tenants")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    tenants
        .iter()
        .map(|tenant| {
            let text = |key: &str| tenant.get(key).and_then(Value::as_str);
            let name = text("slug").or(text("id")).unwrap_or("?").to_owned();
            let server = text("server").unwrap_or("default");
            let error = text("error").map(str::to_owned);
            #[expect(
                clippy::cast_precision_loss,
                reason = "milliseconds of a run fit a double exactly"
            )]
            let time = tenant
                .get("duration_ms")
                .and_then(Value::as_u64)
                .map_or(0.0, |ms| ms as f64 / 1000.0);
            let outcome = match text("status") {
                Some("ok") => CaseOutcome::Passed,
                Some("skipped") => CaseOutcome::Skipped(error),
                Some("interrupted") => CaseOutcome::Errored(error.unwrap_or("interrupted".into())),
                _ => CaseOutcome::Failed(error.unwrap_or("failed".into())),
            };
            Case {
                name,
                classname: format!("tenantctl.{command}.{server}"),
                time,
                outcome,
            }
        })
        .collect()
}

/// `text` escaped for XML with its line breaks as character references:
/// an XML parser reads the same text, while a CI runner reading the log
/// line by line never sees a line of it start with `::` (GitHub takes
/// such a line, on stdout too, for a workflow command of its own).
fn one_line(text: &str) -> String {
    quick_xml::escape::escape(xml_safe(text).as_str())
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
}

/// An attribute whose value is [`one_line`].
fn attribute<'a>(key: &'a str, value: &str) -> quick_xml::events::attributes::Attribute<'a> {
    quick_xml::events::attributes::Attribute {
        key: quick_xml::name::QName(key.as_bytes()),
        value: std::borrow::Cow::Owned(one_line(value).into_bytes()),
    }
}

/// `text` without the characters XML 1.0 cannot hold even escaped
/// (control characters other than tab, newline and carriage return;
/// U+FFFE and U+FFFF); quick-xml escapes the rest.
pub fn xml_safe(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r') || (c >= '\u{20}' && c != '\u{FFFE}' && c != '\u{FFFF}')
        })
        .collect()
}
