//! A lower audit key that commits after a higher one was exported: its rows come in a later export.

use crate::harness::*;

#[test]
fn rows_of_a_key_that_settles_late_appear_in_a_later_export() {
    let w = Workdir::new("out-of-order");
    let src = w.sqlite_url("im.db");
    let out = w.run(&[
        "simulate",
        "--source",
        &src,
        "--days",
        "1",
        "--interactions-per-day",
        "200",
        "--seed",
        "11",
    ]);
    // The simulator leaves the second-to-last key in flight below a settled one.
    let text = stdout(&out);
    let in_flight: i64 = text
        .split("in flight: [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no in-flight key reported: {text}"));
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let first = read_exports(&w.join("out"));
    let (_, last_meta, _) = first.last().unwrap();
    assert!(
        last_meta
            .audit_keys
            .as_ref()
            .unwrap()
            .contains(in_flight + 1),
        "the higher key is exported"
    );
    assert!(
        last_meta
            .pending_audit_keys
            .as_ref()
            .unwrap()
            .contains(in_flight),
        "the lower key is owed"
    );
    let ck = |rows: &[(
        String,
        gim_export::format::ExportMetadata,
        std::collections::BTreeMap<String, CsvTable>,
    )],
              key: i64| {
        rows.iter()
            .flat_map(|(_, _, t)| t.values())
            .map(|t| {
                let c = t.col("create_audit_key");
                t.rows.iter().filter(|r| r[c] == key.to_string()).count()
            })
            .sum::<usize>()
    };
    assert_eq!(
        ck(&first, in_flight),
        0,
        "rows of an in-flight key were exported"
    );

    // The next simulated day settles the lower key, with a few last changes.
    w.run(&[
        "simulate",
        "--source",
        &src,
        "--days",
        "1",
        "--interactions-per-day",
        "200",
        "--seed",
        "11",
    ]);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let all = read_exports(&w.join("out"));
    let later = &all[first.len()..];
    assert!(!later.is_empty());
    assert!(
        later
            .iter()
            .any(|(_, m, _)| m.audit_keys.as_ref().unwrap().contains(in_flight)),
        "the late key is in a later export"
    );
    assert!(ck(later, in_flight) > 0, "its rows are in a later export");
    // Its last changes (rows it updated that the higher key had created) come too.
    let updated_by_late: usize = later
        .iter()
        .filter_map(|(_, _, t)| t.get("irf_user_data_cust_1"))
        .map(|t| {
            let (c, u) = (t.col("create_audit_key"), t.col("update_audit_key"));
            t.rows
                .iter()
                .filter(|r| r[u] == in_flight.to_string() && r[c] == (in_flight + 1).to_string())
                .count()
        })
        .sum();
    assert!(
        updated_by_late > 0,
        "rows updated by the late key are re-exported"
    );
    w.run(&["verify", "--input", "out"]);
}
