//! Issue 19, scale: paths that join a stage with a target table must stay linear. Timed figures live
//! in `make bench`; here the plans are checked, which do not depend on a noisy machine.

use gim_export::load::plan::TablePlan;
use gim_export::load::{analyze_for_anti_join_sql, remove_missing_sql};

use crate::harness::*;

/// The plan of a full resync's anti-join as the PostgreSQL loader runs it, on a target that has just
/// taken `rows` rows (its statistics stale, as after a large load) and a stage of the same rows less
/// a few (a temporary table, which never has statistics of its own).
fn anti_join_plan(db: &PgDb, rows: u64) -> String {
    let plan = TablePlan {
        table: "interaction_fact".into(),
        entry: "interaction_fact.csv".into(),
        columns: vec!["interaction_id".into(), "media_name".into()],
        primary_key: vec!["interaction_id".into()],
        version_column: None,
        expected_sha1: String::new(),
        remove_missing: true,
        column_types: vec!["numeric(19)".into(), "varchar(255)".into()],
        declared_rows: None,
    };
    let sql = format!(
        "CREATE TABLE interaction_fact (interaction_id numeric(19) PRIMARY KEY, media_name varchar(255));
         ANALYZE interaction_fact;
         INSERT INTO interaction_fact SELECT g, 'voice' FROM generate_series(1, {rows}) g;
         CREATE TEMP TABLE gx_stage AS SELECT interaction_id, media_name FROM interaction_fact WITH NO DATA;
         INSERT INTO gx_stage SELECT g, 'voice' FROM generate_series(1, {rows}) g WHERE g % 1000 <> 7;
         {analyze};
         EXPLAIN {delete};",
        analyze = analyze_for_anti_join_sql(&plan, "gx_stage"),
        delete = remove_missing_sql(&plan, "gx_stage"),
    );
    // One session: the stage is a temporary table.
    let o = psql(&db.name, &sql);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_full_resync_anti_join_plans_as_a_hash_join_once_both_sides_have_statistics() {
    // Regression: the full resync's DELETE ... WHERE NOT EXISTS (stage) ran as a nested loop over a
    // stage without statistics: 37 s for 51k rows, 144 s for 103k, cancelled after 13 min for 3.2M.
    let db = PgDb::new("antijoin");
    let plan = anti_join_plan(&db, 200_000);
    assert!(
        plan.contains("Hash Anti Join") || plan.contains("Hash Right Anti Join"),
        "expected a hash anti-join:\n{plan}"
    );
    assert!(!plan.contains("Nested Loop"), "a nested loop:\n{plan}");
}

#[test]
fn a_full_resync_into_postgres_gives_the_planner_statistics_of_both_sides_before_its_anti_join() {
    // Regression (issue 19): the stage had no statistics and the target's were stale after its
    // large load, so the planner estimated one row and chose a nested loop: quadratic time. Plain
    // loads run no ANALYZE (autovacuum's does not count here); a full resync runs one on each side.
    let w = Workdir::new("resync-analyze");
    let src = w.sqlite_url("src.db");
    simulate(&w, &src, 2, 200, 31);
    w.run(&["export", "--source", &src, "-o", "out", "--catch-up"]);
    let db = PgDb::new("resyncstats");
    w.run(&["load", "--input", "out", "--target", &db.url()]);
    let analyzed = || {
        db.sql(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'interaction_fact' AND last_analyze IS NOT NULL",
        )
    };
    assert_eq!(analyzed(), "0", "a plain load analyzes nothing");
    w.run(&["export", "--source", &src, "-o", "out", "--full-resync"]);
    w.run(&[
        "load",
        "--input",
        "out",
        "--target",
        &db.url(),
        "--accept-restart",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while analyzed() != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the target was not analyzed before the full resync's anti-join"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_target_matches_source(&src, &db.url(), &w.join("out"));
}

/// A folder for the small-table tests: one simulated day, one export, its `user_data_cust_dim_1.csv`
/// (a small table of text attributes) rewritten through `edit`.
fn small_table_folder(tag: &str, rows: &str) -> (Workdir, PgDb) {
    let (w, _, folder) = one_folder(tag);
    set_dim_rows(&folder, rows);
    (w, PgDb::new(&tag.replace('-', "_")))
}

fn dim_rows(db: &PgDb) -> String {
    db.sql(
        "SELECT id, coalesce(dim_attribute_1, '<null>'), coalesce(dim_attribute_2, '<null>'), \
         coalesce(dim_attribute_3, '<null>') FROM user_data_cust_dim_1 ORDER BY id",
    )
}

/// Issue 19: a 200-table folder paid four round trips per table on PostgreSQL. Small tables are now
/// merged in one batch of `INSERT ... VALUES`; it must read the CSV exactly as `COPY` does: an
/// unquoted empty field is NULL, a quoted one the empty string; quotes, commas, newlines, backslashes
/// and apostrophes are data.
#[test]
fn small_tables_merged_in_one_batch_read_the_csv_as_copy_does() {
    let (w, db) = small_table_folder(
        "small-batch",
        "1,1,1,\"\",,\"say \"\"hi\"\", then\nbye\",,\n2,1,1,O'Brien,back\\slash,\"a,b\",,\n",
    );
    let o = w.run_code(
        w.command(&["load", "--input", "out", "--target", &db.url()])
            .env("GIM_EXPORT_LOG", "debug"),
        0,
    );
    assert!(
        stderr(&o).contains("small table(s) merged in one batch"),
        "the batch was not taken: {}",
        stderr(&o)
    );
    assert_eq!(
        dim_rows(&db),
        "1||<null>|say \"hi\", then\nbye\n2|O'Brien|back\\slash|a,b"
    );
}

/// What the batch cannot take goes the staged way, which dedupes a key given twice (the last line in
/// the file wins) and names the line of a value PostgreSQL refuses.
#[test]
fn small_tables_with_a_repeated_key_or_a_bad_value_fall_back_to_the_staged_merge() {
    let (w, db) = small_table_folder(
        "small-dup",
        "1,1,1,first,,,,\n2,1,1,two,,,,\n1,1,1,second,,,,\n",
    );
    let o = w.run_code(
        w.command(&["load", "--input", "out", "--target", &db.url()])
            .env("GIM_EXPORT_LOG", "debug"),
        0,
    );
    assert!(
        stderr(&o).contains("small-table batch was refused"),
        "{}",
        stderr(&o)
    );
    assert_eq!(dim_rows(&db), "1|second|<null>|<null>\n2|two|<null>|<null>");

    let (w, db) = small_table_folder("small-bad", "1,1,1,ok,,,,\n2,not-a-number,1,bad,,,,\n");
    let o = w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &db.url()]),
        5,
    );
    let err = stderr(&o);
    assert!(
        err.contains("user_data_cust_dim_1")
            && err.contains("line 3")
            && err.contains("not-a-number"),
        "{err}"
    );
    assert_eq!(db.sql("SELECT count(*) FROM gim_export_ledger"), "0");
}

/// Issue 15: a table with no rows yet takes the CSV straight from COPY (no stage, no upsert); a
/// repeated key makes that COPY fail, and the staged path then loads the folder as before (the last
/// line of the key wins).
#[test]
fn a_large_table_copies_straight_into_an_empty_postgres_table_and_falls_back_on_a_repeated_key() {
    let w = Workdir::new("direct-copy");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 3200, 3);
    w.run(&["export", "--source", &src, "--output", "out"]);
    let name = export_folders(&w.join("out"))[0].clone();
    copy_dir(&w.join("out").join(&name), &w.join("dup").join(&name));
    let debug = |target: &str, input: &str| {
        let o = w.run_code(
            w.command(&["load", "--input", input, "--target", target])
                .env("GIM_EXPORT_LOG", "debug"),
            0,
        );
        stderr(&o)
    };
    let plain = PgDb::new("direct");
    let said = debug(&plain.url(), "out");
    assert!(said.contains("rows copied into the empty table"), "{said}");
    let o = w.run(&["compare", "--source", &src, "--target", &plain.url()]);
    assert!(
        stdout(&o).contains("in sync: 15 table(s)"),
        "{}",
        stdout(&o)
    );

    // The last line again, under the same key, with another value.
    let mut last = String::new();
    crate::tamper::rewrite_entry(
        &w.join("dup").join(&name),
        "irf_user_data_cust_1.csv",
        |csv| {
            let text = std::str::from_utf8(csv).unwrap();
            let line = text.lines().last().unwrap();
            let mut fields: Vec<&str> = line.split(',').collect();
            fields[5] = "repeated";
            last = fields[0].to_string();
            format!("{text}{}\n", fields.join(",")).into_bytes()
        },
    );
    let dup = PgDb::new("direct_dup");
    let said = debug(&dup.url(), "dup");
    assert!(said.contains("COPY into the empty table refused"), "{said}");
    assert_eq!(
        dup.sql(&format!(
            "SELECT custom_data_1 FROM irf_user_data_cust_1 WHERE interaction_resource_id = {last}"
        )),
        "repeated"
    );
}

/// Issue 15: loading rows a PostgreSQL target already holds unchanged writes no new row version (a
/// folder loaded again, a re-export's overlap, a full resync), while a changed row is updated.
#[test]
fn postgres_rows_that_did_not_change_are_not_rewritten() {
    let (w, src, _) = one_folder("skip-unchanged");
    let pg = PgDb::new("skip_unchanged");
    w.run(&["load", "--input", "out", "--target", &pg.url()]);
    let versions = || {
        pg.sql("SELECT string_agg(xmin::text, ',' ORDER BY interaction_id) FROM interaction_fact")
    };
    let before = versions();
    let changed = pg.sql("SELECT min(interaction_id) FROM interaction_fact");
    exec_sql(
        &pg.url(),
        &format!(
            "UPDATE interaction_fact SET status = status + 1 WHERE interaction_id = {changed}; \
             DELETE FROM gim_export_ledger"
        ),
    );
    let touched = versions();
    w.run(&["load", "--input", "out", "--target", &pg.url()]);
    let after = versions();
    let differ = |a: &str, b: &str| {
        a.split(',')
            .zip(b.split(','))
            .filter(|(x, y)| x != y)
            .count()
    };
    assert_eq!(differ(&before, &touched), 1, "the hand-made change");
    assert_eq!(
        differ(&touched, &after),
        1,
        "only the changed row is written again"
    );
    let o = w.run(&["compare", "--source", &src, "--target", &pg.url()]);
    assert!(
        stdout(&o).contains("in sync: 15 table(s)"),
        "{}",
        stdout(&o)
    );
}
