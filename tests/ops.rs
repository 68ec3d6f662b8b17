//! Operations: status, dry run, table selection, retention, the publish hook, metrics.

use std::fs::{self, File};
use std::process::Command;

use crate::harness::*;

fn source(w: &Workdir, days: u32) -> String {
    let src = w.sqlite_url("im.db");
    simulate(w, &src, days, 150, 41);
    src
}

#[test]
fn status_says_in_progress_while_an_export_holds_the_lock() {
    let w = Workdir::new("status");
    let src = source(&w, 2);
    // Regression: a missing output directory (a typo in --output) said "Ready to start", exit 0.
    let o = w.run_code(
        &mut w.command(&["status", "--output", "out", "--source", &src]),
        2,
    );
    assert!(stdout(&o).contains("out does not exist"), "{}", stdout(&o));
    fs::create_dir(w.join("out")).unwrap();
    let o = w.run(&["status", "--output", "out", "--source", &src]);
    assert!(
        stdout(&o).contains("state:        Ready to start"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("last folder:  none yet"));

    w.run(&["export", "--source", &src, "--output", "out"]);
    fs::write(w.join("out/.gim-export.lock"), "pid=4242 started=now\n").unwrap();
    let lock = File::options()
        .write(true)
        .open(w.join("out/.gim-export.lock"))
        .unwrap();
    lock.lock().unwrap();
    let o = w.run(&["status", "--output", "out", "--source", &src, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "In progress");
    assert_eq!(v["lock_holder"], "pid=4242 started=now");
    let folder = export_folders(&w.join("out"))[0].clone();
    assert_eq!(v["last_folder"], folder.as_str());
    assert_eq!(v["last_run"]["result"], "success");
    assert!(
        v["behind_audit_keys"].as_u64().unwrap() > 0,
        "one day is left: {v}"
    );
    assert!(v["behind_seconds"].as_i64().unwrap() > 0);
    drop(lock);

    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let o = w.run(&["status", "--output", "out", "--source", &src, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "Ready to start");
    assert_eq!(v["behind_audit_keys"], 0, "{v}");
    // An unreachable source is reported, not fatal.
    let o = w.run(&[
        "status",
        "--output",
        "out",
        "--source",
        "postgres://x:secret@127.0.0.1:1/db",
    ]);
    assert!(
        stdout(&o).contains("behind:       unknown: cannot connect"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("secret"));
}

#[test]
fn dry_run_writes_nothing_and_counts_what_export_writes() {
    let w = Workdir::new("dry-run");
    let src = source(&w, 2);
    let before = std::fs::read(w.join("im.db")).unwrap();
    let o = w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--catch-up",
        "-n",
    ]);
    assert!(
        !w.join("out").exists(),
        "a dry run created the output directory"
    );
    assert_eq!(before, std::fs::read(w.join("im.db")).unwrap());
    let plan = stdout(&o);
    assert!(plan.contains("nothing written"), "{plan}");
    let planned: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.strip_prefix("would publish "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    assert_eq!(
        planned,
        export_folders(&w.join("out")),
        "the plan names the folders export writes"
    );
    let total: u64 = read_exports(&w.join("out"))
        .iter()
        .flat_map(|(_, m, _)| m.tables.iter())
        .map(|t| t.rows)
        .sum();
    let planned_total: u64 = plan
        .lines()
        .filter_map(|l| {
            l.rsplit_once("rows=")
                .map(|(_, n)| n.parse::<u64>().unwrap())
        })
        .sum();
    assert_eq!(planned_total, total);
}

#[test]
fn include_and_exclude_select_tables() {
    let w = Workdir::new("select");
    let src = source(&w, 1);
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--include",
        "*_fact,tenant",
        "--exclude",
        "sm_*",
    ]);
    let (_, tables) = read_folder(&w.join("out").join(&export_folders(&w.join("out"))[0]));
    let names: Vec<&str> = tables.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "interaction_fact",
            "interaction_resource_fact",
            "mediation_segment_fact",
            "tenant"
        ]
    );
}

#[test]
fn retention_removes_only_old_complete_folders() {
    let w = Workdir::new("retention");
    let src = source(&w, 3);
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--catch-up",
        "--keep-days",
        "0",
    ]);
    let folders = export_folders(&w.join("out"));
    assert!(folders.len() >= 3);
    // Old: every folder, an incomplete folder with an export name, and a stranger's directory.
    let incomplete = "export_0000000000000000001_2020_01_01_00_00_00";
    fs::create_dir(w.join("out").join(incomplete)).unwrap();
    fs::create_dir(w.join("out/export_notes")).unwrap();
    for f in folders
        .iter()
        .map(String::as_str)
        .chain([incomplete, "export_notes"])
    {
        age(&w.join("out").join(f), 20);
    }
    // Nothing new to export (exit 3); retention still runs.
    w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--keep-days",
            "14",
        ]),
        3,
    );
    let left = export_folders(&w.join("out"));
    let newest = folders.last().unwrap().clone();
    assert!(left.contains(&newest), "the newest folder stays: {left:?}");
    assert!(
        left.contains(&incomplete.to_string()),
        "incomplete folders are not touched"
    );
    assert!(
        left.contains(&"export_notes".to_string()),
        "other directories are not touched"
    );
    for f in &folders[..folders.len() - 1] {
        assert!(!left.contains(f), "{f} is older than 14 days and complete");
    }
    // The chain goes on from the newest folder.
    simulate(&w, &src, 1, 150, 41);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
}

#[test]
fn on_publish_runs_per_folder_and_its_failure_does_not_undo_the_export() {
    let w = Workdir::new("hook");
    let src = source(&w, 2);
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--catch-up",
        "--on-publish",
        "basename \"$1\" >> hook.log; test -f \"$GIM_EXPORT_FOLDER/$(basename $1).zip\"",
    ]);
    let logged: Vec<String> = fs::read_to_string(w.join("hook.log"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(logged, export_folders(&w.join("out")));

    simulate(&w, &src, 1, 150, 41);
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--on-publish",
            "exit 7",
            "--metrics-file",
            "m.prom",
        ]),
        8,
    );
    assert!(
        stderr(&o).contains("--on-publish `exit 7` failed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        export_folders(&w.join("out")).len(),
        logged.len() + 1,
        "the export stands"
    );
    let s = w.run(&["status", "--output", "out", "--source", &src]);
    assert!(
        stdout(&s).contains("warnings: --on-publish `exit 7` failed"),
        "{}",
        stdout(&s)
    );
}

#[test]
fn metrics_file_reports_success_and_failure() {
    let w = Workdir::new("metrics");
    let src = source(&w, 1);
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--metrics-file",
        "m.prom",
    ]);
    let text = fs::read_to_string(w.join("m.prom")).unwrap();
    assert!(text.contains("gim_export_last_run_success 1\n"), "{text}");
    assert!(
        text.contains("gim_export_last_run_rows{table=\"interaction_fact\"} "),
        "{text}"
    );
    assert!(text.contains("gim_export_last_success_timestamp_seconds "));
    assert!(text.contains("gim_export_lag_seconds "));
    let hwm = export_folders(&w.join("out"))[0][7..26]
        .trim_start_matches('0')
        .to_string();
    assert!(
        text.contains(&format!("gim_export_hwm_audit_key {hwm}\n")),
        "{text}"
    );

    // A failing run: the source disappears.
    fs::rename(w.join("im.db"), w.join("gone.db")).unwrap();
    w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--metrics-file",
            "m.prom",
        ]),
        6,
    );
    let text = fs::read_to_string(w.join("m.prom")).unwrap();
    assert!(text.contains("gim_export_last_run_success 0\n"), "{text}");
    assert!(
        text.contains("gim_export_last_success_timestamp_seconds "),
        "the last success is kept"
    );
    let s = w.run(&[
        "status",
        "--output",
        "out",
        "--source",
        &w.sqlite_url("gone.db"),
    ]);
    assert!(
        stdout(&s).contains("last run:     failed"),
        "{}",
        stdout(&s)
    );
    assert!(
        stdout(&s).contains("im.db"),
        "the error names the source: {}",
        stdout(&s)
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_a_fixed_field() {
    let w = Workdir::new("json-logs");
    let src = source(&w, 2);
    let o = w.run_code(
        w.command(&[
            "--log-format",
            "json",
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--catch-up",
        ])
        .env("GIM_EXPORT_LOG", "info"),
        0,
    );
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 2, "{err}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["span"]["name"], "gim-export", "{line}");
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(err.contains("\"message\":\"published\""), "{err}");
    assert!(
        !stdout(&o).contains('{'),
        "results stay on stdout, logs on stderr"
    );
}

/// Runs `gim-export ARGS` under a pseudo-terminal (util-linux `script`) and returns what it drew.
fn on_a_terminal(w: &Workdir, args: &[&str], env: &[(&str, &str)]) -> String {
    let line = std::iter::once(bin().display().to_string())
        .chain(args.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]).current_dir(w.path());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("GIM_EXPORT_")) {
        cmd.env_remove(k);
    }
    cmd.env_remove("NO_COLOR");
    cmd.envs(env.iter().copied());
    let o = cmd
        .output()
        .expect("script (util-linux) runs the command on a pty");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn progress_bars_show_rows_per_table_on_a_terminal_only() {
    let w = Workdir::new("progress");
    let src = source(&w, 2);
    let drawn = on_a_terminal(
        &w,
        &["export", "--source", &src, "--output", "tty", "--catch-up"],
        &[],
    );
    // Which tables get a frame depends on how fast the machine is: one of them, with its rows.
    assert!(
        gim_tables().iter().any(|t| drawn.contains(t.as_str()))
            && drawn.contains(" rows ")
            && drawn.contains("/s"),
        "{drawn}"
    );
    let plain = on_a_terminal(
        &w,
        &["export", "--source", &src, "--output", "off", "--catch-up"],
        &[("GIM_EXPORT_PROGRESS", "0")],
    );
    assert!(!plain.contains(" rows "), "{plain}");
    // Piped stderr (cron, CI, a log collector): no bars either.
    let o = w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "piped",
        "--catch-up",
        "-v",
    ]);
    assert!(!stderr(&o).contains(" rows "), "{}", stderr(&o));
    let folders = export_folders(&w.join("tty"));
    assert!(
        drawn.contains(&format!("{} ", folders[0])) && drawn.contains("tables done"),
        "the folder being written heads its tables: {drawn}"
    );
    assert!(
        drawn.contains("rows/s") && !regex_like_fraction_rate(&drawn),
        "rates are rounded: {drawn}"
    );
    // Load draws a bar per folder: its name, the table, rows of the declared total, rate, ETA.
    for target in [w.sqlite_url("t.db"), PgDb::new("progress").url()] {
        let drawn = on_a_terminal(&w, &["load", "--input", "tty", "--target", &target], &[]);
        assert!(
            drawn.contains(&folders[0]) && drawn.contains("rows/s") && drawn.contains("eta"),
            "{target}: {drawn}"
        );
    }
    // Compare draws one too: the table being compared, the rows read, the rate.
    let drawn = on_a_terminal(
        &w,
        &[
            "compare",
            "--source",
            &src,
            "--target",
            &w.sqlite_url("t.db"),
        ],
        &[],
    );
    assert!(
        drawn.contains("compare ") && drawn.contains(" rows ") && drawn.contains("in sync"),
        "{drawn}"
    );
    let o = w.run(&[
        "compare",
        "--source",
        &src,
        "--target",
        &w.sqlite_url("t.db"),
    ]);
    assert!(!stderr(&o).contains(" rows "), "{}", stderr(&o));
    // The bars change nothing on disk.
    assert_same_tree(
        &published_tree(&w, "tty"),
        &published_tree(&w, "piped"),
        "tty vs piped",
    );
}

/// A rate printed with a fraction (`1234.5678 rows/s`).
fn regex_like_fraction_rate(text: &str) -> bool {
    text.split("rows/s").any(|before| {
        let word = before.trim_end().rsplit(' ').next().unwrap_or("");
        word.contains('.') && word.chars().all(|c| c.is_ascii_digit() || c == '.')
    })
}

fn published_tree(w: &Workdir, out: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    tree(&w.join(out))
        .into_iter()
        .filter(|(k, _)| k.starts_with("export_"))
        .collect()
}

#[test]
fn log_lines_carry_colour_codes_only_on_a_terminal_and_never_with_no_color() {
    let w = Workdir::new("colour");
    let src = source(&w, 1);
    let esc = "\u{1b}[";
    // Each run exports into a directory of its own, so each has something to log.
    let export = |out: &'static str, color: &'static str| -> Vec<String> {
        [
            "export",
            "--source",
            &src,
            "--output",
            out,
            "--catch-up",
            "--color",
            color,
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = w
            .command(&args)
            .env("GIM_EXPORT_LOG", "info")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let tty = |args: Vec<String>, env: &[(&str, &str)]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        on_a_terminal(&w, &args, env)
    };
    // Redirected (cron mail, a log file): plain text.
    let plain = run(export("a", "auto"));
    assert!(
        plain.contains("gim-export") && !plain.contains(esc),
        "{plain}"
    );
    // --color always colours even a file; on a terminal auto colours, NO_COLOR and never do not.
    assert!(run(export("b", "always")).contains(esc));
    let bars_off = ("GIM_EXPORT_PROGRESS", "0");
    assert!(tty(export("c", "auto"), &[bars_off]).contains(esc));
    let no_color = tty(export("d", "auto"), &[bars_off, ("NO_COLOR", "1")]);
    assert!(
        no_color.contains("gim-export") && !no_color.contains(esc),
        "{no_color:?}"
    );
    assert!(!tty(export("e", "never"), &[bars_off]).contains(esc));
}

#[test]
fn make_demo_runs_the_binary_where_cargo_target_dir_puts_it() {
    // Regression: the Makefile hard-coded target/debug, so `make demo` failed with CARGO_TARGET_DIR
    // set. `make -n` prints the commands without building anything.
    let root = env!("CARGO_MANIFEST_DIR");
    let o = Command::new("make")
        .args(["-n", "demo"])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", "/elsewhere/tgt")
        .output()
        .expect("make");
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        plan.contains("/elsewhere/tgt/debug/gim-export -q simulate"),
        "{plan}"
    );
    assert!(!plan.contains("target/debug"), "{plan}");
}

#[test]
fn a_typo_in_include_or_an_exclude_of_everything_is_refused_and_moves_no_chain() {
    // Regression: `--include interaction_fakt --catch-up` published folders without a table, exit 0,
    // and the next run found nothing to export.
    let w = Workdir::new("selection-typo");
    let src = source(&w, 2);
    for (flags, needles) in [
        (
            vec!["--include", "interaction_fakt"],
            vec![
                "\"interaction_fakt\"",
                "matches no exportable table",
                "interaction_fact",
            ],
        ),
        (
            vec!["--include", "interaction_fact", "--include", "nothing_*"],
            vec!["\"nothing_*\"", "matches no exportable table"],
        ),
        (
            vec!["--exclude", "*"],
            vec!["leave no table to export", "\"*\"", "interaction_fact"],
        ),
    ] {
        let mut args = vec!["export", "--source", &src, "--output", "out", "--catch-up"];
        args.extend(flags.iter().copied());
        let o = w.run_code(&mut w.command(&args), 2);
        for n in &needles {
            assert!(stderr(&o).contains(n), "{flags:?}: {n:?} in {}", stderr(&o));
        }
        assert!(export_folders(&w.join("out")).is_empty(), "{flags:?}");
    }
    // A pattern that matches is fine, and the chain starts at the beginning.
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--catch-up",
        "--include",
        "interaction_*",
    ]);
    assert!(!export_folders(&w.join("out")).is_empty());
}
