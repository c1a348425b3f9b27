//! What a run leaves besides stdout, for CI: the report file
//! (`--report-file`: the JSON document `--output json` prints, whatever
//! `--output` is), the Markdown summary (`--summary-file`, appended) and
//! GitHub annotations on stderr (`GITHUB_ACTIONS=true`).
//!
//! One process-wide sink, set up once from the global flags before any
//! tenant is touched (so a path that cannot be written is refused first,
//! with nothing changed), fed the final JSON document by whatever prints it
//! ([`super::document`]), and written once at the very end of `main`,
//! whichever way the run ends: success, failures, a usage error, an
//! interrupt or a closed stdout. The report holds exactly what stdout
//! would, so it holds no password that stdout would not.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use super::ci::RunInfo;
use super::{github, markdown};
use crate::text::shown;

/// What the global flags ask the sink for.
#[derive(Debug, Default, Clone)]
pub struct Wanted {
    /// `--report-file`.
    pub report: Option<PathBuf>,
    /// `--summary-file`.
    pub summary: Option<PathBuf>,
    /// GitHub workflow annotations on stderr.
    pub annotations: bool,
    /// The command that runs, as typed: `tenant migrate`.
    pub command: String,
}

/// A report file being written: a temporary file beside it, renamed over
/// it at the end, so a reader never sees half a report and a symlink at
/// the path is replaced, never followed.
struct Pending {
    path: PathBuf,
    temp: PathBuf,
    /// `None` for a path that is a pipe or a device (`>(...)`, a FIFO,
    /// `/dev/stdout`): written through at the end, as a shell's `>` would,
    /// since a rename would replace it with a file nobody reads.
    file: Option<File>,
}

struct State {
    report: Option<Pending>,
    summary: Option<File>,
    annotations: bool,
    command: String,
    started: Instant,
    started_at: String,
    document: Option<Value>,
    /// The document's text, as `--output json` prints it.
    text: Option<String>,
    selection: Option<String>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn state() -> std::sync::MutexGuard<'static, Option<State>> {
    STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sets the sink up: opens the summary for appending and creates the
/// report's temporary file, so a path that cannot be written is an error
/// now (one line, for a usage error) rather than after the work.
pub fn open(wanted: Wanted) -> Result<(), String> {
    if let (Some(report), Some(summary)) = (&wanted.report, &wanted.summary)
        && same_file(report, summary)
    {
        return Err(format!(
            "--report-file and --summary-file both name {}: the report would replace the summary; give each a file of its own",
            shown(&report.display().to_string())
        ));
    }
    let report = wanted.report.as_deref().map(prepare).transpose()?;
    let summary = wanted.summary.as_deref().map(open_summary).transpose();
    let summary = match summary {
        Ok(summary) => summary,
        Err(err) => {
            if let Some(pending) = report {
                let _ = std::fs::remove_file(&pending.temp);
            }
            return Err(err);
        }
    };
    *state() = Some(State {
        report,
        summary,
        annotations: wanted.annotations,
        command: wanted.command,
        started: Instant::now(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        document: None,
        text: None,
        selection: None,
    });
    Ok(())
}

/// Whether two paths name one file: the same file when both exist, else
/// the same name in the same directory once links in it are resolved.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        return x.dev() == y.dev() && x.ino() == y.ino();
    }
    let place = |p: &Path| {
        let dir = match p.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Some((std::fs::canonicalize(dir).ok()?, p.file_name()?.to_owned()))
    };
    matches!((place(a), place(b)), (Some(x), Some(y)) if x == y)
}

/// Creates the temporary file the report is written into, in the report's
/// own directory (a rename is atomic only within one file system), new and
/// readable by its owner only.
fn prepare(path: &Path) -> Result<Pending, String> {
    let refuse = |why: String| {
        format!(
            "--report-file {}: {why}: give a file path in a directory you can write",
            shown(&path.display().to_string())
        )
    };
    let name = path
        .file_name()
        .ok_or_else(|| refuse("names no file".into()))?;
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(refuse("is a directory".into()));
    }
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Ok(Pending {
            path: path.to_path_buf(),
            temp: PathBuf::new(),
            file: None,
        });
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tenantctl-{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    // create_new: O_EXCL, which never follows a symlink planted there.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|err| refuse(err.to_string()))?;
    Ok(Pending {
        path: path.to_path_buf(),
        temp,
        file: Some(file),
    })
}

/// Opens the summary for appending (GitHub appends every step's summary to
/// one file), creating it readable by its owner only. A symlink is refused:
/// appending through one writes wherever it points.
fn open_summary(path: &Path) -> Result<File, String> {
    let refuse = |why: &str| {
        format!(
            "--summary-file {}: {why}: give a regular file in a directory you can write",
            shown(&path.display().to_string())
        )
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_symlink() {
            return Err(refuse("is a symbolic link"));
        }
        if meta.is_dir() {
            return Err(refuse("is a directory"));
        }
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| refuse(&err.to_string()))
}

/// Whether a report file is being written.
pub fn writes_report() -> bool {
    state().as_ref().is_some_and(|s| s.report.is_some())
}

/// Keeps the command's JSON document as text, and what the summary,
/// annotations and `JUnit` read of it (a fleet run's tenants and counts, or
/// an error; nothing for other documents). The last one wins: an error
/// after a report is what stdout ends with too.
pub fn keep(text: &str, facts: Option<Value>) {
    if let Some(state) = state().as_mut() {
        state.document = facts;
        state.text = Some(text.to_owned());
    }
}

/// Notes what the run selected, in words, for the summary.
pub fn note_selection(description: String) {
    if let Some(state) = state().as_mut() {
        state.selection = Some(description);
    }
}

/// The command that runs, as typed (`tenant migrate`); empty before the
/// sink is set up.
pub fn command() -> String {
    state()
        .as_ref()
        .map(|s| s.command.clone())
        .unwrap_or_default()
}

fn info(state: &State) -> RunInfo {
    RunInfo {
        command: state.command.clone(),
        elapsed: state.started.elapsed(),
        started_at: state.started_at.clone(),
        selection: state.selection.clone(),
    }
}

/// Calls `f` with the kept document and what is known of the run.
pub fn with_document<R>(f: impl FnOnce(&Value, &RunInfo) -> R) -> Option<R> {
    let guard = state();
    let state = guard.as_ref()?;
    let document = state.document.as_ref()?;
    Some(f(document, &info(state)))
}

/// Writes everything the sink was asked for; called once, at the end of
/// `main`. Returns the errors to show (a report that could not be
/// written fails the run: a CI step relies on it).
pub fn finish() -> Vec<String> {
    let Some(mut state) = state().take() else {
        return Vec::new();
    };
    let info = info(&state);
    let mut errors = Vec::new();
    let document = state.document.take();
    if state.annotations
        && let Some(document) = &document
    {
        // Straight to stderr: the output module above uses this one.
        let mut stderr = std::io::stderr().lock();
        for annotation in github::annotations(document, &info.command) {
            let _ = writeln!(stderr, "{annotation}");
        }
    }
    if let Some(mut file) = state.summary.take() {
        let text = markdown::summary(document.as_ref(), &info);
        if let Err(err) = file.write_all(text.as_bytes()).and_then(|()| file.flush()) {
            errors.push(format!("cannot append to the summary file: {err}"));
        }
    }
    if let Some(pending) = state.report.take()
        && let Err(err) = commit(pending, state.text.as_deref(), &info.command)
    {
        errors.push(err);
    }
    errors
}

/// Writes the report into its temporary file and renames it over the
/// report's path. An existing report keeps its permissions; a new one is
/// its owner's only.
fn commit(mut pending: Pending, text: Option<&str>, command: &str) -> Result<(), String> {
    let failed = |err: std::io::Error| {
        format!(
            "cannot write the report file {}: {err}",
            shown(&pending.path.display().to_string())
        )
    };
    let Some(text) = text else {
        let _ = std::fs::remove_file(&pending.temp);
        return Err(format!(
            "`{command}` printed no JSON document, so the report file {} was not written",
            shown(&pending.path.display().to_string())
        ));
    };
    let text = format!("{text}\n");
    let Some(file) = pending.file.as_mut() else {
        return OpenOptions::new()
            .write(true)
            .open(&pending.path)
            .and_then(|mut through| through.write_all(text.as_bytes()))
            .map_err(failed);
    };
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            match std::fs::symlink_metadata(&pending.path) {
                Ok(meta) if meta.is_file() => {
                    std::fs::set_permissions(&pending.temp, meta.permissions())?;
                }
                _ => {}
            }
            std::fs::rename(&pending.temp, &pending.path)
        });
    written.map_err(|err| {
        let _ = std::fs::remove_file(&pending.temp);
        failed(err)
    })
}
