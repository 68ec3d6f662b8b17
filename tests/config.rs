//! Settings come from flags, then GIM_EXPORT_* variables, then the --config file, then defaults.

use std::fs;

use crate::harness::*;

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    let w = Workdir::new("config");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 100, 3);
    fs::write(
        w.join("gim.toml"),
        format!(
            "source = \"{src}\"\noutput = \"from_file\"\nchunk-size = \"12h\"\nkeep-days = 3\ninclude = [\"*_fact\", \"tenant\"]\n"
        ),
    )
    .unwrap();

    let shown = w.run_code(
        w.command(&["--config", "gim.toml", "config"])
            .env("GIM_EXPORT_OUTPUT", "from_env"),
        0,
    );
    let text = stdout(&shown);
    let line = |flag: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{flag} ")))
            .unwrap()
            .to_string()
    };
    assert!(
        line("output").contains("\"from_env\"") && line("output").contains("from environment"),
        "{text}"
    );
    assert!(
        line("keep-days").contains("\"3\"") && line("keep-days").contains("from file"),
        "{text}"
    );
    assert!(line("compression-level").contains("from default"), "{text}");

    // The export: output from the environment, chunk size from the flag, tables from the file.
    w.run_code(
        w.command(&["--config", "gim.toml", "export", "--chunk-size", "6h"])
            .env("GIM_EXPORT_OUTPUT", "from_env"),
        0,
    );
    assert!(!w.join("from_file").exists());
    let folders = export_folders(&w.join("from_env"));
    assert_eq!(folders.len(), 1);
    let (meta, tables) = read_folder(&w.join("from_env").join(&folders[0]));
    assert_eq!(
        meta.chunk_seconds,
        Some(6 * 3600),
        "the flag wins over the file's 12h"
    );
    assert!(
        tables.keys().all(|t| t.ends_with("_fact") || t == "tenant"),
        "{:?}",
        tables.keys()
    );

    // Without the flag, the file's chunk size applies.
    w.run_code(&mut w.command(&["--config", "gim.toml", "export"]), 0);
    let (meta, _) = read_folder(
        &w.join("from_file")
            .join(&export_folders(&w.join("from_file"))[0]),
    );
    assert_eq!(meta.chunk_seconds, Some(12 * 3600));
}

#[test]
fn bad_files_name_the_key_and_the_file_and_hide_passwords() {
    let w = Workdir::new("config-bad");
    fs::write(w.join("typo.toml"), "sourse = \"sqlite://x.db\"\n").unwrap();
    let o = w.run_code(&mut w.command(&["--config", "typo.toml", "status"]), 2);
    assert!(
        stderr(&o).contains("typo.toml: unknown key \"sourse\""),
        "{}",
        stderr(&o)
    );

    fs::write(w.join("span.toml"), "chunk-size = \"1w\"\n").unwrap();
    let o = w.run_code(&mut w.command(&["--config", "span.toml", "export"]), 2);
    assert!(
        stderr(&o).contains("(from key \"chunk-size\" in span.toml)"),
        "{}",
        stderr(&o)
    );

    fs::write(w.join("days.toml"), "keep-days = \"many\"\n").unwrap();
    let o = w.run_code(&mut w.command(&["--config", "days.toml", "export"]), 2);
    assert!(
        stderr(&o).contains("the value \"many\" comes from key \"keep-days\" in days.toml"),
        "{}",
        stderr(&o)
    );

    fs::write(
        w.join("pw.toml"),
        "source = \"postgres://gim:hunter2@127.0.0.1:1/gim\"\n",
    )
    .unwrap();
    let o = w.run(&["--config", "pw.toml", "config"]);
    assert!(
        stdout(&o).contains("postgres://gim:****@127.0.0.1:1/gim"),
        "{}",
        stdout(&o)
    );
    let o = w.run_code(&mut w.command(&["--config", "pw.toml", "export"]), 6);
    assert!(
        !stderr(&o).contains("hunter2") && !stdout(&o).contains("hunter2"),
        "{}",
        stderr(&o)
    );
}
