//! Folders are untrusted input. The crafted folders of `fixtures/hostile` (built by its `craft.py`
//! from the golden chain, every case with its expected outcome in a `case.toml`) are each refused with
//! exit 5 and a short message naming what is wrong, on a SQLite and on a PostgreSQL target, and leave
//! the target byte for byte as it was: the SQLite file, and `pg_dump` of the PostgreSQL database.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;
use crate::tamper;

const REFUSED: i32 = 5;

/// What a crafted case must do (`case.toml`, written by `fixtures/hostile/craft.py`).
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Case {
    folder: String,
    load: i32,
    verify: i32,
    flags: Vec<String>,
    needles: Vec<String>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The golden chain's folders, in order.
fn golden_chain() -> Vec<PathBuf> {
    let dir = fixtures().join("golden/expected");
    export_folders(&dir).iter().map(|f| dir.join(f)).collect()
}

/// Runs `fixtures/hostile/craft.py` into `w/crafted`: every case's name and expectation.
fn crafted_cases(w: &Workdir) -> Vec<(String, Case)> {
    let out = w.join("crafted");
    let o = Command::new("python3")
        .arg(fixtures().join("hostile/craft.py"))
        .arg(&out)
        .output()
        .expect("python3 must be installed (make test installs it)");
    assert!(o.status.success(), "craft.py: {}", stderr(&o));
    let mut cases: Vec<(String, Case)> = fs::read_dir(&out)
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let text = fs::read_to_string(out.join(&name).join("case.toml")).unwrap();
            let case = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}/case.toml: {e}"));
            (name, case)
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

/// The target as the crafted cases find it: the golden chain's first folder applied, and a table the
/// loader does not own (`adv_private`) holding a row of its own.
fn prepare(w: &Workdir, target: &str) {
    let first = golden_chain()[0].display().to_string();
    w.run(&["load", "--input", &first, "--target", target]);
    exec_sql(
        target,
        "CREATE TABLE adv_private (id integer PRIMARY KEY, create_audit_key integer, secret text); INSERT INTO adv_private VALUES (1, 1, 'mine')",
    );
}

/// Everything a target holds, as bytes: the SQLite file (its header counts every committed change),
/// or `pg_dump` of the PostgreSQL database (schema, rows, sequences).
fn state(target: &str) -> Vec<u8> {
    if let Some(path) = target.strip_prefix("sqlite://") {
        assert!(
            !Path::new(&format!("{path}-wal")).exists(),
            "the loader's SQLite target is not in WAL mode: the file alone is its state"
        );
        return fs::read(path).unwrap();
    }
    let db = target.rsplit('/').next().unwrap();
    if target.starts_with("mysql://") {
        return my_dump(db);
    }
    let o = Command::new("pg_dump")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "--no-owner",
            db,
        ])
        .output()
        .expect("pg_dump must be installed (make test installs postgresql-client)");
    assert!(o.status.success(), "pg_dump {db}: {}", stderr(&o));
    // Recent pg_dump guards its script with a random `\restrict` key: not part of the database.
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .flat_map(|l| [l.as_bytes(), b"\n"])
        .flatten()
        .copied()
        .collect()
}

#[test]
fn every_crafted_folder_of_fixtures_hostile_is_refused_and_leaves_the_target_byte_for_byte_unchanged(
) {
    let w = Workdir::new("hostile-fixtures");
    let cases = crafted_cases(&w);
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for (name, case) in &cases {
        let dir = format!("crafted/{name}");
        let o = w.run_code(&mut w.command(&["verify", "--input", &dir]), case.verify);
        if case.verify != 0 {
            let said = format!("{}{}", stdout(&o), stderr(&o));
            assert!(said.contains(&case.folder), "verify {name}: {said}");
        }
    }
    let (pg, my) = (PgDb::new("hostile"), MyDb::new("hostile"));
    for target in [w.sqlite_url("target.db"), pg.url(), my.url()] {
        prepare(&w, &target);
        let before = state(&target);
        for (name, case) in &cases {
            let dir = format!("crafted/{name}");
            let mut args = vec!["load", "--input", &dir, "--target", &target];
            args.extend(case.flags.iter().map(String::as_str));
            let o = w.run_code(&mut w.command(&args), case.load);
            let err = stderr(&o);
            for n in &case.needles {
                assert!(
                    err.contains(n.as_str()),
                    "{name} on {target}: expected {n:?} in: {err}"
                );
            }
            assert!(
                err.lines().count() < 20 && err.len() < 4000,
                "{name} on {target}: one short message: {err}"
            );
            assert!(
                state(&target) == before,
                "{name} on {target}: the refused load changed the target"
            );
        }
        // The refusals were for what was crafted: the genuine chain then loads on the same target.
        let genuine = fixtures().join("golden/expected").display().to_string();
        let o = w.run(&["load", "--input", &genuine, "--target", &target]);
        assert!(stdout(&o).contains("loaded 3 folder(s)"), "{}", stdout(&o));
        assert_eq!(query_one(&target, "SELECT secret FROM adv_private"), "mine");
    }
}

#[test]
fn a_foreign_table_is_written_to_once_adopted_and_the_catalog_says_so() {
    let w = Workdir::new("hostile-adopt");
    let cases = crafted_cases(&w);
    assert!(cases.iter().any(|(n, _)| n == "foreign-table"));
    on_both_targets(&w, "adopt", |target| {
        prepare(&w, target);
        w.run(&[
            "load",
            "--input",
            "crafted/foreign-table",
            "--target",
            target,
            "--adopt-table",
            "adv_private",
        ]);
        assert_eq!(
            query_one(target, "SELECT secret FROM adv_private WHERE id = 1"),
            "overwritten"
        );
        assert_eq!(query_one(target, "SELECT origin FROM gim_export_catalog WHERE table_name = 'adv_private' AND column_name = ''"), "adopted");
    });
}

#[test]
fn a_forged_restart_accepted_by_mistake_cannot_silently_strand_the_genuine_chain() {
    let w = Workdir::new("hostile-restart");
    crafted_cases(&w);
    let target = w.sqlite_url("accepted.db");
    prepare(&w, &target);
    let forged = "crafted/restart-nobody-asked-for";
    w.run(&[
        "load",
        "--input",
        forged,
        "--target",
        &target,
        "--accept-restart",
    ]);
    // The genuine chain's next folder then stops the load loudly (exit 5, both chains named), never
    // "nothing to do".
    let genuine = fixtures().join("golden/expected").display().to_string();
    let o = w.run_code(
        &mut w.command(&["load", "--input", &genuine, "--target", &target]),
        REFUSED,
    );
    let err = stderr(&o);
    let second = golden_chain()[1]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        err.contains("forged")
            && err.contains("generation 0")
            && err.contains("generation 1")
            && err.contains(&second),
        "{err}"
    );
}

/// Runs `case` against a fresh SQLite and a fresh PostgreSQL target.
fn on_both_targets(w: &Workdir, tag: &str, mut case: impl FnMut(&str)) {
    case(&w.sqlite_url(&format!("{tag}.db")));
    let pg = PgDb::new(tag);
    case(&pg.url());
}

/// A small export in `out`: its folders.
fn exported(w: &Workdir, seed: u64) -> Vec<String> {
    let src = w.sqlite_url("im.db");
    simulate(w, &src, 2, 100, seed);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let folders = export_folders(&w.join("out"));
    assert!(folders.len() >= 2, "{folders:?}");
    folders
}

/// A copy of `out` named `to`, whose second folder `craft` changes.
fn crafted(w: &Workdir, to: &str, folders: &[String], craft: impl FnOnce(&Path)) -> String {
    let dst = w.join(to);
    for f in folders {
        let (from, into) = (w.join("out").join(f), dst.join(f));
        fs::create_dir_all(&into).unwrap();
        for e in fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), into.join(e.file_name())).unwrap();
        }
    }
    craft(&dst.join(&folders[1]));
    to.to_string()
}

#[test]
fn a_late_commit_with_a_lower_update_audit_key_still_replaces_the_newer_keyed_row() {
    let w = Workdir::new("hostile-replay");
    let folders = exported(&w, 70);
    // The chain decides: folder 2 carries a row of folder 1 again, changed, with a LOWER
    // update_audit_key (a run that started earlier and committed later). It must win.
    let (_, tables2) = read_folder(&w.join("out").join(&folders[0]));
    let f2 = &tables2["interaction_fact"];
    let row = f2.rows[0].clone();
    let (id, uak) = (f2.col("interaction_id"), f2.col("update_audit_key"));
    let lower = (row[uak].parse::<i64>().unwrap() - 1).to_string();
    let dir = crafted(&w, "late", &folders, |_| {});
    tamper::rewrite_entry(
        &w.join(&dir).join(&folders[1]),
        "interaction_fact.csv",
        |csv| {
            let mut text = String::from_utf8(csv.to_vec()).unwrap();
            let mut changed = row.clone();
            changed[uak] = lower.clone();
            changed[f2.col("subject")] = "written last".into();
            let mut out = csv::Writer::from_writer(Vec::new());
            out.write_record(&changed).unwrap();
            text.push_str(&String::from_utf8(out.into_inner().unwrap()).unwrap());
            text.into_bytes()
        },
    );
    for target in [w.sqlite_url("late.db"), PgDb::new("late").url()] {
        w.run(&["load", "--input", &dir, "--target", &target]);
        assert_eq!(
            query_one(
                &target,
                &format!(
                    "SELECT subject FROM interaction_fact WHERE interaction_id = {}",
                    row[id]
                )
            ),
            "written last",
            "{target}"
        );
    }
}
