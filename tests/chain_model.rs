//! The chain, model-checked: random sequences of source changes (new days with late, out-of-order
//! and in-flight keys; deleted rows), exports of every kind (plain, `--catch-up`, `--restart` with
//! and without `--start-date`, `--reexport-last`, `--full-resync`, `--include` with
//! `--allow-table-change`), kills at random writes, and three receivers that load at their own
//! moments (SQLite always current, PostgreSQL skipping runs, MariaDB starting late). After a final catch-up
//! and load, every receiver holds exactly the source's rows of the audit keys it was sent or is owed.
//!
//! `make test` runs a short fixed-seed walk; `make soak` a long one (GIM_EXPORT_SOAK_ROUNDS walks of
//! GIM_EXPORT_SOAK_STEPS steps, seeds from GIM_EXPORT_SOAK_SEED). A failure prints the seed and every
//! step, so it replays exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use gim_export::audit::AuditKeySet;
use gim_export::format::ExportMetadata;
use gim_export::package::ABORT_AFTER_ENV;

use crate::harness::*;

/// A small deterministic generator (xorshift64*), so that a seed replays a walk exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One receiver: a target, and when it loads.
struct Receiver {
    name: &'static str,
    url: String,
    /// Percent chance to load after a step (100: after every step).
    loads: u64,
    /// Steps before it starts loading at all.
    starts_at: usize,
}

/// What a walk did, step by step, to print on failure.
struct Walk {
    seed: u64,
    log: Vec<String>,
    /// A receiver refused a restart it cannot follow (a gap before its start date).
    stranded: bool,
}

impl Walk {
    fn note(&mut self, s: String) {
        self.log.push(s);
    }
    fn fail(&self, w: &Workdir, what: &str) -> ! {
        panic!(
            "chain model, seed {}: {what}\nsteps:\n  {}\ndir: {}",
            self.seed,
            self.log.join("\n  "),
            w.path().display()
        );
    }
}

/// Runs a command; `ok` lists the exit codes that are no failure. `kill` arms the write abort.
fn step(w: &Workdir, walk: &mut Walk, args: &[&str], ok: &[i32], kill: Option<u32>) -> Option<i32> {
    let mut cmd = w.command(args);
    if let Some(n) = kill {
        cmd.env(ABORT_AFTER_ENV, n.to_string());
    }
    let o = cmd.output().unwrap();
    let code = o.status.code();
    walk.note(format!(
        "{}{} -> {}",
        args.join(" "),
        kill.map(|n| format!(" (killed at write {n})"))
            .unwrap_or_default(),
        code.map_or("killed".to_string(), |c| c.to_string())
    ));
    let killed = kill.is_some() && code.is_none_or(|c| c == 134);
    // A receiver behind a restart from a later date refuses it, loudly (nothing lost); only a full
    // resync brings it back, and the walk ends with one.
    let stranded = args[0] == "load"
        && code == Some(5)
        && String::from_utf8_lossy(&o.stderr).contains("ask the sender for export --full-resync");
    if stranded {
        walk.stranded = true;
    }
    if !killed && !stranded && !code.is_some_and(|c| ok.contains(&c)) {
        walk.fail(
            w,
            &format!(
                "{} exited {code:?}\n--- stdout\n{}\n--- stderr\n{}",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        );
    }
    code
}

/// Every export folder's metadata, at the top of `out` and moved aside, by (name, generation).
fn all_folders(out: &Path) -> BTreeMap<(String, u32), ExportMetadata> {
    let mut dirs: Vec<PathBuf> = vec![out.to_path_buf()];
    if let Ok(rd) = fs::read_dir(out) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("superseded-") {
                dirs.push(e.path());
            }
        }
    }
    let mut found = BTreeMap::new();
    for dir in dirs {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let entry = e.file_name().to_string_lossy().into_owned();
            // A name moved aside twice carries a suffix (`export_....2`).
            let name = entry.split('.').next().unwrap().to_string();
            let xml = e.path().join(format!("{name}.extracted.xml"));
            if let Ok(text) = fs::read_to_string(&xml) {
                if let Ok(m) = ExportMetadata::from_xml(&text, &name) {
                    found.insert((name, m.generation), m);
                }
            }
        }
    }
    found
}

/// Whether the newest folder at the top of `out` was exported with `--include`.
fn chain_narrowed(out: &Path) -> bool {
    all_folders(out)
        .into_iter()
        .filter(|((name, _), _)| out.join(name).is_dir())
        .max_by_key(|((name, generation), _)| (*generation, name.clone()))
        .and_then(|(_, m)| m.selection)
        .is_some_and(|s| !s.include.is_empty())
}

/// The audit keys a receiver was sent (every folder it applied) or is owed (their pending keys that
/// have settled since).
fn keys_of(target: &str, out: &Path, settled: &BTreeSet<i64>) -> AuditKeySet {
    let folders = all_folders(out);
    let applied: Vec<(String, u32)> = query_rows(
        target,
        "SELECT folder, COALESCE(chain_generation, 0) FROM gim_export_applied ORDER BY apply_seq",
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].parse().unwrap()))
    .collect();
    let mut keys = AuditKeySet::new();
    for f in &applied {
        let m = folders
            .get(f)
            .unwrap_or_else(|| panic!("applied folder {f:?} not found in {}", out.display()));
        for k in m.audit_keys.as_ref().unwrap().iter() {
            keys.insert(k);
        }
        for k in m.pending_audit_keys.as_ref().unwrap().iter() {
            if settled.contains(&k) {
                keys.insert(k);
            }
        }
    }
    keys
}

/// The receiver holds exactly the source rows of `keys`: a row created or changed by one of them is
/// there, with the source's values when its newest change is one of them; no other row is.
fn check_receiver(w: &Workdir, walk: &Walk, src: &str, r: &Receiver, keys: &AuditKeySet) -> usize {
    let mut compared = 0;
    for table in gim_tables() {
        let def = sim_table(&table).unwrap();
        let at = |n: &str| def.columns.iter().position(|c| c.name == n);
        let (c, u) = (at("create_audit_key").unwrap(), at("update_audit_key"));
        let has = |v: &str| v.parse::<i64>().is_ok_and(|k| keys.contains(k));
        let expected: BTreeMap<String, Vec<String>> = dump_table(src, &table)
            .into_iter()
            .filter(|row| has(&row[c]) || u.is_some_and(|u| has(&row[u])))
            .map(|row| (row[0].clone(), row))
            .collect();
        let actual: BTreeMap<String, Vec<String>> = dump_table(&r.url, &table)
            .into_iter()
            .map(|row| (row[0].clone(), row))
            .collect();
        if let Some(pk) = actual.keys().find(|k| !expected.contains_key(*k)) {
            walk.fail(
                w,
                &format!(
                    "{}: {table}: row {pk} should not be there (deleted at the source, or never sent)",
                    r.name
                ),
            );
        }
        for (pk, row) in &expected {
            let Some(got) = actual.get(pk) else {
                walk.fail(w, &format!("{}: {table}: row {pk} is missing", r.name));
            };
            let newest = u.map_or(&row[c], |u| &row[u]);
            if has(newest) && got != row {
                walk.fail(
                    w,
                    &format!(
                        "{}: {table}: row {pk} differs:\n  source {row:?}\n  target {got:?}",
                        r.name
                    ),
                );
            }
            compared += 1;
        }
    }
    compared
}

/// One random walk; returns the rows compared.
fn walk(seed: u64, steps: usize) -> usize {
    let w = Workdir::new(&format!("chain-model-{seed}"));
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut walk = Walk {
        seed,
        log: Vec::new(),
        stranded: false,
    };
    let src = w.sqlite_url("src.db");
    let per_day = (40 + rng.below(60)).to_string();
    let sim_seed = seed.to_string();
    let pg = PgDb::new(&format!("model{}", seed % 1000));
    let my = MyDb::new(&format!("model{}", seed % 1000));
    let receivers = [
        Receiver {
            name: "current",
            url: w.sqlite_url("current.db"),
            loads: 100,
            starts_at: 0,
        },
        Receiver {
            name: "skipper",
            url: pg.url(),
            loads: 35,
            starts_at: 0,
        },
        Receiver {
            name: "late",
            url: my.url(),
            loads: 60,
            starts_at: steps / 2,
        },
    ];
    let simulate = |w: &Workdir, walk: &mut Walk| {
        step(
            w,
            walk,
            &[
                "simulate",
                "--source",
                &src,
                "--days",
                "1",
                "--seed",
                &sim_seed,
                "--interactions-per-day",
                &per_day,
            ],
            &[0],
            None,
        );
    };
    simulate(&w, &mut walk);
    // The receivers' inbox exists from the start (a missing one is an error, exit 7).
    fs::create_dir(w.join("out")).unwrap();
    // Deletions reach a receiver only through a full resync; a table left out of the selection
    // misses changes until one. The final export is then a full resync.
    let mut needs_full = false;
    let mut narrowed = false;
    for i in 0..steps {
        let kill = rng.chance(15).then(|| 1 + rng.below(30) as u32);
        let selection: Vec<&str> = if narrowed {
            vec!["--include", "interaction_*,irf_*", "--allow-table-change"]
        } else {
            Vec::new()
        };
        match rng.below(100) {
            0..=24 => simulate(&w, &mut walk),
            25..=31 => {
                let n = 1 + rng.below(4);
                exec_sql(
                    &src,
                    &format!(
                        "DELETE FROM INTERACTION_FACT WHERE INTERACTION_ID IN \
                         (SELECT INTERACTION_ID FROM INTERACTION_FACT ORDER BY (INTERACTION_ID * 7919) % 101 LIMIT {n})"
                    ),
                );
                walk.note(format!("deleted {n} interaction_fact rows at the source"));
                needs_full = true;
            }
            32..=51 => {
                let mut args = vec!["export", "--source", &src, "-o", "out"];
                args.extend(&selection);
                step(&w, &mut walk, &args, &[0, 3], kill);
            }
            52..=66 => {
                let mut args = vec!["export", "--source", &src, "-o", "out", "--catch-up"];
                args.extend(&selection);
                step(&w, &mut walk, &args, &[0, 3], kill);
            }
            67..=72 => {
                let code = step(
                    &w,
                    &mut walk,
                    &["export", "--source", &src, "-o", "out", "--full-resync"],
                    &[0, 3],
                    kill,
                );
                if code == Some(0) {
                    // Every row of every table: nothing is missed any more.
                    needs_full = false;
                    narrowed = false;
                }
            }
            73..=79 => {
                step(
                    &w,
                    &mut walk,
                    &[
                        "export",
                        "--source",
                        &src,
                        "-o",
                        "out",
                        "--reexport-last",
                        "1d",
                    ],
                    &[0, 2, 3],
                    kill,
                );
            }
            80..=85 => {
                step(
                    &w,
                    &mut walk,
                    &[
                        "export",
                        "--source",
                        &src,
                        "-o",
                        "out",
                        "--restart",
                        "--catch-up",
                    ],
                    &[0, 3],
                    kill,
                );
            }
            86..=91 => {
                // A backfill from a later date: the chain owes the old chain's in-flight keys.
                step(
                    &w,
                    &mut walk,
                    &[
                        "export",
                        "--source",
                        &src,
                        "-o",
                        "out",
                        "--restart",
                        "--start-date",
                        "2024-01-02",
                        "--catch-up",
                    ],
                    &[0, 2, 3],
                    kill,
                );
            }
            _ => {
                // The selection narrows, or widens back (which needs a full resync to fill in).
                let mut args = vec![
                    "export",
                    "--source",
                    &src,
                    "-o",
                    "out",
                    "--allow-table-change",
                ];
                if !narrowed {
                    args.extend(["--include", "interaction_*,irf_*"]);
                }
                step(&w, &mut walk, &args, &[0, 3], kill);
            }
        }
        // The chain's selection is what its newest folder says (a killed run may have published;
        // a restart or re-export of every table widens it): widening needs a full resync.
        let now = chain_narrowed(&w.join("out"));
        if narrowed && !now {
            needs_full = true;
        }
        narrowed = now;
        for r in receivers.iter().filter(|r| i >= r.starts_at) {
            if rng.chance(r.loads) {
                let kill = rng.chance(10).then(|| 1 + rng.below(20) as u32);
                step(
                    &w,
                    &mut walk,
                    &[
                        "load",
                        "--input",
                        "out",
                        "--target",
                        &r.url,
                        "--accept-restart",
                    ],
                    &[0, 3],
                    kill,
                );
            }
        }
    }
    // The end: a new day (so that late keys waiting for the chain to move go out), a final catch-up
    // (a full resync when deletions or a narrowed selection must reach the receivers), every
    // receiver loads.
    simulate(&w, &mut walk);
    let mut last = vec!["export", "--source", &src, "-o", "out", "--catch-up"];
    if narrowed {
        last.extend(["--allow-table-change"]);
    }
    step(&w, &mut walk, &last, &[0, 3], None);
    if needs_full || narrowed || walk.stranded {
        step(
            &w,
            &mut walk,
            &["export", "--source", &src, "-o", "out", "--full-resync"],
            &[0],
            None,
        );
    }
    let settled: BTreeSet<i64> = query_rows(
        &src,
        "SELECT AUDIT_KEY FROM CTL_AUDIT_LOG WHERE INSERTED IS NOT NULL",
    )
    .into_iter()
    .map(|r| r[0].parse().unwrap())
    .collect();
    let mut compared = 0;
    for r in &receivers {
        step(
            &w,
            &mut walk,
            &[
                "load",
                "--input",
                "out",
                "--target",
                &r.url,
                "--accept-restart",
            ],
            &[0, 3],
            None,
        );
        let keys = keys_of(&r.url, &w.join("out"), &settled);
        compared += check_receiver(&w, &walk, &src, r, &keys);
    }
    step(&w, &mut walk, &["verify", "--input", "out"], &[0], None);
    compared
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn every_receiver_equals_the_source_after_random_histories_of_exports_restarts_and_kills() {
    let rounds = env_or("GIM_EXPORT_SOAK_ROUNDS", 2);
    let steps = env_or("GIM_EXPORT_SOAK_STEPS", 14) as usize;
    let first = env_or("GIM_EXPORT_SOAK_SEED", 20_261_203);
    let mut rows = 0;
    for seed in first..first + rounds {
        rows += walk(seed, steps);
    }
    eprintln!("chain model: {rounds} walk(s) of {steps} steps, {rows} receiver rows compared");
    assert!(rows > 0);
}
