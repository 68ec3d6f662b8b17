//! The folders as stock tools see them: `sha1sum -c`, `unzip`, an ordinary XML parser, a CSV reader.

use std::fs;
use std::process::Command;

use crate::harness::*;

fn tool(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn folders_pass_sha1sum_unzip_and_an_xml_parser() {
    let w = Workdir::new("stock");
    let src = w.sqlite_url("im.db");
    w.run(&[
        "simulate",
        "--source",
        &src,
        "--days",
        "2",
        "--interactions-per-day",
        "300",
        "--seed",
        "5",
    ]);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let folders = export_folders(&w.join("out"));
    assert!(folders.len() >= 2, "{folders:?}");
    let mut subjects = Vec::new();
    for f in &folders {
        let dir = w.join("out").join(f);
        let ok = tool(
            Command::new("sha1sum")
                .arg("-c")
                .arg(format!("{f}.zip.sha1"))
                .current_dir(&dir),
        );
        assert_eq!(ok.trim(), format!("{f}.zip: OK"));

        let x = w.join(&format!("unzipped_{f}"));
        tool(
            Command::new("unzip")
                .arg("-q")
                .arg(dir.join(format!("{f}.zip")))
                .arg("-d")
                .arg(&x),
        );
        let names: Vec<String> = fs::read_dir(&x)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let csvs: Vec<&String> = names.iter().filter(|n| n.ends_with(".csv")).collect();
        for csv in &csvs {
            assert!(
                names.contains(&format!("{csv}.sha1")),
                "{f}: {csv} without .sha1"
            );
            let ok = tool(
                Command::new("sha1sum")
                    .arg("-c")
                    .arg(format!("{csv}.sha1"))
                    .current_dir(&x),
            );
            assert_eq!(ok.trim(), format!("{csv}: OK"));
            let bytes = fs::read(x.join(csv)).unwrap();
            // NULL and empty string are both an empty field: never a quoted empty string.
            assert!(
                !bytes.windows(4).any(|w| w == b",\"\","),
                "{csv} has a quoted empty field"
            );
            let mut r = csv::Reader::from_reader(&bytes[..]);
            let header = r.headers().unwrap().clone();
            assert!(
                header.iter().all(|h| h == h.to_ascii_lowercase()),
                "{csv}: header {header:?}"
            );
            assert!(header.iter().any(|h| h == "create_audit_key"));
            if csv.as_str() == "interaction_fact.csv" {
                let col = header.iter().position(|h| h == "subject").unwrap();
                for rec in r.records() {
                    subjects.push(rec.unwrap()[col].to_string());
                }
            }
        }
        assert_eq!(csvs.len() * 2, names.len(), "{f}: {names:?}");

        let xml = dir.join(format!("{f}.extracted.xml"));
        let parsed = tool(Command::new("python3").arg("-c").arg(
            "import sys, xml.etree.ElementTree as ET\n\
             r = ET.parse(sys.argv[1]).getroot()\n\
             assert r.tag == 'info'\n\
             for t in ('created-ts','gim-schema-version','gim-version','max-data-ts'):\n    assert r.findtext(t), t\n\
             assert r.find('hwm-from').get('created-ts') is not None\n\
             print(r.find('hwm-to').get('audit-key'), r.findtext('max-data-ts'))",
        ).arg(&xml));
        let mut it = parsed.split_whitespace();
        let key: i64 = it.next().unwrap().parse().unwrap();
        let ts: i64 = it.next().unwrap().parse().unwrap();
        assert!(
            f.starts_with(&format!("export_{key:019}_")),
            "{f} vs hwm-to {key}"
        );
        let when = chrono::DateTime::from_timestamp(ts, 0)
            .unwrap()
            .format("%Y_%m_%d_%H_%M_%S")
            .to_string();
        assert!(f.ends_with(&when), "{f} vs max-data-ts {when}");
    }
    // Awkward text survives the trip: quotes, commas, newlines, non-ASCII.
    for s in [
        "Call about \"VIP\" status",
        "Réclamation, facture n°4711",
        "Line one\nline two",
        "注文の確認",
        "Windows line\r\nbreak",
    ] {
        assert!(
            subjects.iter().any(|x| x == s),
            "subject {s:?} not exported"
        );
    }
    assert!(subjects.iter().any(|x| x.is_empty()), "NULL/empty subjects");
}

#[test]
fn same_window_gives_the_same_bytes() {
    let w = Workdir::new("determinism");
    let src = w.sqlite_url("im.db");
    w.run(&[
        "simulate",
        "--source",
        &src,
        "--days",
        "2",
        "--interactions-per-day",
        "200",
    ]);
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "a",
        "--catch-up",
        "--threads",
        "1",
    ]);
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "b",
        "--catch-up",
        "--threads",
        "8",
    ]);
    assert_same_tree(
        &tree(&w.join("a")),
        &tree(&w.join("b")),
        "two exports of the same data",
    );
    assert!(!tree(&w.join("a")).is_empty());
    // And the verifier agrees.
    let out = w.run(&["verify", "--input", "a"]);
    assert!(
        stdout(&out).contains("all checks passed"),
        "{}",
        stdout(&out)
    );
}
