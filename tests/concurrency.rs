//! Two runs on one output directory: the second refuses with exit code 4 and writes nothing.

use std::fs::{self, File};
use std::time::{Duration, Instant};

use crate::harness::*;

const LOCKED: i32 = 4;

#[test]
fn export_refuses_while_another_process_holds_the_lock() {
    let w = Workdir::new("lock-held");
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
    fs::create_dir(w.join("out")).unwrap();
    let lock = File::create(w.join("out/.gim-export.lock")).unwrap();
    lock.lock().unwrap();
    let out = w.run_code(
        &mut w.command(&["export", "--source", &src, "--output", "out"]),
        LOCKED,
    );
    assert!(stderr(&out).contains("lock"), "{}", stderr(&out));
    assert!(export_folders(&w.join("out")).is_empty());
    drop(lock);
    w.run(&["export", "--source", &src, "--output", "out"]);
    assert_eq!(export_folders(&w.join("out")).len(), 1);
}

#[test]
fn two_exports_at_once_one_refuses() {
    let w = Workdir::new("two-runs");
    let src = w.sqlite_url("im.db");
    w.run(&[
        "simulate",
        "--source",
        &src,
        "--days",
        "3",
        "--interactions-per-day",
        "6000",
    ]);
    let mut first = w
        .command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--catch-up",
            "--threads",
            "1",
        ])
        .spawn()
        .unwrap();
    // Wait until the first run holds the lock, then start the second.
    let lock_path = w.join("out/.gim-export.lock");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(f) = File::open(&lock_path) {
            if f.try_lock_shared().is_err() {
                break;
            }
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first export ended before it was seen holding the lock"
        );
        assert!(
            Instant::now() < deadline,
            "the first export never took the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = w.run_code(
        &mut w.command(&["export", "--source", &src, "--output", "out", "--catch-up"]),
        LOCKED,
    );
    assert!(
        stderr(&second).contains("another gim-export run"),
        "{}",
        stderr(&second)
    );
    assert!(first.wait().unwrap().success());
    w.run(&["verify", "--input", "out"]);
}
