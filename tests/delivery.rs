//! Issue 14 item 3: every published folder goes to every destination, in chain order; a destination
//! that is down catches up later, and retention keeps what it has not received.

use crate::harness::*;

/// Runs one export with the delivery flags; returns its exit code and output.
fn export(w: &Workdir, src: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "export",
        "--source",
        src,
        "--output",
        "out",
        "--chunk-size",
        "1d",
        "--deliver-retries",
        "1",
        "--deliver-retry-delay",
        "1s",
        "--metrics-file",
        "metrics.prom",
    ];
    args.extend_from_slice(extra);
    let o = w
        .command(&args)
        .env("GIM_EXPORT_LOG", "info")
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
}

#[test]
fn a_destination_down_for_three_exports_receives_all_three_in_order_and_retention_keeps_them() {
    let w = Workdir::new("deliver_local");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 4, 30, 41);
    let dest = w.join("mnt/inbox");
    let dest_s = dest.to_str().unwrap().to_string();
    let also = w.join("second");
    std::fs::create_dir_all(&also).unwrap();
    let also_s = also.to_str().unwrap().to_string();
    let to = format!("{dest_s},{also_s}");
    for _ in 0..3 {
        // The first destination is not mounted: each run publishes, exits 8, and says so.
        let (code, out, _) = export(&w, &src, &["--deliver-to", &to, "--keep-days", "1"]);
        assert_eq!(code, 8, "{out}");
        assert!(
            out.contains("delivery failed") && out.contains(&dest_s),
            "{out}"
        );
    }
    let published = export_folders(&w.join("out"));
    assert_eq!(published.len(), 3);
    // The second destination got each as it was published.
    assert_eq!(export_folders(&also), published);
    let metrics = std::fs::read_to_string(w.join("metrics.prom")).unwrap();
    assert!(
        metrics.contains(&format!(
            "gim_export_delivery_owed_folders{{destination=\"{dest_s}\"}} 3"
        )) && metrics.contains(&format!(
            "gim_export_delivery_failing{{destination=\"{dest_s}\"}} 1"
        )) && metrics.contains(&format!(
            "gim_export_delivery_owed_folders{{destination=\"{also_s}\"}} 0"
        )) && metrics.contains("gim_export_last_run_success 0"),
        "{metrics}"
    );
    let o = w.run(&["status", "--output", "out"]);
    assert!(
        stdout(&o).contains(&format!(
            "delivery:     {dest_s}: nothing delivered yet; owed 3 folder(s)"
        )),
        "{}",
        stdout(&o)
    );

    // Retention would remove them (a day old), but the first destination has not received them.
    for f in &published {
        age(&w.join("out").join(f), 3);
    }
    std::fs::create_dir_all(&dest).unwrap();
    let (code, out, err) = export(&w, &src, &["--deliver-to", &to, "--keep-days", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let all = {
        let mut v = published.clone();
        v.extend(
            export_folders(&w.join("out"))
                .into_iter()
                .filter(|f| !published.contains(f)),
        );
        v
    };
    assert_eq!(export_folders(&dest), all, "all of them, the new one too");
    // In chain order: the log says so.
    let order: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("delivered") && l.contains(&dest_s))
        .filter_map(|l| l.split("folder=").nth(1))
        .map(|f| f.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        order,
        all.iter().map(String::as_str).collect::<Vec<_>>(),
        "{err}"
    );
    // Each arrived whole: the receiver checks and loads them.
    w.run(&["verify", "--input", &dest_s]);
    let target = w.sqlite_url("t.db");
    w.run(&["load", "--input", &dest_s, "--target", &target]);
    // Delivered everywhere: now retention may take the old ones (the newest stays).
    let (code, _, _) = export(&w, &src, &["--deliver-to", &to, "--keep-days", "1"]);
    assert!(code == 0 || code == 3);
    let left = export_folders(&w.join("out"));
    assert!(published.iter().all(|f| !left.contains(f)), "{left:?}");
    let metrics = std::fs::read_to_string(w.join("metrics.prom")).unwrap();
    assert!(
        metrics.contains(&format!(
            "gim_export_delivery_owed_folders{{destination=\"{dest_s}\"}} 0"
        )) && metrics.contains(&format!(
            "gim_export_delivery_failing{{destination=\"{dest_s}\"}} 0"
        )),
        "{metrics}"
    );
    // No partial directory is left at a destination.
    let hidden: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn deliver_exclude_keeps_matching_folders_home_and_a_bad_destination_is_a_config_error() {
    let w = Workdir::new("deliver_exclude");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 30, 42);
    std::fs::create_dir_all(w.join("inbox")).unwrap();
    let first = {
        w.run(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--chunk-size",
            "1d",
        ]);
        export_folders(&w.join("out"))[0].clone()
    };
    let (code, out, err) = export(
        &w,
        &src,
        &[
            "--deliver-to",
            "inbox",
            "--deliver-exclude",
            &format!("{}*", &first[..first.len() - 3]),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let delivered = export_folders(&w.join("inbox"));
    assert!(
        !delivered.contains(&first) && !delivered.is_empty(),
        "{delivered:?}"
    );
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--deliver-to",
            "ftp://x/y",
        ]),
        2,
    );
    assert!(
        stderr(&o).contains("ftp:// is not a destination"),
        "{}",
        stderr(&o)
    );
}
