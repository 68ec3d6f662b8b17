//! Golden: a small checked-in Info Mart exports to the checked-in folders, byte for byte.
//! Run with GIM_EXPORT_BLESS=1 to rewrite the expected folders after an intended format change.

use std::fs;
use std::path::PathBuf;

use crate::harness::*;

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/golden")
        .join(p)
}

#[test]
fn fixture_database_exports_to_the_expected_folders() {
    let w = Workdir::new("golden");
    let url = w.sqlite_url("fixture.db");
    let sql = fs::read_to_string(fixture("source.sql")).unwrap();
    runtime().block_on(async {
        use sqlx::ConnectOptions;
        use std::str::FromStr;
        let mut c = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(&sql).execute(&mut c).await.unwrap();
    });
    w.run(&[
        "export",
        "--source",
        &url,
        "--output",
        "out",
        "--catch-up",
        "--gim-schema-version",
        "8.5.116",
    ]);
    let actual = tree(&w.join("out"));
    let expected_dir = fixture("expected");
    if std::env::var_os("GIM_EXPORT_BLESS").is_some() {
        let _ = fs::remove_dir_all(&expected_dir);
        for (rel, bytes) in &actual {
            let p = expected_dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, bytes).unwrap();
        }
    }
    let expected = tree(&expected_dir);
    assert!(
        !expected.is_empty(),
        "no expected folders: run once with GIM_EXPORT_BLESS=1"
    );
    assert_same_tree(&expected, &actual, "golden export");
}
