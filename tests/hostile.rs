//! Folders are untrusted input: each crafted folder is refused with exit 5 and a message naming what
//! is wrong, on a SQLite and on a PostgreSQL target, and the target (data, ledger, catalog, schema) is
//! exactly as it was before the load.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use gim_export::format::{ExportMetadata, Restart, RestartKind};

use crate::harness::*;
use crate::tamper::{self, Fix};

const REFUSED: i32 = 5;

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

/// Every table of a target with its columns, types and rows (sorted): what must not change.
fn snapshot(url: &str) -> BTreeMap<String, Vec<Vec<String>>> {
    let list = if url.starts_with("sqlite") {
        "SELECT group_concat(name, ' ') FROM (SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name)"
    } else {
        "SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'"
    };
    let mut out = BTreeMap::new();
    for t in query_one(url, list).split_whitespace() {
        let cols = if url.starts_with("sqlite") {
            format!("SELECT group_concat(name || ':' || type || ':' || pk, '|') FROM pragma_table_info('{t}')")
        } else {
            format!(
                "SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod), '|' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '{t}'::regclass AND attnum > 0 AND NOT attisdropped"
            )
        };
        let columns = query_one(url, &cols);
        out.insert(format!("{t}#columns"), vec![vec![columns.clone()]]);
        let names: Vec<&str> = columns
            .split('|')
            .map(|c| c.split(':').next().unwrap())
            .collect();
        let mut rows = Vec::new();
        for key in names.iter().take(1) {
            // The whole row as one text, per row, ordered by its text.
            let concat = if url.starts_with("sqlite") {
                let parts: Vec<String> = names
                    .iter()
                    .map(|c| format!("coalesce(CAST(\"{c}\" AS TEXT), '~')"))
                    .collect();
                format!("SELECT group_concat(r, char(10)) FROM (SELECT {} AS r FROM \"{t}\" ORDER BY 1)", parts.join(" || '|' || "))
            } else {
                let parts: Vec<String> = names
                    .iter()
                    .map(|c| format!("coalesce(\"{c}\"::text, '~')"))
                    .collect();
                format!(
                    "SELECT string_agg(r, chr(10) ORDER BY r) FROM (SELECT {} AS r FROM \"{t}\") x",
                    parts.join(" || '|' || ")
                )
            };
            let _ = key;
            rows.push(vec![query_one(url, &concat)]);
        }
        out.insert(t.to_string(), rows);
    }
    out
}

/// Loads the first folder into `target`, then `dir`: the load must exit 5 with every needle in its
/// message, and leave the target exactly as the first folder left it.
fn refused_unchanged(
    w: &Workdir,
    folders: &[String],
    dir: &str,
    target: &str,
    flags: &[&str],
    needles: &[&str],
) {
    refused_unchanged_after(w, folders, dir, target, flags, needles, |_| {})
}

/// [`refused_unchanged`], with `setup` run on the target after its first folder.
fn refused_unchanged_after(
    w: &Workdir,
    folders: &[String],
    dir: &str,
    target: &str,
    flags: &[&str],
    needles: &[&str],
    setup: impl FnOnce(&str),
) {
    let first = format!("out/{}", folders[0]);
    w.run(&["load", "--input", &first, "--target", target]);
    setup(target);
    let before = snapshot(target);
    let mut args = vec!["load", "--input", dir, "--target", target];
    args.extend_from_slice(flags);
    let o = w.run_code(&mut w.command(&args), REFUSED);
    let err = stderr(&o);
    for n in needles {
        assert!(err.contains(n), "{target}: expected {n:?} in: {err}");
    }
    assert!(
        err.lines().count() < 20 && err.len() < 4000,
        "one short message: {err}"
    );
    let after = snapshot(target);
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{target}: {k} changed");
    }
    assert_eq!(
        before.len(),
        after.len(),
        "{target}: tables were added or removed"
    );
}

/// Runs `case` against a fresh SQLite and a fresh PostgreSQL target.
fn on_both_targets(w: &Workdir, tag: &str, mut case: impl FnMut(&str)) {
    case(&w.sqlite_url(&format!("{tag}.db")));
    let pg = PgDb::new(tag);
    case(&pg.url());
}

/// Replaces a folder's zip with `bytes` (edited at the byte level) and recomputes its `.zip.sha1`, as
/// whoever can write the inbox can.
fn write_zip_bytes(folder: &Path, bytes: &[u8]) {
    let name = folder.file_name().unwrap().to_string_lossy().into_owned();
    let zip_path = folder.join(format!("{name}.zip"));
    fs::write(&zip_path, bytes).unwrap();
    let digest = gim_export::package::sha1_of_file(&zip_path).unwrap();
    fs::write(
        folder.join(format!("{name}.zip.sha1")),
        gim_export::format::sha1_line(&digest, &format!("{name}.zip")),
    )
    .unwrap();
}

fn edit_xml(folder: &Path, edit: impl FnOnce(&mut ExportMetadata)) {
    let name = folder.file_name().unwrap().to_string_lossy().into_owned();
    let p = folder.join(format!("{name}.extracted.xml"));
    let mut meta = ExportMetadata::from_xml(&fs::read_to_string(&p).unwrap(), &name).unwrap();
    edit(&mut meta);
    fs::write(&p, meta.to_xml()).unwrap();
}

#[test]
fn a_csv_named_after_a_table_the_loader_does_not_own_is_refused_unless_adopted() {
    let w = Workdir::new("hostile-foreign");
    let folders = exported(&w, 61);
    let dir = crafted(&w, "foreign", &folders, |f| {
        tamper::rewrite(f, Fix::All, |entries| {
            entries.push((
                "adv_private.csv".into(),
                b"id,create_audit_key,secret\n1,99,overwritten\n2,99,injected\n".to_vec(),
            ));
        })
    });
    on_both_targets(&w, "foreign", |target| {
        refused_unchanged_after(
            &w,
            &folders,
            &dir,
            target,
            &[],
            &[&folders[1], "adv_private", "--adopt-table adv_private"],
            |t| {
                exec_sql(t, "CREATE TABLE adv_private (id integer PRIMARY KEY, create_audit_key integer, secret text); INSERT INTO adv_private VALUES (1, 1, 'mine')")
            },
        );
        // Adopted explicitly, it is written to, and the catalog says so.
        w.run(&[
            "load",
            "--input",
            &dir,
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
fn a_csv_named_after_the_ledger_or_the_catalog_is_refused() {
    let w = Workdir::new("hostile-ledger");
    let folders = exported(&w, 62);
    for table in ["gim_export_ledger", "GIM_EXPORT_CATALOG"] {
        let dir = crafted(&w, table, &folders, |f| {
            tamper::rewrite(f, Fix::All, |entries| {
                entries.push((
                    format!("{table}.csv"),
                    b"folder,hwm_from_audit_key,create_audit_key\nexport_9,1,1\n".to_vec(),
                ));
            })
        });
        on_both_targets(&w, &format!("ledger{}", table.len()), |target| {
            refused_unchanged(
                &w,
                &folders,
                &dir,
                target,
                &[],
                &[&folders[1], "loader's own table"],
            );
        });
    }
}

#[test]
fn a_forged_full_resync_cannot_empty_the_ledger_or_more_than_the_cap() {
    let w = Workdir::new("hostile-full");
    let folders = exported(&w, 63);
    let forge = |tables: &'static str| {
        let first = w.join("out").join(&folders[0]);
        let prev = ExportMetadata::from_xml(
            &fs::read_to_string(first.join(format!("{}.extracted.xml", folders[0]))).unwrap(),
            &folders[0],
        )
        .unwrap();
        move |f: &Path| {
            edit_xml(f, |m| {
                m.generation = 1;
                m.restart = Some(Restart {
                    kind: RestartKind::Full,
                    after: prev.hwm_to,
                });
                m.full_tables = Some(tables.split(' ').map(String::from).collect());
            })
        }
    };
    // A GIM table of the first folder that the second holds no CSV of.
    let csvs = |f: &str| -> Vec<String> {
        let name = f.to_string();
        let z = zip::ZipArchive::new(
            fs::File::open(w.join("out").join(f).join(format!("{name}.zip"))).unwrap(),
        )
        .unwrap();
        z.file_names()
            .map(|n| n.unwrap().into_owned())
            .filter(|n| n.ends_with(".csv"))
            .map(|n| n.trim_end_matches(".csv").to_string())
            .collect()
    };
    let second = csvs(&folders[1]);
    let absent: &'static str = Box::leak(
        csvs(&folders[0])
            .into_iter()
            .find(|t| !second.contains(t))
            .expect("a table only the first folder has")
            .into_boxed_str(),
    );
    let dir = crafted(&w, "full-ledger", &folders, forge("gim_export_ledger"));
    on_both_targets(&w, "fullledger", |target| {
        refused_unchanged(
            &w,
            &folders,
            &dir,
            target,
            &["--accept-restart"],
            &[&folders[1], "gim_export_ledger", "does not own"],
        );
    });
    // A GIM table the folder holds no CSV of: emptying it is over the default cap.
    let dir = crafted(&w, "full-cap", &folders, forge(absent));
    on_both_targets(&w, "fullcap", |target| {
        refused_unchanged(
            &w,
            &folders,
            &dir,
            target,
            &["--accept-restart"],
            &[&folders[1], absent, "--max-resync-removal"],
        );
    });
}

/// Renames an export folder (and the files in it) to what its XML now says it is.
fn rename_to_meta(folder: &Path) {
    let old = folder.file_name().unwrap().to_string_lossy().into_owned();
    let xml = folder.join(format!("{old}.extracted.xml"));
    let meta = ExportMetadata::from_xml(&fs::read_to_string(&xml).unwrap(), &old).unwrap();
    let new = meta.name().folder();
    for e in fs::read_dir(folder).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().replace(&old, &new);
        fs::rename(&p, folder.join(&n)).unwrap();
    }
    let sha = folder.join(format!("{new}.zip.sha1"));
    let text = fs::read_to_string(&sha).unwrap().replace(&old, &new);
    fs::write(&sha, text).unwrap();
    fs::rename(folder, folder.with_file_name(&new)).unwrap();
}

#[test]
fn an_inverted_hwm_range_is_refused_by_verify_and_load() {
    let w = Workdir::new("hostile-inverted");
    let folders = exported(&w, 64);
    let dir = crafted(&w, "inverted", &folders, |f| {
        edit_xml(f, |m| m.hwm_to.audit_key = m.hwm_from.audit_key - 1);
        rename_to_meta(f);
    });
    let o = w.run_code(&mut w.command(&["verify", "--input", &dir]), REFUSED);
    assert!(
        stdout(&o).contains("inverted range") || stderr(&o).contains("inverted range"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    on_both_targets(&w, "inverted", |target| {
        refused_unchanged(&w, &folders, &dir, target, &[], &["inverted range"]);
    });
}

#[test]
fn duplicate_entry_names_are_refused() {
    let w = Workdir::new("hostile-dup");
    let folders = exported(&w, 65);
    let dir = crafted(&w, "dup", &folders, |f| {
        // A second, shorter interaction_fact.csv first in the zip (a zip writer refuses a duplicate
        // name, so it is written under a name of the same length and renamed in the bytes).
        tamper::rewrite(f, Fix::All, |entries| {
            let bytes = entries
                .iter()
                .find(|(n, _)| n == "interaction_fact.csv")
                .unwrap()
                .1
                .clone();
            entries.insert(
                0,
                (
                    "interaction_faXt.csv".into(),
                    bytes[..bytes.len() / 2].to_vec(),
                ),
            );
        });
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let zip_path = f.join(format!("{name}.zip"));
        let mut bytes = fs::read(&zip_path).unwrap();
        let (from, to) = (b"interaction_faXt.csv", b"interaction_fact.csv");
        while let Some(at) = bytes.windows(from.len()).position(|w| w == from) {
            bytes[at..at + from.len()].copy_from_slice(to);
        }
        write_zip_bytes(f, &bytes);
    });
    on_both_targets(&w, "dup", |target| {
        refused_unchanged(
            &w,
            &folders,
            &dir,
            target,
            &[],
            &[&folders[1], "interaction_fact.csv", "more than once"],
        );
    });
}

/// Replaces field `column` of data line `line` (from 1) of one CSV, every checksum kept consistent.
fn set_field(folder: &Path, entry: &str, line: usize, column: &str, value: &str) {
    tamper::rewrite_entry(folder, entry, |csv| {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(csv);
        let mut out = csv::Writer::from_writer(Vec::new());
        let mut at = None;
        for (i, r) in rdr.records().enumerate() {
            let mut r: Vec<String> = r.unwrap().iter().map(String::from).collect();
            if i == 0 {
                at = r.iter().position(|h| h == column);
            } else if i == line {
                r[at.expect("column")] = value.to_string();
            }
            out.write_record(&r).unwrap();
        }
        out.into_inner().unwrap()
    });
}

#[test]
fn values_a_column_cannot_hold_are_refused_on_both_targets_naming_table_and_column() {
    let w = Workdir::new("hostile-values");
    let folders = exported(&w, 66);
    let long = "x".repeat(1100);
    let cases: [(&str, &str, &str, &str); 4] = [
        ("empty-key", "interaction_fact.csv", "interaction_id", ""),
        (
            "not-a-number",
            "interaction_fact.csv",
            "media_type_key",
            "abc",
        ),
        ("too-long", "interaction_fact.csv", "subject", &long),
        (
            "fraction-in-integer",
            "interaction_fact.csv",
            "tenant_key",
            "1.5",
        ),
    ];
    for (tag, entry, column, value) in cases {
        let dir = crafted(&w, tag, &folders, |f| set_field(f, entry, 1, column, value));
        on_both_targets(&w, &tag.replace('-', "_"), |target| {
            refused_unchanged(
                &w,
                &folders,
                &dir,
                target,
                &[],
                &[&folders[1], entry.trim_end_matches(".csv"), column],
            );
        });
    }
}

#[test]
fn a_bad_crc_is_a_refusal_with_the_same_exit_code_on_both_targets() {
    let w = Workdir::new("hostile-crc");
    let folders = exported(&w, 67);
    let dir = crafted(&w, "crc", &folders, |f| {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let zip_path = f.join(format!("{name}.zip"));
        // Store the entries uncompressed so one byte of a CSV can be changed in place.
        let mut entries = Vec::new();
        {
            use std::io::Read;
            let mut z = zip::ZipArchive::new(fs::File::open(&zip_path).unwrap()).unwrap();
            for i in 0..z.len() {
                let mut e = z.by_index(i).unwrap();
                let mut b = Vec::new();
                e.read_to_end(&mut b).unwrap();
                entries.push((e.name().unwrap().to_string(), b));
            }
        }
        {
            use std::io::Write;
            let mut out = zip::ZipWriter::new(fs::File::create(&zip_path).unwrap());
            for (n, b) in &entries {
                out.start_file(
                    n.as_str(),
                    zip::write::SimpleFileOptions::default()
                        .compression_method(zip::CompressionMethod::Stored),
                )
                .unwrap();
                out.write_all(b).unwrap();
            }
            out.finish().unwrap();
        }
        let mut bytes = fs::read(&zip_path).unwrap();
        let csv = &entries
            .iter()
            .find(|(n, _)| n == "interaction_fact.csv")
            .unwrap()
            .1;
        let needle = &csv[csv.len() - 40..];
        let at = bytes
            .windows(needle.len())
            .position(|win| win == needle)
            .unwrap();
        bytes[at + 5] ^= 0x01;
        write_zip_bytes(f, &bytes);
    });
    on_both_targets(&w, "crc", |target| {
        refused_unchanged(
            &w,
            &folders,
            &dir,
            target,
            &[],
            &[&folders[1], "interaction_fact"],
        );
    });
}

#[test]
fn a_forged_restart_is_refused_or_if_accepted_cannot_silently_strand_the_genuine_chain() {
    let w = Workdir::new("hostile-restart");
    let folders = exported(&w, 68);
    assert!(folders.len() >= 3, "{folders:?}");
    let first = ExportMetadata::from_xml(
        &fs::read_to_string(
            w.join("out")
                .join(&folders[0])
                .join(format!("{}.extracted.xml", folders[0])),
        )
        .unwrap(),
        &folders[0],
    )
    .unwrap();
    let forge = |after: gim_export::audit::HighWaterMark| {
        move |f: &Path| {
            edit_xml(f, |m| {
                m.generation = 1;
                m.restart = Some(Restart {
                    kind: RestartKind::Reexport,
                    after,
                });
            })
        }
    };
    // Claims to replace a chain that ended before what the target holds: refused even when accepted.
    let dir = crafted(&w, "restart-inconsistent", &folders, forge(first.hwm_from));
    on_both_targets(&w, "rs_incons", |target| {
        refused_unchanged(
            &w,
            &folders,
            &dir,
            target,
            &["--accept-restart"],
            &[&folders[1], "does not fit"],
        );
    });
    // Fits, but nobody asked for a restart: refused, naming both generations.
    let dir = crafted(&w, "restart-forged", &folders, forge(first.hwm_to));
    on_both_targets(&w, "rs_forged", |target| {
        refused_unchanged(
            &w,
            &folders,
            &dir,
            target,
            &[],
            &[&folders[1], "generation 1", "--accept-restart"],
        );
    });
    // Accepted by mistake: the genuine chain's next folder then stops the load loudly (exit 5, both
    // chains named), never "nothing to do".
    let target = w.sqlite_url("rs_accepted.db");
    w.run(&[
        "load",
        "--input",
        &format!("out/{}", folders[0]),
        "--target",
        &target,
    ]);
    w.run(&[
        "load",
        "--input",
        &format!("{dir}/{}", folders[1]),
        "--target",
        &target,
        "--accept-restart",
    ]);
    let o = w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &target]),
        REFUSED,
    );
    let err = stderr(&o);
    assert!(
        err.contains("forged")
            && err.contains("generation 0")
            && err.contains("generation 1")
            && err.contains(&folders[1]),
        "{err}"
    );
}

#[test]
fn zip_bombs_long_fields_and_miscounted_rows_are_refused() {
    let w = Workdir::new("hostile-limits");
    let folders = exported(&w, 69);
    // 24 MB of one repeated row: far more than real data compresses.
    let dir = crafted(&w, "bomb", &folders, |f| {
        tamper::rewrite(f, Fix::All, |entries| {
            let mut csv = b"bomb_fact_key,create_audit_key\n".to_vec();
            csv.extend(std::iter::repeat_n(b"1,1\n".iter().copied(), 6_000_000).flatten());
            entries.push(("bomb_fact.csv".into(), csv));
        })
    });
    on_both_targets(&w, "bomb", |target| {
        refused_unchanged(
            &w,
            &folders,
            &dir,
            target,
            &[],
            &[&folders[1], "bomb_fact.csv", "--max-zip-ratio"],
        );
    });
    // A field longer than the limit (set low here; 16 MiB by default).
    let dir = crafted(&w, "long-field", &folders, |f| {
        set_field(f, "interaction_fact.csv", 1, "subject", &"y".repeat(5000))
    });
    on_both_targets(&w, "longfield", |target| {
        refused_unchanged(
            &w,
            &folders,
            &dir,
            target,
            &["--max-field-bytes", "4096"],
            &[&folders[1], "interaction_fact", "--max-field-bytes"],
        );
    });
    // A row count that is not the one the folder declares.
    let dir = crafted(&w, "miscount", &folders, |f| {
        edit_xml(f, |m| {
            let t = m
                .tables
                .iter_mut()
                .find(|t| t.name == "interaction_fact")
                .unwrap();
            t.rows += 1;
        })
    });
    on_both_targets(&w, "miscount", |target| {
        refused_unchanged(
            &w,
            &folders,
            &dir,
            target,
            &[],
            &[&folders[1], "interaction_fact", "declares"],
        );
    });
}

#[test]
fn a_changed_copy_of_an_applied_folder_is_refused_and_a_late_commit_with_a_lower_key_still_wins() {
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
    // A copy of an applied folder whose zip is other bytes (same name, same chain) is refused by
    // name, not skipped, and changes nothing.
    let dir = crafted(&w, "replay", &folders, |f| {
        tamper::rewrite(f, Fix::All, |_| {})
    });
    let target = w.sqlite_url("replay.db");
    w.run(&["load", "--input", "out", "--target", &target]);
    let before = snapshot(&target);
    let o = w.run_code(
        &mut w.command(&["load", "--input", &dir, "--target", &target]),
        REFUSED,
    );
    let err = stderr(&o);
    assert!(
        err.contains(&folders[1]) && err.contains("already applied"),
        "{err}"
    );
    assert_eq!(snapshot(&target), before);
}

#[test]
fn an_entry_whose_header_understates_its_size_is_refused() {
    let w = Workdir::new("hostile-size");
    let folders = exported(&w, 71);
    let dir = crafted(&w, "size", &folders, |f| {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let zip_path = f.join(format!("{name}.zip"));
        tamper::rewrite(f, Fix::All, |_| {});
        // The central directory's uncompressed size of interaction_fact.csv, halved.
        let mut bytes = fs::read(&zip_path).unwrap();
        let entry = b"interaction_fact.csv";
        let mut at = 0;
        let mut patched = false;
        while let Some(i) = bytes[at..]
            .windows(4)
            .position(|w| w == [0x50, 0x4b, 0x01, 0x02])
        {
            let h = at + i;
            let name_len = u16::from_le_bytes([bytes[h + 28], bytes[h + 29]]) as usize;
            if &bytes[h + 46..h + 46 + name_len] == entry {
                let size = u32::from_le_bytes(bytes[h + 24..h + 28].try_into().unwrap());
                bytes[h + 24..h + 28].copy_from_slice(&(size / 2).to_le_bytes());
                patched = true;
            }
            at = h + 4;
        }
        assert!(patched);
        write_zip_bytes(f, &bytes);
    });
    on_both_targets(&w, "size", |target| {
        refused_unchanged(
            &w,
            &folders,
            &dir,
            target,
            &[],
            &[&folders[1], "interaction_fact"],
        );
    });
}
