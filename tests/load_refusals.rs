//! The loader refuses what it cannot prove whole and next in the chain: a named error, exit code 5,
//! and nothing of the refused folder (or any later one) applied.

use std::fs;

use crate::harness::*;
use crate::tamper::{self, Fix};

const REFUSED: i32 = 5;

struct Setup {
    w: Workdir,
    folders: Vec<String>,
    /// The target after loading only the first folder.
    after_first: std::collections::BTreeMap<String, Vec<Vec<String>>>,
}

fn setup(tag: &str) -> Setup {
    let w = Workdir::new(tag);
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 3, 150, 17);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let folders = export_folders(&w.join("out"));
    assert!(folders.len() >= 3, "{folders:?}");
    let reference = w.sqlite_url("reference.db");
    w.run(&[
        "load",
        "--input",
        &format!("out/{}", folders[0]),
        "--target",
        &reference,
    ]);
    let after_first = dump_target(&reference);
    Setup {
        w,
        folders,
        after_first,
    }
}

/// Loads `out` into a fresh target: it must refuse with a message holding every `needles`, after
/// applying the first folder only.
fn assert_refused(s: &Setup, needles: &[&str]) {
    assert_refused_with(s, &[], needles)
}

/// [`assert_refused`] with more flags for `load`.
fn assert_refused_with(s: &Setup, flags: &[&str], needles: &[&str]) {
    let target = s.w.sqlite_url(&format!("t{}.db", rand_suffix()));
    let mut args = vec!["load", "--input", "out", "--target", &target];
    args.extend_from_slice(flags);
    let o = s.w.run_code(&mut s.w.command(&args), REFUSED);
    let err = stderr(&o);
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    let ledger = dump_table(&target, "gim_export_ledger");
    assert_eq!(ledger.len(), 1, "only the first folder is applied");
    assert_eq!(ledger[0][0], s.folders[0]);
    assert_eq!(
        dump_target(&target),
        s.after_first,
        "nothing of the refused folder is in the target"
    );
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn second(s: &Setup) -> std::path::PathBuf {
    s.w.join("out").join(&s.folders[1])
}

#[test]
fn corrupted_zip() {
    let s = setup("refuse-zip");
    let zip = second(&s).join(format!("{}.zip", s.folders[1]));
    let mut bytes = fs::read(&zip).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&zip, bytes).unwrap();
    assert_refused(
        &s,
        &[&s.folders[1], "checksum mismatch", "damaged or incomplete"],
    );
}

#[test]
fn csv_whose_checksum_is_wrong() {
    let s = setup("refuse-csv");
    tamper::rewrite(&second(&s), Fix::ZipOnly, |entries| {
        let e = entries
            .iter_mut()
            .find(|(n, _)| n == "interaction_fact.csv")
            .unwrap();
        let last = e.1.len() - 2;
        e.1[last] = b'7';
    });
    assert_refused(
        &s,
        &[&s.folders[1], "interaction_fact.csv: checksum mismatch"],
    );
}

#[test]
fn truncated_xml() {
    let s = setup("refuse-xml");
    let xml = second(&s).join(format!("{}.extracted.xml", s.folders[1]));
    let text = fs::read_to_string(&xml).unwrap();
    fs::write(&xml, &text[..text.len() / 3]).unwrap();
    assert_refused(&s, &[&s.folders[1], "extracted.xml"]);
}

#[test]
fn missing_folder_in_the_chain_names_the_missing_range() {
    let s = setup("refuse-chain");
    fs::remove_dir_all(second(&s)).unwrap();
    let first_to = s.folders[0][7..26].trim_start_matches('0').to_string();
    assert_refused(
        &s,
        &[
            &s.folders[2],
            "missing",
            &format!("audit keys {first_to}.."),
            &s.folders[0],
        ],
    );
}

#[test]
fn zip_entries_with_paths() {
    for bad in ["../x.csv", "a/b.csv"] {
        let s = setup("refuse-path");
        tamper::rewrite(&second(&s), Fix::All, |entries| {
            let bytes = entries
                .iter()
                .find(|(n, _)| n == "tenant.csv")
                .map(|e| e.1.clone());
            let bytes = bytes.unwrap_or_else(|| entries[0].1.clone());
            entries.push((bad.to_string(), bytes));
        });
        assert_refused(&s, &[&s.folders[1], bad, "not a plain file name"]);
    }
}

#[test]
fn unknown_column_under_schema_changes_freeze() {
    let s = setup("refuse-column");
    tamper::rewrite_entry(&second(&s), "interaction_fact.csv", |csv| {
        let text = String::from_utf8(csv.to_vec()).unwrap();
        let mut out = String::new();
        for (i, line) in text.lines().enumerate() {
            out.push_str(line);
            out.push_str(if i == 0 { ",no_such_column\n" } else { ",x\n" });
        }
        out.into_bytes()
    });
    assert_refused_with(
        &s,
        &["--schema-changes", "freeze"],
        &[
            &s.folders[1],
            "interaction_fact.csv",
            "no_such_column",
            "is not in the target or the GIM model",
        ],
    );
}

#[test]
fn names_that_try_sql_injection() {
    // A column name.
    let s = setup("refuse-inject-col");
    tamper::rewrite_entry(&second(&s), "interaction_fact.csv", |csv| {
        let text = String::from_utf8(csv.to_vec()).unwrap();
        let (header, rest) = text.split_once('\n').unwrap();
        let header = header.replacen("subject", "\"subject) ; DROP TABLE tenant; --\"", 1);
        format!("{header}\n{rest}").into_bytes()
    });
    assert_refused(&s, &[&s.folders[1], "is not a plain identifier"]);

    // A table name that passes as a file name but not as an identifier.
    let s = setup("refuse-inject-table");
    tamper::rewrite(&second(&s), Fix::All, |entries| {
        for e in entries.iter_mut() {
            if e.0 == "tenant.csv" || e.0 == "interaction_fact.csv" {
                e.0 = "Interaction_Fact--.csv".into();
                break;
            }
        }
        entries.retain(|e| e.0 != "interaction_fact.csv.sha1" && e.0 != "tenant.csv.sha1");
    });
    assert_refused(
        &s,
        &[
            &s.folders[1],
            "Interaction_Fact--",
            "not a plain identifier",
        ],
    );
}
