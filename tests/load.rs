//! The loader end to end: every exported source row arrives whole, on every pair of backends; loading
//! twice changes nothing; new exports apply alone; duplicates merge; an older target is migrated.

use crate::harness::*;

fn round_trip(tag: &str, source_pg: bool, target_pg: bool) {
    let w = Workdir::new(tag);
    let src_db = source_pg.then(|| PgDb::new("src"));
    let tgt_db = target_pg.then(|| PgDb::new("tgt"));
    let source = src_db
        .as_ref()
        .map(|d| d.url())
        .unwrap_or_else(|| w.sqlite_url("im.db"));
    let target = tgt_db
        .as_ref()
        .map(|d| d.url())
        .unwrap_or_else(|| w.sqlite_url("target.db"));
    simulate(&w, &source, 2, 300, 31);
    w.run(&[
        "export",
        "--source",
        &source,
        "--output",
        "out",
        "--catch-up",
    ]);
    w.run(&["load", "--input", "out", "--target", &target]);
    assert_target_matches_source(&source, &target, &w.join("out"));

    // Later exports apply alone.
    let before = export_folders(&w.join("out")).len();
    simulate(&w, &source, 1, 300, 31);
    w.run(&[
        "export",
        "--source",
        &source,
        "--output",
        "out",
        "--catch-up",
    ]);
    let after = export_folders(&w.join("out")).len();
    let o = w.run(&["load", "--input", "out", "--target", &target]);
    assert!(
        stdout(&o).contains(&format!("loaded {} folder(s)", after - before))
            && stdout(&o).contains(&format!("{before} already applied")),
        "{}",
        stdout(&o)
    );
    assert_target_matches_source(&source, &target, &w.join("out"));
}

#[test]
fn sqlite_to_sqlite() {
    round_trip("load-ss", false, false);
}
#[test]
fn postgres_to_postgres() {
    round_trip("load-pp", true, true);
}
#[test]
fn sqlite_to_postgres() {
    round_trip("load-sp", false, true);
}
#[test]
fn postgres_to_sqlite() {
    round_trip("load-ps", true, false);
}

#[test]
fn loading_twice_changes_nothing() {
    let w = Workdir::new("load-twice");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 200, 5);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let pg = PgDb::new("twice");
    for target in [w.sqlite_url("t.db"), pg.url()] {
        w.run(&["load", "--input", "out", "--target", &target]);
        let file_before = target
            .starts_with("sqlite")
            .then(|| std::fs::read(w.join("t.db")).unwrap());
        let before = dump_target(&target);
        let ledger_before = dump_table(&target, "gim_export_ledger");
        let again = w.run_code(
            &mut w.command(&["load", "--input", "out", "--target", &target]),
            3,
        );
        assert!(
            stdout(&again).contains("loaded 0 folder(s)"),
            "{}",
            stdout(&again)
        );
        assert_eq!(before, dump_target(&target), "{target}");
        assert_eq!(ledger_before, dump_table(&target, "gim_export_ledger"));
        if let Some(bytes) = file_before {
            assert!(
                bytes == std::fs::read(w.join("t.db")).unwrap(),
                "the SQLite file changed"
            );
        }
    }
}

#[test]
fn duplicate_keys_in_one_csv_merge_to_the_newest() {
    let w = Workdir::new("load-dups");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 100, 8);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let folder = export_folders(&w.join("out"))[0].clone();
    // Add two more versions of the first interaction: an older one and a newer one, out of order.
    crate::tamper::rewrite_entry(
        &w.join("out").join(&folder),
        "interaction_fact.csv",
        |csv| {
            let mut r = csv::Reader::from_reader(csv);
            let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
            let mut rows: Vec<Vec<String>> = r
                .records()
                .map(|x| x.unwrap().iter().map(String::from).collect())
                .collect();
            let n = header.len();
            let mut newer = rows[0].clone();
            let mut older = rows[0].clone();
            newer[10] = "newest subject".into();
            newer[n - 1] = "999999".into(); // update_audit_key
            older[10] = "older subject".into();
            older[n - 1] = "0".into();
            rows.insert(1, newer);
            rows.push(older);
            let mut out = gim_export::format::csv_record(&header);
            for row in &rows {
                out.extend(gim_export::format::csv_record(row));
            }
            out
        },
    );
    w.run(&["verify", "--input", "out"]);
    let pg = PgDb::new("dups");
    for target in [w.sqlite_url("t.db"), pg.url()] {
        w.run(&["load", "--input", "out", "--target", &target]);
        let rows = dump_table(&target, "interaction_fact");
        let first_id = rows
            .iter()
            .map(|r| r[0].parse::<i64>().unwrap())
            .min()
            .unwrap()
            .to_string();
        let row = rows.iter().find(|r| r[0] == first_id).unwrap();
        assert_eq!(row[10], "newest subject", "{target}");
        assert_eq!(rows.iter().filter(|r| r[0] == first_id).count(), 1);
    }
}

#[test]
fn an_older_target_is_migrated_then_loaded() {
    let w = Workdir::new("load-migrate");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 100, 12);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let pg = PgDb::new("migrate");
    // An older target: interaction_fact without subject, and no mediation_segment_fact at all.
    pg.sql(
        "CREATE TABLE interaction_fact (interaction_id numeric(19) PRIMARY KEY, tenant_key integer, \
         interaction_type_key integer, media_type_key integer, start_ts integer, end_ts integer, \
         create_audit_key numeric(19), update_audit_key numeric(19))",
    );
    let o = w.run(&["load", "--input", "out", "--target", &pg.url()]);
    let text = stdout(&o);
    assert!(
        text.contains("migrated added column interaction_fact.subject"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("migrated created ")
            && l.contains(" mediation_segment_fact,")
            && !l.contains(" interaction_fact,")),
        "{text}"
    );
    assert_target_matches_source(&src, &pg.url(), &w.join("out"));

    let o = w.run(&["target-schema", "--target", &pg.url()]);
    assert!(
        stdout(&o).contains("(0 change(s))"),
        "idempotent: {}",
        stdout(&o)
    );
    let printed = w.run(&["target-schema", "--dialect", "sqlite"]);
    assert!(stdout(&printed).contains("CREATE TABLE IF NOT EXISTS interaction_fact ("));
}

#[test]
fn custom_user_data_tables_are_created_from_the_header() {
    let w = Workdir::new("load-custom");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 100, 13);
    runtime().block_on(async {
        let pool = sqlx::SqlitePool::connect(&src).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE IRF_USER_DATA_CUST_2 (INTERACTION_RESOURCE_ID INTEGER PRIMARY KEY, CREATE_AUDIT_KEY INTEGER NOT NULL, \
             UPDATE_AUDIT_KEY INTEGER NOT NULL, CUSTOM_DATA_1 VARCHAR(1024), LOYALTY_TIER VARCHAR(64)); \
             INSERT INTO IRF_USER_DATA_CUST_2 VALUES (1, 2, 2, 'gold, \"vip\"', 'T1'), (2, 3, 3, '', NULL);",
        )
        .execute(&pool)
        .await
        .unwrap();
    });
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let pg = PgDb::new("custom");
    w.run(&["load", "--input", "out", "--target", &pg.url()]);
    assert_eq!(
        dump_table(&pg.url(), "irf_user_data_cust_2"),
        vec![
            vec![
                "1".to_string(),
                "2".into(),
                "2".into(),
                "gold, \"vip\"".into(),
                "T1".into()
            ],
            vec![
                "2".to_string(),
                "3".into(),
                "3".into(),
                "".into(),
                "".into()
            ],
        ]
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM irf_user_data_cust_2 WHERE custom_data_1 IS NULL"),
        "1"
    );
}

/// Found by `make bench`: ledger rows deleted by hand (to load the same folders again) made the next
/// application number one the history of applications already had, and the load failed on a duplicate
/// key. The number now counts past both tables, on every target.
#[test]
fn deleting_ledger_rows_to_reload_does_not_collide_with_the_history_of_applications() {
    let w = Workdir::new("reload-seq");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 60, 3);
    w.run(&["export", "--source", &src, "--output", "out"]);
    let (pg, my) = (PgDb::new("reloadseq"), MyDb::new("reloadseq"));
    for target in [w.sqlite_url("t.db"), pg.url(), my.url()] {
        w.run(&["load", "--input", "out", "--target", &target]);
        exec_sql(&target, "DELETE FROM gim_export_ledger");
        w.run(&["load", "--input", "out", "--target", &target]);
        assert_eq!(
            query_rows(
                &target,
                "SELECT apply_seq FROM gim_export_applied ORDER BY apply_seq"
            ),
            vec![vec!["1".to_string()], vec!["2".to_string()]],
            "{target}"
        );
    }
}
