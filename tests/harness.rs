//! Test harness: a fresh directory per test, the real binary, real databases.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gim-export"))
}

/// A temporary working directory; kept (and printed) when the test fails.
pub struct Workdir {
    dir: Option<tempfile::TempDir>,
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("kept the failed test's directory: {}", dir.keep().display());
            }
        }
    }
}

impl Workdir {
    pub fn new(name: &str) -> Workdir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("gim-export-{name}-"))
            .tempdir()
            .expect("temp dir");
        Workdir { dir: Some(dir) }
    }
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("workdir").path()
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.path().join(p)
    }
    /// `gim-export <args>` in this directory, with no GIM_EXPORT_* settings inherited.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.current_dir(self.path()).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("GIM_EXPORT_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("GIM_EXPORT_LOG", "warn");
        // Retries wait 30 s and more by default; only the retry test wants them (it sets the flags).
        cmd.env("GIM_EXPORT_MAX_RETRIES", "0");
        cmd
    }
    /// Runs and asserts the exit code, printing everything when it differs.
    pub fn run_code(&self, cmd: &mut Command, code: i32) -> Output {
        let out = cmd.output().expect("run gim-export");
        if out.status.code() != Some(code) {
            panic!(
                "expected exit code {code}, got {:?}\ndir: {}\ncommand: {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
                out.status.code(),
                self.path().display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_code(&mut self.command(args), 0)
    }
    pub fn sqlite_url(&self, file: &str) -> String {
        format!("sqlite://{}", self.join(file).display())
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A MariaDB database of its own on 127.0.0.1:3306 (root, no password), dropped at the end of the test.
pub struct MyDb {
    pub name: String,
}

static MY_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Rows of `sql` on a MariaDB URL as text (NULL as ""), through the same driver the loader uses.
pub fn my_rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    use mysql_async::prelude::Queryable;
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(url).await.unwrap_or_else(|e| {
            panic!("MariaDB at {url}: {e} (make test starts the server; is it running?)")
        });
        conn.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
            .await
            .unwrap();
        let rows: Vec<mysql_async::Row> = conn
            .query(sql)
            .await
            .unwrap_or_else(|e| panic!("MariaDB refused `{sql}`: {e}"));
        let out = rows
            .into_iter()
            .map(|r| {
                r.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        mysql_async::Value::NULL => String::new(),
                        mysql_async::Value::Bytes(b) => {
                            pg_like_time(String::from_utf8_lossy(&b).into_owned())
                        }
                        other => other.as_sql(true).trim_matches('\'').to_string(),
                    })
                    .collect()
            })
            .collect();
        conn.disconnect().await.unwrap();
        out
    })
}

/// `2024-01-01 10:00:00.000000` (a DATETIME(6)) as PostgreSQL prints the same timestamp:
/// `2024-01-01 10:00:00`, fractions without their trailing zeros.
fn pg_like_time(v: String) -> String {
    let b = v.as_bytes();
    let is_time = b.len() > 20
        && b[4] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[19] == b'.'
        && b[20..].iter().all(u8::is_ascii_digit);
    if is_time {
        v.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        v
    }
}

impl MyDb {
    pub fn new(tag: &str) -> MyDb {
        let name = format!(
            "gimx_{}_{}_{}",
            tag.replace('-', "_"),
            std::process::id(),
            MY_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let server = "mysql://root@127.0.0.1:3306/mysql";
        my_rows(server, &format!("DROP DATABASE IF EXISTS {name}"));
        my_rows(server, &format!("CREATE DATABASE {name}"));
        MyDb { name }
    }
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }
    pub fn sql(&self, sql: &str) -> Vec<Vec<String>> {
        my_rows(&self.url(), sql)
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Not from a panicking test's unwinding into another panic.
        let _ = std::panic::catch_unwind(move || {
            my_rows(
                "mysql://root@127.0.0.1:3306/mysql",
                &format!("DROP DATABASE IF EXISTS {name}"),
            )
        });
    }
}

/// A PostgreSQL database of its own on 127.0.0.1:5432, dropped at the end of the test.
pub struct PgDb {
    pub name: String,
}

static PG_COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn psql(db: &str, sql: &str) -> Output {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-qtAc",
            sql,
        ])
        .output()
        .expect("psql must be installed (make test installs it)");
    if !out.status.success() {
        panic!(
            "PostgreSQL on 127.0.0.1:5432 refused `{sql}`: {} (make test starts the server; is it running?)",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

impl PgDb {
    pub fn new(tag: &str) -> PgDb {
        let name = format!(
            "gimx_{tag}_{}_{}",
            std::process::id(),
            PG_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        psql("postgres", &format!("CREATE DATABASE {name}"));
        PgDb { name }
    }
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
    pub fn sql(&self, sql: &str) -> String {
        String::from_utf8_lossy(&psql(&self.name, sql).stdout)
            .trim()
            .to_string()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qtAc",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// Every file below `dir` (relative path -> bytes), skipping dotfiles (locks, state, staging).
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// Names of the export folders in `dir`, sorted.
pub fn export_folders(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("export_"))
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Asserts two trees are byte-identical, naming the first difference.
pub fn assert_same_tree(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>, what: &str) {
    let ka: Vec<_> = a.keys().collect();
    let kb: Vec<_> = b.keys().collect();
    assert_eq!(ka, kb, "{what}: different files");
    for (k, v) in a {
        assert!(v == &b[k], "{what}: {k} differs");
    }
}

/// A tokio runtime for tests that call the library directly.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One table's CSV from an export: header and records as strings.
#[derive(Clone, Debug, Default)]
pub struct CsvTable {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl CsvTable {
    pub fn col(&self, name: &str) -> usize {
        self.header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    }
}

/// Reads an export folder: its metadata and every table in its zip.
pub fn read_folder(
    dir: &Path,
) -> (
    gim_export::format::ExportMetadata,
    BTreeMap<String, CsvTable>,
) {
    use std::io::Read;
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let xml = fs::read_to_string(dir.join(format!("{name}.extracted.xml"))).unwrap();
    let meta = gim_export::format::ExportMetadata::from_xml(&xml, &name).unwrap();
    let mut zip =
        zip::ZipArchive::new(fs::File::open(dir.join(format!("{name}.zip"))).unwrap()).unwrap();
    let mut tables = BTreeMap::new();
    for i in 0..zip.len() {
        let mut e = zip.by_index(i).unwrap();
        let entry = e.name().unwrap().to_string();
        let Some(table) = entry.strip_suffix(".csv") else {
            continue;
        };
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        let mut r = csv::Reader::from_reader(&bytes[..]);
        let header = r.headers().unwrap().iter().map(String::from).collect();
        let rows = r
            .records()
            .map(|rec| rec.unwrap().iter().map(String::from).collect())
            .collect();
        tables.insert(table.to_string(), CsvTable { header, rows });
    }
    (meta, tables)
}

/// Every export folder of `dir`, read, in order.
pub fn read_exports(
    dir: &Path,
) -> Vec<(
    String,
    gim_export::format::ExportMetadata,
    BTreeMap<String, CsvTable>,
)> {
    export_folders(dir)
        .into_iter()
        .map(|f| {
            let (m, t) = read_folder(&dir.join(&f));
            (f, m, t)
        })
        .collect()
}

/// `gim-export simulate` into `url`.
pub fn simulate(w: &Workdir, url: &str, days: u32, per_day: u32, seed: u64) {
    w.run(&[
        "simulate",
        "--source",
        url,
        "--days",
        &days.to_string(),
        "--interactions-per-day",
        &per_day.to_string(),
        "--seed",
        &seed.to_string(),
    ]);
}

/// Every row of `table` as strings (NULL and empty text both ""), sorted, from SQLite or PostgreSQL.
/// Known GIM tables list their columns in the schema's order, whatever order a migration left them in.
pub fn dump_table(url: &str, table: &str) -> Vec<Vec<String>> {
    let columns = sim_table(table)
        .map(|t| {
            t.columns
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "*".to_string());
    let mut rows: Vec<Vec<String>> = if url.starts_with("sqlite") {
        runtime().block_on(async {
            use sqlx::{Row, TypeInfo, ValueRef};
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            let rows = sqlx::query(&format!("SELECT {columns} FROM {table}"))
                .fetch_all(&pool)
                .await
                .unwrap();
            let out = rows
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            let raw = r.try_get_raw(i).unwrap();
                            if raw.is_null() {
                                return String::new();
                            }
                            match raw.type_info().name() {
                                "INTEGER" => r.get::<i64, _>(i).to_string(),
                                _ => r.get::<String, _>(i),
                            }
                        })
                        .collect()
                })
                .collect();
            pool.close().await;
            out
        })
    } else if url.starts_with("mysql") {
        my_rows(url, &format!("SELECT {columns} FROM {table}"))
    } else {
        let db = url.rsplit('/').next().unwrap();
        let out = psql(
            db,
            &format!("COPY (SELECT {columns} FROM {table}) TO STDOUT WITH (FORMAT csv)"),
        );
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(&out.stdout[..])
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect()
    };
    rows.sort();
    rows
}

/// The GIM tables `simulate` writes (the ones a source made by the tests has).
pub fn gim_tables() -> Vec<String> {
    gim_export::schema::simulated()
        .tables
        .iter()
        .map(|t| t.name.clone())
        .collect()
}

/// A table as `simulate` writes it: its columns in the simulator's order.
pub fn sim_table(name: &str) -> Option<&'static gim_export::schema::GimTable> {
    gim_export::schema::simulated().table(name)
}

/// The columns `simulate` writes in `table`.
pub fn sim_columns(table: &str) -> Vec<String> {
    sim_table(table)
        .unwrap_or_else(|| panic!("{table} is not a simulated table"))
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

/// Every GIM table of a target.
pub fn dump_target(url: &str) -> BTreeMap<String, Vec<Vec<String>>> {
    gim_tables()
        .into_iter()
        .map(|t| (t.clone(), dump_table(url, &t)))
        .collect()
}

/// The audit keys exported into `dir`.
pub fn exported_keys(dir: &Path) -> gim_export::audit::AuditKeySet {
    let mut keys = gim_export::audit::AuditKeySet::new();
    for f in export_folders(dir) {
        let xml = fs::read_to_string(dir.join(&f).join(format!("{f}.extracted.xml"))).unwrap();
        let m = gim_export::format::ExportMetadata::from_xml(&xml, &f).unwrap();
        for k in m.audit_keys.unwrap().iter() {
            keys.insert(k);
        }
    }
    keys
}

/// Runs `sql` (one or more statements) on a SQLite, PostgreSQL or MariaDB database.
pub fn exec_sql(url: &str, sql: &str) {
    if url.starts_with("mysql") {
        my_rows(url, sql);
    } else if url.starts_with("sqlite") {
        runtime().block_on(async {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        })
    } else {
        let db = url.rsplit('/').next().unwrap();
        let o = psql(db, sql);
        assert!(
            o.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Rows of a query as text (SQLite, PostgreSQL or MariaDB).
pub fn query_rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    if url.starts_with("mysql") {
        my_rows(url, sql)
    } else if url.starts_with("sqlite") {
        runtime().block_on(async {
            use sqlx::Row;
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
            let out = rows
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            r.try_get::<String, _>(i)
                                .or_else(|_| r.try_get::<i64, _>(i).map(|v| v.to_string()))
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .collect();
            pool.close().await;
            out
        })
    } else {
        let db = url.rsplit('/').next().unwrap();
        let o = psql(db, &format!("COPY ({sql}) TO STDOUT"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.split('\t').map(String::from).collect())
            .collect()
    }
}

/// One value from a SQLite or PostgreSQL database, as text ("" for no row or NULL).
pub fn query_one(url: &str, sql: &str) -> String {
    if url.starts_with("mysql") {
        my_rows(url, &format!("SELECT ({sql})"))
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or_default()
    } else if url.starts_with("sqlite") {
        runtime().block_on(async {
            use sqlx::Row;
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            let v = sqlx::query(&format!("SELECT CAST(({sql}) AS TEXT)"))
                .fetch_one(&pool)
                .await
                .unwrap()
                .get::<Option<String>, _>(0)
                .unwrap_or_default();
            pool.close().await;
            v
        })
    } else {
        let db = url.rsplit('/').next().unwrap();
        let o = psql(db, &format!("COPY (SELECT ({sql})::text) TO STDOUT"));
        let s = String::from_utf8_lossy(&o.stdout).trim_end().to_string();
        if s == "\\N" {
            String::new()
        } else {
            s
        }
    }
}

/// Asserts that the target holds exactly the source rows created or updated by exported keys, every
/// column equal (NULL and empty text alike: the format cannot tell them apart).
pub fn assert_target_matches_source(source: &str, target: &str, out: &std::path::Path) {
    let keys = exported_keys(out);
    let src_columns = |t: &str| -> (usize, Option<usize>) {
        let def = sim_table(t).unwrap();
        let c = def
            .columns
            .iter()
            .position(|c| c.name == "create_audit_key")
            .unwrap();
        let u = def
            .columns
            .iter()
            .position(|c| c.name == "update_audit_key");
        (c, u)
    };
    let mut checked = 0;
    for table in gim_tables() {
        let (c, u) = src_columns(&table);
        let expected: BTreeMap<String, Vec<String>> = dump_table(source, &table)
            .into_iter()
            .filter(|r| {
                keys.contains(r[c].parse().unwrap())
                    || u.is_some_and(|u| keys.contains(r[u].parse().unwrap()))
            })
            .map(|r| (r[0].clone(), r))
            .collect();
        let actual: BTreeMap<String, Vec<String>> = dump_table(target, &table)
            .into_iter()
            .map(|r| (r[0].clone(), r))
            .collect();
        assert_eq!(expected.len(), actual.len(), "{table}: row count");
        for (pk, row) in &expected {
            let got = actual
                .get(pk)
                .unwrap_or_else(|| panic!("{table}: row {pk} missing"));
            // A row whose newest change is not exported yet may hold an older version.
            let newest = u.map(|u| &row[u]).unwrap_or(&row[c]);
            if keys.contains(newest.parse().unwrap()) {
                assert_eq!(got, row, "{table}: row {pk}");
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} rows compared");
}

/// Copies the files of one directory (an export folder) into another.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Sets a path's modification time `days` days back (retention tests).
pub fn age(path: &Path, days: u32) {
    let ok = Command::new("touch")
        .arg("-d")
        .arg(format!("{days} days ago"))
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Polls `done` every 20 ms until it holds, failing the test after `limit`.
pub fn wait_for(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Sends `signal` (`-TERM`, `-INT`, ...) to a process.
pub fn kill(signal: &str, pid: u32) {
    assert!(Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// One simulated day (40 interactions, seed 5) exported from SQLite as one folder: the workdir, the
/// source URL and the folder's path.
pub fn one_folder(tag: &str) -> (Workdir, String, PathBuf) {
    let w = Workdir::new(tag);
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 40, 5);
    w.run(&["export", "--source", &src, "--output", "out"]);
    let folder = w.join("out").join(&export_folders(&w.join("out"))[0]);
    (w, src, folder)
}

/// Replaces the rows of the folder's `user_data_cust_dim_1.csv` (a small table of text attributes,
/// 8 columns) with `rows` under its header, every checksum kept consistent.
pub fn set_dim_rows(folder: &Path, rows: &str) {
    crate::tamper::rewrite_entry(folder, "user_data_cust_dim_1.csv", |csv| {
        let text = std::str::from_utf8(csv).unwrap();
        format!("{}\n{rows}", text.lines().next().unwrap()).into_bytes()
    });
}

impl MyDb {
    /// The whole database as `mysqldump` writes it: see [`my_dump`].
    pub fn dump(&self) -> Vec<u8> {
        my_dump(&self.name)
    }
}

/// A MariaDB database as `mysqldump` writes it (no date, one row a line): to compare a target
/// before and after.
pub fn my_dump(name: &str) -> Vec<u8> {
    {
        let o = Command::new("mysqldump")
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                "3306",
                "-u",
                "root",
                "--skip-dump-date",
                "--skip-comments",
                "--skip-extended-insert",
                name,
            ])
            .output()
            .expect("mysqldump must be installed (make test installs mariadb-client)");
        assert!(o.status.success(), "mysqldump {name}: {}", stderr(&o));
        o.stdout
    }
}
