//! `sftp://user@host[:port]/path`: key authentication only, the server's host key checked against
//! known_hosts (never accepted blindly). The folder is written under `.<name>.partial-<pid>` in the
//! destination directory and renamed into place when whole.

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use ssh2::{CheckResult, KnownHostFileKind, Session};

use super::{Destination, Options};

pub struct Sftp {
    user: String,
    host: String,
    port: u16,
    path: PathBuf,
    key: PathBuf,
    known_hosts: PathBuf,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

impl Sftp {
    pub fn parse(dest: &str, options: &Options) -> Result<Sftp> {
        let bad = |why: &str| {
            anyhow::anyhow!("--deliver-to {dest}: {why} (expected sftp://user@host[:port]/path)")
        };
        let rest = dest
            .strip_prefix("sftp://")
            .ok_or_else(|| bad("not sftp://"))?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no path after the host"))?;
        let (user, hostport) = authority
            .split_once('@')
            .ok_or_else(|| bad("no user (user@host)"))?;
        anyhow::ensure!(!user.is_empty(), bad("an empty user"));
        anyhow::ensure!(
            !user.contains(':'),
            bad("a password in the URL: only key authentication is taken (--ssh-key)")
        );
        let port_of = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| bad("a port that is not a number"))
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an unclosed [ in the host"))?;
            match after.strip_prefix(':') {
                Some(p) => (h.to_string(), port_of(p)?),
                None => (h.to_string(), 22),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), port_of(p)?),
                None => (hostport.to_string(), 22),
            }
        };
        anyhow::ensure!(!host.is_empty(), bad("an empty host"));
        let key = match &options.ssh_key {
            Some(k) => k.clone(),
            None => ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|f| home().join(".ssh").join(f))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    bad("no --ssh-key given and no ~/.ssh/id_ed25519, id_ecdsa or id_rsa")
                })?,
        };
        Ok(Sftp {
            user: user.to_string(),
            host,
            port,
            path: PathBuf::from(format!("/{path}")),
            key,
            known_hosts: options
                .known_hosts
                .clone()
                .unwrap_or_else(|| home().join(".ssh/known_hosts")),
        })
    }

    fn connect(&self) -> Result<ssh2::Sftp> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", self.host))?
            .next()
            .with_context(|| format!("{}: no address", self.host))?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(15))
            .with_context(|| format!("connecting to {}:{}", self.host, self.port))?;
        let mut session = Session::new()?;
        session.set_tcp_stream(tcp);
        session.set_timeout(60_000);
        session.handshake().context("SSH handshake")?;
        let mut known = session.known_hosts()?;
        known
            .read_file(&self.known_hosts, KnownHostFileKind::OpenSSH)
            .with_context(|| format!("reading known_hosts {}", self.known_hosts.display()))?;
        let (key, _) = session.host_key().context("the server sent no host key")?;
        match known.check_port(&self.host, self.port, key) {
            CheckResult::Match => {}
            CheckResult::NotFound => anyhow::bail!(
                "{}:{}: its host key is not in {} (add it, e.g. with ssh-keyscan -p {} {}, after checking it)",
                self.host,
                self.port,
                self.known_hosts.display(),
                self.port,
                self.host
            ),
            CheckResult::Mismatch => anyhow::bail!(
                "{}:{}: its host key differs from the one in {}: refusing to connect",
                self.host,
                self.port,
                self.known_hosts.display()
            ),
            CheckResult::Failure => anyhow::bail!("{}: host key check failed", self.host),
        }
        session
            .userauth_pubkey_file(&self.user, None, &self.key, None)
            .with_context(|| {
                format!(
                    "authenticating as {} with the key {}",
                    self.user,
                    self.key.display()
                )
            })?;
        Ok(session.sftp()?)
    }
}

/// Removes a directory of plain files on the server.
fn remove_dir(sftp: &ssh2::Sftp, dir: &Path) -> Result<()> {
    for (path, _) in sftp.readdir(dir)? {
        sftp.unlink(&path)?;
    }
    sftp.rmdir(dir)?;
    Ok(())
}

impl Destination for Sftp {
    fn label(&self) -> String {
        let port = if self.port == 22 {
            String::new()
        } else {
            format!(":{}", self.port)
        };
        format!(
            "sftp://{}@{}{port}{}",
            self.user,
            self.host,
            self.path.display()
        )
    }

    fn put_folder(&self, folder: &Path, name: &str) -> Result<()> {
        let sftp = self.connect()?;
        sftp.stat(&self.path)
            .with_context(|| format!("{}: no such directory on the server", self.path.display()))?;
        let target = self.path.join(name);
        let partial = self
            .path
            .join(format!(".{name}.partial-{}", std::process::id()));
        if sftp.stat(&partial).is_ok() {
            remove_dir(&sftp, &partial)?;
        }
        sftp.mkdir(&partial, 0o755)
            .with_context(|| format!("creating {}", partial.display()))?;
        for file in super::files_in_order(folder, name)? {
            let to = partial.join(file.file_name().expect("a file"));
            let mut local = std::fs::File::open(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let mut remote = sftp
                .create(&to)
                .with_context(|| format!("creating {}", to.display()))?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = local.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                std::io::Write::write_all(&mut remote, &buf[..n])
                    .with_context(|| format!("writing {}", to.display()))?;
            }
            // Not every server offers fsync@openssh.com; closing is what it guarantees.
            let _ = remote.fsync();
        }
        if sftp.stat(&target).is_ok() {
            // Another folder of that name (a restarted chain reuses names): replaced whole.
            let old = self
                .path
                .join(format!(".{name}.old-{}", std::process::id()));
            sftp.rename(&target, &old, None)
                .with_context(|| format!("moving {} aside", target.display()))?;
            sftp.rename(&partial, &target, None)
                .with_context(|| format!("renaming into {}", target.display()))?;
            // Delivered: what is left of the old copy is only noted.
            if let Err(e) = remove_dir(&sftp, &old) {
                tracing::warn!(path = %old.display(), error = %format!("{e:#}"), "could not remove the replaced copy on the server");
            }
        } else {
            sftp.rename(&partial, &target, None)
                .with_context(|| format!("renaming into {}", target.display()))?;
        }
        Ok(())
    }
}
