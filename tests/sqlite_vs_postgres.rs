//! The same history in SQLite and in PostgreSQL gives byte-identical exports.

use crate::harness::*;

#[test]
fn same_history_same_bytes() {
    let w = Workdir::new("sqlite-vs-pg");
    let lite = w.sqlite_url("im.db");
    let pg = PgDb::new("same");
    for src in [lite.as_str(), pg.url().as_str()] {
        let out = if src.starts_with("sqlite") {
            "lite"
        } else {
            "pg"
        };
        w.run(&[
            "simulate",
            "--source",
            src,
            "--days",
            "2",
            "--interactions-per-day",
            "400",
            "--seed",
            "21",
        ]);
        w.run(&["export", "--source", src, "--output", out, "--catch-up"]);
        w.run(&[
            "simulate",
            "--source",
            src,
            "--days",
            "1",
            "--interactions-per-day",
            "400",
            "--seed",
            "21",
        ]);
        w.run(&["export", "--source", src, "--output", out, "--catch-up"]);
    }
    let a = tree(&w.join("lite"));
    let b = tree(&w.join("pg"));
    assert!(a.len() >= 12, "{:?}", a.keys());
    assert_same_tree(&a, &b, "SQLite and PostgreSQL exports");
}
