//! The layering of src/, as ARCHITECTURE.md writes it down, checked
//! against the code: every module is placed in a layer; a module names
//! (`crate::…`, `super::…`) only modules of its own layer or below; no
//! import cycle; `clap` only in the command layer; `error` a leaf; no
//! function over [`MAX_FN_LINES`] lines. Reads the sources as text, so it
//! needs no database and fails in seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest function the codebase allows ("about 80 lines").
const MAX_FN_LINES: usize = 80;

/// The layer that may name `clap`.
const COMMAND_LAYER: &str = "Command line";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The layers, bottom first, from ARCHITECTURE.md's numbered list under
/// "## Layers": `N. **Name**: what it owns; modules: ` then the modules, each in backticks.
fn layers(doc: &str) -> Vec<(String, Vec<String>)> {
    let section = doc
        .split("\n## Layers")
        .nth(1)
        .expect("ARCHITECTURE.md has a `## Layers` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    // Each numbered item, its wrapped lines joined.
    let mut items: Vec<String> = Vec::new();
    for line in section.lines() {
        let trimmed = line.trim_start();
        let starts_item = trimmed
            .split_once(". **")
            .is_some_and(|(number, _)| number.parse::<u32>().is_ok());
        if starts_item {
            items.push(trimmed.to_owned());
        } else if let Some(last) = items.last_mut()
            && line.starts_with(' ')
            && !trimmed.is_empty()
        {
            last.push(' ');
            last.push_str(trimmed);
        }
    }
    let mut layers = Vec::new();
    for item in items {
        let rest = item.split_once(". **").expect("an item").1;
        let (name, rest) = rest.split_once("**").expect("a layer's name ends with **");
        let modules_part = rest
            .split_once("modules:")
            .unwrap_or_else(|| panic!("layer {name} lists its modules after `modules:`"))
            .1;
        let modules = modules_part
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        layers.push((name.to_owned(), modules));
    }
    layers
}

/// Every module of src/ by path (`companies`, `output::report`), with its
/// file. `lib.rs` is the crate root, `lib`; `main.rs` is `main`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let mut parts: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            found.insert(parts.join("::"), path);
        }
    }
    found
}

/// The source without comments, string and character literals (whose text
/// may look like a path: a URL, `"crate::"` in a message).
fn code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &source[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(bytes.len(), |n| i + n);
            i = end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(bytes.len(), |n| i + n + 2);
            i = end;
        } else if let Some(hashes) = raw_string_start(rest) {
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + 2 + hashes;
            let end = source[body..]
                .find(&close)
                .map_or(bytes.len(), |n| body + n + close.len());
            out.push_str("\"\"");
            i = end;
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if bytes[i] == b'\'' && char_literal_len(rest).is_some() {
            out.push_str("' '");
            i += char_literal_len(rest).unwrap_or(1);
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `r"`, `r#"`, `br##"`: the number of `#`s of a raw string starting here.
fn raw_string_start(rest: &str) -> Option<usize> {
    let rest = rest.strip_prefix('b').unwrap_or(rest);
    let after_r = rest.strip_prefix('r')?;
    let hashes = after_r.len() - after_r.trim_start_matches('#').len();
    after_r[hashes..].starts_with('"').then_some(hashes)
}

/// The length of a character literal starting here (`'a'`, `'\n'`,
/// `'\u{1b}'`), or `None` for a lifetime (`'a`).
fn char_literal_len(rest: &str) -> Option<usize> {
    let mut chars = rest.char_indices().skip(1);
    let (_, first) = chars.next()?;
    if first == '\\' {
        // The escaped character is at 2; the closing quote is the first after it.
        return rest.get(3..)?.find('\'').map(|n| 3 + n + 1);
    }
    let (at, next) = chars.next()?;
    (next == '\'').then_some(at + 1)
}

/// The modules a module's code names, resolved to the longest known
/// module path (`crate::companies::Layout` → `companies`).
fn references(module: &str, code: &str, known: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    // `super` is the module's parent, whether it is a file or a folder's mod.rs.
    let mut parent: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    parent.pop();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at + prefix.len()..];
            rest = tail;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            for path in paths_after(tail) {
                // `use super::*` in an inline test module names no module.
                if path.is_empty() {
                    continue;
                }
                let mut full: Vec<String> = base.iter().map(|s| (*s).to_owned()).collect();
                full.extend(path);
                if let Some(target) = longest_known(&full, known)
                    && target != module
                {
                    found.insert(target);
                }
            }
        }
    }
    found
}

/// The paths named after `crate::`: `a::b::C` or a group `{a::B, c}`.
fn paths_after(tail: &str) -> Vec<Vec<String>> {
    if let Some(group) = tail.strip_prefix('{') {
        let inner = group.split('}').next().unwrap_or("");
        return inner
            .split(',')
            .map(|item| segments(item.trim()))
            .filter(|p| !p.is_empty())
            .collect();
    }
    vec![segments(tail)]
}

fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = path;
    loop {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            break;
        }
        rest = &rest[name.len()..];
        out.push(name);
        match rest.strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    out
}

fn longest_known(path: &[String], known: &BTreeMap<String, PathBuf>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|candidate| known.contains_key(candidate))
}

/// The layer of a module: the entry that names it, or the closest
/// ancestor named with `::*` (`commands::*`).
fn layer_of(module: &str, layers: &[(String, Vec<String>)]) -> Option<usize> {
    layers.iter().position(|(_, modules)| {
        modules.iter().any(|m| {
            m == module
                || m.strip_suffix("::*")
                    .is_some_and(|p| module == p || module.starts_with(&format!("{p}::")))
        })
    })
}

struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn read(src: &Path) -> (Self, BTreeMap<String, String>) {
        let known = modules(src);
        let mut edges = BTreeMap::new();
        let mut code = BTreeMap::new();
        for (module, path) in &known {
            let text = std::fs::read_to_string(path).expect("read source");
            let stripped = code_only(&text);
            let is_root = module == "lib" || module == "main";
            let refs = references(if is_root { "" } else { module }, &stripped, &known);
            edges.insert(module.clone(), refs);
            code.insert(module.clone(), stripped);
        }
        (Self { edges }, code)
    }

    /// The cycles: each strongly connected group of more than one module,
    /// with one of its loops spelled out.
    fn cycles(&self) -> Vec<(Vec<String>, Vec<String>)> {
        let mut cycles = Vec::new();
        let mut seen = BTreeSet::new();
        for start in self.edges.keys() {
            if seen.contains(start) {
                continue;
            }
            let group: BTreeSet<String> = self
                .reachable(start)
                .into_iter()
                .filter(|m| self.reachable(m).contains(start))
                .collect();
            seen.extend(group.iter().cloned());
            if group.len() > 1 {
                let members: Vec<String> = group.iter().cloned().collect();
                cycles.push((members, self.loop_through(start, &group)));
            }
        }
        cycles
    }

    fn reachable(&self, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::from([from.to_owned()]);
        let mut stack = vec![from.to_owned()];
        while let Some(m) = stack.pop() {
            for next in self.edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    }

    /// A shortest path from `start` back to itself inside its group.
    fn loop_through(&self, start: &str, group: &BTreeSet<String>) -> Vec<String> {
        let mut came_from: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.to_owned()]);
        while let Some(m) = queue.pop_front() {
            for next in self.edges.get(&m).into_iter().flatten() {
                if !group.contains(next) {
                    continue;
                }
                if next == start {
                    let mut path = vec![start.to_owned(), m.clone()];
                    let mut at = m.clone();
                    while let Some(prev) = came_from.get(&at) {
                        path.push(prev.clone());
                        at = prev.clone();
                    }
                    path.reverse();
                    return path;
                }
                if !came_from.contains_key(next) && next != start {
                    came_from.insert(next.clone(), m.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        vec![start.to_owned()]
    }
}

/// What is wrong with the code's layering, one line per problem.
fn problems(src: &Path, doc: &str) -> Vec<String> {
    let layers = layers(doc);
    assert!(layers.len() >= 3, "ARCHITECTURE.md lists its layers");
    let (graph, code) = Graph::read(src);
    if std::env::var_os("LAYERING_GRAPH").is_some() {
        for (module, refs) in &graph.edges {
            eprintln!(
                "{module} -> {}",
                refs.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let mut problems = Vec::new();
    for (module, refs) in &graph.edges {
        let Some(own) = layer_of(module, &layers) else {
            problems.push(format!(
                "module {module} is in no layer: place it in ARCHITECTURE.md's `## Layers`"
            ));
            continue;
        };
        for target in refs {
            match layer_of(target, &layers) {
                Some(theirs) if theirs > own => problems.push(format!(
                    "{module} ({}) imports {target} ({}), a layer above it",
                    layers[own].0, layers[theirs].0
                )),
                _ => {}
            }
        }
        if module == "error" || module.starts_with("error::") {
            for target in refs.iter().filter(|t| !t.starts_with("error")) {
                problems.push(format!("error must be a leaf, but it imports {target}"));
            }
        }
        let names_clap = code[module].contains("clap::") || code[module].contains("use clap");
        if names_clap && layers[own].0 != COMMAND_LAYER {
            problems.push(format!(
                "{module} names clap, which only the {COMMAND_LAYER} layer may"
            ));
        }
    }
    for (members, example) in graph.cycles() {
        problems.push(format!(
            "import cycle among {}, e.g. {}",
            members.join(", "),
            example.join(" -> ")
        ));
    }
    problems
}

/// Functions longer than [`MAX_FN_LINES`], as `file:line name (N lines)`.
fn long_functions(src: &Path) -> Vec<String> {
    let mut long = Vec::new();
    for path in modules(src).values() {
        let text = std::fs::read_to_string(path).expect("read source");
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let Some(name) = fn_name(line) else { continue };
            let indent = &line[..line.len() - line.trim_start().len()];
            let Some(open) = (at..lines.len()).find(|&i| {
                let l = lines[i].trim_end();
                l.ends_with('{') || l.ends_with(';')
            }) else {
                continue;
            };
            if lines[open].trim_end().ends_with(';') {
                continue;
            }
            let close = format!("{indent}}}");
            let Some(end) = (open + 1..lines.len()).find(|&i| lines[i] == close) else {
                continue;
            };
            let length = end - at + 1;
            if length > MAX_FN_LINES {
                long.push(format!(
                    "{}:{} {name} ({length} lines)",
                    path.strip_prefix(root()).unwrap_or(path).display(),
                    at + 1
                ));
            }
        }
    }
    long
}

/// The name of the function a line starts, if it starts one.
fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for qualifier in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(qualifier).unwrap_or(rest);
    }
    rest = rest.strip_prefix("async ").unwrap_or(rest);
    let after = rest.strip_prefix("fn ")?;
    let end = after.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(&after[..end])
}

#[test]
fn imports_follow_the_documented_layers() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let problems = problems(&root().join("src"), &doc);
    assert!(
        problems.is_empty(),
        "the layering in ARCHITECTURE.md does not hold:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let long = long_functions(&root().join("src"));
    assert!(
        long.is_empty(),
        "split these functions into named steps (at most {MAX_FN_LINES} lines each):\n  {}",
        long.join("\n  ")
    );
}

/// The checker itself, on a made-up crate: it must see a wrong-way import,
/// a cycle, clap below the command line and an unplaced module.
#[test]
fn the_checker_catches_what_it_is_for() {
    let dir = std::env::temp_dir().join(format!("tenantctl-layering-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("shop")).expect("mkdir");
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect("write");
    write("lib.rs", "pub mod leaf; pub mod shop; pub mod cli;\n");
    write(
        "leaf.rs",
        "// crate::cli in a comment is no import\nconst URL: &str = \"crate::cli\";\nuse crate::shop::Till;\n",
    );
    write("shop/mod.rs", "pub mod till;\nuse crate::leaf::X;\n");
    write(
        "shop/till.rs",
        "use super::Y; use crate::{leaf::Z, shop::W};\n",
    );
    write("cli.rs", "use clap::Parser; use crate::shop::Till;\n");
    write("stray.rs", "use clap::Parser;\n");
    let doc = "# A\n\n## Layers\n\n1. **Leaves**: modules: `leaf`.\n2. **Shop**: modules: `shop::*`.\n3. **Command line**: modules: `cli`, `lib`.\n\n## Next\n";
    let found = problems(&dir, doc);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        found,
        [
            "leaf (Leaves) imports shop (Shop), a layer above it",
            "module stray is in no layer: place it in ARCHITECTURE.md's `## Layers`",
            "import cycle among leaf, shop, e.g. leaf -> shop -> leaf",
        ],
        "{found:#?}"
    );
}

#[test]
fn code_only_drops_comments_strings_and_chars_but_not_lifetimes() {
    assert_eq!(
        code_only("a // b\nc /* d */ \"e\\\"f\" r#\"g\"# '\\'' 'h' '\\n' '\\u{1b}' <'a> x 'y'"),
        "a \nc  \"\" \"\" ' ' ' ' ' ' ' ' <'a> x ' '"
    );
}
