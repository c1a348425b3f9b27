//! Schema drift: a database's real schema, read from its catalog and
//! reduced to a canonical form (objects by kind and name, each with the
//! properties that make it what it is), compared with a reference schema.
//!
//! The canonical form holds no OID, database name or creation order, so
//! two databases made by the same statements compare equal on any server;
//! what differs is reported once per object and property, with the
//! statement that would repair it where one is obvious.

mod acl;
mod build;
mod catalog;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Reads the schema of the database `conn` is connected to, in one round
/// trip. `repairs`: also read what the reference's repair statements need
/// (a tenant's are not needed).
pub async fn read(
    conn: &mut sqlx::PgConnection,
    repairs: bool,
    scope: Scope,
) -> anyhow::Result<Schema> {
    let rows = catalog::fetch(conn, repairs, scope.comments).await?;
    Ok(build::schema(&rows, scope))
}

/// Which properties that often differ by design are compared.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope {
    /// Who owns each object.
    pub owners: bool,
    /// `COMMENT ON` texts.
    pub comments: bool,
}

/// What identifies an object across databases: its kind (`index`,
/// `column`, `grant`, ...) and its name as SQL writes it, qualified unless
/// it is in `public` (`audit_log_at_idx`, `users.email`,
/// `SELECT on table settings to app`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Key {
    pub kind: String,
    pub name: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// The kinds of object that are parts of another (a table's column, a
/// function's grant, a table's own sequence): when the whole is extra, or
/// missing with nothing to make it, the part's repair goes with the whole's.
pub const PARTS: &[&str] = &[
    "column",
    "constraint",
    "index",
    "trigger",
    "policy",
    "rule",
    "statistics",
    "grant",
];

/// One object: what is compared, and the statements that make it, remove
/// it, or set one of its properties as it is here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Object {
    pub props: BTreeMap<String, String>,
    pub create: Option<String>,
    pub drop: Option<String>,
    pub fixes: BTreeMap<String, String>,
    /// What the object is part of (a column's table, a grant's object, a
    /// table's own sequence): not compared (the name says where it is), but
    /// when the whole is extra, or missing with nothing to make it, this
    /// part's repair is the whole's.
    pub parent: Option<Key>,
}

/// A database's schema in canonical form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    pub objects: BTreeMap<Key, Object>,
}

impl Schema {
    /// Adds an object; a second object under the same key (which the
    /// catalog should never give) is kept under a numbered name rather
    /// than lost.
    fn insert(&mut self, key: Key, object: Object) {
        let mut key = key;
        let mut n = 1;
        while self.objects.contains_key(&key) {
            n += 1;
            key.name = format!(
                "{} #{n}",
                key.name.trim_end_matches(&format!(" #{}", n - 1))
            );
        }
        self.objects.insert(key, object);
    }

    /// A digest of the compared form (kinds, names, properties): equal for
    /// equal schemas, so tenants can be grouped without comparing each
    /// pair.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        for (key, object) in &self.objects {
            for part in [key.kind.as_str(), key.name.as_str()] {
                hash.update(part.len().to_le_bytes());
                hash.update(part.as_bytes());
            }
            for (k, v) in &object.props {
                for part in [k, v] {
                    hash.update(part.len().to_le_bytes());
                    hash.update(part.as_bytes());
                }
            }
            hash.update([0xff]);
        }
        crate::migrations::hex(&hash.finalize()[..8])
    }

    /// How many objects the schema has.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// How an object differs from the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// In the reference, not in the tenant.
    Missing,
    /// In the tenant, not in the reference.
    Extra,
    /// In both, with a property that differs.
    Changed,
}

/// One difference between a tenant's schema and the reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Difference {
    /// The object's kind (`index`, `column`, `grant`, ...).
    pub kind: String,
    /// The object's name.
    pub name: String,
    pub change: Change,
    /// For a changed object: the property that differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// For a changed object: the property in the reference (`None`: not
    /// set there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// For a changed object: the property in the tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The statement that would make the tenant match the reference, when
    /// there is an obvious one; tenantctl never runs it.
    pub repair: Option<String>,
    /// For a part of an object that is itself extra, or missing with no
    /// statement to make it (`table audit_log`): that object, whose repair
    /// this part's goes with (dropping a table drops its grants; its
    /// columns cannot be added to a table that is not there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
}

/// What a tenant's schema has that the reference has not, lacks, or has
/// otherwise, in key order.
pub fn compare(reference: &Schema, tenant: &Schema) -> Vec<Difference> {
    let mut out = Vec::new();
    let difference = |key: &Key, change, repair: Option<&String>| Difference {
        kind: key.kind.clone(),
        name: key.name.clone(),
        change,
        property: None,
        reference: None,
        tenant: None,
        repair: repair.cloned(),
        with: None,
    };
    // What an extension holds comes and goes with it: its members are
    // compared only where both sides have the extension.
    let bundled = |key: &Key, o: &Object, other: &Schema| {
        key.kind == "extension member"
            && o.parent
                .as_ref()
                .is_some_and(|p| !other.objects.contains_key(p))
    };
    for (key, want) in &reference.objects {
        let Some(have) = tenant.objects.get(key) else {
            if bundled(key, want, tenant) {
                continue;
            }
            // A part of a whole the tenant lacks and no statement makes.
            let whole = want.parent.as_ref().filter(|w| {
                !tenant.objects.contains_key(*w)
                    && reference
                        .objects
                        .get(*w)
                        .is_some_and(|o| o.create.is_none())
            });
            out.push(match whole {
                Some(whole) => Difference {
                    with: Some(whole.to_string()),
                    ..difference(key, Change::Missing, None)
                },
                None => difference(key, Change::Missing, want.create.as_ref()),
            });
            continue;
        };
        let props = want.props.keys().chain(have.props.keys());
        let mut seen: Vec<&String> = props.collect();
        seen.sort();
        seen.dedup();
        for prop in seen {
            let (r, t) = (want.props.get(prop), have.props.get(prop));
            if r != t {
                out.push(Difference {
                    property: Some(prop.clone()),
                    reference: r.cloned(),
                    tenant: t.cloned(),
                    ..difference(key, Change::Changed, want.fixes.get(prop))
                });
            }
        }
    }
    for (key, have) in &tenant.objects {
        if !reference.objects.contains_key(key) && !bundled(key, have, reference) {
            // A part of a whole that is extra too goes when it goes.
            let whole = have
                .parent
                .as_ref()
                .filter(|w| !reference.objects.contains_key(*w));
            out.push(match whole {
                Some(whole) => Difference {
                    with: Some(whole.to_string()),
                    ..difference(key, Change::Extra, None)
                },
                None => difference(key, Change::Extra, have.drop.as_ref()),
            });
        }
    }
    out.sort();
    out
}

impl Difference {
    /// One line for people: `index audit_log_at_idx missing`,
    /// `column users.email default changed: 'x'::text (reference) vs none`.
    /// Long or multi-line values are cut short (`--output json` has them
    /// whole).
    pub fn describe(&self) -> String {
        let what = crate::text::shown(&format!("{} {}", self.kind, self.name));
        match self.change {
            Change::Missing => format!("{what} missing"),
            Change::Extra => format!("{what} not in the reference"),
            Change::Changed => {
                let (reference, tenant) =
                    brief_pair(self.reference.as_deref(), self.tenant.as_deref());
                format!(
                    "{what} {} changed: {reference} (reference) vs {tenant}",
                    crate::text::shown(self.property.as_deref().unwrap_or_default()),
                )
            }
        }
    }
}

/// The longest value a one-line report shows whole.
const MAX: usize = 60;

/// A value as the one-line report shows it.
fn brief(value: Option<&str>) -> String {
    brief_from(value, 0)
}

/// `value` on one line from its `skip`th character, cut at [`MAX`].
fn brief_from(value: Option<&str>, skip: usize) -> String {
    let Some(value) = value else {
        return "none".into();
    };
    // A short value is shown exactly, escaped: flattened, `'a\nb'` and
    // `'a b'` (two tenants' defaults) would read the same.
    let exact = crate::text::shown(value);
    if skip == 0 && exact.chars().count() <= MAX {
        return exact;
    }
    let flat: Vec<char> = value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .collect();
    if skip == 0 && flat.len() <= MAX && !value.trim().contains('\n') {
        return crate::text::shown(&flat.iter().collect::<String>());
    }
    let skip = skip.min(flat.len());
    let cut: String = flat[skip..].iter().take(MAX).collect();
    format!(
        "{}{}{}",
        if skip > 0 { "…" } else { "" },
        crate::text::shown(&cut),
        if flat.len() - skip > MAX { "…" } else { "" }
    )
}

/// Two values that differ, each cut to show where they part ways: long
/// definitions that differ only at the end (a constraint's `DEFERRABLE`)
/// would otherwise look the same.
fn brief_pair(reference: Option<&str>, tenant: Option<&str>) -> (String, String) {
    let pair = flat_pair(reference, tenant);
    match (reference, tenant) {
        // Two values that differ only in white space (a newline where the
        // other has a space) would read the same once flattened: shown as
        // they are, escaped, from where they part ways.
        (Some(r), Some(t)) if pair.0 == pair.1 && r != t => {
            let (r, t) = (crate::text::shown(r), crate::text::shown(t));
            let common = r.chars().zip(t.chars()).take_while(|(a, b)| a == b).count();
            let skip = common.saturating_sub(20);
            (exact_from(&r, skip), exact_from(&t, skip))
        }
        _ => pair,
    }
}

/// `shown` (escaped already) from its `skip`th character, cut at [`MAX`],
/// white space kept.
fn exact_from(shown: &str, skip: usize) -> String {
    let chars: Vec<char> = shown.chars().collect();
    let skip = skip.min(chars.len());
    let cut: String = chars[skip..].iter().take(MAX).collect();
    format!(
        "{}{cut}{}",
        if skip > 0 { "…" } else { "" },
        if chars.len() - skip > MAX { "…" } else { "" }
    )
}

/// [`brief_pair`] on the values as [`brief`] flattens them.
fn flat_pair(reference: Option<&str>, tenant: Option<&str>) -> (String, String) {
    let (Some(r), Some(t)) = (reference, tenant) else {
        return (brief(reference), brief(tenant));
    };
    let flat = |v: &str| v.split_whitespace().collect::<Vec<_>>().join(" ");
    let (fr, ft) = (flat(r), flat(t));
    if fr.chars().count() <= MAX && ft.chars().count() <= MAX && !r.contains('\n') {
        return (brief(reference), brief(tenant));
    }
    let common = fr
        .chars()
        .zip(ft.chars())
        .take_while(|(a, b)| a == b)
        .count();
    // Some context before the first difference.
    let skip = common.saturating_sub(20);
    (brief_from(Some(r), skip), brief_from(Some(t), skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(props: &[(&str, &str)]) -> Object {
        Object {
            props: props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            create: Some("CREATE it;".into()),
            drop: Some("DROP it;".into()),
            fixes: [("default".to_owned(), "SET DEFAULT 'x';".to_owned())].into(),
            parent: None,
        }
    }

    fn schema(objects: &[(&str, &str, Object)]) -> Schema {
        let mut s = Schema::default();
        for (kind, name, o) in objects {
            s.insert(
                Key {
                    kind: (*kind).into(),
                    name: (*name).into(),
                },
                o.clone(),
            );
        }
        s
    }

    #[test]
    fn missing_extra_and_changed_each_carry_their_repair() {
        let reference = schema(&[
            (
                "index",
                "a_idx",
                object(&[("definition", "CREATE INDEX a")]),
            ),
            ("column", "t.c", object(&[("default", "'x'::text")])),
        ]);
        let tenant = schema(&[
            ("column", "t.c", object(&[])),
            ("table", "extra", object(&[])),
        ]);
        let diffs = compare(&reference, &tenant);
        let lines: Vec<_> = diffs.iter().map(Difference::describe).collect();
        assert_eq!(
            lines,
            [
                "column t.c default changed: 'x'::text (reference) vs none",
                "index a_idx missing",
                "table extra not in the reference",
            ]
        );
        assert_eq!(diffs[0].repair.as_deref(), Some("SET DEFAULT 'x';"));
        assert_eq!(diffs[1].repair.as_deref(), Some("CREATE it;"));
        assert_eq!(diffs[2].repair.as_deref(), Some("DROP it;"));
        assert!(compare(&reference, &reference).is_empty());
    }

    #[test]
    fn parts_of_an_extra_or_unmakeable_whole_go_with_it() {
        let key = |kind: &str, name: &str| Key {
            kind: kind.into(),
            name: name.into(),
        };
        let part_of = |whole: Key| Object {
            parent: Some(whole),
            ..object(&[])
        };
        let unmakeable = Object {
            create: None,
            ..object(&[])
        };
        let reference = schema(&[
            ("table", "gone", unmakeable),
            ("column", "gone.c", part_of(key("table", "gone"))),
            ("function", "f()", object(&[])),
            (
                "grant",
                "EXECUTE on function f() to PUBLIC",
                part_of(key("function", "f()")),
            ),
        ]);
        let tenant = schema(&[
            ("table", "extra", object(&[])),
            ("column", "extra.c", part_of(key("table", "extra"))),
        ]);
        let diffs = compare(&reference, &tenant);
        let shown: Vec<_> = diffs
            .iter()
            .map(|d| (d.name.as_str(), d.repair.as_deref(), d.with.as_deref()))
            .collect();
        assert_eq!(
            shown,
            [
                // Its table is extra: dropping the table drops it.
                ("extra.c", None, Some("table extra")),
                // Its table is missing and nothing makes it.
                ("gone.c", None, Some("table gone")),
                // The function is missing but can be made: its grant is
                // given after it.
                ("f()", Some("CREATE it;"), None),
                (
                    "EXECUTE on function f() to PUBLIC",
                    Some("CREATE it;"),
                    None
                ),
                ("extra", Some("DROP it;"), None),
                ("gone", None, None),
            ]
        );
    }

    #[test]
    fn fingerprints_follow_the_compared_form_only() {
        let one = schema(&[("table", "t", object(&[("x", "1")]))]);
        let mut bare = one.clone();
        // Repairs are not schema.
        bare.objects.values_mut().for_each(|o| o.create = None);
        assert_eq!(one.fingerprint(), bare.fingerprint());
        let two = schema(&[("table", "t", object(&[("x", "2")]))]);
        assert_ne!(one.fingerprint(), two.fingerprint());
        // Boundaries count: ("ab","c") is not ("a","bc").
        let left = schema(&[("table", "t", object(&[("ab", "c")]))]);
        let right = schema(&[("table", "t", object(&[("a", "bc")]))]);
        assert_ne!(left.fingerprint(), right.fingerprint());
    }

    #[test]
    fn long_and_multiline_values_are_cut_and_escaped() {
        assert_eq!(brief(None), "none");
        assert_eq!(
            brief(Some("begin\n  return 1;\nend")),
            "begin\\n  return 1;\\nend"
        );
        let long = format!("begin\n  return {};\nend", "1".repeat(60));
        assert!(brief(Some(&long)).starts_with("begin return 111"));
        assert_eq!(brief(Some("a\u{1b}b")), "a\\u{1b}b");
        let long = "x".repeat(100);
        assert_eq!(brief(Some(&long)).chars().count(), 61);
    }

    #[test]
    fn long_values_that_differ_late_show_where() {
        let base = "FOREIGN KEY (\"siteId\") REFERENCES sites(id) ON DELETE CASCADE";
        let (r, t) = brief_pair(Some(&format!("{base} DEFERRABLE")), Some(base));
        assert!(
            r.starts_with('…') && r.ends_with("CASCADE DEFERRABLE"),
            "{r}"
        );
        assert!(t.starts_with('…') && t.ends_with("CASCADE"), "{t}");
        assert_ne!(r, t);
        assert_eq!(brief_pair(Some("a"), None), ("a".into(), "none".into()));
    }

    #[test]
    fn values_that_differ_only_in_white_space_never_read_the_same() {
        assert_eq!(
            brief_pair(Some("'a b'::text"), Some("'a\nb'::text")),
            ("'a b'::text".into(), "'a\\nb'::text".into())
        );
        let (r, t) = brief_pair(Some("'a  b'"), Some("'a b'"));
        assert_ne!(r, t);
        let body = format!("{}\n  return 1;", "x".repeat(100));
        let (r, t) = brief_pair(Some(&body), Some(&body.replace('\n', " ")));
        assert_ne!(r, t);
        assert!(r.starts_with('…') && r.contains("\\n"), "{r}");
    }

    #[test]
    fn a_duplicate_key_is_kept_under_a_numbered_name() {
        let mut s = Schema::default();
        let key = Key {
            kind: "index".into(),
            name: "i".into(),
        };
        s.insert(key.clone(), Object::default());
        s.insert(key.clone(), Object::default());
        s.insert(key, Object::default());
        let names: Vec<_> = s.objects.keys().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["i", "i #2", "i #3"]);
    }
}
