//! `--use-export-views`: tables read through views that fix the columns, found by prefix and schema.

use crate::harness::*;

#[test]
fn export_views_decide_tables_and_columns_on_postgres_and_sqlite() {
    let w = Workdir::new("views");
    let db = PgDb::new("views");
    let src = db.url();
    simulate(&w, &src, 2, 80, 91);
    // Views frozen at an older schema: interaction_fact without SUBJECT, resource_ as it is.
    let cols: Vec<String> = sim_columns("interaction_fact")
        .into_iter()
        .filter(|c| c != "subject")
        .collect();
    exec_sql(
        &src,
        &format!(
            "CREATE SCHEMA gim_views; \
             CREATE VIEW gim_views.exp_interaction_fact AS SELECT {} FROM interaction_fact; \
             CREATE VIEW gim_views.exp_resource_ AS SELECT * FROM resource_;",
            cols.join(", ")
        ),
    );
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "plain",
        "--catch-up",
    ]);
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "views",
        "--catch-up",
        "--use-export-views",
        "--export-views-schema",
        "gim_views",
    ]);
    let plain = read_exports(&w.join("plain"));
    let views = read_exports(&w.join("views"));
    assert_eq!(
        plain.iter().map(|p| &p.0).collect::<Vec<_>>(),
        views.iter().map(|v| &v.0).collect::<Vec<_>>(),
        "the same windows"
    );
    let mut compared = 0;
    for ((_, _, p), (_, _, v)) in plain.iter().zip(&views) {
        let names: Vec<&String> = v.keys().collect();
        assert!(
            names
                .iter()
                .all(|n| *n == "interaction_fact" || *n == "resource_"),
            "only tables with a view: {names:?}"
        );
        let (pi, vi) = (&p["interaction_fact"], &v["interaction_fact"]);
        assert_eq!(vi.header, cols, "the view's columns");
        let s = pi.col("subject");
        let expected: Vec<Vec<String>> = pi
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .filter(|(i, _)| *i != s)
                    .map(|(_, f)| f.clone())
                    .collect()
            })
            .collect();
        assert_eq!(vi.rows, expected);
        compared += vi.rows.len();
        if let Some(r) = p.get("resource_") {
            assert_eq!(v["resource_"].rows, r.rows);
        }
    }
    assert!(compared > 50, "{compared}");
    w.run(&["verify", "--input", "views"]);
    let tgt = w.sqlite_url("target.db");
    w.run(&["load", "--input", "views", "--target", &tgt]);
    assert_eq!(
        query_one(&tgt, "SELECT COUNT(subject) FROM interaction_fact"),
        "0"
    );

    // SQLite: views by prefix in the one schema; none at all is a configuration error.
    let lite = w.sqlite_url("im.db");
    simulate(&w, &lite, 1, 40, 92);
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &lite,
            "--output",
            "l",
            "--use-export-views",
        ]),
        2,
    );
    assert!(
        stderr(&o).contains("no view named exp_<table>"),
        "{}",
        stderr(&o)
    );
    exec_sql(&lite, "CREATE VIEW EXP_TENANT AS SELECT * FROM TENANT");
    w.run(&[
        "export",
        "--source",
        &lite,
        "--output",
        "l",
        "--use-export-views",
    ]);
    let got = read_exports(&w.join("l"));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2.keys().collect::<Vec<_>>(), vec!["tenant"]);
}
