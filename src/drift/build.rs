//! The catalog's raw rows (`catalog.sql`, read by [`super::catalog`]) into
//! a [`Schema`]: one object per schema, relation, column, constraint,
//! index, function, trigger, policy, rule, type, extension, grant and the
//! rest, named as SQL names them, with the properties compared and the
//! statements that would make, remove or set each one here.
//!
//! Names come quoted by the server (`quote_ident`); an object outside
//! `public` is qualified by its schema. Objects of extensions, of system
//! schemas and of temporary schemas are left out.

use std::collections::{HashMap, HashSet};

use super::catalog::{Raw, Rows};
use super::{Key, Object, Schema, Scope};

/// Catalog OIDs (fixed in every PostgreSQL), for extension membership and
/// comments.
const PG_CLASS: u32 = 1259;
const PG_PROC: u32 = 1255;
const PG_TYPE: u32 = 1247;
const PG_NAMESPACE: u32 = 2615;
const PG_CONSTRAINT: u32 = 2606;
const PG_TRIGGER: u32 = 2620;
const PG_EVENT_TRIGGER: u32 = 3466;
const PG_COLLATION: u32 = 3456;
const PG_CAST: u32 = 2605;
const PG_OPERATOR: u32 = 2617;

/// A relation (table, view, sequence, index, ...) as other objects name it.
struct Rel<'a> {
    raw: &'a Raw,
    /// As reports show it: `users`, `audit.events`.
    shown: String,
    /// As SQL names it: `public.users`.
    q: String,
    relkind: char,
}

/// What every builder needs: the names of schemas and relations, what
/// belongs to an extension, and the comments.
struct Ctx<'a> {
    rows: &'a Rows,
    scope: Scope,
    /// Schema OID to its quoted name (system and temporary schemas absent).
    ns: HashMap<u32, String>,
    rels: HashMap<u32, Rel<'a>>,
    members: HashSet<(u32, u32)>,
    comments: HashMap<(u32, u32, i64), &'a str>,
}

/// Builds the schema from the rows of `catalog.sql`.
pub fn schema(rows: &Rows, scope: Scope) -> Schema {
    let ctx = Ctx::new(rows, scope);
    let mut out = Schema::default();
    for build in [
        schemas,
        relations,
        columns,
        constraints,
        indexes,
        functions,
        triggers,
        policies,
        rules,
        types,
        extensions,
        default_privileges,
        others,
        settings,
    ] {
        build(&ctx, &mut out);
    }
    out
}

/// Adds an object to the schema being built.
fn add(out: &mut Schema, kind: &str, name: String, object: Object) {
    out.insert(
        Key {
            kind: kind.to_owned(),
            name,
        },
        object,
    );
}

impl<'a> Ctx<'a> {
    fn new(rows: &'a Rows, scope: Scope) -> Self {
        let members: HashSet<(u32, u32)> =
            rows.of("m").iter().map(|r| (r.oid(0), r.oid(1))).collect();
        let ns: HashMap<u32, String> = rows
            .of("n")
            .iter()
            .filter(|r| !members.contains(&(PG_NAMESPACE, r.oid(0))))
            .filter(|r| {
                !r.text(1).starts_with("pg_temp_") && !r.text(1).starts_with("pg_toast_temp_")
            })
            .map(|r| (r.oid(0), r.text(1).to_owned()))
            .collect();
        let rels = rows
            .of("c")
            .iter()
            .filter_map(|r| {
                let schema = ns.get(&r.oid(1))?;
                Some((
                    r.oid(0),
                    Rel {
                        raw: r,
                        shown: format!("{}{}", prefix(schema), r.text(2)),
                        q: format!("{schema}.{}", r.text(2)),
                        relkind: r.text(3).chars().next().unwrap_or(' '),
                    },
                ))
            })
            .collect();
        let comments = rows
            .of("C")
            .iter()
            .map(|r| {
                let sub = r.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
                ((r.oid(0), r.oid(1), sub), r.text(3))
            })
            .collect();
        Self {
            rows,
            scope,
            ns,
            rels,
            members,
            comments,
        }
    }

    /// A relation of the database's own (not a system one, not an
    /// extension's).
    fn rel(&self, oid: u32) -> Option<&Rel<'a>> {
        self.rels
            .get(&oid)
            .filter(|_| !self.members.contains(&(PG_CLASS, oid)))
    }

    /// A schema of the database's own, by OID, with the object `(class,
    /// oid)` in it not an extension's.
    fn schema_of(&self, ns: u32, class: u32, oid: u32) -> Option<&String> {
        self.ns
            .get(&ns)
            .filter(|_| !self.members.contains(&(class, oid)))
    }

    /// Adds `owner` and `comment` to an object's properties when the scope
    /// compares them, with the statements that set them.
    fn extras(&self, o: &mut Object, owner: Option<(&str, String)>, comment: &Comment) {
        if self.scope.owners
            && let Some((role, alter)) = owner
        {
            o.props.insert("owner".into(), role.to_owned());
            o.fixes.insert(
                "owner".into(),
                format!("{alter} OWNER TO {};", quote_role(role)),
            );
        }
        if self.scope.comments {
            let text = self.comments.get(&comment.key).copied();
            if let Some(text) = text {
                o.props.insert("comment".into(), text.to_owned());
            }
            o.fixes.insert(
                "comment".into(),
                format!(
                    "COMMENT ON {} IS {};",
                    comment.on,
                    text.map_or_else(|| "NULL".to_owned(), literal)
                ),
            );
        }
    }
}

/// Where an object's comment is and how `COMMENT ON` names the object.
struct Comment {
    key: (u32, u32, i64),
    on: String,
}

fn comment(class: u32, oid: u32, sub: i64, on: String) -> Comment {
    Comment {
        key: (class, oid, sub),
        on,
    }
}

/// `schema.` unless the schema is `public`.
fn prefix(schema: &str) -> String {
    if schema == "public" {
        String::new()
    } else {
        format!("{schema}.")
    }
}

/// A string literal.
fn literal(text: &str) -> String {
    let quoted = format!("'{}'", text.replace('\'', "''"));
    if text.contains('\\') {
        format!("E{}", quoted.replace('\\', "\\\\"))
    } else {
        quoted
    }
}

pub(super) use super::acl::quote_role;

fn key(kind: &str, name: &str) -> Key {
    Key {
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

/// `o`, part of `parent`: not reported on its own when the parent is
/// missing or extra as a whole.
fn under(mut o: Object, parent: Key) -> Object {
    o.parent = Some(parent);
    o
}

fn set(o: &mut Object, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        o.props.insert(key.to_owned(), v.to_owned());
    }
}

fn fix(o: &mut Object, key: &str, sql: String) {
    o.fixes.insert(key.to_owned(), sql);
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "true" } else { "false" }
}

fn schemas(ctx: &Ctx<'_>, out: &mut Schema) {
    for r in ctx.rows.of("n") {
        let Some(name) = ctx.ns.get(&r.oid(0)).cloned() else {
            continue;
        };
        let mut o = Object {
            create: Some(format!("CREATE SCHEMA {name};")),
            drop: Some(format!("DROP SCHEMA {name};")),
            ..Object::default()
        };
        let on = format!("SCHEMA {name}");
        ctx.extras(
            &mut o,
            Some((r.text(2), format!("ALTER SCHEMA {name}"))),
            &comment(PG_NAMESPACE, r.oid(0), 0, on.clone()),
        );
        add(out, "schema", name.clone(), o);
        let grants = super::acl::grants(&format!("schema {name}"), r.get(3), r.text(2), &on, "");
        for (grant, object) in grants {
            out.insert(grant, under(object, key("schema", &name)));
        }
    }
}

/// The kind a relation is reported as, and the keyword SQL uses for it.
fn rel_kind(relkind: char) -> Option<(&'static str, &'static str)> {
    Some(match relkind {
        'r' | 'p' => ("table", "TABLE"),
        'v' => ("view", "VIEW"),
        'm' => ("materialized view", "MATERIALIZED VIEW"),
        'S' => ("sequence", "SEQUENCE"),
        'f' => ("foreign table", "FOREIGN TABLE"),
        'c' => ("type", "TYPE"),
        _ => return None,
    })
}

fn relations(ctx: &Ctx<'_>, out: &mut Schema) {
    for (oid, rel) in &ctx.rels {
        if ctx.members.contains(&(PG_CLASS, *oid)) {
            continue;
        }
        let Some((kind, keyword)) = rel_kind(rel.relkind) else {
            continue;
        };
        let mut o = relation(ctx, *oid, rel, keyword);
        ctx.extras(
            &mut o,
            Some((rel.raw.text(4), format!("ALTER {keyword} {}", rel.q))),
            &comment(PG_CLASS, *oid, 0, format!("{keyword} {}", rel.q)),
        );
        add(out, kind, rel.shown.clone(), o);
        if rel.relkind != 'c' {
            let (on, target) = if rel.relkind == 'S' {
                ("sequence", format!("SEQUENCE {}", rel.q))
            } else {
                ("table", format!("TABLE {}", rel.q))
            };
            grant_objects(
                out,
                &format!("{on} {}", rel.shown),
                rel.raw.get(5),
                rel.raw.text(4),
                &target,
                "",
                &key(kind, &rel.shown),
            );
        }
    }
}

/// The grants of one object, each a part of it.
fn grant_objects(
    out: &mut Schema,
    on: &str,
    acl: Option<&str>,
    owner: &str,
    target: &str,
    columns: &str,
    parent: &Key,
) {
    for (grant, o) in super::acl::grants(on, acl, owner, target, columns) {
        out.insert(grant, under(o, parent.clone()));
    }
}

/// A relation's own properties and statements.
fn relation(ctx: &Ctx<'_>, oid: u32, rel: &Rel<'_>, keyword: &str) -> Object {
    let (r, q) = (rel.raw, &rel.q);
    let table = matches!(rel.relkind, 'r' | 'p');
    let mut o = Object {
        drop: Some(format!("DROP {keyword} {q};")),
        ..Object::default()
    };
    if r.text(6) == "u" {
        set(&mut o, "unlogged", Some("true"));
    }
    if matches!(rel.relkind, 'r' | 'S') {
        let persistence = if r.text(6) == "u" {
            "UNLOGGED"
        } else {
            "LOGGED"
        };
        fix(
            &mut o,
            "unlogged",
            format!("ALTER {keyword} {q} SET {persistence};"),
        );
    }
    if table {
        table_properties(&mut o, r, q);
    }
    set(&mut o, "options", r.get(10));
    if matches!(rel.relkind, 'r' | 'p' | 'm') {
        set(
            &mut o,
            "access method",
            r.get(11).filter(|am| *am != "heap"),
        );
    }
    set(&mut o, "partitioned by", r.get(13));
    if let Some(bound) = r.get(14) {
        let parent = parents(ctx, oid).into_iter().next().unwrap_or_default();
        set(&mut o, "partition of", Some(&format!("{parent} {bound}")));
    } else if matches!(rel.relkind, 'r' | 'p' | 'f') {
        let parents = parents(ctx, oid);
        if !parents.is_empty() {
            set(&mut o, "inherits", Some(&parents.join(", ")));
        }
    }
    if let Some(view) = r.get(12) {
        set(&mut o, "definition", Some(view));
        let body = view.trim_end().trim_end_matches(';');
        o.create = Some(format!("CREATE {keyword} {q} AS {body};"));
        if rel.relkind == 'v' {
            fix(
                &mut o,
                "definition",
                format!("CREATE OR REPLACE VIEW {q} AS {body};"),
            );
        }
    }
    if rel.relkind == 'S' {
        sequence(ctx, oid, q, &mut o);
    }
    o
}

fn table_properties(o: &mut Object, r: &Raw, q: &str) {
    set(o, "row level security", Some(yes_no(r.flag(7))));
    set(o, "row level security forced", Some(yes_no(r.flag(8))));
    set(o, "replica identity", r.get(9));
    let on = if r.flag(7) { "ENABLE" } else { "DISABLE" };
    fix(
        o,
        "row level security",
        format!("ALTER TABLE {q} {on} ROW LEVEL SECURITY;"),
    );
    let forced = if r.flag(8) { "FORCE" } else { "NO FORCE" };
    fix(
        o,
        "row level security forced",
        format!("ALTER TABLE {q} {forced} ROW LEVEL SECURITY;"),
    );
    let identity = match r.text(9) {
        "d" => Some("DEFAULT"),
        "f" => Some("FULL"),
        "n" => Some("NOTHING"),
        _ => None,
    };
    if let Some(identity) = identity {
        fix(
            o,
            "replica identity",
            format!("ALTER TABLE {q} REPLICA IDENTITY {identity};"),
        );
    }
}

/// The shown names of a relation's parents, in inheritance order.
fn parents(ctx: &Ctx<'_>, oid: u32) -> Vec<String> {
    let mut parents: Vec<(i64, String)> = ctx
        .rows
        .of("h")
        .iter()
        .filter(|h| h.oid(0) == oid)
        .map(|h| {
            let seq = h.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
            let name = ctx
                .rels
                .get(&h.oid(1))
                .map_or_else(|| h.text(1).to_owned(), |p| p.shown.clone());
            (seq, name)
        })
        .collect();
    parents.sort();
    parents.into_iter().map(|(_, name)| name).collect()
}

fn sequence(ctx: &Ctx<'_>, oid: u32, q: &str, o: &mut Object) {
    if let Some(s) = ctx.rows.of("s").iter().find(|s| s.oid(0) == oid) {
        let spec = format!(
            "AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}",
            s.text(1),
            s.text(2),
            s.text(3),
            s.text(4),
            s.text(5),
            s.text(6),
            if s.flag(7) { "CYCLE" } else { "NO CYCLE" }
        );
        o.create = Some(format!("CREATE SEQUENCE {q} {spec};"));
        fix(o, "sequence", format!("ALTER SEQUENCE {q} {spec};"));
        set(o, "sequence", Some(&spec));
    }
    let owned = ctx.rows.of("o").iter().find(|d| d.oid(0) == oid);
    if let Some(d) = owned
        && let Some(table) = ctx.rels.get(&d.oid(1))
    {
        let column = ctx
            .rows
            .of("a")
            .iter()
            .find(|a| a.oid(0) == d.oid(1) && a.get(12) == d.get(2))
            .map(|a| a.text(1).to_owned())
            .unwrap_or_default();
        set(o, "owned by", Some(&format!("{}.{column}", table.shown)));
        // A sequence a column owns (`serial`, identity) is made and dropped
        // with its table, never alone.
        if let Some((kind, _)) = rel_kind(table.relkind) {
            o.parent = Some(key(kind, &table.shown));
        }
    }
}

fn columns(ctx: &Ctx<'_>, out: &mut Schema) {
    for a in ctx.rows.of("a") {
        let Some(rel) = ctx.rel(a.oid(0)) else {
            continue;
        };
        let attnum = a.get(12).and_then(|n| n.parse().ok()).unwrap_or(0);
        if let Some(acl) = a.get(11).filter(|acl| *acl != "null") {
            grant_objects(
                out,
                &format!("column {}.{}", rel.shown, a.text(1)),
                Some(acl),
                rel.raw.text(4),
                &format!("TABLE {}", rel.q),
                &format!(" ({})", a.text(1)),
                &key("column", &format!("{}.{}", rel.shown, a.text(1))),
            );
        }
        if !matches!(rel.relkind, 'r' | 'p' | 'f' | 'c') {
            continue;
        }
        let mut o = column(a, rel);
        let on = format!("COLUMN {}.{}", rel.q, a.text(1));
        ctx.extras(&mut o, None, &comment(PG_CLASS, a.oid(0), attnum, on));
        let parent = key(rel_kind(rel.relkind).map_or("table", |k| k.0), &rel.shown);
        add(
            out,
            "column",
            format!("{}.{}", rel.shown, a.text(1)),
            under(o, parent),
        );
    }
}

/// One column: `a` is its `a` row, `rel` its relation.
fn column(a: &Raw, rel: &Rel<'_>) -> Object {
    let (q, name, ty) = (&rel.q, a.text(1), a.text(2));
    let generated = !a.text(6).is_empty();
    let default = a.get(4).filter(|_| !generated);
    let mut o = Object::default();
    set(&mut o, "type", Some(ty));
    set(&mut o, "not null", Some(yes_no(a.flag(3))));
    set(&mut o, "default", default);
    set(
        &mut o,
        "identity",
        match a.text(5) {
            "a" => Some("always"),
            "d" => Some("by default"),
            _ => None,
        },
    );
    set(&mut o, "generated", a.get(4).filter(|_| generated));
    set(&mut o, "collation", a.get(7));
    set(&mut o, "storage", a.get(8).filter(|s| a.get(9) != Some(*s)));
    let statistics = a.get(10).filter(|s| *s != "-1");
    set(&mut o, "statistics", statistics);
    o.drop = Some(match rel.relkind {
        'c' => format!("ALTER TYPE {q} DROP ATTRIBUTE {name};"),
        'f' => format!("ALTER FOREIGN TABLE {q} DROP COLUMN {name};"),
        _ => format!("ALTER TABLE {q} DROP COLUMN {name};"),
    });
    if matches!(rel.relkind, 'r' | 'p') && a.text(5).is_empty() && !generated {
        let default_sql = default.map(|d| format!(" DEFAULT {d}")).unwrap_or_default();
        let not_null = if a.flag(3) { " NOT NULL" } else { "" };
        o.create = Some(format!(
            "ALTER TABLE {q} ADD COLUMN {name} {ty}{default_sql}{not_null};"
        ));
    }
    if matches!(rel.relkind, 'r' | 'p' | 'f') {
        column_fixes(&mut o, a, q, default, generated);
    }
    o
}

fn column_fixes(o: &mut Object, a: &Raw, q: &str, default: Option<&str>, generated: bool) {
    let name = a.text(1);
    let alter = format!("ALTER TABLE {q} ALTER COLUMN {name}");
    if !generated {
        let sql = match default {
            Some(d) => format!("{alter} SET DEFAULT {d};"),
            None => format!("{alter} DROP DEFAULT;"),
        };
        fix(o, "default", sql);
    }
    let null = if a.flag(3) { "SET" } else { "DROP" };
    fix(o, "not null", format!("{alter} {null} NOT NULL;"));
    let target = a.get(10).filter(|s| !s.is_empty()).unwrap_or("-1");
    fix(o, "statistics", format!("{alter} SET STATISTICS {target};"));
    let storage = match a.text(8) {
        "p" => "PLAIN",
        "e" => "EXTERNAL",
        "m" => "MAIN",
        _ => "EXTENDED",
    };
    fix(o, "storage", format!("{alter} SET STORAGE {storage};"));
}

/// A constraint's definition without what is compared on its own:
/// deferrability and validity.
fn bare_definition(def: &str) -> &str {
    let mut def = def;
    for suffix in [" NOT VALID", " INITIALLY DEFERRED", " DEFERRABLE"] {
        def = def.strip_suffix(suffix).unwrap_or(def);
    }
    def
}

fn constraints(ctx: &Ctx<'_>, out: &mut Schema) {
    for k in ctx.rows.of("k") {
        let (on_shown, keyword, q, parent) = if let Some(rel) = ctx.rel(k.oid(2)) {
            let kind = rel_kind(rel.relkind).map_or("table", |k| k.0);
            (
                rel.shown.clone(),
                "TABLE",
                rel.q.clone(),
                key(kind, &rel.shown),
            )
        } else if let Some((shown, q)) = domain(ctx, k.oid(3)) {
            let parent = key("domain", &shown);
            (format!("domain {shown}"), "DOMAIN", q, parent)
        } else {
            continue;
        };
        let (name, def) = (k.text(1), k.text(5));
        let deferral = if k.flag(8) {
            "deferrable initially deferred"
        } else if k.flag(7) {
            "deferrable initially immediate"
        } else {
            "not deferrable"
        };
        let readd = format!(
            "ALTER {keyword} {q} DROP CONSTRAINT {name}; ALTER {keyword} {q} ADD CONSTRAINT {name} {def};"
        );
        let mut o = Object {
            create: Some(format!("ALTER {keyword} {q} ADD CONSTRAINT {name} {def};")),
            drop: Some(format!("ALTER {keyword} {q} DROP CONSTRAINT {name};")),
            ..Object::default()
        };
        set(&mut o, "definition", Some(bare_definition(def)));
        if k.text(4) == "f" {
            set(&mut o, "triggers", Some(fk_triggers(ctx.rows, k.oid(0))));
        }
        set(&mut o, "deferrable", Some(deferral));
        set(&mut o, "valid", Some(yes_no(k.flag(6))));
        fix(&mut o, "definition", readd.clone());
        if k.flag(6) {
            fix(
                &mut o,
                "valid",
                format!("ALTER {keyword} {q} VALIDATE CONSTRAINT {name};"),
            );
        }
        let deferrable = if k.text(4) == "f" {
            format!(
                "ALTER TABLE {q} ALTER CONSTRAINT {name} {};",
                deferral.to_uppercase()
            )
        } else {
            readd
        };
        fix(&mut o, "deferrable", deferrable);
        let on = format!(
            "CONSTRAINT {name} ON {}{q}",
            if keyword == "DOMAIN" { "DOMAIN " } else { "" }
        );
        ctx.extras(&mut o, None, &comment(PG_CONSTRAINT, k.oid(0), 0, on));
        add(
            out,
            "constraint",
            format!("{name} on {on_shown}"),
            under(o, parent),
        );
    }
}

/// How the internal triggers that enforce a foreign key are set: `enabled`
/// as PostgreSQL makes them, `disabled` after `ALTER TABLE ... DISABLE
/// TRIGGER ALL` (the key is no longer checked). No repair: the triggers'
/// names are the tenant's own.
fn fk_triggers(rows: &Rows, constraint: u32) -> &'static str {
    let states: HashSet<&str> = rows
        .of("t")
        .iter()
        .filter(|t| t.flag(5) && t.oid(6) == constraint)
        .map(|t| t.text(3))
        .collect();
    match states.iter().copied().collect::<Vec<_>>().as_slice() {
        [] | ["O"] => "enabled",
        ["D"] | ["D", "O"] | ["O", "D"] => "disabled",
        _ => "not all enabled",
    }
}

/// A domain of the database's own: its shown and SQL names.
fn domain(ctx: &Ctx<'_>, oid: u32) -> Option<(String, String)> {
    let t = ctx.rows.of("y").iter().find(|t| t.oid(0) == oid)?;
    let schema = ctx.schema_of(t.oid(1), PG_TYPE, oid)?;
    Some((
        format!("{}{}", prefix(schema), t.text(2)),
        format!("{schema}.{}", t.text(2)),
    ))
}

fn indexes(ctx: &Ctx<'_>, out: &mut Schema) {
    // An index a constraint owns is the constraint's: reported as it.
    let owned: HashSet<(u32, u32)> = ctx
        .rows
        .of("k")
        .iter()
        .filter(|k| matches!(k.text(4), "p" | "u" | "x"))
        .map(|k| (k.oid(9), k.oid(2)))
        .collect();
    for i in ctx.rows.of("i") {
        let (index, table) = (i.oid(0), i.oid(1));
        if owned.contains(&(index, table)) || ctx.rel(table).is_none() {
            continue;
        }
        let Some(rel) = ctx.rels.get(&index) else {
            continue;
        };
        let def = i.text(2);
        let mut o = Object {
            create: Some(format!("{def};")),
            drop: Some(format!("DROP INDEX {};", rel.q)),
            ..Object::default()
        };
        set(&mut o, "definition", Some(def));
        set(&mut o, "valid", Some(yes_no(i.flag(3))));
        fix(
            &mut o,
            "definition",
            format!("DROP INDEX {}; {def};", rel.q),
        );
        fix(&mut o, "valid", format!("REINDEX INDEX {};", rel.q));
        let on = format!("INDEX {}", rel.q);
        ctx.extras(&mut o, None, &comment(PG_CLASS, index, 0, on));
        let table = ctx
            .rels
            .get(&table)
            .map_or_else(String::new, |t| t.shown.clone());
        add(
            out,
            "index",
            rel.shown.clone(),
            under(o, key("table", &table)),
        );
    }
}

fn functions(ctx: &Ctx<'_>, out: &mut Schema) {
    for f in ctx.rows.of("f") {
        let Some(schema) = ctx.schema_of(f.oid(1), PG_PROC, f.oid(0)) else {
            continue;
        };
        let (kind, keyword) = match f.text(5) {
            "p" => ("procedure", "PROCEDURE"),
            "a" => ("aggregate", "AGGREGATE"),
            _ => ("function", "FUNCTION"),
        };
        let signature = format!("{}({})", f.text(2), f.text(3));
        let q = format!("{schema}.{signature}");
        let mut o = function(f, keyword, &q);
        let alter = format!("ALTER {keyword} {q}");
        ctx.extras(
            &mut o,
            Some((f.text(14), alter)),
            &comment(PG_PROC, f.oid(0), 0, format!("{keyword} {q}")),
        );
        let shown = format!("{}{signature}", prefix(schema));
        let target = format!(
            "{} {q}",
            if kind == "procedure" {
                "PROCEDURE"
            } else {
                "FUNCTION"
            }
        );
        grant_objects(
            out,
            &format!("{kind} {shown}"),
            f.get(15),
            f.text(14),
            &target,
            "",
            &key(kind, &shown),
        );
        add(out, kind, shown, o);
    }
}

fn function(f: &Raw, keyword: &str, q: &str) -> Object {
    let volatility = match f.text(7) {
        "i" => "IMMUTABLE",
        "s" => "STABLE",
        _ => "VOLATILE",
    };
    let parallel = match f.text(11) {
        "s" => "SAFE",
        "r" => "RESTRICTED",
        _ => "UNSAFE",
    };
    let mut o = Object {
        drop: Some(format!("DROP {keyword} {q};")),
        create: f.get(17).map(|def| format!("{};", def.trim_end())),
        ..Object::default()
    };
    set(&mut o, "returns", f.get(4));
    set(&mut o, "language", f.get(6));
    set(&mut o, "volatility", Some(volatility));
    set(&mut o, "strict", Some(yes_no(f.flag(8))));
    set(&mut o, "security definer", Some(yes_no(f.flag(9))));
    set(&mut o, "leakproof", Some(yes_no(f.flag(10))));
    set(&mut o, "parallel", Some(parallel));
    set(&mut o, "settings", f.get(12));
    // The signature names a function by its arguments' types; what a
    // caller may leave out (`DEFAULT`) and the OUT arguments are only here.
    set(
        &mut o,
        "arguments",
        f.get(18).filter(|a| Some(*a) != f.get(3)),
    );
    set(&mut o, "body", f.get(13));
    set(&mut o, "aggregate", f.get(16));
    if keyword != "AGGREGATE" {
        let alter = format!("ALTER {keyword} {q}");
        fix(&mut o, "volatility", format!("{alter} {volatility};"));
        let strict = if f.flag(8) {
            "STRICT"
        } else {
            "CALLED ON NULL INPUT"
        };
        fix(&mut o, "strict", format!("{alter} {strict};"));
        let security = if f.flag(9) { "DEFINER" } else { "INVOKER" };
        fix(
            &mut o,
            "security definer",
            format!("{alter} SECURITY {security};"),
        );
        let leak = if f.flag(10) { "" } else { "NOT " };
        fix(&mut o, "leakproof", format!("{alter} {leak}LEAKPROOF;"));
        fix(&mut o, "parallel", format!("{alter} PARALLEL {parallel};"));
    }
    o
}

/// When a trigger fires (`tgenabled`, `evtenabled`): as reported, and the
/// `ALTER ... TRIGGER` words that set it.
fn firing(code: &str) -> (&'static str, &'static str) {
    match code {
        "D" => ("disabled", "DISABLE"),
        "R" => ("replica", "ENABLE REPLICA"),
        "A" => ("always", "ENABLE ALWAYS"),
        _ => ("enabled", "ENABLE"),
    }
}

fn triggers(ctx: &Ctx<'_>, out: &mut Schema) {
    for t in ctx.rows.of("t") {
        let Some(rel) = ctx.rel(t.oid(0)).filter(|_| !t.flag(5)) else {
            continue;
        };
        let (name, def, q) = (t.text(1), t.text(2), &rel.q);
        let (enabled, switch) = firing(t.text(3));
        let switch_sql = format!("ALTER TABLE {q} {switch} TRIGGER {name};");
        let mut o = Object {
            create: Some(if enabled == "enabled" {
                format!("{def};")
            } else {
                format!("{def}; {switch_sql}")
            }),
            drop: Some(format!("DROP TRIGGER {name} ON {q};")),
            ..Object::default()
        };
        set(&mut o, "definition", Some(def));
        set(&mut o, "enabled", Some(enabled));
        fix(&mut o, "enabled", switch_sql);
        fix(
            &mut o,
            "definition",
            format!("DROP TRIGGER {name} ON {q}; {def};"),
        );
        let on = format!("TRIGGER {name} ON {q}");
        ctx.extras(&mut o, None, &comment(PG_TRIGGER, t.oid(4), 0, on));
        add(
            out,
            "trigger",
            format!("{name} on {}", rel.shown),
            under(o, key("table", &rel.shown)),
        );
    }
}

fn policies(ctx: &Ctx<'_>, out: &mut Schema) {
    for p in ctx.rows.of("p") {
        let Some(rel) = ctx.rel(p.oid(0)) else {
            continue;
        };
        let (name, q) = (p.text(1), &rel.q);
        let permissive = if p.flag(2) {
            "PERMISSIVE"
        } else {
            "RESTRICTIVE"
        };
        let command = match p.text(3) {
            "r" => "SELECT",
            "a" => "INSERT",
            "w" => "UPDATE",
            "d" => "DELETE",
            _ => "ALL",
        };
        let roles = p.text(4);
        let using = p
            .get(5)
            .map(|e| format!(" USING ({e})"))
            .unwrap_or_default();
        let check = p
            .get(6)
            .map(|e| format!(" WITH CHECK ({e})"))
            .unwrap_or_default();
        let create = format!(
            "CREATE POLICY {name} ON {q} AS {permissive} FOR {command} TO {roles}{using}{check};"
        );
        let mut o = Object {
            drop: Some(format!("DROP POLICY {name} ON {q};")),
            ..Object::default()
        };
        set(&mut o, "as", Some(permissive));
        set(&mut o, "for", Some(command));
        set(&mut o, "to", Some(roles));
        set(&mut o, "using", p.get(5));
        set(&mut o, "with check", p.get(6));
        for prop in ["as", "for", "to", "using", "with check"] {
            fix(&mut o, prop, format!("DROP POLICY {name} ON {q}; {create}"));
        }
        o.create = Some(create);
        add(
            out,
            "policy",
            format!("{name} on {}", rel.shown),
            under(o, key("table", &rel.shown)),
        );
    }
}

fn rules(ctx: &Ctx<'_>, out: &mut Schema) {
    for r in ctx.rows.of("r") {
        let Some(rel) = ctx.rel(r.oid(0)) else {
            continue;
        };
        let mut o = Object {
            create: r.get(2).map(str::to_owned),
            drop: Some(format!("DROP RULE {} ON {};", r.text(1), rel.q)),
            ..Object::default()
        };
        set(&mut o, "definition", r.get(2));
        set(&mut o, "enabled", r.get(3));
        let kind = rel_kind(rel.relkind).map_or("table", |k| k.0);
        add(
            out,
            "rule",
            format!("{} on {}", r.text(1), rel.shown),
            under(o, key(kind, &rel.shown)),
        );
    }
}

fn types(ctx: &Ctx<'_>, out: &mut Schema) {
    for t in ctx.rows.of("y") {
        let Some(schema) = ctx.schema_of(t.oid(1), PG_TYPE, t.oid(0)) else {
            continue;
        };
        let q = format!("{schema}.{}", t.text(2));
        let mut o = Object::default();
        let kind = match t.text(3) {
            "e" => {
                let labels: Vec<&str> = ctx
                    .rows
                    .of("e")
                    .iter()
                    .filter(|e| e.oid(0) == t.oid(0))
                    .map(|e| e.text(1))
                    .collect();
                let labels = labels.join(", ");
                o.create = Some(format!("CREATE TYPE {q} AS ENUM ({labels});"));
                set(&mut o, "labels", Some(&labels));
                "enum"
            }
            "d" => {
                domain_properties(&mut o, t, &q);
                "domain"
            }
            _ => {
                set(&mut o, "subtype", t.get(9));
                "range type"
            }
        };
        let keyword = if kind == "domain" { "DOMAIN" } else { "TYPE" };
        o.drop = Some(format!("DROP {keyword} {q};"));
        let alter = format!("ALTER {keyword} {q}");
        ctx.extras(
            &mut o,
            Some((t.text(8), alter)),
            &comment(PG_TYPE, t.oid(0), 0, format!("{keyword} {q}")),
        );
        add(out, kind, format!("{}{}", prefix(schema), t.text(2)), o);
    }
}

fn domain_properties(o: &mut Object, t: &Raw, q: &str) {
    let (base, default) = (t.text(4), t.get(6));
    set(o, "type", Some(base));
    set(o, "not null", Some(yes_no(t.flag(5))));
    set(o, "default", default);
    set(o, "collation", t.get(7));
    let default_sql = default.map(|d| format!(" DEFAULT {d}")).unwrap_or_default();
    let not_null = if t.flag(5) { " NOT NULL" } else { "" };
    o.create = Some(format!(
        "CREATE DOMAIN {q} AS {base}{default_sql}{not_null};"
    ));
    fix(
        o,
        "default",
        match default {
            Some(d) => format!("ALTER DOMAIN {q} SET DEFAULT {d};"),
            None => format!("ALTER DOMAIN {q} DROP DEFAULT;"),
        },
    );
    let null = if t.flag(5) { "SET" } else { "DROP" };
    fix(o, "not null", format!("ALTER DOMAIN {q} {null} NOT NULL;"));
}

fn extensions(ctx: &Ctx<'_>, out: &mut Schema) {
    let mut members_of = Vec::new();
    for x in ctx.rows.of("x") {
        let (name, version, schema) = (x.text(1), x.text(2), x.text(3));
        let mut o = Object {
            create: Some(format!(
                "CREATE EXTENSION IF NOT EXISTS {name} WITH SCHEMA {schema} VERSION {};",
                literal(version)
            )),
            drop: Some(format!("DROP EXTENSION {name};")),
            ..Object::default()
        };
        set(&mut o, "version", Some(version));
        set(&mut o, "schema", Some(schema));
        fix(
            &mut o,
            "version",
            format!("ALTER EXTENSION {name} UPDATE TO {};", literal(version)),
        );
        fix(
            &mut o,
            "schema",
            format!("ALTER EXTENSION {name} SET SCHEMA {schema};"),
        );
        let mut members: Vec<&str> = ctx
            .rows
            .of("m")
            .iter()
            .filter(|m| m.oid(2) == x.oid(0))
            .filter_map(|m| m.get(3))
            .collect();
        members.sort_unstable();
        for member in members {
            let part = under(Object::default(), key("extension", name));
            members_of.push((format!("{name}: {member}"), part));
        }
        add(out, "extension", name.to_owned(), o);
    }
    // Which objects each extension holds: one added with `ALTER EXTENSION
    // ... ADD` leaves every other comparison; no repair (dropping it from
    // the extension or the object is a decision).
    for (name, o) in members_of {
        add(out, "extension member", name, o);
    }
}

/// Default privileges for objects created later, by role and schema: each
/// grant beyond what the role's objects get with none set (an entry for
/// every schema spells out the role's own privileges too, which is no
/// drift), and each of those built-in ones the entry revokes.
fn default_privileges(ctx: &Ctx<'_>, out: &mut Schema) {
    for d in ctx.rows.of("d") {
        let objects = match d.text(2) {
            "r" => "TABLES",
            "S" => "SEQUENCES",
            "f" => "FUNCTIONS",
            "T" => "TYPES",
            _ => "SCHEMAS",
        };
        let (shown_schema, sql_schema) = match d.oid(1) {
            0 => (String::new(), String::new()),
            ns => {
                let name = ctx.ns.get(&ns).map_or("?", String::as_str);
                (format!(" in schema {name}"), format!(" IN SCHEMA {name}"))
            }
        };
        let role = quote_role(d.text(0));
        let alter = format!("ALTER DEFAULT PRIVILEGES FOR ROLE {role}{sql_schema}");
        let lower = objects.to_lowercase();
        for (revoked, grantee, privilege, grantable) in default_grants(d) {
            let grant = format!(
                "{alter} GRANT {privilege} ON {objects} TO {grantee}{};",
                if grantable { " WITH GRANT OPTION" } else { "" }
            );
            let revoke = format!("{alter} REVOKE {privilege} ON {objects} FROM {grantee};");
            let (kind, word, create, drop) = if revoked {
                ("default privileges revoked", "from", revoke, grant)
            } else {
                ("default privileges", "to", grant, revoke)
            };
            let mut o = Object {
                create: Some(create),
                drop: Some(drop),
                ..Object::default()
            };
            set(&mut o, "with grant option", Some(yes_no(grantable)));
            let name = format!("{privilege} on {lower}{shown_schema} for {role} {word} {grantee}");
            add(out, kind, name, o);
        }
    }
}

/// A default-privileges entry as (revoked, grantee, privilege, grantable):
/// for all schemas, what it grants beyond the built-in defaults and the
/// built-in ones it revokes; for one schema, all it grants (an entry for a
/// schema can only add).
fn default_grants(d: &Raw) -> Vec<(bool, String, &'static str, bool)> {
    let flatten = |json: Option<&str>| -> Vec<(String, &'static str, bool)> {
        super::acl::items(json)
            .into_iter()
            .flat_map(|item| {
                let grantee = item.shown(None);
                item.privileges
                    .into_iter()
                    .map(move |(p, g)| (grantee.clone(), p, g))
            })
            .collect()
    };
    let set = flatten(d.get(3));
    if d.oid(1) != 0 {
        return set.into_iter().map(|(w, p, g)| (false, w, p, g)).collect();
    }
    let builtin = flatten(d.get(4));
    let mut out: Vec<_> = set
        .iter()
        .filter(|grant| !builtin.contains(grant))
        .map(|(w, p, g)| (false, w.clone(), *p, *g))
        .collect();
    out.extend(
        builtin
            .iter()
            .filter(|(w, p, _)| !set.iter().any(|(sw, sp, _)| sw == w && sp == p))
            .map(|(w, p, g)| (true, w.clone(), *p, *g)),
    );
    out
}

/// Extended statistics, event triggers, collations, casts and operators.
fn others(ctx: &Ctx<'_>, out: &mut Schema) {
    for z in ctx.rows.of("z") {
        let (Some(_), Some(schema)) = (ctx.rel(z.oid(0)), ctx.ns.get(&z.oid(1))) else {
            continue;
        };
        let mut o = Object {
            create: z.get(3).map(|d| format!("{d};")),
            drop: Some(format!("DROP STATISTICS {schema}.{};", z.text(2))),
            ..Object::default()
        };
        set(&mut o, "definition", z.get(3));
        add(
            out,
            "statistics",
            format!("{}{}", prefix(schema), z.text(2)),
            o,
        );
    }
    for v in ctx.rows.of("v") {
        if ctx.members.contains(&(PG_EVENT_TRIGGER, v.oid(0))) {
            continue;
        }
        let name = v.text(1);
        let (enabled, switch) = firing(v.text(4));
        let mut o = Object {
            drop: Some(format!("DROP EVENT TRIGGER {name};")),
            ..Object::default()
        };
        set(&mut o, "event", v.get(2));
        set(&mut o, "function", v.get(3));
        set(&mut o, "enabled", Some(enabled));
        set(&mut o, "tags", v.get(5).filter(|t| !t.is_empty()));
        fix(
            &mut o,
            "enabled",
            format!("ALTER EVENT TRIGGER {name} {switch};"),
        );
        add(out, "event trigger", name.to_owned(), o);
    }
    collations_casts_operators(ctx, out);
    publications_and_servers(ctx, out);
}

fn collations_casts_operators(ctx: &Ctx<'_>, out: &mut Schema) {
    for l in ctx.rows.of("l") {
        let Some(schema) = ctx.schema_of(l.oid(1), PG_COLLATION, l.oid(0)) else {
            continue;
        };
        let mut o = Object {
            drop: Some(format!("DROP COLLATION {schema}.{};", l.text(2))),
            ..Object::default()
        };
        set(&mut o, "provider", l.get(3));
        set(&mut o, "collate", l.get(4));
        set(&mut o, "ctype", l.get(5));
        set(&mut o, "deterministic", Some(yes_no(l.flag(6))));
        add(
            out,
            "collation",
            format!("{}{}", prefix(schema), l.text(2)),
            o,
        );
    }
    for c in ctx.rows.of("q") {
        if ctx.members.contains(&(PG_CAST, c.oid(0))) {
            continue;
        }
        let name = format!("({} AS {})", c.text(1), c.text(2));
        let mut o = Object {
            drop: Some(format!("DROP CAST {name};")),
            ..Object::default()
        };
        set(&mut o, "function", c.get(3));
        set(&mut o, "context", c.get(4));
        set(&mut o, "method", c.get(5));
        add(out, "cast", name, o);
    }
    for u in ctx.rows.of("u") {
        let Some(schema) = ctx.schema_of(u.oid(1), PG_OPERATOR, u.oid(0)) else {
            continue;
        };
        let left = u.get(3).unwrap_or("NONE");
        let name = format!("{}{}({left}, {})", prefix(schema), u.text(2), u.text(4));
        let mut o = Object::default();
        set(&mut o, "function", u.get(5));
        set(&mut o, "returns", u.get(6));
        add(out, "operator", name, o);
    }
}

/// Publications (logical replication) and foreign servers.
fn publications_and_servers(ctx: &Ctx<'_>, out: &mut Schema) {
    for p in ctx.rows.of("P") {
        let name = p.text(1);
        let rels: Vec<String> = p
            .get(5)
            .and_then(|j| serde_json::from_str::<Vec<String>>(j).ok())
            .unwrap_or_default();
        let mut tables: Vec<&str> = rels
            .iter()
            .filter_map(|oid| ctx.rels.get(&oid.parse().ok()?).map(|r| r.shown.as_str()))
            .collect();
        tables.sort_unstable();
        let mut o = Object {
            drop: Some(format!("DROP PUBLICATION {name};")),
            ..Object::default()
        };
        set(&mut o, "all tables", Some(yes_no(p.flag(2))));
        set(&mut o, "publish", p.get(3));
        set(&mut o, "via root", Some(yes_no(p.flag(4))));
        set(&mut o, "tables", Some(&tables.join(", ")));
        add(out, "publication", name.to_owned(), o);
    }
    for f in ctx.rows.of("F") {
        let name = f.text(1);
        let mut o = Object {
            drop: Some(format!("DROP SERVER {name};")),
            ..Object::default()
        };
        set(&mut o, "wrapper", f.get(2));
        set(&mut o, "type", f.get(3));
        set(&mut o, "version", f.get(4));
        set(&mut o, "options", f.get(5));
        add(out, "foreign server", name.to_owned(), o);
    }
}

/// Settings made with `ALTER DATABASE ... SET` (or `ALTER ROLE ... IN
/// DATABASE ... SET`).
fn settings(ctx: &Ctx<'_>, out: &mut Schema) {
    for g in ctx.rows.of("g") {
        let config: Vec<String> = g
            .get(2)
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let db = g.text(3);
        let (role_name, target) = if g.oid(0) == 0 {
            (String::new(), format!("DATABASE {db}"))
        } else {
            let role = quote_role(g.text(1));
            (
                format!(" for {role}"),
                format!("ROLE {role} IN DATABASE {db}"),
            )
        };
        for setting in config {
            let (name, value) = setting.split_once('=').unwrap_or((&setting, ""));
            // A parameter's name goes into the statement bare: only when it
            // is one PostgreSQL could have accepted bare.
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$'));
            let mut o = Object {
                drop: plain.then(|| format!("ALTER {target} RESET {name};")),
                ..Object::default()
            };
            set(&mut o, "value", Some(value));
            add(out, "database setting", format!("{name}{role_name}"), o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_definitions_lose_only_their_deferral_and_validity() {
        assert_eq!(
            bare_definition(
                "FOREIGN KEY (a) REFERENCES t(id) DEFERRABLE INITIALLY DEFERRED NOT VALID"
            ),
            "FOREIGN KEY (a) REFERENCES t(id)"
        );
        assert_eq!(bare_definition("CHECK ((a > 0))"), "CHECK ((a > 0))");
        assert_eq!(bare_definition("UNIQUE (a) DEFERRABLE"), "UNIQUE (a)");
    }

    #[test]
    fn literals_quote_and_escape() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\b"), r"E'a\\b'");
    }

    fn rows() -> Rows {
        let mut rows = Rows::default();
        rows.push(
            "n",
            &[
                Some("2200"),
                Some("public"),
                Some("alice"),
                Some(r#"["alice=UC/alice","=U/alice"]"#),
            ],
        );
        rows.push(
            "n",
            &[Some("16400"), Some("pg_temp_3"), Some("alice"), None],
        );
        let table = [
            Some("16500"),
            Some("2200"),
            Some("t"),
            Some("r"),
            Some("alice"),
            Some(r#"["alice=arwdDxt/alice","app=r/alice"]"#),
            Some("p"),
            Some("false"),
            Some("false"),
            Some("d"),
            None,
            Some("heap"),
            None,
            None,
            None,
        ];
        rows.push("c", &table);
        let temp = [
            Some("16501"),
            Some("16400"),
            Some("tmp"),
            Some("r"),
            Some("alice"),
        ];
        rows.push("c", &temp);
        let ext_table = [
            Some("16502"),
            Some("2200"),
            Some("ext_t"),
            Some("r"),
            Some("alice"),
        ];
        rows.push("c", &ext_table);
        rows.push("m", &[Some("1259"), Some("16502")]);
        rows.push(
            "a",
            &[
                Some("16500"),
                Some("c"),
                Some("text"),
                Some("true"),
                Some("'x'::text"),
                Some(""),
                Some(""),
                None,
                Some("x"),
                Some("x"),
                Some("-1"),
                None,
                Some("1"),
            ],
        );
        rows
    }

    #[test]
    fn rows_become_objects_without_temporary_or_extension_ones() {
        let schema = schema(&rows(), Scope::default());
        let names: Vec<String> = schema.objects.keys().map(ToString::to_string).collect();
        assert!(names.contains(&"table t".to_owned()), "{names:?}");
        assert!(names.contains(&"column t.c".to_owned()));
        assert!(names.contains(&"grant SELECT on table t to app".to_owned()));
        assert!(names.contains(&"grant USAGE on schema public to PUBLIC".to_owned()));
        assert!(
            !names
                .iter()
                .any(|n| n.contains("tmp") || n.contains("ext_t")),
            "{names:?}"
        );
        let column = &schema.objects[&Key {
            kind: "column".into(),
            name: "t.c".into(),
        }];
        assert_eq!(column.props["default"], "'x'::text");
        assert_eq!(column.props["not null"], "true");
        assert!(!column.props.contains_key("statistics"));
        assert_eq!(
            column.fixes["default"],
            "ALTER TABLE public.t ALTER COLUMN c SET DEFAULT 'x'::text;"
        );
        // No owner unless asked for.
        let table = &schema.objects[&Key {
            kind: "table".into(),
            name: "t".into(),
        }];
        assert!(!table.props.contains_key("owner"));
        let owners = super::schema(
            &rows(),
            Scope {
                owners: true,
                comments: false,
            },
        );
        let table = &owners.objects[&Key {
            kind: "table".into(),
            name: "t".into(),
        }];
        assert_eq!(table.props["owner"], "alice");
    }
}
