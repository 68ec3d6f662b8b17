//! Failures of the machine around the exporter: a full disk is reported once, through the logger,
//! recorded as the last run, and leaves nothing half-written behind.

use std::process::Command;

use crate::harness::*;

/// A small tmpfs mounted for one test (this suite runs as root, as CI does); unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn new(w: &Workdir, size: &str) -> SmallDisk {
        let dir = w.join("small-disk");
        std::fs::create_dir_all(&dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "this test needs to mount a small tmpfs (run as root): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn a_full_disk_is_reported_once_through_the_logger_and_recorded_as_the_last_run() {
    let w = Workdir::new("full-disk");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 1500, 91);
    let disk = SmallDisk::new(&w, "400k");
    let out = disk.0.join("out");
    let o = w.run_code(
        &mut w.command(&[
            "--log-format",
            "json",
            "export",
            "--source",
            &src,
            "--output",
            out.to_str().unwrap(),
            "--catch-up",
        ]),
        7,
    );
    let err = stderr(&o);
    // Every line is a JSON object (nothing raw in between), and the failure is one of them.
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line:?} in {err}"));
        assert_eq!(v["span"]["name"], "gim-export", "{line}");
    }
    let failures: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("No space left"))
        .collect();
    assert_eq!(failures.len(), 1, "{err}");
    assert!(failures[0].contains("\"level\":\"ERROR\""), "{err}");
    // Nothing half-written stays: no staging folder, no temporary file; the run is recorded.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with(".staging-") && !n.ends_with(".tmp")),
        "{names:?}"
    );
    let status = w.run(&[
        "status",
        "--output",
        out.to_str().unwrap(),
        "--source",
        &src,
    ]);
    assert!(
        stdout(&status).contains("failed") && stdout(&status).contains("No space left"),
        "{}",
        stdout(&status)
    );
}

/// A TCP proxy on loopback in front of the PostgreSQL server that, once it has passed `after` bytes
/// from the server (or to it, with `count_upstream`), stops forwarding in both directions without closing anything: a network path
/// that died silently (packets dropped, no RST). Its threads end by themselves within two minutes.
fn freezing_proxy(
    after: u64,
    count_upstream: bool,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let passed = Arc::new(AtomicU64::new(0));
    let frozen = Arc::new(AtomicBool::new(false));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_all = Arc::clone(&stop);
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        while std::time::Instant::now() < deadline && !stop_all.load(Ordering::SeqCst) {
            let Ok((client, _)) = listener.accept() else {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            };
            client.set_nonblocking(false).unwrap();
            let server = TcpStream::connect("127.0.0.1:5432").unwrap();
            for (mut from, mut to, count) in [
                (
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    count_upstream,
                ),
                (server, client, !count_upstream),
            ] {
                let (passed, frozen, stop) = (
                    Arc::clone(&passed),
                    Arc::clone(&frozen),
                    Arc::clone(&stop_all),
                );
                std::thread::spawn(move || {
                    from.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                        .unwrap();
                    let mut buf = [0u8; 16 * 1024];
                    while std::time::Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                        if frozen.load(Ordering::SeqCst) {
                            std::thread::sleep(std::time::Duration::from_millis(100));
                            continue;
                        }
                        let n = match from.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(_) => continue,
                        };
                        if count && passed.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > after
                        {
                            frozen.store(true, Ordering::SeqCst);
                            continue; // this chunk is lost with the path
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    (port, stop)
}

#[test]
fn a_silently_dead_connection_fails_the_export_within_the_timeout_instead_of_hanging() {
    let w = Workdir::new("dead-connection");
    let db = PgDb::new("deadconn");
    simulate(&w, &db.url(), 1, 3000, 92);
    let (port, _stop) = freezing_proxy(400_000, false);
    let url = db
        .url()
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{port}"));
    let started = std::time::Instant::now();
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &url,
            "--output",
            "out",
            "--catch-up",
            "--db-timeout",
            "3",
        ]),
        6,
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "it hung for {:?}",
        started.elapsed()
    );
    let err = stderr(&o);
    assert!(
        err.contains("seems dead") && err.contains("--db-timeout"),
        "{err}"
    );
    // Nothing half-published, the lock is free, and the next run over a sound path goes on.
    assert!(export_folders(&w.join("out")).is_empty());
    w.run(&[
        "export",
        "--source",
        &db.url(),
        "--output",
        "out",
        "--catch-up",
    ]);
    assert!(!export_folders(&w.join("out")).is_empty());
}

#[test]
fn a_silently_dead_connection_fails_the_load_within_the_timeout_and_the_next_load_finishes() {
    let w = Workdir::new("dead-connection-load");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 3000, 93);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let db = PgDb::new("deadload");
    w.run(&["target-schema", "--target", &db.url()]);
    let (port, stop) = freezing_proxy(100_000, true);
    let url = db
        .url()
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{port}"));
    let started = std::time::Instant::now();
    let o = w.run_code(
        &mut w.command(&[
            "load",
            "--input",
            "out",
            "--target",
            &url,
            "--db-timeout",
            "3",
        ]),
        6,
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "it hung for {:?}",
        started.elapsed()
    );
    assert!(stderr(&o).contains("seems dead"), "{}", stderr(&o));
    // Whatever was applied is whole; once the dead path is gone (its sessions end, their lock
    // with them), the next load finishes the job.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut tries = 0;
    loop {
        let o = w
            .command(&["load", "--input", "out", "--target", &db.url()])
            .output()
            .unwrap();
        match o.status.code() {
            Some(0) | Some(3) => break,
            Some(4) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            other => panic!("{other:?}: {}", String::from_utf8_lossy(&o.stderr)),
        }
    }
    assert_target_matches_source(&src, &db.url(), &w.join("out"));
}

#[test]
fn a_failed_export_removes_its_staging_folder_even_while_other_tables_are_still_being_written() {
    // Regression: a NUL in a small table failed the run while the writer threads of other tables
    // were still creating their part files, and one was left in `.staging-export_...`.
    for round in 0..3 {
        let w = Workdir::new(&format!("fail-staging-{round}"));
        let src = w.sqlite_url("im.db");
        simulate(&w, &src, 1, 1500, 120 + round);
        exec_sql(
            &src,
            "UPDATE resource_ SET resource_name = CAST(X'610062' AS TEXT) WHERE resource_key = (SELECT MIN(resource_key) FROM resource_)",
        );
        let o = w.run_code(
            &mut w.command(&[
                "export",
                "--source",
                &src,
                "--output",
                "out",
                "--catch-up",
                "--threads",
                "4",
            ]),
            6,
        );
        assert!(stderr(&o).contains("NUL"), "{}", stderr(&o));
        let left: Vec<String> = std::fs::read_dir(w.join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".staging-") || n.starts_with("export_"))
            .collect();
        assert!(left.is_empty(), "round {round}: left behind {left:?}");
    }
}
