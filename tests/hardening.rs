//! Issue 11, hardening: what went wrong for a new user or an on-call admin, each with a regression
//! test named after what broke: a failed publish hook, signals outside follow mode, load retries,
//! results that never reached stdout, a load that created a schema for nothing.

use std::fs::{self, File};
use std::time::{Duration, Instant};

use gim_export::verify::check_folder;

use crate::harness::*;

fn last_run(w: &Workdir) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(w.join("out/.gim-export.last-run.json")).unwrap())
        .unwrap()
}

fn no_staging_left(w: &Workdir) {
    for e in fs::read_dir(w.join("out")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".staging-") && !name.ends_with(".tmp"),
            "left {name}"
        );
    }
}

#[test]
fn a_failed_on_publish_is_not_reported_as_success_and_retention_keeps_the_undelivered_folders() {
    // Regression: a failing hook exited 0, said success in the metrics, and retention could then
    // delete folders that never reached the receiver.
    let w = Workdir::new("hook-failed");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 3, 150, 41);
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--catch-up",
            "--on-publish",
            "echo cannot reach the receiver >&2; exit 7",
            "--metrics-file",
            "m.prom",
        ]),
        8,
    );
    let folders = export_folders(&w.join("out"));
    assert!(folders.len() >= 3, "{folders:?}");
    assert!(
        stderr(&o).contains("cannot reach the receiver"),
        "{}",
        stderr(&o)
    );
    assert_eq!(last_run(&w)["result"], "hook-failed");
    let prom = fs::read_to_string(w.join("m.prom")).unwrap();
    assert!(prom.contains("gim_export_last_run_success 0\n"), "{prom}");
    assert!(
        prom.contains(&format!(
            "gim_export_on_publish_failures {}\n",
            folders.len()
        )),
        "{prom}"
    );
    let s = w.run(&["status", "--output", "out", "--source", &src]);
    assert!(stdout(&s).contains("hook-failed"), "{}", stdout(&s));

    // Long past --keep-days, still failing: nothing undelivered is removed.
    for f in &folders {
        age(&w.join("out").join(f), 30);
    }
    w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--keep-days",
            "1",
            "--on-publish",
            "exit 7",
        ]),
        8,
    );
    assert_eq!(export_folders(&w.join("out")), folders);

    // The hook works again: the next run delivers every owed folder, in chain order, with no
    // setting of ours in its environment and its output kept off our stdout; then retention runs.
    let mut cmd = w.command(&[
        "export",
        "--output",
        "out",
        "--keep-days",
        "1",
        "--metrics-file",
        "m.prom",
        "--on-publish",
        "basename \"$1\" >> delivered.log; echo delivered \"$1\"; env | grep '^GIM_EXPORT_' | cut -d= -f1 | sort > hook-env.txt",
    ]);
    cmd.env("GIM_EXPORT_SOURCE", &src);
    let o = w.run_code(&mut cmd, 3);
    assert!(!stdout(&o).contains("delivered"), "{}", stdout(&o));
    let delivered: Vec<String> = fs::read_to_string(w.join("delivered.log"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(delivered, folders, "every owed folder, in chain order");
    assert_eq!(
        fs::read_to_string(w.join("hook-env.txt")).unwrap().trim(),
        "GIM_EXPORT_FOLDER",
        "the hook sees the folder and none of our settings (the source URL may hold a password)"
    );
    assert_eq!(
        export_folders(&w.join("out")),
        vec![folders.last().unwrap().clone()],
        "delivered and old: removed, except the newest"
    );
    let prom = fs::read_to_string(w.join("m.prom")).unwrap();
    assert!(
        prom.contains("gim_export_on_publish_failures 0\n"),
        "{prom}"
    );
    assert!(prom.contains("gim_export_last_run_success 1\n"), "{prom}");
}

/// Starts `export --catch-up` over a source big enough to take a while, and waits until its first
/// folder is being written.
fn slow_catch_up(w: &Workdir, src: &str) -> std::process::Child {
    let child = w
        .command(&[
            "export",
            "--source",
            src,
            "--output",
            "out",
            "--catch-up",
            "--threads",
            "1",
        ])
        .spawn()
        .unwrap();
    wait_for("a folder to be staged", Duration::from_secs(60), || {
        fs::read_dir(w.join("out")).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".staging-")))
        })
    });
    child
}

#[test]
fn sigterm_during_export_catch_up_finishes_the_folder_records_the_run_and_exits_143() {
    // Regression: outside --every, SIGTERM killed the run: exit 143 from the shell, a .staging-*
    // folder left behind, and no record of the run.
    let w = Workdir::new("catch-up-term");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 5, 3000, 7);
    let child = slow_catch_up(&w, &src);
    kill("-TERM", child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_staging_left(&w);
    let folders = export_folders(&w.join("out"));
    assert!(!folders.is_empty(), "the folder in progress was finished");
    for f in &folders {
        assert!(check_folder(&w.join("out").join(f)).is_ok(), "{f}");
    }
    let run = last_run(&w);
    assert_eq!(run["result"], "stopped", "{run}");
    assert_eq!(run["folders"].as_u64().unwrap() as usize, folders.len());
    // The next run goes on from there, and the chain is whole.
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    w.run(&["verify", "--input", "out"]);
    w.run(&["load", "--input", "out", "--target", &w.sqlite_url("t.db")]);
    assert_target_matches_source(&src, &w.sqlite_url("t.db"), &w.join("out"));
}

#[test]
fn a_second_sigint_abandons_the_folder_in_progress_and_leaves_no_staging() {
    let w = Workdir::new("catch-up-int");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 5, 3000, 8);
    let child = slow_catch_up(&w, &src);
    kill("-INT", child.id());
    std::thread::sleep(Duration::from_millis(50));
    kill("-INT", child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_staging_left(&w);
    for f in export_folders(&w.join("out")) {
        assert!(check_folder(&w.join("out").join(&f)).is_ok(), "{f}");
    }
    assert_eq!(last_run(&w)["result"], "stopped");
    assert!(
        File::open(w.join("out/.gim-export.lock")).is_ok_and(|f| f.try_lock().is_ok()),
        "the lock is free"
    );
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    w.run(&["verify", "--input", "out"]);
}

#[test]
fn sigterm_during_a_load_commits_the_folder_in_progress_and_exits_143() {
    let w = Workdir::new("load-term");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 6, 3000, 9);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let target = w.sqlite_url("t.db");
    let mut child = w
        .command(&["load", "--input", "out", "--target", &target])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first folder is applied (its line reaches stdout as it happens), ask it to stop.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    while !first.starts_with("applied ") {
        first.clear();
        assert!(
            std::io::BufRead::read_line(&mut stdout, &mut first).unwrap() > 0,
            "no applied line"
        );
    }
    kill("-TERM", child.id());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let folders = export_folders(&w.join("out"));
    let applied = 1 + rest.matches("applied ").count();
    if applied < folders.len() {
        assert_eq!(status.code(), Some(143), "{rest}");
    }
    let ledger = query_one(&target, "SELECT COUNT(*) FROM gim_export_ledger");
    assert_eq!(
        ledger,
        applied.to_string(),
        "every folder said applied is committed"
    );
    w.run(&["load", "--input", "out", "--target", &target]);
    assert_target_matches_source(&src, &target, &w.join("out"));
}

#[test]
fn load_retries_a_transient_failure_as_export_does() {
    // Regression: `load` had no retries; a database that was down for a moment failed the job.
    let w = Workdir::new("load-retry");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 150, 10);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let db = PgDb::new("loadretry");
    // Nothing listens on the port at first; a proxy to the server comes up 1.5 s later.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = db
        .url()
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{port}"));
    let proxy = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok((client, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            client.set_nonblocking(false).unwrap();
            let server = std::net::TcpStream::connect("127.0.0.1:5432").unwrap();
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    let mut cmd = w.command(&[
        "load",
        "--input",
        "out",
        "--target",
        &url,
        "--max-retries",
        "4",
        "--retry-delay",
        "1s",
    ]);
    let o = w.run_code(&mut cmd, 0);
    assert!(stderr(&o).contains("trying again"), "{}", stderr(&o));
    assert_target_matches_source(&src, &db.url(), &w.join("out"));
    drop(proxy);
}

#[test]
fn an_applied_folder_is_reported_even_when_a_later_folder_fails() {
    // Regression: results were printed at the end, so a committed folder's "applied" line never
    // reached stdout when a later folder failed.
    let w = Workdir::new("load-report");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 3, 150, 11);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let folders = export_folders(&w.join("out"));
    // The second folder's zip is damaged.
    let second = w.join("out").join(&folders[1]);
    let zip = second.join(format!("{}.zip", folders[1]));
    let mut bytes = fs::read(&zip).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    fs::write(&zip, bytes).unwrap();
    let o = w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &w.sqlite_url("t.db")]),
        5,
    );
    let out = stdout(&o);
    assert!(
        out.contains(&format!("applied {} ", folders[0])),
        "the committed folder is reported: {out}"
    );
    assert!(out.contains("migrated created"), "{out}");
}

#[test]
fn load_of_a_directory_without_export_folders_leaves_the_target_untouched() {
    // Regression: it created every target table, then exited 3.
    let w = Workdir::new("load-empty");
    fs::create_dir(w.join("inbox")).unwrap();
    let o = w.run_code(
        &mut w.command(&[
            "load",
            "--input",
            "inbox",
            "--target",
            &w.sqlite_url("t.db"),
        ]),
        3,
    );
    assert!(stdout(&o).contains("no export folder"), "{}", stdout(&o));
    assert!(!w.join("t.db").exists(), "no target database was created");
}

#[test]
fn a_start_date_after_the_newest_data_is_refused_instead_of_stranding_the_chain() {
    // Regression: `--start-date 2030-01-01` published a folder dated 2030, and every later run
    // said "nothing to export" (exit 3, a success for the CronJob).
    let w = Workdir::new("future-start");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 100, 12);
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--start-date",
            "2030-01-01",
            "--catch-up",
        ]),
        2,
    );
    let err = stderr(&o);
    assert!(
        err.contains("--start-date 2030-01-01T00:00:00+00:00 is after the newest settled data"),
        "{err}"
    );
    assert!(
        export_folders(&w.join("out")).is_empty(),
        "nothing published"
    );
    // A start date inside the data is a chain that goes on as new data settles.
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--start-date",
        "2024-01-02",
        "--catch-up",
    ]);
    simulate(&w, &src, 1, 100, 12);
    let o = w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    assert!(stdout(&o).contains("published"), "{}", stdout(&o));
    let s = w.run(&["status", "--output", "out", "--source", &src, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(v["behind_audit_keys"], 0, "{v}");
    assert_eq!(v["chain_start_ts"], 1_704_153_600, "{v}");
}

/// Every line of `text` is one JSON object.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{text}"))
        })
        .collect()
}

#[test]
fn with_json_logs_every_stderr_line_is_json_the_fatal_error_too_with_its_exit_code() {
    // Regression: the fatal error line and usage errors were plain text among JSON lines, and
    // `seconds` was a string.
    let w = Workdir::new("json-logs");
    let o = w.run_code(
        &mut w.command(&[
            "--log-format",
            "json",
            "export",
            "--source",
            &w.sqlite_url("missing.db"),
        ]),
        6,
    );
    let lines = json_lines(&stderr(&o));
    let last = lines.last().expect("an error line");
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["exit_code"], 6);
    assert!(last["error"].as_str().unwrap().contains("missing.db"));

    let o = w.run_code(
        &mut w.command(&["--log-format", "json", "export", "--chunk-size", "1w"]),
        2,
    );
    let lines = json_lines(&stderr(&o));
    assert_eq!(lines.last().unwrap()["exit_code"], 2);
    assert!(lines.last().unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("--chunk-size"));

    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 50, 13);
    let mut cmd = w.command(&[
        "--log-format",
        "json",
        "export",
        "--source",
        &src,
        "--output",
        "out",
    ]);
    cmd.env("GIM_EXPORT_LOG", "info");
    let o = w.run_code(&mut cmd, 0);
    let published: Vec<serde_json::Value> = json_lines(&stderr(&o))
        .into_iter()
        .filter(|l| l["message"] == "published")
        .collect();
    assert_eq!(published.len(), 1);
    assert!(published[0]["seconds"].is_f64(), "{}", published[0]);
    assert!(published[0]["rows"].is_u64(), "{}", published[0]);
}

#[test]
fn export_load_and_verify_json_print_one_summary_object_on_stdout() {
    let w = Workdir::new("json-summary");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 80, 14);
    let o = w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--catch-up",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["outcome"], "success");
    assert_eq!(v["exit_code"], 0);
    let folders = v["folders"].as_array().unwrap();
    assert_eq!(folders.len(), export_folders(&w.join("out")).len());
    let first_rows: u64 = folders[0]["rows"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| r.as_u64().unwrap())
        .sum();
    assert_eq!(folders[0]["rows_total"], first_rows);
    assert!(v["seconds"].is_f64());

    let o = w.run(&["verify", "--input", "out", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "ok");
    assert_eq!(v["folders"].as_array().unwrap().len(), folders.len());

    let target = w.sqlite_url("t.db");
    let o = w.run(&["load", "--input", "out", "--target", &target, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "success");
    assert_eq!(v["applied"].as_array().unwrap().len(), folders.len());
    let o = w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &target, "--json"]),
        3,
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "nothing-to-do");
    assert_eq!(v["already_applied"], folders.len());

    // A failure is one object too, with the exit code and the error.
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &w.sqlite_url("missing.db"),
            "--output",
            "out",
            "--json",
        ]),
        6,
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "failed");
    assert_eq!(v["exit_code"], 6);
}

#[test]
fn simulate_never_follows_the_configured_source_and_refuses_an_info_mart_it_did_not_create() {
    // Regression: simulate followed GIM_EXPORT_SOURCE and the config file's `source`, and wrote
    // simulated rows into a configured production database.
    let w = Workdir::new("simulate-source");
    let prod = w.sqlite_url("prod.db");
    fs::write(w.join("gim.toml"), format!("source = {prod:?}\n")).unwrap();
    let mut cmd = w.command(&[
        "--config",
        "gim.toml",
        "simulate",
        "--days",
        "1",
        "--interactions-per-day",
        "20",
    ]);
    cmd.env("GIM_EXPORT_SOURCE", &prod);
    w.run_code(&mut cmd, 0);
    assert!(
        !w.join("prod.db").exists(),
        "the configured source is not touched"
    );
    assert!(w.join("infomart.db").exists(), "simulate's own default");

    // A database holding an Info Mart simulate did not create is refused, and left as it was.
    fs::File::create(w.join("real.db")).unwrap();
    exec_sql(
        &w.sqlite_url("real.db"),
        "CREATE TABLE CTL_AUDIT_LOG (AUDIT_KEY INTEGER PRIMARY KEY)",
    );
    let before = fs::read(w.join("real.db")).unwrap();
    let o = w.run_code(
        &mut w.command(&[
            "simulate",
            "--source",
            &w.sqlite_url("real.db"),
            "--days",
            "1",
        ]),
        2,
    );
    assert!(stderr(&o).contains("--into-existing"), "{}", stderr(&o));
    assert_eq!(fs::read(w.join("real.db")).unwrap(), before);
}

#[test]
fn status_says_what_it_compared_with_and_never_guesses_a_source() {
    // Regression: without --source, status compared against ./infomart.db without saying so.
    let w = Workdir::new("status-source");
    let src = w.sqlite_url("infomart.db");
    simulate(&w, &src, 1, 50, 15);
    w.run(&["export", "--source", &src, "--output", "out"]);
    let o = w.run(&["status", "--output", "out"]);
    let out = stdout(&o);
    assert!(out.contains("source:       not given"), "{out}");
    assert!(out.contains("no --source given"), "{out}");
    let o = w.run(&["status", "--output", "out", "--source", &src]);
    assert!(
        stdout(&o).contains(&format!("source:       {src} (from --source)")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn config_prints_a_file_that_config_reads_back() {
    // Regression: `config > f && --config f` failed on `config = ...` and on booleans printed as "".
    let w = Workdir::new("config-round-trip");
    let mut cmd = w.command(&["config"]);
    cmd.env("GIM_EXPORT_KEEP_DAYS", "5")
        .env("GIM_EXPORT_CATCH_UP", "true")
        .env("GIM_EXPORT_INCLUDE", "irf_*,interaction_fact");
    let first = stdout(&w.run_code(&mut cmd, 0));
    assert!(first.contains("keep-days = \"5\""), "{first}");
    assert!(first.contains("catch-up = true"), "{first}");
    fs::write(w.join("printed.toml"), &first).unwrap();
    let second = stdout(&w.run(&["--config", "printed.toml", "config"]));
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" #").next().unwrap().trim().to_string())
            .collect()
    };
    assert_eq!(values(&first), values(&second));

    // A bad value from the environment names the variable, not only the flag never typed.
    let mut cmd = w.command(&["export"]);
    cmd.env("GIM_EXPORT_KEEP_DAYS", "abc");
    let o = w.run_code(&mut cmd, 2);
    assert!(
        stderr(&o).contains("GIM_EXPORT_KEEP_DAYS=\"abc\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_os_error_is_said_once() {
    // Regression: `-o /proc/nope` printed "No such file or directory (os error 2)" twice.
    let w = Workdir::new("os-error");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 20, 16);
    let o = w.run_code(
        &mut w.command(&["export", "--source", &src, "--output", "/proc/nope/out"]),
        7,
    );
    let err = stderr(&o);
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    assert!(err.contains("/proc/nope"), "{err}");
}

#[test]
fn a_changed_table_selection_is_refused_unless_allowed_and_every_folder_records_it() {
    // Regression: the selection was not part of the chain, so a run with other --include patterns
    // moved the chain on past the rows of the tables it left out.
    let w = Workdir::new("selection");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 3, 60, 17);
    w.run(&["export", "--source", &src, "--output", "out"]);
    let first = export_folders(&w.join("out"))[0].clone();
    let xml = fs::read_to_string(
        w.join("out")
            .join(&first)
            .join(format!("{first}.extracted.xml")),
    )
    .unwrap();
    assert!(
        xml.contains("<selected-tables>date_time interaction_descriptor interaction_fact"),
        "{xml}"
    );
    let before = tree(&w.join("out"));
    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--include",
            "interaction_*",
        ]),
        2,
    );
    let err = stderr(&o);
    assert!(
        err.contains("the table selection changed")
            && err.contains("tables left out: date_time")
            && err.contains("--allow-table-change"),
        "{err}"
    );
    assert_same_tree(
        &before,
        &tree(&w.join("out")),
        "a refused run writes nothing",
    );

    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--include",
        "interaction_*",
        "--allow-table-change",
    ]);
    let second = export_folders(&w.join("out"))[1].clone();
    let xml = fs::read_to_string(
        w.join("out")
            .join(&second)
            .join(format!("{second}.extracted.xml")),
    )
    .unwrap();
    assert!(
        xml.contains("<include-tables>interaction_*</include-tables>"),
        "{xml}"
    );
    // The chain's selection is now that one: dropping it is a change too.
    w.run_code(
        &mut w.command(&["export", "--source", &src, "--output", "out"]),
        2,
    );
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--include",
        "INTERACTION_*",
    ]);
}

#[test]
fn idle_exit_code_zero_makes_nothing_to_export_a_success_for_schedulers() {
    let w = Workdir::new("idle-exit");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 30, 18);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    w.run_code(
        &mut w.command(&["export", "--source", &src, "--output", "out"]),
        3,
    );
    let mut cmd = w.command(&["export", "--source", &src, "--output", "out"]);
    cmd.env("GIM_EXPORT_IDLE_EXIT_CODE", "0");
    let o = w.run_code(&mut cmd, 0);
    assert!(stdout(&o).contains("nothing to export"), "{}", stdout(&o));
    w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "out",
            "--idle-exit-code",
            "1",
        ]),
        2,
    );
}

#[test]
fn check_tells_a_new_user_what_is_wrong_before_the_first_run() {
    let w = Workdir::new("check");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 30, 19);
    let db = PgDb::new("check");
    let o = w.run(&[
        "check",
        "--source",
        &src,
        "--output",
        "out",
        "--target",
        &db.url(),
    ]);
    let out = stdout(&o);
    assert!(out.contains("CTL_AUDIT_LOG readable"), "{out}");
    assert!(
        out.contains("15 exportable table(s), all readable"),
        "{out}"
    );
    assert!(out.contains("target: writable"), "{out}");
    assert!(out.contains("every check passed"), "{out}");
    assert_eq!(
        db.sql("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'gim_export_check%'"),
        "0",
        "the probe table is gone"
    );
    assert!(
        !w.join("out").exists(),
        "the output directory is not created"
    );

    // A source without an audit log, a refused target, an empty inbox: each named, exit 6.
    fs::File::create(w.join("empty.db")).unwrap();
    fs::create_dir(w.join("inbox")).unwrap();
    let o = w.run_code(
        &mut w.command(&[
            "check",
            "--source",
            &w.sqlite_url("empty.db"),
            "--target",
            "postgres://postgres@127.0.0.1:1/x",
            "--input",
            "inbox",
        ]),
        6,
    );
    let out = stdout(&o);
    assert!(
        out.contains("FAIL  source: the audit log cannot be read"),
        "{out}"
    );
    assert!(out.contains("FAIL  target: cannot connect"), "{out}");
    assert!(out.contains("connection refused"), "{out}");
    assert!(out.contains("FAIL  input inbox: no export folder"), "{out}");
    w.run_code(&mut w.command(&["check"]), 2);
}

#[test]
fn help_keeps_global_options_apart_and_every_command_has_examples() {
    // Regression: global options were mixed into each command's options, and no --help had examples.
    let w = Workdir::new("help");
    for cmd in [
        "export",
        "load",
        "verify",
        "status",
        "simulate",
        "config",
        "target-schema",
        "check",
        "completions",
    ] {
        let help = stdout(&w.run(&[cmd, "--help"]));
        assert!(help.contains("\nExamples:\n"), "{cmd}: {help}");
        let global = help
            .find("Global options:")
            .unwrap_or_else(|| panic!("{cmd}: {help}"));
        assert!(
            help.find("--db-timeout").unwrap() > global
                && help.find("--log-format").unwrap() > global,
            "{cmd}: global options under their own heading: {help}"
        );
    }
    let bash = stdout(&w.run(&["completions", "bash"]));
    assert!(
        bash.contains("--catch-up") && bash.contains("gim-export"),
        "{bash}"
    );
}

#[test]
fn verbose_logs_what_a_user_debugging_a_run_needs() {
    // Regression: -v added nothing (one debug line in the whole code).
    let w = Workdir::new("verbose");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 30, 20);
    let mut cmd = w.command(&["-v", "export", "--source", &src, "--output", "out"]);
    cmd.env_remove("GIM_EXPORT_LOG");
    let err = stderr(&w.run_code(&mut cmd, 0));
    for needle in [
        "export settings",
        "audit log read",
        "window planned",
        "key_ranges=",
        "table read and written table=interaction_fact",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let mut cmd = w.command(&[
        "-v",
        "load",
        "--input",
        "out",
        "--target",
        &w.sqlite_url("t.db"),
    ]);
    cmd.env_remove("GIM_EXPORT_LOG");
    let err = stderr(&w.run_code(&mut cmd, 0));
    assert!(
        err.contains("folder planned") && err.contains("table merged"),
        "{err}"
    );
}

#[test]
fn a_closed_stdout_ends_the_program_quietly_instead_of_a_panic() {
    // Regression: `gim-export status | head -1` panicked with "failed printing to stdout: Broken
    // pipe" and a backtrace.
    let w = Workdir::new("broken-pipe");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 20, 21);
    w.run(&["export", "--source", &src, "--output", "out"]);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = w
        .command(&["status", "--output", "out", "--source", &src])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(141), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}
