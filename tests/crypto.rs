//! Issue 14 items 1 and 2: folders encrypted to the receivers' certificates and signed by the sender,
//! opened and checked by stock `openssl cms` as well as by `verify` and `load`.

use std::path::Path;
use std::process::Command;

use crate::harness::*;

/// A self-signed RSA certificate and its key, made by the stock `openssl` command.
fn identity(w: &Workdir, who: &str) {
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
        ])
        .arg(format!("/CN={who}"))
        .arg("-keyout")
        .arg(w.join(&format!("{who}.key")))
        .arg("-out")
        .arg(w.join(&format!("{who}.pem")))
        .output()
        .expect("openssl (installed by make test) makes a certificate");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs")
}

fn only_folder(w: &Workdir, out: &str) -> (String, std::path::PathBuf) {
    let name = export_folders(&w.join(out)).pop().expect("a folder");
    let path = w.join(out).join(&name);
    (name, path)
}

fn ledger_rows(target: &str) -> String {
    query_one(target, "SELECT COUNT(*) FROM gim_export_ledger")
}

#[test]
fn an_encrypted_folder_opens_with_stock_openssl_loads_with_the_key_and_refuses_a_wrong_key_or_a_tampered_file(
) {
    let w = Workdir::new("encrypted");
    for who in ["recv", "recv2", "other"] {
        identity(&w, who);
    }
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 60, 11);
    w.run(&["export", "--source", &src, "--output", "plain"]);
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "sealed",
        "--encrypt-to",
        "recv.pem,recv2.pem",
    ]);
    let (name, folder) = only_folder(&w, "sealed");
    let files: Vec<String> = tree(&folder).into_keys().collect();
    assert_eq!(
        files,
        vec![
            format!("{name}.extracted.xml"),
            format!("{name}.zip.p7m"),
            format!("{name}.zip.p7m.sha1"),
        ],
        "no plain zip beside the encrypted one"
    );
    let xml = std::fs::read_to_string(folder.join(format!("{name}.extracted.xml"))).unwrap();
    assert_eq!(xml.matches("<recipient sha256=").count(), 2, "{xml}");
    assert!(!xml.contains("PRIVATE"), "{xml}");
    let st = Command::new("sha1sum")
        .args(["-c", &format!("{name}.zip.p7m.sha1")])
        .current_dir(&folder)
        .output()
        .unwrap();
    assert!(st.status.success(), "sha1sum -c on the encrypted file");

    // Each receiver opens it with stock openssl; the zip inside is the unencrypted export's, byte
    // for byte (encryption adds randomness, the zip stays deterministic).
    let plain_zip = std::fs::read(w.join("plain").join(&name).join(format!("{name}.zip"))).unwrap();
    for who in ["recv", "recv2"] {
        let o = openssl(
            w.path(),
            &[
                "cms",
                "-decrypt",
                "-binary",
                "-inform",
                "DER",
                "-in",
                folder.join(format!("{name}.zip.p7m")).to_str().unwrap(),
                "-inkey",
                &format!("{who}.key"),
                "-recip",
                &format!("{who}.pem"),
                "-out",
                &format!("{who}.zip"),
            ],
        );
        assert!(
            o.status.success(),
            "{who}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            std::fs::read(w.join(&format!("{who}.zip"))).unwrap(),
            plain_zip,
            "{who}"
        );
    }

    // Without a key, with a key it was not encrypted for: refused, naming the folder; nothing applied.
    let target = w.sqlite_url("t.db");
    let o = w.run_code(
        &mut w.command(&["load", "--input", "sealed", "--target", &target]),
        5,
    );
    assert!(
        stderr(&o).contains(&name) && stderr(&o).contains("--decrypt-key"),
        "{}",
        stderr(&o)
    );
    let o = w.run_code(
        &mut w.command(&[
            "load",
            "--input",
            "sealed",
            "--target",
            &target,
            "--decrypt-key",
            "other.key",
            "--decrypt-cert",
            "other.pem",
        ]),
        5,
    );
    assert!(
        stderr(&o).contains(&name) && stderr(&o).contains("cannot be decrypted"),
        "{}",
        stderr(&o)
    );
    assert_eq!(ledger_rows(&target), "0");

    // A changed byte in the encrypted file, its checksum recomputed: the zip inside no longer opens
    // (or no longer matches extracted.xml); refused, nothing applied.
    copy_dir(&folder, &w.join("tampered").join(&name));
    let p7m = w
        .join("tampered")
        .join(&name)
        .join(format!("{name}.zip.p7m"));
    let mut bytes = std::fs::read(&p7m).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x5a;
    std::fs::write(&p7m, &bytes).unwrap();
    let digest = gim_export::package::sha1_of_file(&p7m).unwrap();
    std::fs::write(
        w.join("tampered")
            .join(&name)
            .join(format!("{name}.zip.p7m.sha1")),
        gim_export::format::sha1_line(&digest, &format!("{name}.zip.p7m")),
    )
    .unwrap();
    let key = ["--decrypt-key", "recv.key", "--decrypt-cert", "recv.pem"];
    let mut args = vec!["load", "--input", "tampered", "--target", &target];
    args.extend_from_slice(&key);
    let o = w.run_code(&mut w.command(&args), 5);
    assert!(stderr(&o).contains(&name), "{}", stderr(&o));
    assert_eq!(ledger_rows(&target), "0");

    // With the key: verified and loaded; the decrypted copy does not outlive the run.
    let mut args = vec!["verify", "--input", "sealed"];
    args.extend_from_slice(&key);
    w.run(&args);
    let mut args = vec!["load", "--input", "sealed", "--target", &target];
    args.extend_from_slice(&["--decrypt-key", "recv2.key", "--decrypt-cert", "recv2.pem"]);
    w.run(&args);
    assert_eq!(ledger_rows(&target), "1");
    let o = w.run(&["compare", "--source", &src, "--target", &target]);
    assert!(stdout(&o).contains("in sync"), "{}", stdout(&o));
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".gim-export-") && n.ends_with(&format!("{name}.zip")))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_signed_folder_verifies_with_stock_openssl_and_trust_refuses_unsigned_foreign_and_changed_folders(
) {
    let w = Workdir::new("signed");
    for who in ["sender", "other", "recv"] {
        identity(&w, who);
    }
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 60, 12);
    let export = |out: &str, extra: &[&str]| {
        let mut a = vec!["export", "--source", &src, "--output", out];
        a.extend_from_slice(extra);
        w.run(&a);
        only_folder(&w, out)
    };
    let (name, signed) = export(
        "signed",
        &["--sign-with", "sender.key", "--sign-cert", "sender.pem"],
    );
    for (sig, content) in [
        (format!("{name}.zip.sig"), format!("{name}.zip")),
        (
            format!("{name}.extracted.xml.sig"),
            format!("{name}.extracted.xml"),
        ),
    ] {
        let o = openssl(
            &signed,
            &[
                "cms",
                "-verify",
                "-binary",
                "-inform",
                "DER",
                "-in",
                &sig,
                "-content",
                &content,
                "-CAfile",
                w.join("sender.pem").to_str().unwrap(),
                "-out",
                "/dev/null",
            ],
        );
        assert!(
            o.status.success(),
            "{sig}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    export("unsigned", &[]);
    export(
        "foreign",
        &["--sign-with", "other.key", "--sign-cert", "other.pem"],
    );
    copy_dir(&signed, &w.join("changed").join(&name));
    crate::tamper::rewrite_entry(&w.join("changed").join(&name), "tenant.csv", |csv| {
        // The data line's first field: tenant 1 becomes tenant 2.
        let text = String::from_utf8(csv.to_vec()).unwrap();
        let (header, rows) = text.split_once('\n').unwrap();
        assert!(rows.starts_with('1'), "{rows}");
        format!("{header}\n2{}", &rows[1..]).into_bytes()
    });
    // rewrite_entry recomputes every checksum and the metadata: only the signatures can tell.
    let o = openssl(
        &w.join("changed").join(&name),
        &[
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            &format!("{name}.zip.sig"),
            "-content",
            &format!("{name}.zip"),
            "-CAfile",
            w.join("sender.pem").to_str().unwrap(),
            "-out",
            "/dev/null",
        ],
    );
    assert!(!o.status.success(), "stock openssl sees the zip changed");

    let target = w.sqlite_url("t.db");
    for (dir, says) in [
        ("unsigned", "is missing: the folder is not signed"),
        ("foreign", "not signed by a certificate given to --trust"),
        ("changed", "does not hold"),
    ] {
        let o = w.run_code(
            &mut w.command(&[
                "load",
                "--input",
                dir,
                "--target",
                &target,
                "--trust",
                "sender.pem",
            ]),
            5,
        );
        assert!(
            stderr(&o).contains(&name) && stderr(&o).contains(says),
            "{dir}: {}",
            stderr(&o)
        );
        let o = w.run_code(
            &mut w.command(&["verify", "--input", dir, "--trust", "sender.pem"]),
            5,
        );
        assert!(stdout(&o).contains(says), "{dir}: {}", stdout(&o));
    }
    assert_eq!(
        query_one(&target, "SELECT COUNT(*) FROM gim_export_ledger"),
        "0"
    );

    // Signed and encrypted together; trusted and opened.
    export(
        "both",
        &[
            "--sign-with",
            "sender.key",
            "--sign-cert",
            "sender.pem",
            "--encrypt-to",
            "recv.pem",
        ],
    );
    w.run(&[
        "load",
        "--input",
        "both",
        "--target",
        &target,
        "--trust",
        "sender.pem",
        "--decrypt-key",
        "recv.key",
        "--decrypt-cert",
        "recv.pem",
    ]);
    assert_eq!(
        query_one(&target, "SELECT COUNT(*) FROM gim_export_ledger"),
        "1"
    );

    // A repair of that target, sealed the same way, is taken by the same receiver.
    exec_sql(&target, "UPDATE tenant SET tenant_name = 'renamed'");
    w.run_code(
        &mut w.command(&[
            "compare",
            "--source",
            &src,
            "--target",
            &target,
            "--repair",
            "repair",
            "--sign-with",
            "sender.key",
            "--sign-cert",
            "sender.pem",
            "--encrypt-to",
            "recv.pem",
        ]),
        5,
    );
    let repair = export_folders(&w.join("repair")).pop().unwrap();
    assert!(w
        .join("repair")
        .join(&repair)
        .join(format!("{repair}.zip.p7m"))
        .is_file());
    w.run(&[
        "load",
        "--input",
        "repair",
        "--target",
        &target,
        "--trust",
        "sender.pem",
        "--decrypt-key",
        "recv.key",
        "--decrypt-cert",
        "recv.pem",
    ]);
    let o = w.run(&["compare", "--source", &src, "--target", &target]);
    assert!(stdout(&o).contains("in sync"), "{}", stdout(&o));
}

/// Review finding: the zip and extracted.xml were signed apart, so a signed zip of an older folder
/// could be put under a newer folder's signed metadata. The signed metadata now names its zip.
#[test]
fn a_signed_zip_moved_under_another_folders_signed_metadata_is_refused() {
    let w = Workdir::new("signed_mix");
    identity(&w, "sender");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 40, 13);
    let sign = ["--sign-with", "sender.key", "--sign-cert", "sender.pem"];
    let mut a = vec![
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--chunk-size",
        "1d",
        "--catch-up",
    ];
    a.extend_from_slice(&sign);
    w.run(&a);
    let folders = export_folders(&w.join("out"));
    assert!(folders.len() >= 2, "{folders:?}");
    let (old, new) = (&folders[0], &folders[1]);
    let (od, nd) = (w.join("out").join(old), w.join("out").join(new));
    // The old folder's zip and its signature, renamed into the new folder, checksum recomputed.
    std::fs::copy(od.join(format!("{old}.zip")), nd.join(format!("{new}.zip"))).unwrap();
    std::fs::copy(
        od.join(format!("{old}.zip.sig")),
        nd.join(format!("{new}.zip.sig")),
    )
    .unwrap();
    let digest = gim_export::package::sha1_of_file(&nd.join(format!("{new}.zip"))).unwrap();
    std::fs::write(
        nd.join(format!("{new}.zip.sha1")),
        gim_export::format::sha1_line(&digest, &format!("{new}.zip")),
    )
    .unwrap();
    let o = w.run_code(
        &mut w.command(&["verify", "--input", "out", "--trust", "sender.pem"]),
        5,
    );
    assert!(
        stdout(&o).contains("the zip belongs to another folder"),
        "{}",
        stdout(&o)
    );
    let target = w.sqlite_url("t.db");
    let o = w.run_code(
        &mut w.command(&[
            "load",
            "--input",
            "out",
            "--target",
            &target,
            "--trust",
            "sender.pem",
        ]),
        5,
    );
    assert!(stderr(&o).contains(new.as_str()), "{}", stderr(&o));
    // Only the genuine first folder is applied.
    assert_eq!(
        query_one(&target, "SELECT COUNT(*) FROM gim_export_ledger"),
        "1"
    );
}
