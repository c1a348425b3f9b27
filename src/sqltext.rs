//! Just enough of PostgreSQL's lexical rules to find where the statements
//! of a script begin, so `tenant sql` can refuse transaction control before
//! sending anything: a `COMMIT` in the script would end the transaction the
//! command wraps it in, and a `--dry-run` would no longer roll back.

/// The first word of each statement, uppercased, skipping comments and
/// anything inside quotes (`'...'`, `E'...'`, `"..."`, `$tag$...$tag$`).
pub fn statement_keywords(sql: &str) -> Vec<String> {
    let bytes = sql.as_bytes();
    let mut keywords = Vec::new();
    let mut at_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                // Block comments nest in PostgreSQL.
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b';' => {
                at_start = true;
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                if at_start && c.is_ascii_alphabetic() {
                    let end = bytes[i..]
                        .iter()
                        .position(|b| !b.is_ascii_alphanumeric() && *b != b'_')
                        .map_or(bytes.len(), |n| i + n);
                    keywords.push(sql[i..end].to_ascii_uppercase());
                }
                at_start = false;
                i = skip_token(sql, i);
            }
        }
    }
    keywords
}

/// Index just past the token starting at `i`: a quoted string or
/// identifier as a whole, otherwise one character.
fn skip_token(sql: &str, i: usize) -> usize {
    let bytes = sql.as_bytes();
    let escapes = matches!(bytes[i], b'E' | b'e') && bytes.get(i + 1) == Some(&b'\'');
    let start = if escapes { i + 1 } else { i };
    match bytes[start] {
        quote @ (b'\'' | b'"') => {
            let mut j = start + 1;
            while j < bytes.len() {
                if escapes && bytes[j] == b'\\' {
                    j += 2;
                } else if bytes[j] == quote {
                    // A doubled quote is an escaped quote, not the end.
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
        b'$' => {
            // $tag$ ... $tag$ (the tag may be empty); `$1` is a parameter.
            let tag_end = bytes[start + 1..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                .map(|n| start + 1 + n);
            match tag_end {
                Some(end) if bytes[end] == b'$' && !bytes[start + 1].is_ascii_digit() => {
                    let tag = &sql[start..=end];
                    sql[end + 1..]
                        .find(tag)
                        .map_or(bytes.len(), |n| end + 1 + n + tag.len())
                }
                _ => start + 1,
            }
        }
        _ => {
            // Advance one whole character (the script may hold UTF-8).
            start + sql[start..].chars().next().map_or(1, char::len_utf8)
        }
    }
}

/// Statements that end or open transactions.
const TRANSACTION_CONTROL: &[&str] = &[
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "PREPARE",
    "SAVEPOINT",
    "RELEASE",
];

/// The first transaction-control statement in the script, if any.
pub fn transaction_control(sql: &str) -> Option<String> {
    statement_keywords(sql)
        .into_iter()
        .find(|k| TRANSACTION_CONTROL.contains(&k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_statement_starts() {
        assert_eq!(
            statement_keywords(
                "select 1; INSERT INTO t VALUES (1);\n-- commit;\nupdate t set x = 1"
            ),
            ["SELECT", "INSERT", "UPDATE"]
        );
    }

    #[test]
    fn ignores_keywords_inside_quotes_and_comments() {
        let sql = r#"
            /* commit; /* nested; commit */ still comment; */
            INSERT INTO notes VALUES ('it''s; commit', E'\'; commit', "weird;commit");
            DO $body$ BEGIN PERFORM 1; COMMIT; END $body$;
            SELECT $$; rollback $$, $1
        "#;
        assert_eq!(statement_keywords(sql), ["INSERT", "DO", "SELECT"]);
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
        ] {
            assert!(transaction_control(sql).is_some(), "{sql}");
        }
        assert_eq!(transaction_control("select 'commit'"), None);
    }
}
