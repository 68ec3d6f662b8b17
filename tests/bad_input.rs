//! Bad input: each a clear error that names what is wrong, a documented exit code, nothing written.

use std::fs;

use crate::harness::*;

const DATABASE: i32 = 6;
const CONFIG: i32 = 2;

fn assert_nothing_written(w: &Workdir, out: &str) {
    assert!(!w.join(out).exists(), "{out} was created");
}

#[test]
fn source_without_audit_log() {
    let w = Workdir::new("no-audit-log");
    let url = w.sqlite_url("empty.db");
    let rt = runtime();
    rt.block_on(async {
        use sqlx::ConnectOptions;
        use std::str::FromStr;
        let mut c = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE something_else (id INTEGER)")
            .execute(&mut c)
            .await
            .unwrap();
    });
    let out = w.run_code(
        &mut w.command(&["export", "--source", &url, "--output", "out"]),
        DATABASE,
    );
    let err = stderr(&out);
    assert!(
        err.contains("CTL_AUDIT_LOG") && err.contains("empty.db"),
        "{err}"
    );
    assert_nothing_written(&w, "out");

    let pg = PgDb::new("noaudit");
    pg.sql("CREATE TABLE something_else (id integer)");
    let out = w.run_code(
        &mut w.command(&["export", "--source", &pg.url(), "--output", "out"]),
        DATABASE,
    );
    let err = stderr(&out);
    assert!(
        err.contains("CTL_AUDIT_LOG") && err.contains(&pg.name),
        "{err}"
    );
    assert_nothing_written(&w, "out");
}

#[test]
fn missing_sqlite_file_is_not_created() {
    let w = Workdir::new("missing-file");
    let url = w.sqlite_url("nowhere.db");
    let out = w.run_code(
        &mut w.command(&["export", "--source", &url, "--output", "out"]),
        DATABASE,
    );
    assert!(stderr(&out).contains("nowhere.db"), "{}", stderr(&out));
    assert!(!w.join("nowhere.db").exists());
    assert_nothing_written(&w, "out");
}

#[test]
fn unreachable_database_names_it_and_hides_the_password() {
    let w = Workdir::new("unreachable");
    let url = "postgres://gim:hunter2@127.0.0.1:1/infomart";
    let out = w.run_code(
        &mut w.command(&["export", "--source", url, "--output", "out"]),
        DATABASE,
    );
    let err = stderr(&out);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
    assert_nothing_written(&w, "out");
}

#[test]
fn output_path_that_is_a_file() {
    let w = Workdir::new("output-file");
    let src = w.sqlite_url("im.db");
    w.run(&[
        "simulate",
        "--source",
        &src,
        "--days",
        "1",
        "--interactions-per-day",
        "50",
    ]);
    fs::write(w.join("out"), "not a directory").unwrap();
    let out = w.run_code(
        &mut w.command(&["export", "--source", &src, "--output", "out"]),
        CONFIG,
    );
    let err = stderr(&out);
    assert!(
        err.contains("out") && err.contains("not a directory"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(w.join("out")).unwrap(),
        "not a directory"
    );
}

#[test]
fn bad_flags_name_the_flag() {
    let w = Workdir::new("flags");
    let out = w.run_code(&mut w.command(&["export", "--chunk-size", "1w"]), CONFIG);
    assert!(stderr(&out).contains("--chunk-size"), "{}", stderr(&out));
    let out = w.run_code(
        &mut w.command(&["export", "--start-date", "yesterday"]),
        CONFIG,
    );
    assert!(stderr(&out).contains("--start-date"), "{}", stderr(&out));
    let out = w.run_code(
        &mut w.command(&["export", "--source", "oracle://x/y"]),
        CONFIG,
    );
    assert!(stderr(&out).contains("--source"), "{}", stderr(&out));
    assert_nothing_written(&w, "output");
}

#[test]
fn start_date_refused_on_an_existing_chain() {
    let w = Workdir::new("start-date");
    let src = w.sqlite_url("im.db");
    w.run(&[
        "simulate",
        "--source",
        &src,
        "--days",
        "2",
        "--interactions-per-day",
        "50",
    ]);
    w.run(&["export", "--source", &src, "--output", "out"]);
    let before = tree(&w.join("out"));
    let out = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--start-date",
            "2024-01-02",
        ]),
        CONFIG,
    );
    assert!(stderr(&out).contains("--start-date"), "{}", stderr(&out));
    assert_same_tree(&before, &tree(&w.join("out")), "refused run");
}

#[test]
fn a_refused_connection_says_so_at_once_and_a_bad_host_or_role_is_not_retried() {
    // Regression: nothing listening on the port waited 15 s per try and said only "timed out
    // waiting for a connection".
    let w = Workdir::new("connect-errors");
    let export = |url: &str| {
        let mut cmd = w.command(&[
            "export",
            "--source",
            url,
            "--output",
            "out",
            "--catch-up",
            "--max-retries",
            "1",
            "--retry-delay",
            "1",
        ]);
        let started = std::time::Instant::now();
        let o = w.run_code(&mut cmd, 6);
        (stderr(&o), started.elapsed())
    };
    let (err, took) = export("postgres://postgres@127.0.0.1:1/gim");
    assert!(
        err.contains("connection refused") && err.contains("trying again"),
        "{err}"
    );
    assert!(
        took < std::time::Duration::from_secs(14),
        "took {took:?}: {err}"
    );
    for (url, needle) in [
        (
            "postgres://postgres@no-such-host.invalid:5432/gim",
            "does not resolve",
        ),
        (
            "postgres://no_such_role@127.0.0.1:5432/postgres",
            "no_such_role",
        ),
    ] {
        let (err, _) = export(url);
        assert!(err.contains(needle), "{url}: {err}");
        assert!(
            !err.contains("trying again"),
            "{url}: not worth a retry: {err}"
        );
    }
    // The loader says the same.
    let o = w.run_code(
        &mut w.command(&[
            "load",
            "--input",
            concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/golden/expected"),
            "--target",
            "postgres://postgres@127.0.0.1:1/t",
        ]),
        6,
    );
    assert!(stderr(&o).contains("connection refused"), "{}", stderr(&o));
}
