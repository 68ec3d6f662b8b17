//! Loader crashes and concurrent loaders: whole exports only, and the rerun finishes the job with no
//! duplicates and no losses; a second loader on the same target refuses.

use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gim_export::package::ABORT_AFTER_ENV;

use crate::harness::*;

#[test]
fn loader_killed_at_many_points_keeps_whole_exports() {
    let w = Workdir::new("load-crash");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 3, 400, 23);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let folders = export_folders(&w.join("out"));
    let pg = PgDb::new("crashref");
    // The target after each prefix of the folders, loaded one at a time.
    w.run(&["target-schema", "--target", &w.sqlite_url("empty.db")]);
    let mut after: Vec<_> = vec![dump_target(&w.sqlite_url("empty.db"))];
    for f in &folders {
        w.run(&[
            "load",
            "--input",
            &format!("out/{f}"),
            "--target",
            &pg.url(),
        ]);
        after.push(dump_target(&pg.url()));
    }
    let mut crashed = 0;
    for (i, n) in [1u32, 2, 3, 5, 8, 13, 21, 34, 55, 89]
        .into_iter()
        .enumerate()
    {
        for pg_target in [false, true] {
            let db = pg_target.then(|| PgDb::new("crash"));
            let target = db
                .as_ref()
                .map(|d| d.url())
                .unwrap_or_else(|| w.sqlite_url(&format!("t{i}.db")));
            let mut cmd = w.command(&["load", "--input", "out", "--target", &target]);
            cmd.env(ABORT_AFTER_ENV, n.to_string());
            let o = cmd.output().unwrap();
            if !o.status.success() {
                crashed += 1;
                let applied = dump_table(&target, "gim_export_ledger").len();
                assert_eq!(
                    dump_target(&target),
                    after[applied],
                    "{target}: after abort at {n}: not whole exports"
                );
            }
            w.run_code(
                &mut w.command(&["load", "--input", "out", "--target", &target]),
                if o.status.success() { 3 } else { 0 },
            );
            assert_eq!(
                &dump_target(&target),
                after.last().unwrap(),
                "{target}: rerun after abort at {n}"
            );
            assert_eq!(
                dump_table(&target, "gim_export_ledger").len(),
                folders.len()
            );
        }
    }
    assert!(
        crashed >= 12,
        "only {crashed} runs reached their abort point"
    );
}

#[test]
fn a_second_loader_refuses() {
    let w = Workdir::new("load-lock");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 100, 2);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);

    // SQLite: the lock file beside the database.
    let t = w.join("t.db");
    let lock = File::create(format!("{}.gim-export-load.lock", t.display())).unwrap();
    lock.lock().unwrap();
    let o = w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &w.sqlite_url("t.db")]),
        4,
    );
    assert!(
        stderr(&o).contains("another gim-export load"),
        "{}",
        stderr(&o)
    );
    drop(lock);

    // PostgreSQL: the advisory lock, held by another session.
    let pg = PgDb::new("lock");
    let mut holder = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &pg.name, "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    holder
        .stdin
        .as_mut()
        .unwrap()
        .write_all(
            format!(
                "SELECT pg_advisory_lock({});\n",
                gim_export::load::postgres::LOAD_LOCK_KEY
            )
            .as_bytes(),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") != "1" {
        assert!(Instant::now() < deadline, "the holder never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &pg.url()]),
        4,
    );
    assert!(
        stderr(&o).contains("another gim-export load"),
        "{}",
        stderr(&o)
    );
    // Refused before anything was written: not even the schema.
    assert_eq!(
        pg.sql(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'gim_export_ledger'"
        ),
        "0"
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
    w.run(&["load", "--input", "out", "--target", &pg.url()]);
}
