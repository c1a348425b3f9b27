//! What the mutation runs of `src/script.rs` showed no server test looking
//! at: `tenant sql` with `DELETE ... RETURNING` shows the rows it deleted,
//! and its columns when it deleted none (those come from describing the
//! statement, which only a statement classified as returning rows gets).
//! `MERGE ... RETURNING` would be the same, but needs PostgreSQL 17; the
//! servers these tests run on are 15, so only the unit tests on the parse
//! tree reach it.

use crate::support::TestEnv;

#[test]
fn sql_delete_returning_shows_its_rows_and_its_columns_when_none() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slug = env.tenants_with(&dir, &["a"]).remove(0);
    env.exec(
        &env.db("a"),
        "CREATE TABLE marker (x int, y text); INSERT INTO marker VALUES (1, 'one'), (2, NULL)",
    );
    let script = "DELETE FROM marker WHERE x > 5 RETURNING x; DELETE FROM marker RETURNING *";

    let report = env
        .run(&[
            "tenant",
            "sql",
            &slug,
            "--dry-run",
            "-c",
            script,
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(
        report["tenants"][0]["result_sets"],
        serde_json::json!([
            {"statement": 1, "columns": ["x"], "rows": [], "rows_affected": 0},
            {"statement": 2, "columns": ["x", "y"], "rows": [["1", "one"], ["2", null]], "rows_affected": 2},
        ])
    );

    // The result tables, exactly; the summary table after them (with its
    // timings) is not what this test is about.
    let run = env
        .run(&["tenant", "sql", &slug, "--dry-run", "-c", script])
        .ok();
    let w = slug.chars().count().max("tenant".len());
    let line = |left: &str, fill: &str, mid: &str, right: &str| {
        format!(
            "{left}{}{mid}{}{mid}{}{right}\n",
            fill.repeat(w + 2),
            fill.repeat(3),
            fill.repeat(6)
        )
    };
    let row = |a: &str, b: &str, c: &str| format!("│ {a:<w$} ┆ {b} ┆ {c:<4} │\n");
    let expected = [
        "statement 1: DELETE FROM marker WHERE x > 5 RETURNING x\n".to_owned(),
        "┌────────┬───┐\n│ tenant ┆ x │\n╞════════╪═══╡\n└────────┴───┘\n".to_owned(),
        "statement 2: DELETE FROM marker RETURNING *\n".to_owned(),
        line("┌", "─", "┬", "┐"),
        row("tenant", "x", "y"),
        line("╞", "═", "╪", "╡"),
        row(&slug, "1", "one"),
        row(&slug, "2", "NULL"),
        line("└", "─", "┴", "┘"),
    ]
    .concat();
    let shown = &run.stdout[..expected.len().min(run.stdout.len())];
    assert_eq!(shown, expected, "stdout:\n{}", run.stdout);
}
