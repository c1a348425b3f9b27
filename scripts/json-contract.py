#!/usr/bin/env python3
"""Writes docs/src/schemas/<shape>.json and the field tables of
docs/src/json.md from one description of tenantctl's JSON contract, so the
schemas the tests validate against and the page people read cannot drift
apart. Run it after changing a shape: `python3 scripts/json-contract.py`."""

import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "docs" / "src" / "schemas"
PAGE = ROOT / "docs" / "src" / "json.md"

S = {"type": "string"}
I = {"type": "integer"}
U = {"type": "integer", "minimum": 0}
B = {"type": "boolean"}
O = {"type": "object"}
A = {"type": "array"}


def null(t):
    t = dict(t)
    if "enum" in t:
        t["enum"] = t["enum"] + [None]
        return t
    t["type"] = [t["type"], "null"] if isinstance(t["type"], str) else t["type"] + ["null"]
    return t


def arr(items):
    return {"type": "array", "items": items}


def field(t, doc, required=True):
    return (t, doc, required)


def obj(fields, closed=True):
    props = {}
    req = []
    for name, (t, doc, required) in fields.items():
        props[name] = dict(t, description=doc)
        if required:
            req.append(name)
    out = {"type": "object", "properties": props, "required": req}
    if closed:
        out["additionalProperties"] = False
    return out


VERSION = field({"const": 1}, "The contract's version; changes only when a field is removed or changes meaning.")

TENANT = {
    "id": field(S, "The company's id in the master."),
    "slug": field(null(S), "The company's slug (null when the master has none)."),
    "db_name": field(null(S), "Its database's name as the master records it."),
    "server": field(S, "The server its database lives on (`default` unless placed elsewhere)."),
    "status": field({"enum": ["ok", "failed", "skipped", "interrupted"]}, "What happened to this tenant."),
    "error": field(null(S), "Why it failed, was skipped or interrupted (redacted: never a password)."),
    "duration_ms": field(U, "How long its work took, in milliseconds."),
}

SUMMARY = obj({
    "ok": field(U, "Tenants that succeeded."),
    "failed": field(U, "Tenants that failed."),
    "skipped": field(U, "Tenants not started (`--fail-fast`, an interrupt, a refusal)."),
    "interrupted": field(U, "Tenants an interrupt cut short; present only when there are any.", False),
})

FLEET_TOP = {
    "schema_version": VERSION,
    "summary": field(SUMMARY, "How many tenants ended each way."),
    "interrupted": field(B, "Whether an interrupt (Ctrl-C, SIGTERM) cut the run short."),
    "selection": field(O, "What was selected and why (counts, flags and where their values came from); present when the tenants were selected from the master.", False),
    "run_id": field(I, "The run record this run wrote (`migrate`, `revert`); `tenant runs RUN_ID` shows it.", False),
    "label": field(S, "The run's `--label`, when it has one.", False),
    "refused": field(B, "Present (true) when the run was refused before anything changed.", False),
}

# Each fleet command: the fields its tenants add, and top-level fields.
FLEET = {
    "migrate": ("`tenant migrate`", {
        "applied": field(arr({"type": ["integer", "string"]}), "Migrations applied (sqlx versions; Prisma/command migrators: names)."),
        "pending": field(arr({"type": ["integer", "string"]}), "With `--dry-run`: what would be applied.", False),
        "ran_command": field(B, "Application migrator (`kind = \"command\"`): whether its command ran.", False),
        "exit_code": field(null(I), "Application migrator: the command's exit code.", False),
    }, {}),
    "status": ("`tenant status`", {
        "latest": field(null(I), "sqlx: the newest migration applied (null when none).", False),
        "pending": field({"type": ["integer", "array"]}, "sqlx: how many known migrations are not applied yet; Prisma: their names.", False),
        "problems": field(arr(O), "Failed, dirty, edited or unknown migrations, each `{kind, version, ...}`; `{kind: database_missing}` when the database does not exist."),
        "applied": field(arr(S), "Prisma: applied migration names.", False),
        "failed": field(arr(S), "Prisma: failed migrations.", False),
        "in_progress": field(arr(S), "Prisma: migrations started and not finished.", False),
        "rolled_back": field(arr(S), "Prisma: migrations marked rolled back.", False),
        "checksum_changed": field(arr(S), "Prisma: applied migrations whose file changed since.", False),
        "missing_from_folder": field(arr(S), "Prisma: applied migrations the folder no longer has.", False),
        "not_empty": field(B, "Prisma: the database has tables but no `_prisma_migrations` (P3005).", False),
    }, {}),
    "revert": ("`tenant revert`", {
        "reverted": field(arr(I), "Versions reverted, newest first."),
        "to_revert": field(arr(I), "The plan: versions that would be reverted (a refused or dry run).", False),
        "refusals": field(arr(O), "Why this tenant cannot be reverted, when it cannot.", False),
    }, {}),
    "sql": ("`tenant sql`", {
        "rows_affected": field(U, "Rows the script's statements affected."),
        "result_sets": field(arr(O), "Each statement's rows: `{columns, rows, ...}`."),
        "rolled_back": field(B, "Whether the transaction was rolled back (`--dry-run`, or a failure)."),
        "unverified": field(arr(S), "Effects a rollback cannot undo that the script may have had.", False),
        "sequences_advanced": field(arr(O), "Sequences the script moved (a rollback does not undo them).", False),
    }, {}),
    "exec": ("`tenant exec`", {
        "exit_code": field(null(I), "The command's exit code (null when it was killed or did not start)."),
        "stdout": field(S, "What it printed on stdout (redacted)."),
        "stderr": field(S, "What it printed on stderr (redacted)."),
    }, {}),
    "drift": ("`tenant drift`", {
        "drift": field(null({"enum": ["match", "differs", "pending"]}), "How the tenant's schema stands against the reference."),
        "pending": field(U, "Migrations the tenant has not applied yet.", False),
        "fingerprint": field(S, "A hash of the tenant's schema.", False),
        "differences": field(arr(O), "What differs from the reference."),
        "problems": field(arr(S), "What could not be compared.", False),
    }, {"drift": field(O, "The reference and the differences across the fleet: `{reference, matched, differ, pending, differences}`.")}),
    "baseline": ("`tenant baseline`", {
        "recorded": field(arr(I), "Versions recorded as applied without running them."),
    }, {}),
    "settings-fleet": ("`tenant settings get` on several tenants and `tenant settings set`", {
        "key": field(S, "The setting's key."),
        "value": field({}, "Its value (any JSON; null when unset)."),
    }, {}),
    "create-file": ("`tenant create --from-file`", {
        "line": field(U, "The line of the file the tenant came from."),
        "result": field(null(S), "`created`, `finished` (a create resumed) or `present`."),
        "applied": field(arr(I), "Migrations applied."),
        "applied_migrations": field(arr(S), "Application migrator: migration names applied.", False),
    }, {}),
}

OTHER = {
    "list": ("`tenant list`", obj({
        "schema_version": VERSION,
        "tenants": field(arr(obj({
            "id": field(null(S), "The company's id (null for a create not finished yet)."),
            "slug": field(null(S), "Its slug."),
            "name": field(null(S), "Its name."),
            "db_name": field(null(S), "Its database's name."),
            "server": field(S, "The server its database lives on."),
            "status": field(null(S), "Its status (provisioning, active, failed, dropped, moving, or the table's own)."),
            "created_at": field(null(S), "When it was created (RFC 3339)."),
            "error": field(S, "Why the row cannot be used (its database or server name missing or unsafe).", False),
        })), "The companies, one object each."),
    })),
    "runs": ("`tenant runs`", obj({
        "schema_version": VERSION,
        "runs": field(arr(O), "Recorded runs, newest first: `{id, command, outcome, started_at, finished_at, tenants, ok, failed, skipped, ...}`."),
    })),
    "run": ("`tenant runs RUN_ID`", obj({
        "schema_version": VERSION,
        "run": field(O, "The run, as in `tenant runs`."),
        "tenants": field(arr(O), "What it did to each tenant it recorded."),
    })),
    "doctor": ("`doctor`", obj({
        "schema_version": VERSION,
        "tenants": field(U, "Companies in the master."),
        "findings": field(arr(O), "Problems found: `{kind, tenant, id, db_name, server, detail}`."),
        "summary": field({"type": "object", "additionalProperties": U}, "How many findings of each kind."),
        "orphans_checked": field(B, "Whether databases no company names were looked for."),
    })),
    "settings-get": ("`tenant settings get` on one tenant", obj({
        "schema_version": VERSION,
        "id": field(S, "The tenant's id."),
        "slug": field(null(S), "Its slug."),
        "key": field(S, "The setting's key."),
        "value": field({}, "Its value, any JSON."),
    })),
    "settings-list": ("`tenant settings list`", obj({
        "schema_version": VERSION,
        "id": field(S, "The tenant's id."),
        "slug": field(null(S), "Its slug."),
        "settings": field(arr(O), "Each setting: `{key, value, updated_at}`."),
    })),
    "create": ("`tenant create` (one tenant)", obj({
        "schema_version": VERSION,
        "handle": field(S, "The handle other commands take (its slug, else its id)."),
        "id": field(S, "The company's id."),
        "slug": field(null(S), "Its slug."),
        "name": field(null(S), "Its name."),
        "db_name": field(null(S), "Its database."),
        "server": field(S, "The server it was created on."),
        "status": field(S, "Its status now (`active`)."),
        "resumed": field(B, "Whether a create left unfinished was finished."),
        "concurrent": field(B, "Whether a create running at the same time made it."),
        "applied": field(arr(I), "Migrations applied."),
        "migrator": field({"enum": ["sqlx", "prisma", "command"]}, "Who owns the tenants' schema."),
        "applied_migrations": field(arr(S), "Application migrator: migration names applied.", False),
        "template": field(S, "The template database it was cloned from, when one was used.", False),
    })),
    "url": ("`tenant url`", obj({
        "schema_version": VERSION,
        "slug": field(null(S), "The tenant's slug."),
        "db_name": field(S, "Its database."),
        "server": field(S, "Its server."),
        "url": field(S, "Its connection URL, the password replaced by `***` unless `--show-password`."),
    })),
    "drop": ("`tenant drop`", obj({
        "schema_version": VERSION,
        "id": field(S, "The company's id."),
        "slug": field(null(S), "Its slug."),
        "db_name": field(S, "The database dropped."),
        "server": field(S, "Its server."),
        "row": field({"enum": ["kept", "deleted"]}, "What became of the master's row."),
    })),
    "template-list": ("`template list`, `build`, `prune`", obj({
        "schema_version": VERSION,
        "templates": field(arr(O), "Each template database: `{server, name, hash, current, state, size_bytes, ...}`."),
    })),
    "server-list": ("`server list`", obj({
        "schema_version": VERSION,
        "servers": field(arr(O), "Each server: `{name, host, port, accepts_new, reachable, error, version, tenants, ...}`."),
    })),
    "master-migrate": ("`master migrate`", obj({
        "schema_version": VERSION,
        "database": field(S, "The master database."),
        "created": field(B, "Whether it was created."),
        "applied": field(arr(I), "tenantctl's own master migrations applied."),
    }, closed=False)),
    "move": ("`tenant move`", obj({
        "schema_version": VERSION,
    }, closed=False)),
    "error": ("any command that fails before it has a report", obj({
        "schema_version": VERSION,
        "error": field(S, "What went wrong and what to do, one line (redacted)."),
        "kind": field({"enum": ["usage", "failure", "interrupted"]}, "`usage` (exit 2), `failure` (exit 1) or `interrupted` (exit 130)."),
    })),
}


def fleet_schema(name, what, tenant_fields, top_fields):
    tenant = obj({**TENANT, **tenant_fields})
    top = dict(FLEET_TOP)
    top["tenants"] = field(arr(tenant), "One object per tenant, in the order they were selected.")
    top.update(top_fields)
    schema = obj(top)
    line = dict(tenant)
    line["properties"] = {"schema_version": dict(VERSION[0], description=VERSION[1]), **tenant["properties"]}
    line["required"] = ["schema_version"] + tenant["required"]
    summary_line = dict(schema)
    summary_line["properties"] = {k: v for k, v in schema["properties"].items() if k != "tenants"}
    summary_line["required"] = [r for r in schema["required"] if r != "tenants"]
    return schema, line, summary_line


def header(schema, name, what):
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://tenantctl.invalid/schemas/{name}.json",
            "title": f"tenantctl {what} --output json", **schema}


def table(fields):
    rows = ["| field | type | present | meaning |", "|---|---|---|---|"]
    for name, p in fields["properties"].items():
        t = p.get("type", "const" if "const" in p else ("enum" if "enum" in p else "any"))
        if "enum" in p:
            t = " \\| ".join(f"`{v}`" if v is not None else "null" for v in p["enum"])
        elif "const" in p:
            t = f"`{p['const']}`"
        elif isinstance(t, list):
            t = " or ".join(t)
        present = "always" if name in fields.get("required", []) else "sometimes"
        rows.append(f"| `{name}` | {t} | {present} | {p.get('description', '')} |")
    return "\n".join(rows)


def main():
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    sections = []
    for name, (what, tenant_fields, top_fields) in FLEET.items():
        schema, line, summary_line = fleet_schema(name, what, tenant_fields, top_fields)
        (SCHEMAS / f"{name}.json").write_text(json.dumps(header(schema, name, what), indent=2) + "\n")
        (SCHEMAS / f"{name}.line.json").write_text(json.dumps(header(line, name + ".line", what + " (jsonl tenant line)"), indent=2) + "\n")
        (SCHEMAS / f"{name}.summary.json").write_text(json.dumps(header(summary_line, name + ".summary", what + " (jsonl summary line)"), indent=2) + "\n")
        tenant = schema["properties"]["tenants"]["items"]
        sections.append(f"### {what}\n\nSchema: [`schemas/{name}.json`](schemas/{name}.json) "
                        f"(jsonl: [`{name}.line.json`](schemas/{name}.line.json), "
                        f"[`{name}.summary.json`](schemas/{name}.summary.json)).\n\n"
                        f"Top level:\n\n{table(schema)}\n\nEach tenant:\n\n{table(tenant)}\n")
    for name, (what, schema) in OTHER.items():
        (SCHEMAS / f"{name}.json").write_text(json.dumps(header(schema, name, what), indent=2) + "\n")
        note = "" if schema.get("additionalProperties") is False else "\n\nThis shape is open: fields not listed here may be present and are not yet part of the contract.\n"
        sections.append(f"### {what}\n\nSchema: [`schemas/{name}.json`](schemas/{name}.json).{note}\n\n{table(schema)}\n")
    text = PAGE.read_text()
    start = text.index("<!-- shapes -->")
    end = text.index("<!-- /shapes -->")
    PAGE.write_text(text[: start + len("<!-- shapes -->")] + "\n\n" + "\n".join(sections) + "\n" + text[end:])


main()
