//! A run killed at any moment leaves no partial export folder, and the next run produces exactly the
//! bytes an uninterrupted run would have.

use std::fs;
use std::time::{Duration, Instant};

use gim_export::package::ABORT_AFTER_ENV;
use gim_export::verify::check_folder;

use crate::harness::*;

fn assert_only_whole_folders(w: &Workdir, out: &str, when: &str) {
    for f in export_folders(&w.join(out)) {
        let check = check_folder(&w.join(out).join(&f));
        assert!(
            check.is_ok(),
            "{when}: partial folder {f}: {:?}",
            check.problems
        );
    }
}

fn assert_no_leftovers(w: &Workdir, out: &str) {
    for e in fs::read_dir(w.join(out)).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".staging-") && !name.ends_with(".tmp"),
            "left over: {name}"
        );
    }
}

#[test]
fn abort_after_every_kind_of_write_then_resume() {
    let w = Workdir::new("crash-abort");
    let src = w.sqlite_url("im.db");
    w.run(&[
        "simulate",
        "--source",
        &src,
        "--days",
        "3",
        "--interactions-per-day",
        "300",
        "--seed",
        "9",
    ]);
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "reference",
        "--catch-up",
    ]);
    let reference = tree(&w.join("reference"));

    let mut aborted = 0;
    for n in [
        1u32, 2, 3, 5, 8, 12, 17, 18, 19, 20, 21, 25, 33, 40, 47, 55, 64, 80, 100, 140,
    ] {
        let out = format!("out_{n}");
        let mut cmd = w.command(&["export", "--source", &src, "--output", &out, "--catch-up"]);
        cmd.env(ABORT_AFTER_ENV, n.to_string());
        let o = cmd.output().unwrap();
        if o.status.success() {
            // The whole job needed fewer writes than n.
            assert_same_tree(
                &reference,
                &tree(&w.join(&out)),
                &format!("no abort at {n}"),
            );
            continue;
        }
        assert!(stderr(&o).contains("test abort"), "n={n}: {}", stderr(&o));
        aborted += 1;
        assert_only_whole_folders(&w, &out, &format!("after abort at write {n}"));
        w.run(&["export", "--source", &src, "--output", &out, "--catch-up"]);
        assert_same_tree(
            &reference,
            &tree(&w.join(&out)),
            &format!("resumed after abort at write {n}"),
        );
        assert_no_leftovers(&w, &out);
    }
    assert!(
        aborted >= 10,
        "only {aborted} runs reached their abort point"
    );
}

#[test]
fn sigkill_at_random_moments_then_resume() {
    let w = Workdir::new("crash-kill");
    let src = w.sqlite_url("im.db");
    w.run(&[
        "simulate",
        "--source",
        &src,
        "--days",
        "4",
        "--interactions-per-day",
        "1500",
        "--seed",
        "4",
    ]);
    let started = Instant::now();
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "reference",
        "--catch-up",
    ]);
    let full = started.elapsed();
    let reference = tree(&w.join("reference"));

    let mut rng = gim_export::simulate::rng::Rng::new(2024);
    for i in 0..8 {
        let out = format!("out_{i}");
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 * 9 / 10 + 1));
        let mut child = w
            .command(&["export", "--source", &src, "--output", &out, "--catch-up"])
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if w.join(&out).exists() {
            assert_only_whole_folders(&w, &out, &format!("after SIGKILL at {delay:?}"));
        }
        // 3 = nothing to do: the first run had finished before the kill.
        let resumed = w
            .command(&["export", "--source", &src, "--output", &out, "--catch-up"])
            .output()
            .unwrap();
        assert!(
            matches!(resumed.status.code(), Some(0) | Some(3)),
            "resume after SIGKILL at {delay:?}: {:?}\n{}",
            resumed.status,
            stderr(&resumed)
        );
        assert_same_tree(
            &reference,
            &tree(&w.join(&out)),
            &format!("resumed after SIGKILL at {delay:?}"),
        );
        assert_no_leftovers(&w, &out);
    }
}
