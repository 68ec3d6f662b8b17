//! Hostile or unusual sources: the exporter publishes only folders that pass `verify` and load, and
//! otherwise stops with a message naming the table, key and column (never a silent skip of rows, never
//! a path outside the output directory).

use std::fs;

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

#[test]
fn table_names_that_are_not_identifiers_are_never_turned_into_paths() {
    let w = Workdir::new("src-paths");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 60, 82);
    exec_sql(
        &src,
        "CREATE TABLE \"../../pwned\" (id INTEGER PRIMARY KEY, create_audit_key INTEGER); \
         INSERT INTO \"../../pwned\" VALUES (1, 5); \
         CREATE TABLE \"/tmp/gimx-victim\" (id INTEGER PRIMARY KEY, create_audit_key INTEGER); \
         INSERT INTO \"/tmp/gimx-victim\" VALUES (1, 5); \
         CREATE TABLE \"x\"\"; drop\" (id INTEGER PRIMARY KEY, create_audit_key INTEGER); \
         INSERT INTO \"x\"\"; drop\" VALUES (1, 5);",
    );
    let o = w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let err = stderr(&o);
    assert!(
        err.contains("../../pwned") && err.contains("not a plain identifier"),
        "{err}"
    );
    let names = entries(&w);
    assert!(
        names
            .iter()
            .all(|n| gim_export::target::is_plain_identifier(n)),
        "{names:?}"
    );
    assert!(!w.path().parent().unwrap().join("pwned.part.zip").exists());
    assert!(!std::path::Path::new("/tmp/gimx-victim.part.zip").exists());
    w.run(&["verify", "--input", "out"]);
    w.run(&["load", "--input", "out", "--target", &w.sqlite_url("t.db")]);
}

#[test]
fn names_a_receiver_cannot_load_stop_the_export_naming_them() {
    // Two tables that differ only in case (PostgreSQL keeps both).
    let w = Workdir::new("src-case");
    let db = PgDb::new("srccase");
    simulate(&w, &db.url(), 1, 60, 83);
    db.sql("CREATE TABLE \"TENANT\" (tenant_key integer PRIMARY KEY, create_audit_key numeric(19), update_audit_key numeric(19))");
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &db.url(),
            "--output",
            "out",
            "--catch-up",
        ]),
        2,
    );
    let err = stderr(&o);
    assert!(
        err.contains("\"TENANT\"") && err.contains("\"tenant\"") && err.contains("--exclude"),
        "{err}"
    );
    assert!(export_folders(&w.join("out")).is_empty());

    // Two columns that differ only in case, and a column name that is not an identifier.
    for (tag, ddl, needle) in [
        ("cols", "CREATE TABLE x_fact (id integer PRIMARY KEY, create_audit_key numeric(19), \"a\" integer, \"A\" integer)", "different case"),
        ("badcol", "CREATE TABLE y_fact (id integer PRIMARY KEY, create_audit_key numeric(19), \"bad col\" integer)", "\"bad col\""),
    ] {
        let w = Workdir::new(&format!("src-{tag}"));
        let db = PgDb::new(tag);
        simulate(&w, &db.url(), 1, 60, 84);
        db.sql(ddl);
        let o = w.run_code(
            &mut w.command(&["export", "--source", &db.url(), "--output", "out", "--catch-up"]),
            2,
        );
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
    }
}

#[test]
fn text_no_receiver_can_load_stops_the_export_naming_table_key_and_column_and_blobs_go_as_hex() {
    for (tag, value, needle) in [
        ("utf8", "CAST(X'C328' AS TEXT)", "not valid UTF-8"),
        ("nul", "CAST(X'610062' AS TEXT)", "NUL"),
    ] {
        let w = Workdir::new(&format!("src-{tag}"));
        let src = w.sqlite_url("im.db");
        simulate(&w, &src, 1, 60, 85);
        let key = query_one(&src, "SELECT MIN(resource_key) FROM resource_");
        exec_sql(
            &src,
            &format!("UPDATE resource_ SET resource_name = {value} WHERE resource_key = {key}"),
        );
        let o = w.run_code(
            &mut w.command(&["export", "--source", &src, "--output", "out", "--catch-up"]),
            6,
        );
        let err = stderr(&o);
        assert!(
            err.contains("resource_")
                && err.contains(&format!("resource_key={key}"))
                && err.contains("resource_name")
                && err.contains(needle),
            "{err}"
        );
        assert!(export_folders(&w.join("out")).is_empty());
    }

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
