//! `--encoding`: CSVs in another character set that verify and load read back; a character the
//! encoding lacks stops the export with table, primary key and column, or becomes '?' on request.

use std::io::Read;

use crate::harness::*;

fn encodable(c: char) -> bool {
    let (_, _, bad) = encoding_rs::WINDOWS_1252.encode(&c.to_string());
    !bad
}

#[test]
fn an_unmappable_character_names_table_key_and_column_unless_replaced() {
    let w = Workdir::new("encoding-unmappable");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 80, 81);
    // Where the first character windows-1252 lacks sits, in export order (by primary key).
    let columns = sim_columns("resource_");
    let mut rows = dump_table(&src, "resource_");
    rows.sort_by_key(|r| r[0].parse::<i64>().unwrap());
    let (key, column) = rows
        .iter()
        .find_map(|r| {
            r.iter()
                .position(|v| !v.chars().all(encodable))
                .map(|i| (r[0].clone(), columns[i].clone()))
        })
        .expect("the simulator writes names beyond windows-1252 (Łukasz)");

    let args = [
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--include",
        "resource_",
        "--encoding",
        "windows-1252",
    ];
    let o = w.run_code(&mut w.command(&args), 1);
    let err = stderr(&o);
    assert!(err.contains("table resource_"), "{err}");
    assert!(
        err.contains(&format!("primary key resource_key={key}")),
        "{err}"
    );
    assert!(err.contains(&format!("column {column}")), "{err}");
    assert!(err.contains("--on-unmappable replace"), "{err}");
    assert!(
        export_folders(&w.join("out")).is_empty(),
        "no folder on failure"
    );

    let mut replace = args.to_vec();
    replace.extend(["--on-unmappable", "replace"]);
    let o = w.run(&replace);
    assert!(stderr(&o).contains("written as '?'"), "{}", stderr(&o));
    let folder = export_folders(&w.join("out")).pop().unwrap();
    let xml = std::fs::read_to_string(
        w.join("out")
            .join(&folder)
            .join(format!("{folder}.extracted.xml")),
    )
    .unwrap();
    assert!(xml.contains("<encoding>windows-1252</encoding>"), "{xml}");
    w.run(&["verify", "--input", "out"]);

    let tgt = w.sqlite_url("target.db");
    w.run(&["load", "--input", "out", "--target", &tgt]);
    let expected: Vec<Vec<String>> = dump_table(&src, "resource_")
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| {
                    v.chars()
                        .map(|c| if encodable(c) { c } else { '?' })
                        .collect()
                })
                .collect()
        })
        .collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(dump_table(&tgt, "resource_"), expected);
    assert!(
        expected
            .iter()
            .flatten()
            .any(|v| v.contains('é') || v.contains('ü')),
        "accented letters windows-1252 has come through as themselves"
    );

    let o = w.run_code(
        &mut w.command(&[
            "export",
            "--source",
            &src,
            "--output",
            "x",
            "--encoding",
            "klingon",
        ]),
        2,
    );
    assert!(
        stderr(&o).contains("--encoding \"klingon\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn utf16_exports_verify_and_load_like_utf8() {
    let w = Workdir::new("encoding-utf16");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 80, 82);
    w.run(&["export", "--source", &src, "--output", "utf8", "--catch-up"]);
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "utf16",
        "--catch-up",
        "--encoding",
        "utf-16le",
    ]);
    assert_eq!(
        export_folders(&w.join("utf8")),
        export_folders(&w.join("utf16"))
    );
    // The CSV really is UTF-16LE: the header's first letter, then a zero byte.
    let folder = export_folders(&w.join("utf16"))[0].clone();
    let mut zip = zip::ZipArchive::new(
        std::fs::File::open(w.join("utf16").join(&folder).join(format!("{folder}.zip"))).unwrap(),
    )
    .unwrap();
    let mut bytes = Vec::new();
    zip.by_name("interaction_fact.csv")
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    assert_eq!(&bytes[..4], b"i\0n\0");
    w.run(&["verify", "--input", "utf16"]);

    let a = w.sqlite_url("a.db");
    let b = w.sqlite_url("b.db");
    w.run(&["load", "--input", "utf8", "--target", &a]);
    w.run(&["load", "--input", "utf16", "--target", &b]);
    let ta = dump_target(&a);
    assert!(ta.values().map(Vec::len).sum::<usize>() > 100);
    assert_eq!(ta, dump_target(&b));
}
