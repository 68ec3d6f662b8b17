//! Restarts, re-exports and resyncs: a new chain replaces the folders of the old one, the loader
//! applies it over what it already loaded, and a full resync removes rows the source deleted.

use std::fs;
use std::path::Path;

use crate::harness::*;

fn superseded_dirs(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("superseded-"))
        .collect();
    v.sort();
    v
}

/// `YYYY-MM-DD` of an export folder's max-data-ts.
fn folder_date(folder: &str) -> String {
    let parts: Vec<&str> = folder.split('_').collect();
    format!("{}-{}-{}", parts[2], parts[3], parts[4])
}

/// The subject of one interaction, changed in place at the source as a repair would (audit keys
/// untouched, so only a re-export carries it).
fn repair_subject(src: &str, interaction_id: &str, subject: &str) {
    exec_sql(
        src,
        &format!("UPDATE interaction_fact SET subject = '{subject}' WHERE interaction_id = {interaction_id}"),
    );
}

#[test]
fn start_date_on_a_chain_needs_restart_which_starts_a_new_chain_the_loader_applies() {
    let w = Workdir::new("restart");
    let src = w.sqlite_url("im.db");
    let tgt = w.sqlite_url("target.db");
    simulate(&w, &src, 3, 120, 71);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    w.run(&["load", "--input", "out", "--target", &tgt]);
    let old = export_folders(&w.join("out"));
    assert!(old.len() >= 3, "{old:?}");
    let day2 = folder_date(&old[1]);

    // --start-date alone on a directory with exports is refused, naming the way out.
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--start-date",
            &day2,
        ]),
        2,
    );
    assert!(stderr(&o).contains("--restart"), "{}", stderr(&o));
    assert_eq!(export_folders(&w.join("out")), old, "nothing moved");

    // A repair at the source of a row from day 2 onwards, then the restart from day 2.
    let (_, tables) = read_folder(&w.join("out").join(&old[2]));
    let ixn = &tables["interaction_fact"];
    let id = ixn.rows[0][ixn.col("interaction_id")].clone();
    repair_subject(&src, &id, "repaired by restart");
    let o = w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--restart",
        "--start-date",
        &day2,
        "--catch-up",
    ]);
    assert!(stdout(&o).contains("published"), "{}", stdout(&o));
    let aside = superseded_dirs(&w.join("out"));
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        export_folders(&w.join("out").join(&aside[0])),
        old,
        "every folder of the old chain is moved aside, none deleted"
    );
    let new = read_exports(&w.join("out"));
    assert!(!new.is_empty());
    let first = &new[0].1;
    let restart = first
        .restart
        .as_ref()
        .expect("the first folder says it restarts the chain");
    assert_eq!(restart.kind.as_str(), "restart");
    let old_tip = read_folder(&w.join("out").join(&aside[0]).join(old.last().unwrap())).0;
    assert_eq!(restart.after, old_tip.hwm_to);
    assert!(new.iter().all(|(_, m, _)| m.generation == 1));
    assert!(new[1..].iter().all(|(_, m, _)| m.restart.is_none()));
    assert_eq!(first.start_ts, Some(first.max_data_ts_from.unwrap()));
    assert!(!w.join("out/.gim-export.restart.json").exists());
    w.run(&["verify", "--input", "out"]);

    // The loader applies the new chain over the old one, when told to: a generation switch is
    // refused until then, naming what it would replace, and nothing of it is applied.
    let o = w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &tgt]),
        5,
    );
    assert!(
        stderr(&o).contains("--accept-restart") && stderr(&o).contains("generation 1"),
        "{}",
        stderr(&o)
    );
    let o = w.run(&[
        "load",
        "--input",
        "out",
        "--target",
        &tgt,
        "--accept-restart",
    ]);
    assert!(stdout(&o).contains("applied"), "{}", stdout(&o));
    assert_eq!(
        query_one(
            &tgt,
            &format!("SELECT subject FROM interaction_fact WHERE interaction_id = {id}")
        ),
        "repaired by restart"
    );
    w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &tgt]),
        3,
    );

    // The chain goes on from the new one.
    simulate(&w, &src, 1, 120, 71);
    w.run(&["export", "--source", &src, "--output", "out"]);
    let after = read_exports(&w.join("out"));
    let last = &after.last().unwrap().1;
    assert_eq!(last.generation, 1);
    assert_eq!(last.hwm_from, new.last().unwrap().1.hwm_to);
    w.run(&["load", "--input", "out", "--target", &tgt]);

    // A fresh receiver given both chains in one inbox ends up with the same data.
    let inbox = w.join("inbox");
    fs::create_dir(&inbox).unwrap();
    for dir in [w.join("out").join(&aside[0]), w.join("out")] {
        for f in export_folders(&dir) {
            copy_dir(&dir.join(&f), &inbox.join(&f));
        }
    }
    let fresh = w.sqlite_url("fresh.db");
    w.run(&[
        "load",
        "--input",
        "inbox",
        "--target",
        &fresh,
        "--accept-restart",
    ]);
    assert_eq!(dump_target(&fresh), dump_target(&tgt));
}

#[test]
fn reexport_last_replaces_the_tail_and_loads_over_what_was_loaded() {
    let w = Workdir::new("reexport");
    let db = PgDb::new("reexport");
    let src = w.sqlite_url("im.db");
    let tgt = db.url();
    simulate(&w, &src, 4, 120, 72);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    w.run(&["load", "--input", "out", "--target", &tgt]);
    let old = export_folders(&w.join("out"));
    let old_tree = tree(&w.join("out"));

    // A row of the newest day repaired at the source.
    let (_, tables) = read_folder(&w.join("out").join(old.last().unwrap()));
    let ixn = &tables["interaction_fact"];
    let id = ixn.rows[0][ixn.col("interaction_id")].clone();
    repair_subject(&src, &id, "repaired, sent again");

    // Dry run first: plans, moves nothing.
    let o = w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--reexport-last",
        "2d",
        "-n",
    ]);
    assert!(stdout(&o).contains("would publish"), "{}", stdout(&o));
    assert_eq!(tree(&w.join("out")), old_tree);

    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--reexport-last",
        "2d",
    ]);
    let aside = superseded_dirs(&w.join("out"));
    assert_eq!(aside.len(), 1);
    let moved = export_folders(&w.join("out").join(&aside[0]));
    let now = read_exports(&w.join("out"));
    let kept: Vec<&String> = old.iter().filter(|f| !moved.contains(f)).collect();
    // Two days back: the folders of the last two days were replaced, those before are untouched.
    assert!(
        moved.len() >= 2 && moved.len() < old.len(),
        "moved {moved:?} of {old:?}"
    );
    for f in &kept {
        let a: Vec<_> = tree(&w.join("out").join(f)).into_values().collect();
        let b: Vec<_> = tree(&w.join("out").join(&aside[0]).join(f))
            .into_values()
            .collect();
        assert!(b.is_empty(), "{f} was kept, not moved");
        assert!(!a.is_empty());
    }
    let regen: Vec<_> = now.iter().filter(|(_, m, _)| m.generation == 1).collect();
    assert!(!regen.is_empty());
    let first = &regen[0].1;
    assert_eq!(first.restart.as_ref().unwrap().kind.as_str(), "reexport");
    let boundary = &now.iter().rfind(|(_, m, _)| m.generation == 0).unwrap().1;
    assert_eq!(
        first.hwm_from, boundary.hwm_to,
        "the re-export continues the kept chain"
    );
    assert!(
        regen.last().unwrap().1.hwm_to.audit_key
            >= read_folder(&w.join("out").join(&aside[0]).join(moved.last().unwrap()))
                .0
                .hwm_to
                .audit_key,
        "the re-export reaches at least where the old chain ended"
    );
    w.run(&["verify", "--input", "out"]);

    // Folder names can repeat the replaced ones; the loader tells them apart by their checksum.
    let o = w.run(&[
        "load",
        "--input",
        "out",
        "--target",
        &tgt,
        "--accept-restart",
    ]);
    let applied = stdout(&o).matches("applied export_").count();
    assert_eq!(applied, regen.len(), "{}", stdout(&o));
    assert_eq!(
        query_one(
            &tgt,
            &format!("SELECT subject FROM interaction_fact WHERE interaction_id = {id}")
        ),
        "repaired, sent again"
    );
    w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &tgt]),
        3,
    );

    // The whole target equals a fresh load of the new chain.
    let fresh = w.sqlite_url("fresh.db");
    w.run(&[
        "load",
        "--input",
        "out",
        "--target",
        &fresh,
        "--accept-restart",
    ]);
    assert_eq!(dump_target(&fresh), dump_target(&tgt));

    // Nothing to re-export on an empty directory.
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "empty",
            "--reexport-last",
            "1d",
        ]),
        2,
    );
    assert!(
        stderr(&o).contains("nothing to re-export"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn full_resync_removes_rows_deleted_at_the_source() {
    let w = Workdir::new("full-resync");
    let db = PgDb::new("full");
    let src = db.url();
    let tgt = w.sqlite_url("target.db");
    simulate(&w, &src, 2, 120, 73);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    w.run(&["load", "--input", "out", "--target", &tgt]);

    let gone = query_one(&tgt, "SELECT MIN(interaction_id) FROM interaction_fact");
    let kept = query_one(&tgt, "SELECT MAX(interaction_id) FROM interaction_fact");
    assert!(!gone.is_empty() && gone != kept);
    let before = query_one(&tgt, "SELECT COUNT(*) FROM interaction_fact");
    // Deleted at the source (a purge, a cleanup): only a full resync can tell the target.
    exec_sql(
        &src,
        &format!(
            "DELETE FROM interaction_fact WHERE interaction_id = {gone}; \
             DELETE FROM user_data_cust_dim_1; \
             UPDATE interaction_fact SET subject = 'still here' WHERE interaction_id = {kept};"
        ),
    );
    let dim_rows = query_one(&tgt, "SELECT COUNT(*) FROM user_data_cust_dim_1");
    assert_ne!(
        dim_rows, "0",
        "the target holds rows of the table emptied at the source"
    );

    let o = w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--full-resync",
    ]);
    assert!(stdout(&o).contains("published"), "{}", stdout(&o));
    let now = read_exports(&w.join("out"));
    assert_eq!(now.len(), 1, "one folder holds everything");
    let (_, meta, tables) = &now[0];
    assert_eq!(meta.restart.as_ref().unwrap().kind.as_str(), "full-resync");
    let full = meta.full_tables.clone().unwrap();
    assert!(full.contains(&"interaction_fact".to_string()));
    assert!(full.contains(&"user_data_cust_dim_1".to_string()));
    assert!(
        !tables.contains_key("user_data_cust_dim_1"),
        "an empty table has no file"
    );
    w.run(&["verify", "--input", "out"]);

    // Emptying a table is more than the default cap on what a resync may remove: refused, nothing
    // of the folder applied, until the operator says the source really lost those rows.
    let o = w.run_code(
        &mut w.command(&[
            "load",
            "--input",
            "out",
            "--target",
            &tgt,
            "--accept-restart",
        ]),
        5,
    );
    let err = stderr(&o);
    assert!(
        err.contains("user_data_cust_dim_1") && err.contains("--max-resync-removal"),
        "{err}"
    );
    assert_eq!(
        query_one(&tgt, "SELECT COUNT(*) FROM interaction_fact"),
        before
    );
    w.run(&[
        "load",
        "--input",
        "out",
        "--target",
        &tgt,
        "--max-resync-removal",
        "100",
        "--accept-restart",
    ]);
    let removed = query_one(
        &tgt,
        "SELECT removed_counts FROM gim_export_ledger WHERE removed_counts IS NOT NULL",
    );
    assert!(removed.contains("\"interaction_fact\":1"), "{removed}");
    assert_eq!(
        query_one(
            &tgt,
            &format!("SELECT COUNT(*) FROM interaction_fact WHERE interaction_id = {gone}")
        ),
        "0",
        "the row deleted at the source is gone from the target"
    );
    assert_eq!(
        query_one(
            &tgt,
            &format!("SELECT subject FROM interaction_fact WHERE interaction_id = {kept}")
        ),
        "still here"
    );
    assert_eq!(
        query_one(&tgt, "SELECT COUNT(*) FROM interaction_fact"),
        (before.parse::<i64>().unwrap() - 1).to_string()
    );
    assert_eq!(
        query_one(&tgt, "SELECT COUNT(*) FROM user_data_cust_dim_1"),
        "0"
    );
    // No target row that the source lacks, in any table.
    for table in gim_tables() {
        let source_rows = dump_table(&src, &table);
        for row in dump_table(&tgt, &table) {
            assert!(
                source_rows.iter().any(|r| r[0] == row[0]),
                "{table}: target row {} is not in the source",
                row[0]
            );
        }
    }

    // The chain goes on after the resync.
    simulate(&w, &src, 1, 120, 73);
    w.run(&["export", "--source", &src, "--output", "out"]);
    let o = w.run(&["load", "--input", "out", "--target", &tgt]);
    assert!(stdout(&o).contains("applied"), "{}", stdout(&o));
}

/// The published folders of `out` (not what was moved aside), as a tree.
fn published(out: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut all = std::collections::BTreeMap::new();
    for f in export_folders(out) {
        for (k, v) in tree(&out.join(&f)) {
            all.insert(format!("{f}/{k}"), v);
        }
    }
    all
}

/// Every folder moved aside, whichever superseded-<time> directory it went to.
fn moved_aside(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = superseded_dirs(out)
        .iter()
        .flat_map(|d| export_folders(&out.join(d)))
        .collect();
    v.sort();
    v
}

#[test]
fn a_reexport_killed_at_any_write_is_finished_by_the_next_plain_run() {
    use gim_export::package::ABORT_AFTER_ENV;
    let w = Workdir::new("reexport-crash");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 4, 60, 74);
    w.run(&["export", "--source", &src, "--output", "base", "--catch-up"]);
    let copy = |to: &str| {
        let _ = fs::remove_dir_all(w.join(to));
        fs::create_dir(w.join(to)).unwrap();
        for f in export_folders(&w.join("base")) {
            copy_dir(&w.join("base").join(&f), &w.join(to).join(&f));
        }
        fs::copy(
            w.join("base/.gim-export.state"),
            w.join(to).join(".gim-export.state"),
        )
        .unwrap();
    };
    copy("reference");
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "reference",
        "--reexport-last",
        "2d",
    ]);
    let reference = published(&w.join("reference"));
    let reference_moved = moved_aside(&w.join("reference"));
    assert!(!reference_moved.is_empty());

    let mut aborted = 0;
    for n in [1u32, 2, 3, 4, 5, 6, 8, 12, 20, 40, 80, 160] {
        copy("out");
        let o = w
            .command(&[
                "export",
                "--source",
                &src,
                "--output",
                "out",
                "--reexport-last",
                "2d",
            ])
            .env(ABORT_AFTER_ENV, n.to_string())
            .output()
            .unwrap();
        if o.status.success() {
            break;
        }
        aborted += 1;
        // The next run is a plain one, as cron would start it: it finishes a recorded restart.
        let o = w
            .command(&["export", "--source", &src, "--output", "out", "--catch-up"])
            .output()
            .unwrap();
        assert!(matches!(o.status.code(), Some(0 | 3)), "{}", stderr(&o));
        if moved_aside(&w.join("out")).is_empty() {
            // Killed before the restart was recorded: nothing changed; the admin runs it again.
            assert_same_tree(
                &published(&w.join("out")),
                &published(&w.join("base")),
                "untouched",
            );
            w.run(&[
                "export",
                "--source",
                &src,
                "--output",
                "out",
                "--reexport-last",
                "2d",
            ]);
        }
        assert_eq!(
            moved_aside(&w.join("out")),
            reference_moved,
            "abort at write {n}"
        );
        assert_same_tree(
            &published(&w.join("out")),
            &reference,
            &format!("abort at write {n}"),
        );
        assert!(!w.join("out/.gim-export.restart.json").exists());
    }
    assert!(aborted >= 6, "only {aborted} abort points reached");
}
