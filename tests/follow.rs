//! Follow mode and retries: a long-running exporter that catches up, picks up new keys, and stops
//! cleanly on SIGTERM; transient database failures are tried again, permanent ones are not.

use std::fs::File;
use std::time::{Duration, Instant};

use gim_export::verify::check_folder;

use crate::harness::*;

#[test]
fn follow_mode_picks_up_new_keys_and_stops_on_sigterm() {
    let w = Workdir::new("follow");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 200, 6);
    let mut child = w
        .command(&[
            "export", "--source", &src, "--output", "out", "--every", "1s",
        ])
        .spawn()
        .unwrap();
    wait_for("the first catch-up", Duration::from_secs(60), || {
        export_folders(&w.join("out")).len() >= 2
    });
    let caught_up = export_folders(&w.join("out")).len();
    simulate(&w, &src, 1, 200, 6);
    wait_for("the new day's export", Duration::from_secs(60), || {
        export_folders(&w.join("out")).len() > caught_up
    });
    kill("-TERM", child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "follow mode did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    w.run(&["verify", "--input", "out"]);
}

#[test]
fn sigterm_during_an_export_finishes_it_and_leaves_no_partial_folder() {
    let w = Workdir::new("follow-term");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 4, 4000, 7);
    let mut child = w
        .command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--every",
            "1h",
            "--threads",
            "1",
        ])
        .spawn()
        .unwrap();
    // Wait until it is exporting, then ask it to stop.
    let lock = w.join("out/.gim-export.lock");
    wait_for("the export to start", Duration::from_secs(60), || {
        File::open(&lock).is_ok_and(|f| f.try_lock_shared().is_err())
    });
    kill("-TERM", child.id());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let folders = export_folders(&w.join("out"));
    for f in &folders {
        assert!(
            check_folder(&w.join("out").join(f)).is_ok(),
            "{f} is not whole"
        );
    }
    for e in std::fs::read_dir(w.join("out")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".staging-"), "left {name}");
    }
    // It stopped before catching up; the next run goes on from there.
    let o = w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    assert!(stdout(&o).contains("published"), "{}", stdout(&o));
    w.run(&["verify", "--input", "out"]);
}

#[test]
fn transient_failures_are_retried_with_backoff_permanent_ones_are_not() {
    let w = Workdir::new("retries");
    let started = Instant::now();
    let o = w.run_code(
        &mut w.command(&[
            "-v",
            "export",
            "--source",
            "postgres://postgres@127.0.0.1:1/x",
            "--output",
            "out",
            "--max-retries",
            "2",
            "--retry-delay",
            "1s",
        ]),
        6,
    );
    let err = stderr(&o);
    assert_eq!(err.matches("trying again").count(), 2, "{err}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "waits 1 s then 2 s"
    );

    let pg = PgDb::new("noretry");
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &pg.url(),
            "--output",
            "out",
            "--max-retries",
            "5",
            "--retry-delay",
            "10s",
        ]),
        6,
    );
    assert!(!stderr(&o).contains("trying again"), "{}", stderr(&o));
    assert!(stderr(&o).contains("CTL_AUDIT_LOG"));

    // A missing SQLite file will not appear by waiting.
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &w.sqlite_url("missing.db"),
            "--output",
            "out",
            "--max-retries",
            "5",
            "--retry-delay",
            "10s",
        ]),
        6,
    );
    assert!(!stderr(&o).contains("trying again"), "{}", stderr(&o));
}
