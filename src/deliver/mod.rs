//! `export --deliver-to DEST`: every published folder goes to every destination, in chain order.
//!
//! A destination is a local or mounted directory, `sftp://user@host[:port]/path` or
//! `s3://bucket/prefix`; one file each (`deliver/<kind>.rs`) behind [`Destination`], picked by
//! [`open`]. Each puts a folder so that a receiver never sees it half written: a directory or SFTP
//! server gets it under a temporary name, renamed when whole; on S3 the folder's checksum object
//! (`.zip.sha1`, or `.zip.p7m.sha1` when encrypted) is written last and marks it complete.
//!
//! What each destination has received is kept in the output directory
//! ([`DELIVERIES_FILE`]). A destination that is down is tried again with a growing delay, then left
//! for the next run, which catches it up in chain order; retention never removes a folder that a
//! destination is still owed.

pub mod local;
pub mod s3;
pub mod sftp;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::format::ExportName;

/// The record of what every destination received, in the output directory.
pub const DELIVERIES_FILE: &str = ".gim-export.deliveries.json";

/// Where folders go.
pub trait Destination: Send + Sync {
    /// The destination as given, without secrets: its key in the record and in messages.
    fn label(&self) -> String;
    /// Puts the folder at `folder` under the name `name`, whole or not at all as a receiver sees it.
    /// Blocking. Putting a folder the destination already holds with the same files succeeds.
    fn put_folder(&self, folder: &Path, name: &str) -> Result<()>;
}

/// The destination a `--deliver-to` value names.
pub fn open(dest: &str, options: &Options) -> Result<Box<dyn Destination>> {
    if dest.starts_with("sftp://") {
        Ok(Box::new(sftp::Sftp::parse(dest, options)?))
    } else if dest.starts_with("s3://") {
        Ok(Box::new(s3::S3::parse(dest, options)?))
    } else if let Some((scheme, _)) = dest.split_once("://") {
        anyhow::bail!(
            "--deliver-to {dest}: {scheme}:// is not a destination (a directory, sftp://user@host[:port]/path or s3://bucket/prefix)"
        )
    } else {
        Ok(Box::new(local::Local::new(dest)))
    }
}

/// How destinations are reached and retried.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Private key for SFTP (default: ~/.ssh/id_ed25519, then ~/.ssh/id_rsa).
    pub ssh_key: Option<PathBuf>,
    /// known_hosts for SFTP (default ~/.ssh/known_hosts); the server's key must be in it.
    pub known_hosts: Option<PathBuf>,
    /// S3 endpoint (else AWS_ENDPOINT_URL / AWS_ENDPOINT, else AWS itself).
    pub s3_endpoint: Option<String>,
    /// S3 region (else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1).
    pub s3_region: Option<String>,
    /// Tries after the first failure of one folder, within a run.
    pub retries: u32,
    /// The first wait before trying again (doubling, at most a minute).
    pub retry_delay: Duration,
}

/// Every destination of a run, with the folder-name patterns not delivered.
#[derive(Default)]
pub struct Deliveries {
    pub destinations: Vec<Box<dyn Destination>>,
    pub exclude: Vec<String>,
    pub options: Options,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field(
                "destinations",
                &self
                    .destinations
                    .iter()
                    .map(|d| d.label())
                    .collect::<Vec<_>>(),
            )
            .field("exclude", &self.exclude)
            .finish()
    }
}

impl Deliveries {
    pub fn new(to: &[String], exclude: &[String], options: Options) -> Result<Deliveries> {
        let mut destinations = Vec::new();
        let mut seen = BTreeSet::new();
        for d in to.iter().map(|d| d.trim()).filter(|d| !d.is_empty()) {
            let dest = open(d, &options)?;
            anyhow::ensure!(seen.insert(dest.label()), "--deliver-to {d} is given twice");
            destinations.push(dest);
        }
        Ok(Deliveries {
            destinations,
            exclude: exclude
                .iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            options,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }

    fn excluded(&self, folder: &str) -> bool {
        self.exclude
            .iter()
            .any(|p| crate::ops::glob_match(&p.to_ascii_lowercase(), &folder.to_ascii_lowercase()))
    }
}

/// What one destination has received.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DestinationRecord {
    /// Folders delivered that are still in the output directory, each with the checksum its
    /// `.zip.sha1` (or `.zip.p7m.sha1`) named: a folder reissued under the same name (a restarted
    /// chain) differs, and is delivered again.
    pub delivered: BTreeMap<String, String>,
    /// The folder delivered last, and when (Unix seconds).
    pub last: Option<String>,
    pub last_at: Option<i64>,
    /// The last failure, and when; cleared by a success.
    pub error: Option<String>,
    pub failed_at: Option<i64>,
}

/// Destination label -> its record.
pub type Record = BTreeMap<String, DestinationRecord>;

pub fn read_record(dir: &Path) -> Record {
    std::fs::read_to_string(dir.join(DELIVERIES_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn write_record(dir: &Path, record: &Record) -> Result<()> {
    let text = serde_json::to_string_pretty(record)?;
    crate::package::replace_file(&dir.join(DELIVERIES_FILE), text.as_bytes())
        .with_context(|| format!("writing {}", dir.join(DELIVERIES_FILE).display()))
}

/// What identifies a folder's contents: the checksum its `.zip.sha1` (or `.zip.p7m.sha1`) names and
/// the SHA-1 of its extracted.xml (a re-export can hold the same zip under another chain generation).
pub fn identity(path: &Path, name: &ExportName) -> String {
    let zip = [name.zip_sha1_file(), name.p7m_sha1_file()]
        .iter()
        .find_map(|f| std::fs::read_to_string(path.join(f)).ok())
        .map(|t| t.split_whitespace().next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let xml = crate::package::sha1_of_file(&path.join(name.xml_file())).unwrap_or_default();
    format!("{zip}:{xml}")
}

/// The folders of `dir` (export folders, in chain order) a destination with `record` is still owed:
/// those it has not received, or received with other contents under the same name.
pub fn owed<'a>(
    folders: &'a [(ExportName, PathBuf)],
    record: Option<&DestinationRecord>,
    excluded: impl Fn(&str) -> bool,
) -> Vec<&'a (ExportName, PathBuf)> {
    folders
        .iter()
        .filter(|(n, p)| {
            let name = n.folder();
            !excluded(&name)
                && record.is_none_or(|r| r.delivered.get(&name) != Some(&identity(p, n)))
        })
        .collect()
}

/// Every folder a configured destination is still owed (retention keeps them). A destination no
/// longer given to `--deliver-to` holds nothing back.
pub fn owed_anywhere(dir: &Path, deliveries: Option<&Deliveries>) -> BTreeSet<String> {
    let record = read_record(dir);
    let folders = crate::outdir::OutputDir::new(dir)
        .and_then(|o| o.exports())
        .unwrap_or_default();
    let labels: BTreeSet<String> = deliveries
        .map(|d| d.destinations.iter().map(|d| d.label()).collect())
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    for label in labels {
        let excluded = |f: &str| deliveries.is_some_and(|d| d.excluded(f));
        for (n, _) in owed(&folders, record.get(&label), excluded) {
            out.insert(n.folder());
        }
    }
    out
}

/// Where one destination stands, for `status` and the metrics.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DestinationState {
    pub destination: String,
    /// The folder delivered last, and when.
    pub last_folder: Option<String>,
    pub last_at: Option<i64>,
    /// Folders of the output directory it has not received.
    pub owed: usize,
    /// max-data-ts of the newest folder minus that of the newest folder it received (0 when it
    /// holds them all; from the first folder's when it holds none).
    pub lag_seconds: i64,
    /// The last failure, while it lasts.
    pub error: Option<String>,
}

/// Every destination in the record of `dir` (and those configured, if given), where it stands.
pub fn states(dir: &Path, deliveries: Option<&Deliveries>) -> Vec<DestinationState> {
    let record = read_record(dir);
    let folders = crate::outdir::OutputDir::new(dir)
        .and_then(|o| o.exports())
        .unwrap_or_default();
    let mut labels: BTreeSet<String> = record.keys().cloned().collect();
    if let Some(d) = deliveries {
        labels.extend(d.destinations.iter().map(|d| d.label()));
    }
    let newest = folders.last().map(|(n, _)| n.max_data_ts);
    labels
        .into_iter()
        .map(|label| {
            let r = record.get(&label);
            let excluded = |f: &str| deliveries.is_some_and(|d| d.excluded(f));
            let owed = owed(&folders, r, excluded);
            let lag = match (newest, owed.first()) {
                (Some(newest), Some((first, _))) => {
                    // Up to the folder before the first one owed.
                    let before = folders
                        .iter()
                        .take_while(|(n, _)| n != first)
                        .last()
                        .map(|(n, _)| n.max_data_ts)
                        .unwrap_or(first.max_data_ts);
                    (newest - before).max(0)
                }
                _ => 0,
            };
            DestinationState {
                destination: label.clone(),
                last_folder: r.and_then(|r| r.last.clone()),
                last_at: r.and_then(|r| r.last_at),
                owed: owed.len(),
                lag_seconds: lag,
                error: r.and_then(|r| r.error.clone()),
            }
        })
        .collect()
}

/// What one delivery pass did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// (destination, folder) delivered.
    pub delivered: Vec<(String, String)>,
    /// One message per destination that failed (it stays owed what it did not get).
    pub failures: Vec<String>,
}

/// Delivers, in chain order, every folder of the output directory `dir` that a destination has not
/// received, skipping destinations in `down` (failed earlier in this run) and adding those that fail.
/// Blocking.
pub fn deliver_owed(
    deliveries: &Deliveries,
    dir: &Path,
    down: &mut BTreeSet<String>,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    if deliveries.is_empty() {
        return Ok(outcome);
    }
    let folders = crate::outdir::OutputDir::new(dir)?.exports()?;
    let present: BTreeSet<String> = folders.iter().map(|(n, _)| n.folder()).collect();
    let mut record = read_record(dir);
    for dest in &deliveries.destinations {
        let label = dest.label();
        if down.contains(&label) {
            continue;
        }
        let entry = record.entry(label.clone()).or_default();
        entry.delivered.retain(|f, _| present.contains(f));
        let todo: Vec<(String, PathBuf, String)> =
            owed(&folders, Some(entry), |f| deliveries.excluded(f))
                .into_iter()
                .map(|(n, p)| (n.folder(), p.clone(), identity(p, n)))
                .collect();
        for (name, path, id) in todo {
            match put_with_retries(dest.as_ref(), &path, &name, &deliveries.options) {
                Ok(()) => {
                    info!(destination = %label, folder = %name, "delivered");
                    let entry = record.get_mut(&label).expect("entry made above");
                    entry.delivered.insert(name.clone(), id);
                    entry.last = Some(name.clone());
                    entry.last_at = Some(chrono::Utc::now().timestamp());
                    entry.error = None;
                    entry.failed_at = None;
                    write_record(dir, &record)?;
                    outcome.delivered.push((label.clone(), name));
                }
                Err(e) => {
                    let message = format!("delivering {name} to {label}: {e:#}");
                    warn!("{message}; it stays owed, retention keeps it, and the next run delivers it (and what follows) in chain order");
                    let entry = record.get_mut(&label).expect("entry made above");
                    entry.error = Some(format!("{e:#}"));
                    entry.failed_at = Some(chrono::Utc::now().timestamp());
                    outcome.failures.push(message);
                    down.insert(label.clone());
                    break; // chain order: nothing after a folder the destination lacks
                }
            }
        }
    }
    write_record(dir, &record)?;
    Ok(outcome)
}

fn put_with_retries(dest: &dyn Destination, folder: &Path, name: &str, o: &Options) -> Result<()> {
    let mut delay = o.retry_delay;
    let mut attempt = 0;
    loop {
        match dest.put_folder(folder, name) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < o.retries && !crate::signals::stop_requested() => {
                attempt += 1;
                warn!(destination = %dest.label(), folder = %name, attempt, error = %format!("{e:#}"), "delivery failed; trying again in {} s", delay.as_secs_f64());
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The files of an export folder, the checksum that marks it complete last.
pub fn files_in_order(folder: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let n = ExportName::parse(name).with_context(|| format!("{name}: not an export folder"))?;
    let last = [n.zip_sha1_file(), n.p7m_sha1_file()];
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("reading {}", folder.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort_by_key(|p| {
        let f = p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        (last.contains(&f), f)
    });
    Ok(files)
}
