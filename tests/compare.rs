//! Issue 13: `compare` says whether a target holds what the source says it should, and names every
//! difference: missing and extra keys, and values that differ (with their columns).

use crate::harness::*;

#[test]
fn compare_names_each_planted_difference_on_every_target_and_exits_0_when_in_sync() {
    let w = Workdir::new("compare");
    let pg_src = PgDb::new("cmp_src");
    let src = pg_src.url();
    simulate(&w, &src, 2, 120, 19);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let (pg, my) = (PgDb::new("cmp_t"), MyDb::new("cmp_t"));
    for target in [w.sqlite_url("t.db"), pg.url(), my.url()] {
        w.run(&["load", "--input", "out", "--target", &target]);
        let o = w.run(&["compare", "--source", &src, "--target", &target]);
        assert!(
            stdout(&o).contains("in sync: 15 table(s)"),
            "{target}: {}",
            stdout(&o)
        );

        let first = query_one(&target, "SELECT MIN(interaction_id) FROM interaction_fact");
        let second = query_one(
            &target,
            &format!(
                "SELECT MIN(interaction_id) FROM interaction_fact WHERE interaction_id > {first}"
            ),
        );
        let with_subject = query_one(
            &target,
            &format!(
                "SELECT MIN(interaction_id) FROM interaction_fact \
                 WHERE interaction_id > {second} AND subject IS NOT NULL AND subject <> ''"
            ),
        );
        exec_sql(
            &target,
            &format!("DELETE FROM interaction_fact WHERE interaction_id = {first}"),
        );
        exec_sql(
            &target,
            &format!(
                "UPDATE interaction_fact SET status = status + 1 WHERE interaction_id = {second}"
            ),
        );
        exec_sql(
            &target,
            &format!(
                "UPDATE interaction_fact SET subject = NULL WHERE interaction_id = {with_subject}"
            ),
        );
        exec_sql(&target, "UPDATE tenant SET tenant_name = 'renamed'");
        exec_sql(
            &target,
            "INSERT INTO media_type (media_type_key, create_audit_key) VALUES (999, 1)",
        );
        let o = w.run_code(
            &mut w.command(&["compare", "--source", &src, "--target", &target]),
            5,
        );
        let said = stdout(&o);
        for needle in [
            format!("missing interaction_id={first}"),
            format!("different interaction_id={second} (status)"),
            format!("different interaction_id={with_subject} (subject)"),
            "different tenant_key=1 (tenant_name)".to_string(),
            "extra media_type_key=999".to_string(),
            "3 of 15 table(s) differ".to_string(),
        ] {
            assert!(said.contains(&needle), "{target}: {needle:?} in:\n{said}");
        }
        let o = w.run_code(
            &mut w.command(&[
                "compare",
                "--source",
                &src,
                "--target",
                &target,
                "--json",
                "--table",
                "interaction_fact",
            ]),
            5,
        );
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["in_sync"], false);
        let t = &v["report"]["tables"][0];
        assert_eq!(
            (t["missing"].as_u64(), t["different"].as_u64()),
            (Some(1), Some(2)),
            "{t}"
        );
    }
}
