//! Reading the book (docs/src/*.md) and the README as mdBook reads them:
//! headings and their ids, links, and code blocks with the `tenantctl`
//! command lines in them. Shared by tests/docs.rs (links, flags; no
//! database) and tests/it/book.rs (the runnable examples, against a real
//! server).

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every Markdown page of the book, then the README, as paths from the root.
pub fn pages() -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(&root().join("docs/src"), &mut found);
    found.sort();
    found.push(root().join("README.md"));
    found
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read docs/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            walk(&path, found);
        } else if path.extension().is_some_and(|e| e == "md") {
            found.push(path);
        }
    }
}

/// A fenced code block: its info string's words (`console,contract` gives
/// `["console", "contract"]`), its text, and the line it starts on.
pub struct Block {
    pub info: Vec<String>,
    pub text: String,
    pub line: usize,
}

impl Block {
    pub fn lang(&self) -> &str {
        self.info.first().map_or("", String::as_str)
    }

    pub fn has(&self, attr: &str) -> bool {
        self.info.iter().skip(1).any(|a| a == attr)
    }
}

/// A link's destination and the line it is on.
pub struct Link {
    pub dest: String,
    pub line: usize,
}

/// One page, parsed with the options mdBook 0.5 gives pulldown-cmark.
pub struct Page {
    pub path: PathBuf,
    pub ids: HashSet<String>,
    pub links: Vec<Link>,
    pub blocks: Vec<Block>,
}

pub fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_HEADING_ATTRIBUTES
        | Options::ENABLE_SMART_PUNCTUATION
}

/// mdBook 0.5's heading id (mdbook-html's `id_from_content`): lower case,
/// letters, digits, `_` and `-` kept, white space as `-`, the rest dropped.
/// GitHub's README anchors are made the same way for the headings we write.
pub fn id_from_content(content: &str) -> String {
    content
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|ch| {
            if ch.is_alphanumeric() || ch == '_' || ch == '-' {
                Some(ch)
            } else if ch.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// mdBook's `unique_id`: a repeated id gets `-1`, `-2`, ...
fn unique_id(id: String, used: &mut HashSet<String>) -> String {
    if used.insert(id.clone()) {
        return id;
    }
    (1..)
        .map(|n| format!("{id}-{n}"))
        .find(|candidate| used.insert(candidate.clone()))
        .expect("an unused id")
}

pub fn read(path: &Path) -> Page {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let mut page = Page {
        path: path.to_path_buf(),
        ids: HashSet::new(),
        links: Vec::new(),
        blocks: Vec::new(),
    };
    let mut heading: Option<(String, Option<String>)> = None;
    let mut block: Option<Block> = None;
    for (event, range) in Parser::new_ext(&text, options()).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { id, .. }) => {
                heading = Some((String::new(), id.map(|i| i.to_string())));
            }
            Event::End(TagEnd::Heading(_)) => {
                let (content, explicit) = heading.take().expect("heading start");
                let id = explicit.unwrap_or_else(|| id_from_content(&content));
                let id = unique_id(id, &mut page.ids);
                page.ids.insert(id);
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((content, _)) = heading.as_mut() {
                    content.push_str(&t);
                }
                if let Some(b) = block.as_mut() {
                    b.text.push_str(&t);
                }
            }
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                page.links.push(Link {
                    dest: dest_url.to_string(),
                    line: line_of(range.start),
                });
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                let info = match kind {
                    CodeBlockKind::Fenced(info) => info
                        .split(|c: char| c == ',' || c.is_whitespace())
                        .filter(|w| !w.is_empty())
                        .map(str::to_string)
                        .collect(),
                    CodeBlockKind::Indented => Vec::new(),
                };
                block = Some(Block {
                    info,
                    text: String::new(),
                    line: line_of(range.start),
                });
            }
            Event::End(TagEnd::CodeBlock) => page.blocks.push(block.take().expect("block start")),
            _ => {}
        }
    }
    page
}

/// The shell lines of a block: `\`-continued lines joined, YAML's folded
/// (`>`) and literal (`|`) scalars under `run:` or a list item unfolded,
/// a console block's `$ ` prompt removed (its output lines dropped).
pub fn shell_lines(block: &Block) -> Vec<String> {
    let raw: Vec<&str> = block.text.lines().collect();
    let mut lines = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let line = raw[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let key = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        let scalar = ["run: >", "run: |", ">", "|"]
            .iter()
            .find(|s| key.trim_end() == **s && (trimmed != key || s.starts_with("run")));
        if let Some(s) = scalar {
            let folded = s.ends_with('>');
            let mut body = Vec::new();
            // The scalar's lines are indented as its first one is.
            let mut content_indent = None;
            i += 1;
            while i < raw.len() {
                let l = raw[i];
                let t = l.trim_start();
                let at = l.len() - t.len();
                let floor = *content_indent.get_or_insert(at);
                if !t.is_empty() && (at <= indent || at < floor) {
                    break;
                }
                body.push(t.to_string());
                i += 1;
            }
            if folded {
                lines.push(body.join(" "));
            } else {
                lines.extend(join_continued(
                    &body.iter().map(String::as_str).collect::<Vec<_>>(),
                ));
            }
            continue;
        }
        lines.push(line.to_string());
        i += 1;
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    join_continued(&lines)
        .into_iter()
        .filter_map(|l| {
            let l = l.trim();
            let l = if block.lang() == "console" {
                l.strip_prefix("$ ")?
            } else {
                l.strip_prefix("$ ").unwrap_or(l)
            };
            let l = l
                .strip_prefix("- run: ")
                .or_else(|| l.strip_prefix("run: "))
                .or_else(|| l.strip_prefix("- "))
                .unwrap_or(l);
            Some(l.to_string())
        })
        .collect()
}

fn join_continued(lines: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for line in lines {
        if open {
            let last = out.last_mut().expect("a line to continue");
            last.push(' ');
            last.push_str(line.trim());
        } else {
            out.push((*line).to_string());
        }
        let last = out.last_mut().expect("a line");
        open = last.ends_with('\\');
        if open {
            last.pop();
        }
    }
    out
}

/// The arguments of the `tenantctl` command a shell line starts with (or
/// a Kubernetes `args: [...]` line), with shell variables and CI
/// expressions (`$X`, `${X}`, `${{ ... }}`) read as `1` and arithmetic (`$((...))`) as `0`;
/// `None` when the line runs something else.
pub fn tenantctl_args(line: &str) -> Option<Vec<String>> {
    if let Some(array) = line.trim().strip_prefix("args: ") {
        let args: Vec<String> = serde_json::from_str(array).ok()?;
        return Some(args);
    }
    let words = shell_words(line);
    if words.first().map(String::as_str) != Some("tenantctl") {
        return None;
    }
    Some(words[1..].to_vec())
}

/// Shell words up to the first unquoted operator (`>`, `|`, `;`, `&`) or
/// comment, quotes removed, expansions replaced by `1`.
pub fn shell_words(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some('\'') if c == '\'' => quote = None,
            Some('\'') => word.push(c),
            Some(_) if c == '"' => quote = None,
            Some(_) if c == '$' => i = expansion(&chars, i, &mut word),
            Some(_) if c == '\\' && i + 1 < chars.len() => {
                i += 1;
                word.push(chars[i]);
            }
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c == '$' => {
                i = expansion(&chars, i, &mut word);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None if matches!(c, '>' | '<' | '|' | ';' | '&') || (c == '#' && !in_word) => break,
            None => {
                word.push(c);
                in_word = true;
            }
        }
        i += 1;
    }
    if in_word {
        words.push(word);
    }
    // A redirection such as `2>` leaves its digit behind as a word.
    if words
        .last()
        .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit()))
        && line.contains(&format!("{}>", words.last().expect("a word")))
    {
        words.pop();
    }
    words
}

/// Reads the expansion starting at `chars[i] == '$'` as `1`; returns the
/// index of its last character.
fn expansion(chars: &[char], i: usize, word: &mut String) -> usize {
    let rest: String = chars[i..].iter().collect();
    let close = |open: &str, close: &str| {
        rest.starts_with(open)
            .then(|| {
                rest.find(close)
                    .map(|end| i + rest[..end + close.len()].chars().count() - 1)
            })
            .flatten()
    };
    let end = close("${{", "}}")
        .or_else(|| close("$((", "))"))
        .or_else(|| close("${", "}"))
        .or_else(|| close("$(", ")"))
        .unwrap_or_else(|| {
            let name = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                .count();
            i + name
        });
    // Arithmetic reads as 0, so that `$((INDEX - 1))/$TOTAL` is a shard
    // (`0/1`) as it is in a real job.
    word.push(if rest.starts_with("$((") { '0' } else { '1' });
    end
}
