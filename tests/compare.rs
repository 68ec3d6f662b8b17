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
        // One more row with a numeric(20) and an integer value changed, and a timestamp.
        let third = query_one(
            &target,
            &format!(
                "SELECT MIN(interaction_id) FROM interaction_fact \
                 WHERE interaction_id > {with_subject} AND media_server_ixn_id IS NOT NULL"
            ),
        );
        exec_sql(
            &target,
            &format!(
                "UPDATE interaction_fact SET media_server_ixn_id = media_server_ixn_id + 1, \
                 end_ts = end_ts + 1 WHERE interaction_id = {third}"
            ),
        );
        let day = query_one(&target, "SELECT MIN(date_time_key) FROM date_time");
        exec_sql(
            &target,
            &format!(
                "UPDATE date_time SET cal_date = '2001-02-03 04:05:06' WHERE date_time_key = {day}"
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
            format!("different interaction_id={third} (media_server_ixn_id, end_ts)"),
            format!("different date_time_key={day} (cal_date)"),
            "extra media_type_key=999".to_string(),
            "4 of 15 table(s) differ".to_string(),
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
            (Some(1), Some(3)),
            "{t}"
        );

        // The repair folder: 6 rows to write (a missing row, five with other values), 1 key to
        // delete; checked as any export, loaded after the target's last export, and then in sync.
        let inbox = format!("repair-{}", &target[..5]);
        let o = w.run_code(
            &mut w.command(&[
                "compare", "--source", &src, "--target", &target, "--repair", &inbox,
            ]),
            5,
        );
        let last = query_one(
            &target,
            "SELECT folder FROM gim_export_ledger WHERE folder NOT LIKE '%repair%' ORDER BY hwm_to_audit_key DESC, folder DESC LIMIT 1",
        );
        let repair = format!("{last}_repair_001");
        assert!(
            stdout(&o).contains(&format!("{repair} (6 row(s) to write, 1 key(s) to delete)")),
            "{target}: {}",
            stdout(&o)
        );
        assert_eq!(export_folders(&w.join(&inbox)), vec![repair.clone()]);
        w.run(&["verify", "--input", &inbox]);
        let o = w.run(&["load", "--input", &inbox, "--target", &target]);
        assert!(stdout(&o).contains(&repair), "{target}: {}", stdout(&o));
        let o = w.run(&["compare", "--source", &src, "--target", &target]);
        assert!(
            stdout(&o).contains("in sync: 15 table(s)"),
            "{target} after the repair: {}",
            stdout(&o)
        );
        assert_eq!(
            query_one(
                &target,
                "SELECT COUNT(*) FROM media_type WHERE media_type_key = 999"
            ),
            "0"
        );
        // Loaded again: already applied, nothing to do (exit 3).
        w.run_code(
            &mut w.command(&["load", "--input", &inbox, "--target", &target]),
            3,
        );
        assert_eq!(
            query_one(
                &target,
                &format!("SELECT COUNT(*) FROM gim_export_ledger WHERE folder = '{repair}'")
            ),
            "1"
        );
    }
}

/// A repair folder sits between the export it follows and the next one: the chain goes on after it, a
/// second repair takes the next number, a target that moved past it skips it, and
/// `--repair-keep-extra` leaves extra rows alone.
#[test]
fn a_repair_folder_sits_between_two_exports_and_a_target_that_moved_on_skips_it() {
    let w = Workdir::new("repair_chain");
    let src = w.sqlite_url("src.db");
    let target = w.sqlite_url("t.db");
    simulate(&w, &src, 1, 80, 23);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    w.run(&["load", "--input", "out", "--target", &target]);
    let last = export_folders(&w.join("out")).pop().unwrap();
    exec_sql(&target, "UPDATE tenant SET tenant_name = 'renamed'");
    exec_sql(
        &target,
        "INSERT INTO media_type (media_type_key, create_audit_key) VALUES (999, 1)",
    );

    // Keep extra: the extra row stays (and is still reported), the other difference is repaired.
    let cmd = |extra: &[&str]| {
        let mut a = vec!["compare", "--source", &src, "--target", &target];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let args = cmd(&["--repair", "inbox", "--repair-keep-extra"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    w.run_code(&mut w.command(&args), 5);
    w.run(&["load", "--input", "inbox", "--target", &target]);
    assert_eq!(
        query_one(
            &target,
            "SELECT COUNT(*) FROM media_type WHERE media_type_key = 999"
        ),
        "1"
    );
    assert_eq!(
        query_one(&target, "SELECT MAX(tenant_name) FROM tenant"),
        query_one(&src, "SELECT MAX(tenant_name) FROM tenant")
    );
    let o = w.run_code(
        &mut w.command(&["compare", "--source", &src, "--target", &target]),
        5,
    );
    assert!(
        stdout(&o).contains("extra media_type_key=999")
            && stdout(&o).contains("1 of 15 table(s) differ"),
        "{}",
        stdout(&o)
    );

    // A second repair after the same export takes the next number; the chain then goes on after it.
    let args = cmd(&["--repair", "inbox"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    w.run_code(&mut w.command(&args), 5);
    assert_eq!(
        export_folders(&w.join("inbox")),
        vec![format!("{last}_repair_001"), format!("{last}_repair_002")]
    );
    w.run(&["load", "--input", "inbox", "--target", &target]);
    w.run(&["compare", "--source", &src, "--target", &target]);
    simulate(&w, &src, 1, 80, 23);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let o = w.run(&["load", "--input", "out", "--target", &target]);
    assert!(stdout(&o).contains("applied"), "{}", stdout(&o));
    assert_target_matches_source(&src, &target, &w.join("out"));
    w.run(&["compare", "--source", &src, "--target", &target]);

    // A repair made for an earlier position is skipped, with a warning, by a target that moved on.
    let stale_target = w.sqlite_url("stale.db");
    for f in export_folders(&w.join("out")) {
        if f.as_str() <= last.as_str() {
            copy_dir(&w.join("out").join(&f), &w.join("first").join(&f));
        }
    }
    w.run(&["load", "--input", "first", "--target", &stale_target]);
    exec_sql(&stale_target, "UPDATE tenant SET tenant_name = 'renamed'");
    let args = vec![
        "compare",
        "--source",
        &src,
        "--target",
        &stale_target,
        "--repair",
        "stale-inbox",
    ];
    w.run_code(&mut w.command(&args), 5);
    w.run(&["load", "--input", "out", "--target", &stale_target]);
    let o = w.run_code(
        &mut w.command(&["load", "--input", "stale-inbox", "--target", &stale_target]),
        3,
    );
    assert!(
        stderr(&o).contains("which has moved past it: skipped (run compare --repair again)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        query_one(
            &stale_target,
            "SELECT COUNT(*) FROM gim_export_ledger WHERE folder LIKE '%repair%'"
        ),
        "0"
    );
    // The exporter's own directory: a repair folder written there is not part of its chain.
    let args = vec![
        "compare",
        "--source",
        &src,
        "--target",
        &stale_target,
        "--repair",
        "out",
    ];
    w.run_code(&mut w.command(&args), 5);
    simulate(&w, &src, 1, 80, 23);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    w.run(&["verify", "--input", "out"]);
    w.run(&["load", "--input", "out", "--target", &stale_target]);
    w.run(&["compare", "--source", &src, "--target", &stale_target]);
}

/// A deletion list only counts in a folder that says it is a repair: anywhere else it is refused, and
/// nothing of the folder is applied.
#[test]
fn a_deletion_list_in_a_folder_that_is_not_a_repair_is_refused() {
    let (w, _src, folder) = one_folder("delete_list_outside_repair");
    crate::tamper::rewrite(&folder, crate::tamper::Fix::All, |entries| {
        entries.push((
            "media_type.delete.csv".into(),
            b"media_type_key\n1\n".to_vec(),
        ));
    });
    let target = w.sqlite_url("t.db");
    let o = w.run_code(
        &mut w.command(&[
            "load",
            "--input",
            folder.to_str().unwrap(),
            "--target",
            &target,
        ]),
        5,
    );
    assert!(
        stderr(&o).contains("media_type.delete.csv")
            && stderr(&o).contains("is a list of keys to delete"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        query_one(&target, "SELECT COUNT(*) FROM gim_export_ledger"),
        "0"
    );
}

/// PostgreSQL to PostgreSQL and MariaDB to MariaDB: each database sums key segments of its own rows,
/// and only the ranges whose sums differ are read; the differences found are the same as by reading
/// everything.
#[test]
fn equal_segments_are_confirmed_inside_the_database_and_only_differing_ranges_are_read() {
    let w = Workdir::new("compare_segments");
    let (pg_src, pg_t) = (PgDb::new("seg_src"), PgDb::new("seg_t"));
    let (my_src, my_t) = (MyDb::new("seg_src"), MyDb::new("seg_t"));
    for (src, target, out) in [
        (pg_src.url(), pg_t.url(), "out-pg"),
        (my_src.url(), my_t.url(), "out-my"),
    ] {
        simulate(&w, &src, 2, 300, 31);
        w.run(&["export", "--source", &src, "--output", out, "--catch-up"]);
        w.run(&["load", "--input", out, "--target", &target]);
        let total = query_one(&target, "SELECT COUNT(*) FROM interaction_fact");
        let id = query_one(
            &target,
            "SELECT MAX(interaction_id) FROM interaction_fact WHERE subject IS NOT NULL AND subject <> ''",
        );
        exec_sql(
            &target,
            &format!("UPDATE interaction_fact SET subject = 'changed' WHERE interaction_id = {id}"),
        );
        let o = w.run_code(
            w.command(&["compare", "--source", &src, "--target", &target])
                .env("GIM_EXPORT_LOG", "debug"),
            5,
        );
        assert!(
            stdout(&o).contains(&format!("different interaction_id={id} (subject)"))
                && stdout(&o).contains("1 of 15 table(s) differ"),
            "{src}: {}",
            stdout(&o)
        );
        let line = stderr(&o)
            .lines()
            .find(|l| {
                l.contains("compared by key-segment sums") && l.contains("table=interaction_fact ")
            })
            .unwrap_or_else(|| panic!("{src}: no segment line in:\n{}", stderr(&o)))
            .to_string();
        let read: u64 = line
            .split("rows_read=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("rows_read");
        let total: u64 = total.parse().unwrap();
        assert!(
            read >= 1 && read * 10 < total,
            "{src}: read {read} of {total} rows: {line}"
        );
        // Every other table was confirmed without reading a row.
        assert!(
            stderr(&o)
                .lines()
                .filter(|l| l.contains("compared by key-segment sums")
                    && !l.contains("table=interaction_fact "))
                .all(|l| l.contains("rows_read=0")),
            "{src}: {}",
            stderr(&o)
        );
    }
}

/// Review finding: a repair deleted every extra row, however many; a warehouse that keeps what the
/// Info Mart purged would lose that history. Over 1,000 rows and --max-repair-removal (10%) of a
/// table, compare --repair now refuses and writes nothing.
#[test]
fn a_repair_that_would_delete_a_large_share_of_a_table_is_refused() {
    let w = Workdir::new("repair_removal_limit");
    let src = w.sqlite_url("im.db");
    let target = w.sqlite_url("t.db");
    simulate(&w, &src, 1, 40, 29);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    w.run(&["load", "--input", "out", "--target", &target]);
    exec_sql(
        &target,
        "WITH RECURSIVE c(x) AS (SELECT 100000 UNION ALL SELECT x + 1 FROM c WHERE x < 101200) \
         INSERT INTO media_type (media_type_key, create_audit_key) SELECT x, 1 FROM c",
    );
    let o = w.run_code(
        &mut w.command(&[
            "compare", "--source", &src, "--target", &target, "--repair", "inbox",
        ]),
        2,
    );
    assert!(
        stderr(&o).contains("table media_type would lose 1201 of its 1204 rows")
            && stderr(&o).contains("--repair-keep-extra"),
        "{}",
        stderr(&o)
    );
    assert!(export_folders(&w.join("inbox")).is_empty());
    // Asked for: written.
    w.run_code(
        &mut w.command(&[
            "compare",
            "--source",
            &src,
            "--target",
            &target,
            "--repair",
            "inbox",
            "--max-repair-removal",
            "100",
        ]),
        5,
    );
    w.run(&["load", "--input", "inbox", "--target", &target]);
    w.run(&["compare", "--source", &src, "--target", &target]);
}
