//! Hostile or unusual sources: the exporter publishes only folders that pass `verify` and load, and
//! otherwise stops with a message naming the table, key and column (never a silent skip of rows, never
//! a path outside the output directory).

use std::fs;
use std::path::Path;

use crate::harness::*;

/// The CSV entry names of every folder in `out`.
fn entries(w: &Workdir) -> Vec<String> {
    let mut names = Vec::new();
    for f in export_folders(&w.join("out")) {
        let (_, tables) = read_folder(&w.join("out").join(&f));
        names.extend(tables.keys().cloned());
    }
    names
}

#[test]
fn a_table_the_role_cannot_read_stops_the_export_naming_it() {
    let w = Workdir::new("src-revoked");
    let db = PgDb::new("revoked");
    simulate(&w, &db.url(), 1, 80, 81);
    let role = format!("gimx_reader_{}", std::process::id());
    psql(
        "postgres",
        &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"),
    );
    db.sql(&format!(
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}; REVOKE SELECT ON interaction_fact FROM {role}"
    ));
    let url = db.url().replace("postgres@", &format!("{role}@"));
    let o = w.run_code(
        &mut w.command(&["export", "--source", &url, "--output", "out", "--catch-up"]),
        6,
    );
    let err = stderr(&o);
    assert!(
        err.contains("interaction_fact") && err.contains("GRANT SELECT"),
        "{err}"
    );
    assert!(
        export_folders(&w.join("out")).is_empty(),
        "nothing is published"
    );
    // Once the grant is back, the table is exported with the rest.
    db.sql(&format!("GRANT SELECT ON interaction_fact TO {role}"));
    w.run(&["export", "--source", &url, "--output", "out", "--catch-up"]);
    assert!(entries(&w).iter().any(|t| t == "interaction_fact"));
    drop(db);
    psql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
}

/// A case of `fixtures/hostile/sources/cases.toml`.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SourceCase {
    file: String,
    backends: Vec<String>,
    exit: i32,
    needles: Vec<String>,
}

#[derive(serde::Deserialize)]
struct SourceCases {
    case: Vec<SourceCase>,
}

/// Every file in `dir` and below, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(list) = fs::read_dir(&d) else { continue };
        for e in list {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

#[test]
fn every_hostile_source_of_fixtures_hostile_publishes_only_what_verifies_and_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hostile/sources");
    let cases: SourceCases =
        toml::from_str(&fs::read_to_string(dir.join("cases.toml")).unwrap()).unwrap();
    assert!(cases.case.len() >= 7);
    for (n, case) in cases.case.iter().enumerate() {
        let sql = fs::read_to_string(dir.join(&case.file)).unwrap();
        for backend in &case.backends {
            let tag = format!("src-fixture-{n}-{backend}");
            let w = Workdir::new(&tag);
            let pg;
            let src = match backend.as_str() {
                "sqlite" => w.sqlite_url("im.db"),
                "postgres" => {
                    pg = PgDb::new(&format!("srcfix{n}"));
                    pg.url()
                }
                other => panic!("{}: unknown backend {other}", case.file),
            };
            simulate(&w, &src, 1, 60, 90 + n as u64);
            exec_sql(&src, &sql);
            let o = w.run_code(
                &mut w.command(&["export", "--source", &src, "--output", "out", "--catch-up"]),
                case.exit,
            );
            let err = stderr(&o);
            let at = format!("{} on {backend}", case.file);
            for needle in &case.needles {
                assert!(
                    err.contains(needle.as_str()),
                    "{at}: expected {needle:?} in: {err}"
                );
            }
            // Nothing is written outside the output directory, whatever the names.
            let outside: Vec<String> = files_under(w.path())
                .into_iter()
                .filter(|f| !f.starts_with("out/") && !f.starts_with("im.db"))
                .collect();
            assert!(
                outside.is_empty(),
                "{at}: written outside --output: {outside:?}"
            );
            assert!(!Path::new("/tmp/gimx-victim.part.zip").exists(), "{at}");
            assert!(
                !w.path().parent().unwrap().join("pwned.part.zip").exists(),
                "{at}"
            );
            if case.exit == 0 {
                assert!(
                    entries(&w)
                        .iter()
                        .all(|n| gim_export::target::is_plain_identifier(n)),
                    "{at}: {:?}",
                    entries(&w)
                );
                w.run(&["verify", "--input", "out"]);
                w.run(&["load", "--input", "out", "--target", &w.sqlite_url("t.db")]);
            } else {
                let left = files_under(&w.join("out"));
                assert!(
                    left.iter()
                        .all(|f| !f.contains("export_") && !f.contains(".part")),
                    "{at}: a failed export published or left {left:?}"
                );
            }
        }
    }
    // The keyword columns arrived, quoted, on the target.
    let w = Workdir::new("src-keywords");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 60, 97);
    exec_sql(
        &src,
        &fs::read_to_string(dir.join("columns-named-after-sql-keywords.sql")).unwrap(),
    );
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let pg = PgDb::new("keywords");
    w.run(&["load", "--input", "out", "--target", &pg.url()]);
    assert_eq!(
        pg.sql("SELECT string_agg(\"select\" || ':' || \"from\", ',' ORDER BY \"order\") FROM keyword_fact"),
        "drop:7,table:8"
    );
}

#[test]
fn binary_columns_are_exported_as_hex_and_the_xml_says_so() {
    let w = Workdir::new("src-blob");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 60, 86);
    exec_sql(&src, "CREATE TABLE blob_fact (blob_fact_key INTEGER PRIMARY KEY, create_audit_key INTEGER, payload BLOB); INSERT INTO blob_fact VALUES (1, 5, X'00FF10')");
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let first = &export_folders(&w.join("out"))[0];
    let (meta, tables) = read_folder(&w.join("out").join(first));
    let blob = meta.tables.iter().find(|t| t.name == "blob_fact").unwrap();
    assert_eq!(
        blob.binary_hex,
        vec!["payload".to_string()],
        "the XML says the column is hex"
    );
    assert_eq!(
        tables["blob_fact"].rows,
        vec![vec!["1".to_string(), "5".into(), "\\x00ff10".into()]]
    );
    w.run(&["verify", "--input", "out"]);
    let pg = PgDb::new("blob");
    w.run(&["load", "--input", "out", "--target", &pg.url()]);
    assert_eq!(pg.sql("SELECT payload FROM blob_fact"), "\\x00ff10");
    let _ = fs::metadata(w.path());
}
