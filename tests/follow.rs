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

/// Issue 13: `load --every` applies folders as they arrive in its inbox, leaves a folder that is still
/// being copied in (zip there, checksum not yet) for a later look, says where it stands in
/// `status --target` and its metrics file, and ends with 0 on SIGTERM.
#[test]
fn load_every_picks_up_new_folders_waits_for_a_half_copied_one_and_stops_on_sigterm() {
    let w = Workdir::new("load-follow");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 150, 8);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let folders = export_folders(&w.join("out"));
    assert!(folders.len() >= 3, "{folders:?}");
    let (inbox, target) = (w.join("inbox"), w.sqlite_url("t.db"));
    std::fs::create_dir_all(&inbox).unwrap();
    copy_dir(&w.join("out").join(&folders[0]), &inbox.join(&folders[0]));
    /// The follower, killed if the test fails before it is stopped (never left running).
    struct Follower(Option<std::process::Child>);
    impl Drop for Follower {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut child = Follower(Some(
        w.command(&[
            "load",
            "--input",
            "inbox",
            "--target",
            &target,
            "--every",
            "1s",
            "--metrics-file",
            "load.prom",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap(),
    ));
    let ledger_rows = || {
        let has = w.join("t.db").exists()
            && query_one(
                &target,
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'gim_export_ledger'",
            ) == "1";
        if has {
            query_one(&target, "SELECT COUNT(*) FROM gim_export_ledger")
        } else {
            "0".to_string()
        }
    };
    wait_for("the first folder", Duration::from_secs(60), || {
        ledger_rows() == "1"
    });

    // The second folder arrives in pieces: its zip and XML first, its checksum last.
    let (second, half) = (&folders[1], inbox.join(&folders[1]));
    std::fs::create_dir_all(&half).unwrap();
    for f in std::fs::read_dir(w.join("out").join(second)).unwrap() {
        let f = f.unwrap().path();
        if !f.to_string_lossy().ends_with(".zip.sha1") {
            std::fs::copy(&f, half.join(f.file_name().unwrap())).unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ledger_rows(), "1", "a half-copied folder was applied");
    let o = w.run(&["status", "--output", "inbox", "--target", &target]);
    assert!(
        stdout(&o).contains(&format!("the last {}", folders[0])),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains(&format!("the newest {second}")),
        "{}",
        stdout(&o)
    );

    // The copy finishes, and the rest arrive.
    copy_dir(&w.join("out").join(second), &half);
    for f in &folders[2..] {
        copy_dir(&w.join("out").join(f), &inbox.join(f));
    }
    wait_for("every folder", Duration::from_secs(60), || {
        ledger_rows() == folders.len().to_string()
    });
    wait_for(
        "the metrics of the last look",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(w.join("load.prom")).is_ok_and(|m| {
                m.contains("gim_export_load_last_run_success 1")
                    && m.contains(&format!(
                        "gim_export_load_applied_folders {}",
                        folders.len()
                    ))
                    && m.contains("gim_export_load_waiting_folders 0")
            })
        },
    );
    let o = w.run(&["status", "--output", "inbox", "--target", &target]);
    assert!(stdout(&o).contains("waiting:      none"), "{}", stdout(&o));

    let follower = child.0.take().unwrap();
    kill("-TERM", follower.id());
    let out = follower.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("not applied yet"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "the half-copied folder is said once while it stays so: {err}"
    );
    assert!(warnings[0].contains(second.as_str()), "{err}");
    assert_target_matches_source(&src, &target, &w.join("out"));
}
