//! Real Info Marts: partitioned and inherited PostgreSQL sources, upper-case identifiers from Oracle
//! and SQL Server Info Marts, columns and tables beyond the GIM model under `--schema-changes`, and
//! folders written by Genesys's own job (six XML fields).

use std::fs;
use std::path::Path;

use crate::harness::*;
use crate::tamper::{self, Fix};

const REFUSED: i32 = 5;

/// Every entry name in a folder's zip.
fn zip_entries(folder: &Path) -> Vec<String> {
    let name = folder.file_name().unwrap().to_string_lossy().into_owned();
    let zip =
        zip::ZipArchive::new(fs::File::open(folder.join(format!("{name}.zip"))).unwrap()).unwrap();
    zip.file_names().map(|n| n.unwrap().into_owned()).collect()
}

#[test]
fn partitioned_and_inherited_postgres_tables_are_exported_once_and_load_row_for_row() {
    let w = Workdir::new("partitioned");
    let src = PgDb::new("part_src");
    w.run(&[
        "simulate",
        "--source",
        &src.url(),
        "--days",
        "3",
        "--interactions-per-day",
        "250",
        "--seed",
        "41",
        "--partitioned",
    ]);
    // The source really is partitioned, and the inheritance children really hold rows.
    let partitions: i64 = src
        .sql("SELECT count(*) FROM pg_class WHERE relispartition AND relkind = 'r'")
        .parse()
        .unwrap();
    assert!(partitions >= 4 * 5, "{partitions} partitions");
    let in_children: i64 = src
        .sql("SELECT (SELECT count(*) FROM ONLY sm_res_state_fact_hist) + (SELECT count(*) FROM ONLY sm_res_session_fact_hist)")
        .parse()
        .unwrap();
    assert!(in_children > 0, "the inheritance children hold no rows");

    w.run(&[
        "export",
        "--source",
        &src.url(),
        "--output",
        "out",
        "--catch-up",
    ]);
    let folders = export_folders(&w.join("out"));
    let simulated = gim_tables();
    for f in &folders {
        for e in zip_entries(&w.join("out").join(f)) {
            let table = e.trim_end_matches(".sha1").trim_end_matches(".csv");
            assert!(
                simulated.iter().any(|t| t == table),
                "{f}: entry {e} is not a logical table (a partition or a child exported on its own?)"
            );
        }
    }
    // Exported row counts are the source's (every partition and child read once, through the parent):
    // a row is in every folder whose keys created or updated it.
    let exported = read_exports(&w.join("out"));
    for table in [
        "interaction_fact",
        "sm_res_state_fact",
        "sm_res_session_fact",
        "irf_user_data_cust_1",
    ] {
        let cols = sim_columns(table);
        let c = cols.iter().position(|c| c == "create_audit_key").unwrap();
        let u = cols.iter().position(|c| c == "update_audit_key").unwrap();
        let source_rows = dump_table(&src.url(), table);
        let mut in_folders = 0;
        let mut expected = 0;
        for (_, meta, tables) in &exported {
            in_folders += tables.get(table).map_or(0, |t| t.rows.len());
            let keys = meta.audit_keys.clone().unwrap();
            expected += source_rows
                .iter()
                .filter(|r| {
                    keys.contains(r[c].parse().unwrap()) || keys.contains(r[u].parse().unwrap())
                })
                .count();
        }
        assert_eq!(in_folders, expected, "{table}: rows in the folders");
        assert!(in_folders > 0, "{table}: nothing exported");
    }
    let xml = fs::read_to_string(
        w.join("out")
            .join(&folders[0])
            .join(format!("{}.extracted.xml", folders[0])),
    )
    .unwrap();
    assert!(
        xml.contains("name=\"interaction_fact\"")
            && xml.contains("key=\"interaction_id,start_date_time_key\""),
        "{xml}"
    );

    let lite = w.sqlite_url("target.db");
    w.run(&["load", "--input", "out", "--target", &lite]);
    assert_target_matches_source(&src.url(), &lite, &w.join("out"));
    let pg = PgDb::new("part_tgt");
    w.run(&["load", "--input", "out", "--target", &pg.url()]);
    assert_target_matches_source(&src.url(), &pg.url(), &w.join("out"));
}

/// A small SQLite source exported into `out`: the folder names.
fn exported_source(w: &Workdir, seed: u64) -> Vec<String> {
    let src = w.sqlite_url("im.db");
    simulate(w, &src, 2, 120, seed);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    export_folders(&w.join("out"))
}

#[test]
fn upper_case_file_names_and_headers_load_like_lower_case() {
    let w = Workdir::new("upper-case");
    let folders = exported_source(&w, 43);
    for f in &folders {
        tamper::rewrite(&w.join("out").join(f), Fix::All, |entries| {
            for (name, bytes) in entries.iter_mut() {
                if let Some(stem) = name.strip_suffix(".csv.sha1") {
                    *name = format!("{}.csv.sha1", stem.to_ascii_uppercase());
                } else if let Some(stem) = name.strip_suffix(".csv") {
                    *name = format!("{}.csv", stem.to_ascii_uppercase());
                    let text = String::from_utf8(bytes.clone()).unwrap();
                    let (header, rest) = text.split_once('\n').unwrap();
                    *bytes = format!("{}\n{rest}", header.to_ascii_uppercase()).into_bytes();
                }
            }
        });
    }
    assert!(
        zip_entries(&w.join("out").join(&folders[0])).contains(&"INTERACTION_FACT.csv".to_string())
    );
    w.run(&["verify", "--input", "out"]);
    let target = w.sqlite_url("target.db");
    w.run(&["load", "--input", "out", "--target", &target]);
    assert_target_matches_source(&w.sqlite_url("im.db"), &target, &w.join("out"));

    // Two entries that fold to one table are refused, naming both.
    let w2 = Workdir::new("upper-case-clash");
    let folders = exported_source(&w2, 44);
    tamper::rewrite(&w2.join("out").join(&folders[0]), Fix::All, |entries| {
        let copy = entries
            .iter()
            .find(|(n, _)| n == "tenant.csv")
            .cloned()
            .unwrap();
        entries.push(("TENANT.csv".into(), copy.1));
    });
    let o = w2.run_code(
        &mut w2.command(&["load", "--input", "out", "--target", &w2.sqlite_url("t.db")]),
        REFUSED,
    );
    let err = stderr(&o);
    assert!(
        err.contains("tenant.csv") && err.contains("TENANT.csv"),
        "{err}"
    );
}

/// Appends a column to one CSV of a folder: `value(i)` for data line `i` (from 1).
fn add_column(folder: &Path, entry: &str, column: &str, value: impl Fn(usize) -> String) {
    tamper::rewrite_entry(folder, entry, |csv| {
        let text = String::from_utf8(csv.to_vec()).unwrap();
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        let mut out = csv::Writer::from_writer(Vec::new());
        for (i, r) in rdr.records().enumerate() {
            let mut r: Vec<String> = r.unwrap().iter().map(String::from).collect();
            r.push(if i == 0 { column.to_string() } else { value(i) });
            out.write_record(&r).unwrap();
        }
        out.into_inner().unwrap()
    });
}

/// Column types of a PostgreSQL table as `format_type` prints them.
fn pg_type(db: &PgDb, table: &str, column: &str) -> String {
    db.sql(&format!(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attname = '{column}'"
    ))
}

#[test]
fn an_extra_column_is_added_with_an_inferred_type_and_widened_later_or_refused_under_freeze() {
    let w = Workdir::new("extra-column");
    let folders = exported_source(&w, 45);
    assert!(folders.len() >= 3, "{folders:?}");
    let out = w.join("out");
    // Folder 1: integers; folder 2: a value only a bigint holds; folder 3: text.
    add_column(
        &out.join(&folders[0]),
        "interaction_resource_fact.csv",
        "hold_count",
        |i| (i % 4).to_string(),
    );
    add_column(
        &out.join(&folders[1]),
        "interaction_resource_fact.csv",
        "hold_count",
        |i| {
            if i == 2 {
                "5000000000".into()
            } else {
                i.to_string()
            }
        },
    );
    add_column(
        &out.join(&folders[2]),
        "interaction_resource_fact.csv",
        "hold_count",
        |_| "n/a".into(),
    );
    add_column(
        &out.join(&folders[0]),
        "interaction_fact.csv",
        "queue_note",
        |i| {
            if i % 3 == 0 {
                String::new()
            } else {
                format!("note {i}")
            }
        },
    );

    // freeze: the first folder is refused, naming table and column, and the target holds nothing of it.
    let frozen = PgDb::new("extra_frozen");
    let o = w.run_code(
        &mut w.command(&[
            "load",
            "--input",
            "out",
            "--target",
            &frozen.url(),
            "--schema-changes",
            "freeze",
        ]),
        REFUSED,
    );
    let err = stderr(&o);
    assert!(
        err.contains(&folders[0])
            && err.contains("interaction_fact")
            && err.contains("queue_note")
            && err.contains("freeze"),
        "{err}"
    );
    assert_eq!(frozen.sql("SELECT count(*) FROM gim_export_ledger"), "0");
    assert_eq!(frozen.sql("SELECT count(*) FROM interaction_fact"), "0");
    assert_eq!(
        frozen.sql("SELECT count(*) FROM pg_attribute WHERE attname = 'queue_note'"),
        "0"
    );

    // evolve, one folder at a time: integer, then bigint, then text; never narrowed.
    let pg = PgDb::new("extra_evolve");
    let lite = w.sqlite_url("evolve.db");
    for (i, f) in folders.iter().take(3).enumerate() {
        for target in [pg.url(), lite.clone()] {
            let o = w.run(&["load", "--input", &format!("out/{f}"), "--target", &target]);
            let text = stdout(&o);
            if i == 0 {
                assert!(
                    text.contains("added column interaction_resource_fact.hold_count"),
                    "{text}"
                );
                assert!(
                    text.contains("added column interaction_fact.queue_note"),
                    "{text}"
                );
            }
        }
        let want = ["integer", "bigint", "text"][i];
        assert_eq!(
            pg_type(&pg, "interaction_resource_fact", "hold_count"),
            want,
            "after {f}"
        );
        assert_eq!(pg_type(&pg, "interaction_fact", "queue_note"), "text");
    }
    let lite_type = query_one(
        &lite,
        "SELECT type FROM pragma_table_info('interaction_resource_fact') WHERE name = 'hold_count'",
    );
    assert_eq!(lite_type, "TEXT");
    // The values arrived, the widening kept the older ones, and the ledger says what changed where.
    assert_eq!(
        pg.sql("SELECT count(*) FROM interaction_resource_fact WHERE hold_count = '5000000000'"),
        "1"
    );
    assert_eq!(
        query_one(
            &lite,
            "SELECT count(*) FROM interaction_resource_fact WHERE hold_count = '5000000000'"
        ),
        "1"
    );
    let changes = pg.sql(&format!(
        "SELECT schema_changes FROM gim_export_ledger WHERE folder = '{}'",
        folders[1]
    ));
    assert!(
        changes
            .contains("widened column interaction_resource_fact.hold_count from integer to bigint"),
        "{changes}"
    );
    assert_eq!(
        pg.sql("SELECT origin || ' ' || sql_type FROM gim_export_catalog WHERE table_name = 'interaction_resource_fact' AND column_name = 'hold_count'"),
        "widened text"
    );
    // Loading the rest (or nothing, exit 3) leaves the widened column as it is.
    let code = if folders.len() > 3 { 0 } else { 3 };
    w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &pg.url()]),
        code,
    );
    assert_eq!(
        pg_type(&pg, "interaction_resource_fact", "hold_count"),
        "text"
    );
}

#[test]
fn a_table_the_model_does_not_know_is_created_from_its_csv_and_undone_when_the_folder_fails() {
    let w = Workdir::new("unknown-table");
    let folders = exported_source(&w, 47);
    let first = w.join("out").join(&folders[0]);
    let csv = "CUSTOM_KPI_FACT_KEY,CREATE_AUDIT_KEY,UPDATE_AUDIT_KEY,SCORE,LABEL,\"ORDER\"\n\
               1,5,5,2.5,first,7\n2,5,6,-1,\"with, comma\",8\n3,6,6,,,9\n";
    tamper::rewrite(&first, Fix::All, |entries| {
        entries.push(("CUSTOM_KPI_FACT.csv".into(), csv.as_bytes().to_vec()));
    });

    // freeze refuses it by name; the target keeps nothing of the folder.
    let frozen = w.sqlite_url("frozen.db");
    let o = w.run_code(
        &mut w.command(&[
            "load",
            "--input",
            "out",
            "--target",
            &frozen,
            "--schema-changes",
            "freeze",
        ]),
        REFUSED,
    );
    assert!(stderr(&o).contains("custom_kpi_fact"), "{}", stderr(&o));
    assert_eq!(
        query_one(
            &frozen,
            "SELECT count(*) FROM sqlite_master WHERE name = 'custom_kpi_fact'"
        ),
        "0"
    );

    // evolve creates it: key by the <table>_key rule, types from the values, a column named `order`.
    let pg = PgDb::new("unknown_table");
    let o = w.run(&[
        "load",
        "--input",
        &format!("out/{}", folders[0]),
        "--target",
        &pg.url(),
    ]);
    let text = stdout(&o);
    assert!(
        text.contains("created table custom_kpi_fact")
            && text.contains("primary key (custom_kpi_fact_key)"),
        "{text}"
    );
    assert_eq!(
        pg_type(&pg, "custom_kpi_fact", "custom_kpi_fact_key"),
        "integer"
    );
    assert_eq!(pg_type(&pg, "custom_kpi_fact", "score"), "numeric");
    assert_eq!(pg_type(&pg, "custom_kpi_fact", "label"), "text");
    assert_eq!(pg_type(&pg, "custom_kpi_fact", "order"), "integer");
    assert_eq!(
        pg.sql("SELECT string_agg(custom_kpi_fact_key || ':' || coalesce(score::text, '-') || ':' || coalesce(label, '-') || ':' || \"order\", ' ' ORDER BY 1) FROM custom_kpi_fact"),
        "1:2.5:first:7 2:-1:with, comma:8 3:-:-:9"
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM gim_export_catalog WHERE table_name = 'custom_kpi_fact' AND origin = 'inferred'"),
        "7"
    );

    // A folder that creates a table and then fails on a later CSV leaves no table behind.
    let w2 = Workdir::new("unknown-table-undone");
    let folders = exported_source(&w2, 48);
    let first = w2.join("out").join(&folders[0]);
    tamper::rewrite(&first, Fix::All, |entries| {
        entries.push((
            "aaa_new_fact.csv".into(),
            b"aaa_new_fact_key,create_audit_key\n1,5\n".to_vec(),
        ));
    });
    // Break the last CSV's bytes after the checksums were computed.
    tamper::rewrite(&first, Fix::ZipOnly, |entries| {
        let e = entries
            .iter_mut()
            .find(|(n, _)| n == "user_data_cust_dim_1.csv")
            .unwrap();
        e.1.extend_from_slice(b"999,1,5,a,b,c,d,e\n");
    });
    for target in [w2.sqlite_url("t.db"), PgDb::new("undone").url()] {
        let o = w2.run_code(
            &mut w2.command(&["load", "--input", "out", "--target", &target]),
            REFUSED,
        );
        assert!(stderr(&o).contains("checksum mismatch"), "{}", stderr(&o));
        assert_eq!(
            query_one(&target, "SELECT count(*) FROM gim_export_ledger"),
            "0"
        );
        let exists = if target.starts_with("sqlite") {
            query_one(
                &target,
                "SELECT count(*) FROM sqlite_master WHERE name = 'aaa_new_fact'",
            )
        } else {
            query_one(
                &target,
                "SELECT count(*) FROM pg_class WHERE relname = 'aaa_new_fact'",
            )
        };
        assert_eq!(
            exists, "0",
            "{target}: the created table outlived its folder"
        );
    }
}

#[test]
fn a_folder_whose_xml_has_only_the_six_genesys_fields_loads() {
    let w = Workdir::new("genesys-xml");
    let folders = exported_source(&w, 49);
    // Our own folders, kept aside to know which keys were exported.
    fs::create_dir_all(w.join("ours")).unwrap();
    for f in &folders {
        let from = w.join("out").join(f);
        let to = w.join("ours").join(f);
        fs::create_dir_all(&to).unwrap();
        for e in fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    for f in &folders {
        let xml_path = w.join("out").join(f).join(format!("{f}.extracted.xml"));
        let meta = gim_export::format::ExportMetadata::from_xml(
            &fs::read_to_string(&xml_path).unwrap(),
            f,
        )
        .unwrap();
        // As in the vendor's documentation: nothing but the six fields.
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<info>\n  <created-ts>{}</created-ts>\n  <gim-schema-version>8.5.116.20</gim-schema-version>\n  <gim-version>8.5.116.20</gim-version>\n  <hwm-from audit-key=\"{}\" created-ts=\"{}\"/>\n  <hwm-to audit-key=\"{}\" created-ts=\"{}\"/>\n  <max-data-ts>{}</max-data-ts>\n</info>\n",
            meta.created_ts,
            meta.hwm_from.audit_key,
            meta.hwm_from.created_ts,
            meta.hwm_to.audit_key,
            meta.hwm_to.created_ts,
            meta.max_data_ts
        );
        fs::write(&xml_path, xml).unwrap();
    }
    w.run(&["verify", "--input", "out"]);
    let target = w.sqlite_url("target.db");
    let o = w.run(&["load", "--input", "out", "--target", &target]);
    assert!(
        stdout(&o).contains(&format!("loaded {} folder(s)", folders.len())),
        "{}",
        stdout(&o)
    );
    assert_target_matches_source(&w.sqlite_url("im.db"), &target, &w.join("ours"));
}
