//! Just enough of PostgreSQL's lexical rules to find where the statements
//! of a script begin, so `tenant sql` can refuse transaction control before
//! sending anything: a `COMMIT` in the script would end the transaction the
//! command wraps it in, and a `--dry-run` would no longer roll back.

/// The first two words of each statement, uppercased, skipping comments
/// and anything quoted (`'...'`, `E'...'`, `"..."`, `$tag$...$tag$`).
pub fn statement_heads(sql: &str) -> Vec<(String, Option<String>)> {
    let bytes = sql.as_bytes();
    let mut heads: Vec<(String, Option<String>)> = Vec::new();
    let mut words_in_statement = 0;
    // BEGIN ATOMIC ... END bodies of CREATE FUNCTION/PROCEDURE hold
    // semicolons that do not end the statement (psql counts the same way).
    let mut depth = 0usize;
    let mut in_create = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
            while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                i += 1;
            }
        } else if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            i = skip_block_comment(bytes, i);
        } else if c == b';' {
            if depth == 0 {
                words_in_statement = 0;
                in_create = false;
            }
            i += 1;
        } else if c.is_ascii_whitespace() || c == 0x0b {
            i += 1;
        } else if is_ident_start(c) {
            let end = bytes[i..]
                .iter()
                .position(|&b| !is_ident_char(b))
                .map_or(bytes.len(), |n| i + n);
            let word = sql[i..end].to_ascii_uppercase();
            i = end;
            if word == "E" && bytes.get(i) == Some(&b'\'') {
                i = skip_quoted(bytes, i, b'\'', true);
                words_in_statement += 1;
                continue;
            }
            match words_in_statement {
                0 => {
                    in_create = word == "CREATE";
                    heads.push((word.clone(), None));
                }
                1 => {
                    if let Some(head) = heads.last_mut() {
                        head.1 = Some(word.clone());
                    }
                }
                _ => {}
            }
            words_in_statement += 1;
            if in_create {
                match word.as_str() {
                    "BEGIN" | "CASE" => depth += 1,
                    "END" => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
        } else {
            i = match c {
                b'\'' => skip_quoted(bytes, i, b'\'', false),
                b'"' => skip_quoted(bytes, i, b'"', false),
                b'$' => skip_dollar(sql, i),
                _ => i + 1,
            };
            words_in_statement += 1;
        }
    }
    heads
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Past the end of a (nested) block comment starting at `i`.
fn skip_block_comment(bytes: &[u8], mut i: usize) -> usize {
    let mut depth = 0;
    while i < bytes.len() {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// Past the closing quote of a string or quoted identifier starting at `i`.
/// A doubled quote is an escaped quote; in `E'...'` so is a backslash.
fn skip_quoted(bytes: &[u8], i: usize, quote: u8, backslash_escapes: bool) -> usize {
    let mut j = i + 1;
    while j < bytes.len() {
        if backslash_escapes && bytes[j] == b'\\' {
            j += 2;
        } else if bytes[j] == quote {
            if bytes.get(j + 1) == Some(&quote) {
                j += 2;
            } else {
                return j + 1;
            }
        } else {
            j += 1;
        }
    }
    bytes.len()
}

/// Past a `$tag$ ... $tag$` string starting at `i` (the tag may be empty);
/// a `$` that opens none (`$1`) is one character.
fn skip_dollar(sql: &str, i: usize) -> usize {
    let bytes = sql.as_bytes();
    let tag_end = bytes[i + 1..]
        .iter()
        .position(|&b| !(is_ident_start(b) || b.is_ascii_digit()))
        .map(|n| i + 1 + n);
    match tag_end {
        Some(end) if bytes[end] == b'$' && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
            let tag = &sql[i..=end];
            sql[end + 1..]
                .find(tag)
                .map_or(bytes.len(), |n| end + 1 + n + tag.len())
        }
        _ => i + 1,
    }
}

/// The first transaction-control statement in the script, if any.
pub fn transaction_control(sql: &str) -> Option<String> {
    statement_heads(sql)
        .into_iter()
        .find(|(first, second)| match first.as_str() {
            "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT"
            | "RELEASE" => true,
            "PREPARE" => second.as_deref() == Some("TRANSACTION"),
            _ => false,
        })
        .map(|(first, _)| first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firsts(sql: &str) -> Vec<String> {
        statement_heads(sql).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn finds_statement_starts() {
        assert_eq!(
            firsts("select 1; INSERT INTO t VALUES (1);\n-- commit;\nupdate t set x = 1"),
            ["SELECT", "INSERT", "UPDATE"]
        );
    }

    #[test]
    fn ignores_keywords_inside_quotes_and_comments() {
        let sql = r#"
            /* commit; /* nested; commit */ still comment; */
            INSERT INTO notes VALUES ('it''s; commit', E'\'; commit', "weird;commit");
            DO $body$ BEGIN PERFORM 1; COMMIT; END $body$;
            SELECT $$; rollback $$, $1, $é$; commit $é$
        "#;
        assert_eq!(firsts(sql), ["INSERT", "DO", "SELECT"]);
        assert_eq!(transaction_control(sql), None);
    }

    #[test]
    fn catches_transaction_control() {
        for sql in [
            "insert into t values (1); commit",
            "COMMIT",
            "update t set a = 1;\nEND;",
            "rollback; select 1",
            "begin; select 1",
            "savepoint x",
            "prepare transaction 'x'",
            "commit prepared 'x'",
            // `--` comments end at a carriage return too.
            "insert into t values (1);--\rCOMMIT;--\rBEGIN",
            // `$` inside identifiers opens no dollar quote.
            "select 1 as a$b$; commit; begin; select 1 as c$b$",
            // An identifier ending in e before a quote is a typed literal,
            // not an E'' string.
            r"select name'\'; commit; begin; select name'\'",
            // Vertical tab is white space.
            "select 1;\x0bcommit",
        ] {
            assert!(transaction_control(sql).is_some(), "{sql:?}");
        }
        assert_eq!(transaction_control("select 'commit'"), None);
    }

    #[test]
    fn allows_what_is_not_transaction_control() {
        for sql in [
            "PREPARE q AS SELECT 1; EXECUTE q",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SELECT f()",
            "CREATE PROCEDURE p() BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END",
            "CREATE FUNCTION g() RETURNS int AS $é$ BEGIN RETURN 1; END $é$ LANGUAGE plpgsql",
        ] {
            assert_eq!(transaction_control(sql), None, "{sql}");
        }
    }
}
