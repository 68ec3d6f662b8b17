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
