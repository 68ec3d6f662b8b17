//! The same history in SQLite, PostgreSQL and MariaDB gives byte-identical exports, and every one of
//! the nine source/target pairs holds the exported rows, every column.

use crate::harness::*;

#[test]
fn same_history_same_bytes() {
    let w = Workdir::new("sqlite-vs-pg");
    let lite = w.sqlite_url("im.db");
    let (pg, my) = (PgDb::new("same"), MyDb::new("same"));
    for (src, out) in [(lite.clone(), "lite"), (pg.url(), "pg"), (my.url(), "my")] {
        for days in ["2", "1"] {
            w.run(&[
                "simulate",
                "--source",
                &src,
                "--days",
                days,
                "--interactions-per-day",
                "400",
                "--seed",
                "21",
            ]);
            w.run(&["export", "--source", &src, "--output", out, "--catch-up"]);
        }
    }
    let a = tree(&w.join("lite"));
    assert!(a.len() >= 12, "{:?}", a.keys());
    assert_same_tree(&a, &tree(&w.join("pg")), "SQLite and PostgreSQL exports");
    assert_same_tree(&a, &tree(&w.join("my")), "SQLite and MariaDB exports");

    // Each source's folders into each kind of target: the exported rows, every column.
    for (src, out) in [(lite.clone(), "lite"), (pg.url(), "pg"), (my.url(), "my")] {
        let (tpg, tmy) = (PgDb::new("pair"), MyDb::new("pair"));
        let tlite = w.sqlite_url(&format!("target-{out}.db"));
        for target in [tlite, tpg.url(), tmy.url()] {
            w.run(&["load", "--input", out, "--target", &target]);
            assert_target_matches_source(&src, &target, &w.join(out));
        }
    }
}
