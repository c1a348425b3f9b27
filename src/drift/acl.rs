//! Privileges: an object's ACL (`aclitem[]` as text) into one grant per
//! grantee and privilege, so a revoked or added grant is a difference of
//! its own with its own repair.

use std::collections::BTreeMap;

use super::{Key, Object};

/// The privilege each letter of an `aclitem` stands for (PostgreSQL's
/// `ACL_ALL_RIGHTS_STR`, through version 17's MAINTAIN).
const PRIVILEGES: &[(char, &str)] = &[
    ('a', "INSERT"),
    ('r', "SELECT"),
    ('w', "UPDATE"),
    ('d', "DELETE"),
    ('D', "TRUNCATE"),
    ('x', "REFERENCES"),
    ('t', "TRIGGER"),
    ('X', "EXECUTE"),
    ('U', "USAGE"),
    ('C', "CREATE"),
    ('T', "TEMPORARY"),
    ('c', "CONNECT"),
    ('s', "SET"),
    ('A', "ALTER SYSTEM"),
    ('m', "MAINTAIN"),
];

/// One `aclitem`: who, and which privileges with or without grant option.
#[derive(Debug, PartialEq, Eq)]
pub struct Item {
    /// `None`: PUBLIC.
    grantee: Option<String>,
    pub privileges: Vec<(&'static str, bool)>,
}

impl Item {
    /// The grantee as reports name it: `PUBLIC`, `(owner)` for the object's
    /// owner, else the role's name as SQL writes it.
    pub fn shown(&self, owner: Option<&str>) -> String {
        match &self.grantee {
            None => "PUBLIC".into(),
            Some(g) if Some(g.as_str()) == owner => "(owner)".into(),
            Some(g) => quote_role(g),
        }
    }

    /// The grantee as a GRANT names it; `None` for the owner, whose name is
    /// its own database's.
    fn sql(&self, owner: &str) -> Option<String> {
        match &self.grantee {
            None => Some("PUBLIC".into()),
            Some(g) if g == owner => None,
            Some(g) => Some(quote_role(g)),
        }
    }
}

/// The items of an ACL given as a JSON array of `aclitem` texts.
pub fn items(json: Option<&str>) -> Vec<Item> {
    let texts: Vec<String> = json
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    texts.iter().filter_map(|t| parse_item(t)).collect()
}

/// Parses `grantee=privileges/grantor`: the grantee empty for PUBLIC,
/// double-quoted (with `""` for a quote) when it is not a plain name.
fn parse_item(text: &str) -> Option<Item> {
    let (grantee, rest) = if let Some(quoted) = text.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if quoted[i + 1..].starts_with('"') {
                    name.push('"');
                    chars.next();
                } else {
                    end = Some(i + 1);
                    break;
                }
            } else {
                name.push(c);
            }
        }
        (Some(name), &quoted[end?..])
    } else {
        let eq = text.find('=')?;
        let name = &text[..eq];
        ((!name.is_empty()).then(|| name.to_owned()), &text[eq..])
    };
    let letters = rest.strip_prefix('=')?.split('/').next()?;
    let mut privileges = Vec::new();
    let mut chars = letters.chars().peekable();
    while let Some(c) = chars.next() {
        let name = PRIVILEGES.iter().find(|(l, _)| *l == c)?.1;
        let grantable = chars.next_if_eq(&'*').is_some();
        privileges.push((name, grantable));
    }
    Some(Item {
        grantee,
        privileges,
    })
}

/// A role name as SQL writes it: bare when it is a plain lower-case name,
/// else double-quoted.
pub fn quote_role(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RESERVED_ROLE_WORDS.contains(&name);
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Words a role name cannot be written as bare in GRANT ... TO: PostgreSQL's
/// reserved keywords (`pg_get_keywords()`, category `R`, through version
/// 17, with 16's `system_user`), and `public` and `none`, which a role
/// specification reads as PUBLIC and as no role. A role named `select`
/// written bare would make `REVOKE ... FROM select;`, which does not parse.
#[rustfmt::skip]
const RESERVED_ROLE_WORDS: &[&str] = &[
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "both", "case",
    "cast", "check", "collate", "column", "constraint", "create", "current_catalog", "current_date",
    "current_role", "current_time", "current_timestamp", "current_user", "default", "deferrable",
    "desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for", "foreign", "from",
    "grant", "group", "having", "in", "initially", "intersect", "into", "lateral", "leading",
    "limit", "localtime", "localtimestamp", "none", "not", "null", "offset", "on", "only", "or",
    "order", "placing", "primary", "public", "references", "returning", "select", "session_user",
    "some", "symmetric", "system_user", "table", "then", "to", "trailing", "true", "union",
    "unique", "user", "using", "variadic", "when", "where", "window", "with",
];

/// The grants of one object: `on` is how reports name it (`table
/// settings`), `acl` its ACL (a JSON array of `aclitem` texts, the defaults
/// spelled out), `target` how GRANT names it (`TABLE public.settings`) and
/// `columns` its column list for a column's grants (` (email)`).
pub fn grants(
    on: &str,
    acl: Option<&str>,
    owner: &str,
    target: &str,
    columns: &str,
) -> Vec<(Key, Object)> {
    // A grantee may hold a privilege from several grantors: one grant,
    // grantable if any of them made it so.
    let mut merged: BTreeMap<(String, &str), (Option<String>, bool)> = BTreeMap::new();
    for item in items(acl) {
        let (shown, sql) = (item.shown(Some(owner)), item.sql(owner));
        for (privilege, grantable) in item.privileges {
            let entry = merged
                .entry((shown.clone(), privilege))
                .or_insert((sql.clone(), false));
            entry.1 |= grantable;
        }
    }
    merged
        .into_iter()
        .map(|((grantee, privilege), (sql, grantable))| {
            let key = Key {
                kind: "grant".into(),
                name: format!("{privilege} on {on} to {grantee}"),
            };
            (
                key,
                grant_object(privilege, columns, target, sql.as_deref(), grantable),
            )
        })
        .collect()
}

fn grant_object(
    privilege: &str,
    columns: &str,
    target: &str,
    grantee: Option<&str>,
    grantable: bool,
) -> Object {
    let mut object = Object::default();
    object
        .props
        .insert("with grant option".into(), grantable.to_string());
    if let Some(grantee) = grantee {
        let what = format!("{privilege}{columns} ON {target}");
        let option = if grantable { " WITH GRANT OPTION" } else { "" };
        object.create = Some(format!("GRANT {what} TO {grantee}{option};"));
        object.drop = Some(format!("REVOKE {what} FROM {grantee};"));
        object.fixes.insert(
            "with grant option".into(),
            if grantable {
                format!("GRANT {what} TO {grantee} WITH GRANT OPTION;")
            } else {
                format!("REVOKE GRANT OPTION FOR {what} FROM {grantee};")
            },
        );
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_parse_grantee_privileges_and_grant_option() {
        assert_eq!(
            parse_item("app=r*w/postgres"),
            Some(Item {
                grantee: Some("app".into()),
                privileges: vec![("SELECT", true), ("UPDATE", false)]
            })
        );
        assert_eq!(
            parse_item("=U/pg_database_owner"),
            Some(Item {
                grantee: None,
                privileges: vec![("USAGE", false)]
            })
        );
        assert_eq!(
            parse_item(r#""we ""ird"=X/"o=w/n""#).map(|i| i.grantee),
            Some(Some(r#"we "ird"#.to_owned()))
        );
        assert_eq!(parse_item("app=?/x"), None, "an unknown letter");
    }

    #[test]
    fn the_owner_becomes_owner_and_has_no_statement() {
        let acl = r#"["alice=arw/alice", "app=r/alice", "=r/alice", "App=r*/bob"]"#;
        let grants = grants("table t", Some(acl), "alice", "TABLE public.t", "");
        let names: Vec<_> = grants.iter().map(|(k, _)| k.name.as_str()).collect();
        assert!(names.contains(&"SELECT on table t to (owner)"), "{names:?}");
        assert!(names.contains(&"SELECT on table t to app"));
        assert!(names.contains(&"SELECT on table t to PUBLIC"));
        assert!(names.contains(&"SELECT on table t to \"App\""));
        let (_, owner) = grants
            .iter()
            .find(|(k, _)| k.name == "INSERT on table t to (owner)")
            .expect("the grant is listed");
        assert_eq!(owner.create, None);
        let (_, app) = grants
            .iter()
            .find(|(k, _)| k.name == "SELECT on table t to \"App\"")
            .expect("the grant is listed");
        assert_eq!(
            app.create.as_deref(),
            Some("GRANT SELECT ON TABLE public.t TO \"App\" WITH GRANT OPTION;")
        );
        assert_eq!(
            app.drop.as_deref(),
            Some("REVOKE SELECT ON TABLE public.t FROM \"App\";")
        );
    }

    #[test]
    fn a_role_named_like_a_reserved_word_is_quoted() {
        for word in ["select", "table", "from", "user", "none", "public", "order"] {
            assert_eq!(quote_role(word), format!("\"{word}\""));
        }
        for plain in ["app", "app_2", "_x", "admin", "role", "owner"] {
            assert_eq!(quote_role(plain), plain);
        }
        let acl = r#"["select=r/alice"]"#;
        let grants = grants("table t", Some(acl), "alice", "TABLE public.t", "");
        assert_eq!(
            grants[0].1.drop.as_deref(),
            Some("REVOKE SELECT ON TABLE public.t FROM \"select\";")
        );
    }

    #[test]
    fn column_grants_name_their_columns() {
        let acl = r#"["app=r/alice"]"#;
        let grants = grants(
            "column users.email",
            Some(acl),
            "alice",
            "TABLE public.users",
            " (email)",
        );
        assert_eq!(
            grants[0].1.create.as_deref(),
            Some("GRANT SELECT (email) ON TABLE public.users TO app;")
        );
    }
}
