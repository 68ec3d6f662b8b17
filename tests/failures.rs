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
