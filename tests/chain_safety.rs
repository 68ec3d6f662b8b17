//! Issue 18, chain safety: restarts, re-exports and full resyncs that meet each other, an in-flight
//! key or a receiver that is behind never lose, resurrect or strand a row. One regression test per
//! defect, each from the reproduction on the embedded default.

use std::fs;

use crate::harness::*;

/// The set-up: two days that leave audit key 192 in flight, exported and loaded.
fn set_up(w: &Workdir) -> (String, String) {
    let src = w.sqlite_url("src.db");
    w.run(&[
        "simulate",
        "--source",
        &src,
        "--days",
        "2",
        "--seed",
        "3",
        "--interactions-per-day",
        "300",
    ]);
    w.run(&["export", "--source", &src, "--catch-up", "-o", "out"]);
    let target = w.sqlite_url("t.db");
    w.run(&["load", "--input", "out", "--target", &target]);
    (src, target)
}

fn status_json(w: &Workdir, src: &str) -> serde_json::Value {
    let o = w.run_code(
        &mut w.command(&["status", "-o", "out", "--source", src, "--json"]),
        0,
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Records a restart as an interrupted run would have left it in `out`.
fn write_intent(
    w: &Workdir,
    kind: &str,
    generation: u32,
    after: gim_export::audit::HighWaterMark,
    superseded_dir: &str,
) {
    let intent = gim_export::outdir::RestartIntent {
        kind: kind.into(),
        generation,
        after_audit_key: after.audit_key,
        after_created_ts: after.created_ts,
        start_ts: None,
        keep_through: None,
        boundary_xml: None,
        superseded_dir: superseded_dir.into(),
        carried_pending: None,
        reason: None,
    };
    fs::write(
        w.join("out").join(gim_export::outdir::RESTART_FILE),
        serde_json::to_string(&intent).unwrap(),
    )
    .unwrap();
}

#[test]
fn two_full_resyncs_in_one_second_do_not_block_the_output_directory() {
    // Regression: the second one failed with "superseded-<second>/export_...: Directory not
    // empty", and every later run exited 7 while status said "Ready to start".
    let w = Workdir::new("resync-twice");
    let (src, target) = set_up(&w);
    for _ in 0..3 {
        w.run(&["export", "--source", &src, "--full-resync", "-o", "out"]);
    }
    w.run_code(
        &mut w.command(&["export", "--source", &src, "-o", "out"]),
        3,
    );
    let v = status_json(&w, &src);
    assert_eq!(v["state"], "Ready to start", "{v}");
    let aside: Vec<String> = fs::read_dir(w.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("superseded-"))
        .collect();
    assert_eq!(aside.len(), 3, "one place per restart: {aside:?}");
    w.run(&[
        "load",
        "--input",
        "out",
        "--target",
        &target,
        "--accept-restart",
    ]);
    assert_target_matches_source(&src, &target, &w.join("out"));
}

#[test]
fn an_interrupted_restart_into_a_taken_name_is_finished_by_the_next_run() {
    // Regression: a restart killed while moving folders aside and run again within the same second
    // (a supervisor's retry) met its own folders in the superseded directory and failed for good.
    let w = Workdir::new("restart-retry");
    let (src, _) = set_up(&w);
    w.run(&["export", "--source", &src, "--full-resync", "-o", "out"]);
    let taken = fs::read_dir(w.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("superseded-"))
        .unwrap();
    // What a run of an older version, killed after recording its intent, leaves: an intent whose
    // superseded directory already holds a folder of the name it is about to move there.
    let tip = export_folders(&w.join("out")).pop().unwrap();
    fs::create_dir_all(w.join("out").join(&taken).join(&tip)).unwrap();
    fs::write(w.join("out").join(&taken).join(&tip).join("x"), "x").unwrap();
    let name = gim_export::format::ExportName::parse(&tip).unwrap();
    let hwm = gim_export::outdir::read_meta(&w.join("out").join(&tip), &name)
        .unwrap()
        .hwm_to;
    write_intent(&w, "full-resync", 2, hwm, &taken);
    let v = status_json(&w, &src);
    assert!(
        v["restart_under_way"]
            .as_str()
            .unwrap()
            .contains("full-resync"),
        "{v}"
    );
    w.run(&["export", "--source", &src, "-o", "out"]);
    assert!(!w.join("out/.gim-export.restart.json").exists());
    w.run(&["verify", "--input", "out"]);
}

#[test]
fn status_says_when_the_directory_is_blocked_why_and_what_to_run() {
    let w = Workdir::new("blocked");
    let (src, _) = set_up(&w);
    // A restart whose folders cannot be moved aside (its superseded directory is a file).
    fs::write(w.join("out/superseded-blocker"), "not a directory").unwrap();
    let after = gim_export::audit::HighWaterMark {
        audit_key: 193,
        created_ts: 0,
    };
    write_intent(&w, "restart", 1, after, "superseded-blocker");
    w.run_code(
        &mut w.command(&["export", "--source", &src, "-o", "out"]),
        7,
    );
    let o = w.run(&["status", "-o", "out", "--source", &src]);
    let out = stdout(&o);
    assert!(out.contains("state:        Blocked"), "{out}");
    assert!(
        out.contains(".gim-export.restart.json") && out.contains("run export again"),
        "{out}"
    );
    // Fixed by hand, the next run finishes the restart.
    fs::remove_file(w.join("out/superseded-blocker")).unwrap();
    w.run(&["export", "--source", &src, "-o", "out", "--catch-up"]);
    assert_eq!(status_json(&w, &src)["state"], "Ready to start");
}

/// Deletes five rows of interaction_fact in the source.
fn delete_five(src: &str) {
    exec_sql(
        src,
        "DELETE FROM INTERACTION_FACT WHERE INTERACTION_ID IN \
         (SELECT INTERACTION_ID FROM INTERACTION_FACT ORDER BY INTERACTION_ID LIMIT 5)",
    );
}

#[test]
fn deletions_reach_a_receiver_that_missed_a_full_resync_replaced_by_a_reexport() {
    // Regression: the re-export moved the full resync aside, and a receiver that had not loaded it
    // loaded the new chain, exited 0, and kept the 5 deleted rows for ever.
    let w = Workdir::new("resync-then-reexport");
    let (src, target) = set_up(&w);
    delete_five(&src);
    w.run(&["export", "--source", &src, "--full-resync", "-o", "out"]);
    w.run(&[
        "export",
        "--source",
        &src,
        "--reexport-last",
        "1d",
        "-o",
        "out",
    ]);
    w.run(&[
        "load",
        "--input",
        "out",
        "--target",
        &target,
        "--accept-restart",
    ]);
    assert_target_matches_source(&src, &target, &w.join("out"));
}

#[test]
fn deletions_reach_a_receiver_that_missed_a_full_resync_replaced_by_a_restart() {
    let w = Workdir::new("resync-then-restart");
    let (src, target) = set_up(&w);
    delete_five(&src);
    w.run(&["export", "--source", &src, "--full-resync", "-o", "out"]);
    // From a start date, a new chain cannot carry the deletions: refused, nothing moved.
    let before = tree(&w.join("out"));
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--restart",
            "--start-date",
            "2024-01-02",
            "-o",
            "out",
        ]),
        2,
    );
    assert!(stderr(&o).contains("full resync"), "{}", stderr(&o));
    assert_same_tree(&before, &tree(&w.join("out")), "refused restart");
    w.run(&[
        "export",
        "--source",
        &src,
        "--restart",
        "--catch-up",
        "-o",
        "out",
    ]);
    w.run(&[
        "load",
        "--input",
        "out",
        "--target",
        &target,
        "--accept-restart",
    ]);
    assert_target_matches_source(&src, &target, &w.join("out"));
}

/// Rows of `table` whose create or update audit key is `key`, keyed by their first column.
fn rows_of_key(url: &str, table: &str, key: i64) -> Vec<Vec<String>> {
    let def = sim_table(table).unwrap();
    let at = |name: &str| def.columns.iter().position(|c| c.name == name);
    let (c, u) = (at("create_audit_key").unwrap(), at("update_audit_key"));
    let mut rows: Vec<Vec<String>> = dump_table(url, table)
        .into_iter()
        .filter(|r| r[c] == key.to_string() || u.is_some_and(|u| r[u] == key.to_string()))
        .collect();
    rows.sort();
    rows
}

#[test]
fn an_in_flight_key_of_the_old_chain_is_exported_by_a_restart_from_a_later_start() {
    // Regression: after a restart from a later start time, the rows of key 192 (in flight when the
    // old chain ended) were in neither chain.
    let w = Workdir::new("restart-in-flight");
    let (src, target) = set_up(&w);
    w.run(&[
        "simulate",
        "--source",
        &src,
        "--days",
        "1",
        "--seed",
        "3",
        "--interactions-per-day",
        "300",
    ]);
    w.run(&[
        "export",
        "--source",
        &src,
        "--restart",
        "--start-date",
        "2024-01-02T23:50:00Z",
        "--catch-up",
        "-o",
        "out",
    ]);
    // Regression: status counted the settled keys whose data lies before the start as behind.
    let v = status_json(&w, &src);
    assert_eq!(v["behind_audit_keys"], 0, "{v}");
    w.run(&[
        "load",
        "--input",
        "out",
        "--target",
        &target,
        "--accept-restart",
    ]);
    let mut compared = 0;
    for table in [
        "interaction_resource_fact",
        "irf_user_data_cust_1",
        "mediation_segment_fact",
    ] {
        let expected = rows_of_key(&src, table, 192);
        compared += expected.len();
        assert_eq!(rows_of_key(&target, table, 192), expected, "{table}");
    }
    assert!(compared > 0, "key 192 has rows in these tables");
}

#[test]
fn a_full_resync_killed_at_any_write_leaves_a_complete_loadable_chain_at_the_top() {
    // Regression: a --full-resync killed after moving the old folders aside left the top level with
    // no complete chain until the next run; a receiver mirroring it (rsync --delete, an S3 sync)
    // deleted its copies.
    use gim_export::package::ABORT_AFTER_ENV;
    let w = Workdir::new("resync-crash");
    let src = w.sqlite_url("src.db");
    simulate(&w, &src, 3, 60, 75);
    w.run(&["export", "--source", &src, "--output", "base", "--catch-up"]);
    let mut aborted = 0;
    for n in 1u32..=14 {
        let _ = fs::remove_dir_all(w.join("out"));
        fs::create_dir(w.join("out")).unwrap();
        for f in export_folders(&w.join("base")) {
            copy_dir(&w.join("base").join(&f), &w.join("out").join(&f));
        }
        fs::copy(
            w.join("base/.gim-export.state"),
            w.join("out/.gim-export.state"),
        )
        .unwrap();
        let o = w
            .command(&[
                "export",
                "--source",
                &src,
                "--output",
                "out",
                "--full-resync",
            ])
            .env(ABORT_AFTER_ENV, n.to_string())
            .output()
            .unwrap();
        if o.status.success() {
            break;
        }
        aborted += 1;
        // What a mirror would copy now: the top level alone, loaded into an empty receiver.
        let mirror = format!("mirror{n}");
        fs::create_dir(w.join(&mirror)).unwrap();
        for f in export_folders(&w.join("out")) {
            copy_dir(&w.join("out").join(&f), &w.join(&mirror).join(&f));
        }
        assert!(
            !export_folders(&w.join(&mirror)).is_empty(),
            "killed at write {n}: the top level holds no export"
        );
        let target = w.sqlite_url(&format!("mirror{n}.db"));
        w.run(&[
            "load",
            "--input",
            &mirror,
            "--target",
            &target,
            "--accept-restart",
        ]);
        assert_target_matches_source(&src, &target, &w.join(&mirror));
        // The next plain run finishes the resync; the mirror's receiver follows.
        let o = w
            .command(&["export", "--source", &src, "--output", "out", "--catch-up"])
            .output()
            .unwrap();
        assert!(matches!(o.status.code(), Some(0 | 3)), "{}", stderr(&o));
        assert!(!w.join("out/.gim-export.restart.json").exists());
        let o = w
            .command(&[
                "load",
                "--input",
                "out",
                "--target",
                &target,
                "--accept-restart",
            ])
            .output()
            .unwrap();
        assert!(matches!(o.status.code(), Some(0 | 3)), "{}", stderr(&o));
        assert_target_matches_source(&src, &target, &w.join("out"));
    }
    assert!(aborted >= 3, "only {aborted} kill points hit");
}

#[test]
fn a_folder_applied_again_after_a_restart_keeps_both_applications_in_the_history() {
    // Regression: the ledger's key is the folder name, so a folder of the same name applied again
    // after a restart overwrote the record of the first application.
    let w = Workdir::new("applied-history");
    let (src, target) = set_up(&w);
    let tip = export_folders(&w.join("out")).pop().unwrap();
    w.run(&["export", "--source", &src, "--full-resync", "-o", "out"]);
    assert_eq!(
        export_folders(&w.join("out")),
        vec![tip.clone()],
        "same name"
    );
    w.run(&[
        "load",
        "--input",
        "out",
        "--target",
        &target,
        "--accept-restart",
    ]);
    assert_eq!(
        query_one(
            &target,
            &format!("SELECT COUNT(*) FROM gim_export_applied WHERE folder = '{tip}'")
        ),
        "2"
    );
    assert_eq!(
        query_one(
            &target,
            "SELECT group_concat(chain_generation, ',') FROM (SELECT chain_generation FROM gim_export_applied ORDER BY apply_seq)"
        ),
        "0,0,0,1"
    );
    assert_eq!(
        query_one(&target, "SELECT COUNT(*) FROM gim_export_ledger"),
        "3"
    );
}

#[test]
fn simulate_killed_half_way_adds_nothing() {
    // Regression: simulate committed each ETL run as it went, so a call that failed half-way left
    // part of its days behind.
    let w = Workdir::new("simulate-atomic");
    let sqlite = w.sqlite_url("src.db");
    let pg = PgDb::new("simatomic");
    for url in [sqlite, pg.url()] {
        simulate(&w, &url, 1, 50, 5);
        let count = |url: &str| {
            [
                query_one(url, "SELECT COUNT(*) FROM CTL_AUDIT_LOG"),
                query_one(url, "SELECT COUNT(*) FROM INTERACTION_FACT"),
                query_one(url, "SELECT COUNT(*) FROM SM_RES_STATE_FACT"),
            ]
        };
        let before = count(&url);
        let mut child = w
            .command(&[
                "simulate",
                "--source",
                &url,
                "--days",
                "30",
                "--interactions-per-day",
                "3000",
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "{url}: simulate finished before it could be killed; give it more work"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(count(&url), before, "{url}: a killed call adds nothing");
        simulate(&w, &url, 1, 50, 5);
        assert_ne!(count(&url), before, "{url}: the next call adds its day");
    }
}

/// Issue 13: `export --resync-on-broken-chain` starts a full resync instead of failing when the chain
/// cannot be continued (the newest folder unreadable, a pending key purged from CTL_AUDIT_LOG, the
/// chain gone from the directory), says why in the folder, the run record and `status`, and a
/// receiver that accepts the restart ends equal to the source.
#[test]
fn resync_on_broken_chain_heals_a_damaged_folder_a_purged_pending_key_and_a_lost_chain() {
    let w = Workdir::new("self-heal");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 150, 27);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let target = w.sqlite_url("t.db");
    w.run(&["load", "--input", "out", "--target", &target]);
    let newest_reason = |w: &Workdir| {
        let newest = export_folders(&w.join("out")).pop().unwrap();
        let xml = std::fs::read_to_string(
            w.join("out")
                .join(&newest)
                .join(format!("{newest}.extracted.xml")),
        )
        .unwrap();
        assert!(xml.contains("kind=\"full-resync\""), "{xml}");
        xml
    };
    let heal = |w: &Workdir, needle: &str, target: &str| {
        let o = w.run(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--resync-on-broken-chain",
        ]);
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
        assert!(newest_reason(w).contains(needle), "the folder says why");
        let run = std::fs::read_to_string(w.join("out/.gim-export.last-run.json")).unwrap();
        assert!(
            run.contains("full resync started") && run.contains(needle),
            "{run}"
        );
        let o = w.run(&["status", "--output", "out"]);
        assert!(
            stdout(&o).contains("resync:") && stdout(&o).contains(needle),
            "{}",
            stdout(&o)
        );
        w.run(&[
            "load",
            "--input",
            "out",
            "--target",
            target,
            "--accept-restart",
        ]);
        // Every row of the source, as the full resync carries them (a purged key's rows too).
        let o = w.run(&["compare", "--source", &src, "--target", target]);
        assert!(
            stdout(&o).contains("in sync: 15 table(s)"),
            "{}",
            stdout(&o)
        );
    };

    // 1. The newest folder's XML is damaged: a plain run stops, a healing one moves it aside.
    let newest = export_folders(&w.join("out")).pop().unwrap();
    std::fs::write(
        w.join("out")
            .join(&newest)
            .join(format!("{newest}.extracted.xml")),
        "<export",
    )
    .unwrap();
    let o = w
        .command(&["export", "--source", &src, "--output", "out"])
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "a damaged chain must not be continued silently"
    );
    heal(&w, "could not be read", &target);
    let broken: Vec<_> = std::fs::read_dir(w.join("out"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("broken-"))
        .collect();
    assert_eq!(broken.len(), 1, "the damaged folder is kept aside");

    // 2. A key in flight at the tip is purged from CTL_AUDIT_LOG before it settles.
    simulate(&w, &src, 1, 150, 27);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let newest = export_folders(&w.join("out")).pop().unwrap();
    let xml = std::fs::read_to_string(
        w.join("out")
            .join(&newest)
            .join(format!("{newest}.extracted.xml")),
    )
    .unwrap();
    let pending = xml
        .split("<pending-audit-keys>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .expect("the simulated tip has a key in flight")
        .to_string();
    exec_sql(
        &src,
        &format!("DELETE FROM ctl_audit_log WHERE audit_key IN ({pending})"),
    );
    heal(&w, "no longer in CTL_AUDIT_LOG", &target);

    // 3. The chain is gone from the directory, its state file too (the run record stays).
    for f in export_folders(&w.join("out")) {
        std::fs::remove_dir_all(w.join("out").join(f)).unwrap();
    }
    let _ = std::fs::remove_file(w.join("out").join(gim_export::outdir::STATE_FILE));
    // A lost chain cannot say where it took over: a receiver of the old chain refuses it (nothing
    // is applied there, a person decides); a new receiver takes it whole.
    heal(&w, "the chain was lost", &w.sqlite_url("fresh.db"));
    let o = w.run_code(
        &mut w.command(&[
            "load",
            "--input",
            "out",
            "--target",
            &target,
            "--accept-restart",
        ]),
        5,
    );
    assert!(stderr(&o).contains("does not fit"), "{}", stderr(&o));
}
