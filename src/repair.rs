//! `compare --repair DIR`: the folder that makes a target equal to the source for the keys `compare`
//! found differing, applied by `load` like any export.
//!
//! Where it sits in the chain: right after the target's last applied export `L`, named
//! `<L's folder>_repair_NNN` (the next free number), so it sorts after `L` and before the export that
//! follows `L`. Its hwm-from and hwm-to are both `L`'s hwm-to, with `L`'s max-data-ts and chain
//! generation: the chain check places it after `L`, and the next export (whose hwm-from is `L`'s hwm-to)
//! still follows it. The ledger records it under its own name like any folder.
//!
//! What it holds: for each table that differs, `<table>.csv` with the source's current rows of the
//! keys missing in the target or holding other values (every compared column, as an export writes
//! them), and `<table>.delete.csv` with the keys the target holds and the source does not (unless
//! `--repair-keep-extra`), each with its `.sha1`, listed in `extracted.xml` under `<tables>` and
//! `<repair>`. Only rows settled at or below `L`'s hwm-to are in it, so a later export carrying a
//! newer version of the same row still wins.
//!
//! A repair is made for a target standing at `L`. Loaded into a target that has moved past `L`, it is
//! skipped with a warning (it is older than the last applied export); run `compare` again then.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::Serialize;

use crate::audit::HighWaterMark;
use crate::format::{self, ExportMetadata, ExportName, Repair, TableSummary};
use crate::load::LedgerEntry;
use crate::package::{self, PartShape, TablePart, ZipStyle};

/// `compare --repair DIR [--repair-keep-extra]`.
#[derive(Clone, Debug)]
pub struct RepairOptions {
    /// Where the repair folder is published (the receiver's `load --input`).
    pub dir: PathBuf,
    /// Leave the target's extra rows alone (a warehouse that keeps rows the Info Mart has purged).
    pub keep_extra: bool,
    /// Refuse to write a repair that deletes more than this share (percent) of a table's rows, when
    /// that is over [`REMOVAL_FLOOR`] rows.
    pub max_removal_percent: u32,
    /// `--encrypt-to`, `--sign-with`: sealed like the chain's exports, so a receiver that takes
    /// only signed (or encrypted) folders takes the repair too.
    pub sealing: crate::crypto::Sealing,
}

/// Deletions up to this many rows a table are never refused by `--max-repair-removal`.
pub const REMOVAL_FLOOR: u64 = 1_000;

/// What was written.
#[derive(Clone, Debug, Serialize)]
pub struct RepairWritten {
    pub folder: String,
    pub path: PathBuf,
    /// Rows written (source rows for missing and different keys).
    pub rows: u64,
    /// Keys to delete.
    pub deletes: u64,
}

/// A repair folder being written: a staging directory inside `DIR`, removed unless published.
pub struct RepairFolder {
    options: RepairOptions,
    staging: PathBuf,
    name: ExportName,
    base: LedgerEntry,
    style: ZipStyle,
    made_ts: i64,
    parts: Vec<TablePart>,
    deletes: Vec<TablePart>,
    abandoned: Arc<AtomicBool>,
    published: bool,
}

impl Drop for RepairFolder {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// The next free repair number after `base`: past those in the ledger and those in `dir`.
fn next_number(base: ExportName, ledger: &[LedgerEntry], dir: &Path) -> Result<u32> {
    let mut taken: Vec<u32> = ledger
        .iter()
        .filter_map(|e| ExportName::parse(&e.folder))
        .filter(|n| n.export() == base)
        .map(|n| n.repair)
        .collect();
    taken.extend(
        crate::outdir::list_exports(dir)?
            .into_iter()
            .filter(|(n, _)| n.export() == base)
            .map(|(n, _)| n.repair),
    );
    let next = taken.into_iter().max().unwrap_or(0) + 1;
    anyhow::ensure!(
        next < 1000,
        "{}: 999 repair folders after {} already; load or remove them first",
        dir.display(),
        base.folder()
    );
    Ok(next)
}

impl RepairFolder {
    /// Starts a repair of a target whose ledger is `ledger` (its last entry is where it stands).
    pub fn begin(options: &RepairOptions, ledger: &[LedgerEntry]) -> Result<RepairFolder> {
        let base = ledger.last().cloned().context(
            "--repair: the target has applied no export yet; a repair follows the target's last applied export (load the first folder, or use export --full-resync)",
        )?;
        let base_name = ExportName::parse(&base.folder)
            .with_context(|| {
                format!(
                    "--repair: the target's last applied folder {:?} is not an export folder name",
                    base.folder
                )
            })?
            .export();
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("--repair: creating {}", options.dir.display()))?;
        let number = next_number(base_name, ledger, &options.dir)?;
        let name = ExportName {
            repair: number,
            ..base_name
        };
        let staging =
            options
                .dir
                .join(format!(".{}.partial-{}", name.folder(), std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging)
            .with_context(|| format!("--repair: creating {}", staging.display()))?;
        let made_ts = chrono::Utc::now().timestamp();
        Ok(RepairFolder {
            options: options.clone(),
            staging,
            name,
            base,
            style: ZipStyle::new(6, made_ts),
            made_ts,
            parts: Vec::new(),
            deletes: Vec::new(),
            abandoned: Arc::new(AtomicBool::new(false)),
            published: false,
        })
    }

    pub fn keep_extra(&self) -> bool {
        self.options.keep_extra
    }

    /// Writers for one table's rows and keys to delete: the merge sends CSV records through the
    /// returned sink; `finish` the sink, then [`RepairFolder::add`] what the handles return.
    pub fn table(
        &self,
        table: &str,
        header: &[String],
        key: &[String],
        binary: &[String],
    ) -> TableRepair {
        let spawn = |part_table: String,
                     header: Vec<String>,
                     key: Vec<String>,
                     binary: Vec<String>,
                     file: String| {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
            let path = self.staging.join(format!("{file}.part"));
            let style = self.style;
            let abandoned = self.abandoned.clone();
            let handle = tokio::task::spawn_blocking(move || {
                package::write_table_part(
                    rx,
                    PartShape {
                        table: &part_table,
                        header: &header,
                        key: &key,
                        binary: &binary,
                        abandoned: &abandoned,
                    },
                    &path,
                    style,
                    None,
                    None,
                )
                .with_context(|| format!("writing {}", path.display()))
            });
            (Batcher::new(tx), handle)
        };
        let (rows, rows_done) = spawn(
            table.to_string(),
            header.to_vec(),
            key.to_vec(),
            binary.to_vec(),
            format::csv_file_name(table),
        );
        // The deletion list is written as a part of "table.delete", so its entry is table.delete.csv.
        let delete_part = format::delete_file_name(table);
        let delete_part = delete_part.trim_end_matches(".csv").to_string();
        let (deletes, deletes_done) = if self.options.keep_extra {
            (None, None)
        } else {
            let (b, h) = spawn(
                delete_part,
                key.to_vec(),
                key.to_vec(),
                Vec::new(),
                format::delete_file_name(table),
            );
            (Some(b), Some(h))
        };
        TableRepair {
            sink: RepairSink { rows, deletes },
            rows_done,
            deletes_done,
            table: table.to_string(),
        }
    }

    /// Takes one table's finished parts.
    pub async fn add(&mut self, t: TableRepairHandles) -> Result<()> {
        if let Some(p) = t.rows_done.await.context("repair writer failed")?? {
            self.parts.push(p);
        }
        if let Some(h) = t.deletes_done {
            if let Some(mut p) = h.await.context("repair writer failed")?? {
                p.summary.name = t.table.clone();
                self.deletes.push(p);
            }
        }
        Ok(())
    }

    /// Publishes the folder (`None`, and nothing left behind, when nothing differs).
    pub fn publish(mut self) -> Result<Option<RepairWritten>> {
        if self.parts.is_empty() && self.deletes.is_empty() {
            return Ok(None);
        }
        let mut tables: Vec<TableSummary> = self.parts.iter().map(|p| p.summary.clone()).collect();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        let mut deletes: Vec<TableSummary> =
            self.deletes.iter().map(|p| p.summary.clone()).collect();
        deletes.sort_by(|a, b| a.name.cmp(&b.name));
        let hwm: HighWaterMark = self.base.hwm_to;
        let meta = ExportMetadata {
            created_ts: self.made_ts,
            gim_schema_version: "8.5.116".into(),
            gim_version: crate::export::gim_version(),
            hwm_from: hwm,
            hwm_to: hwm,
            max_data_ts: self.base.max_data_ts,
            max_data_ts_from: None,
            chunk_seconds: None,
            start_ts: None,
            audit_keys: None,
            pending_audit_keys: None,
            generation: self.base.generation,
            restart: None,
            full_tables: None,
            encoding: None,
            selection: None,
            repair: Some(Repair {
                number: self.name.repair,
                of_folder: self.base.folder.clone(),
                made_ts: self.made_ts,
                deletes: deletes.clone(),
            }),
            encrypted: None,
            signed: None,
            tables: tables.clone(),
        };
        let all: Vec<TablePart> = self
            .parts
            .iter()
            .chain(self.deletes.iter())
            .cloned()
            .collect();
        package::write_folder(&self.staging, &self.name, &all, &meta, self.style)
            .with_context(|| format!("writing the repair folder in {}", self.staging.display()))?;
        let mut meta = meta;
        self.options
            .sealing
            .seal(&self.staging, &self.name, &mut meta)
            .with_context(|| format!("sealing the repair folder in {}", self.staging.display()))?;
        let path = self.options.dir.join(self.name.folder());
        std::fs::rename(&self.staging, &path)
            .with_context(|| format!("publishing {}", path.display()))?;
        package::sync_dir(&self.options.dir)
            .with_context(|| format!("syncing {}", self.options.dir.display()))?;
        self.published = true;
        Ok(Some(RepairWritten {
            folder: self.name.folder(),
            path,
            rows: tables.iter().map(|t| t.rows).sum(),
            deletes: deletes.iter().map(|t| t.rows).sum(),
        }))
    }
}

/// One table's repair: the sink the merge writes into, and the writers' handles.
pub struct TableRepair {
    pub sink: RepairSink,
    rows_done: tokio::task::JoinHandle<Result<Option<TablePart>>>,
    deletes_done: Option<tokio::task::JoinHandle<Result<Option<TablePart>>>>,
    table: String,
}

/// What [`RepairFolder::add`] waits for.
pub struct TableRepairHandles {
    rows_done: tokio::task::JoinHandle<Result<Option<TablePart>>>,
    deletes_done: Option<tokio::task::JoinHandle<Result<Option<TablePart>>>>,
    table: String,
}

impl TableRepair {
    pub fn split(self) -> (RepairSink, TableRepairHandles) {
        (
            self.sink,
            TableRepairHandles {
                rows_done: self.rows_done,
                deletes_done: self.deletes_done,
                table: self.table,
            },
        )
    }
}

/// Where the merge (on a blocking thread) sends the rows to write and the keys to delete.
pub struct RepairSink {
    rows: Batcher,
    deletes: Option<Batcher>,
}

impl RepairSink {
    /// A source row to write (missing or different in the target).
    pub fn row<'a>(&mut self, fields: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
        self.rows.push(fields)
    }
    /// A target key to delete (extra in the target); ignored with `--repair-keep-extra`.
    pub fn delete<'a>(&mut self, key: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
        match self.deletes.as_mut() {
            Some(d) => d.push(key),
            None => Ok(()),
        }
    }
    /// Hands on what is buffered and closes both streams.
    pub fn finish(self) -> Result<()> {
        self.rows.finish()?;
        if let Some(d) = self.deletes {
            d.finish()?;
        }
        Ok(())
    }
}

/// CSV records gathered into chunks of about 64 KiB for a part writer.
struct Batcher {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl Batcher {
    fn new(tx: tokio::sync::mpsc::Sender<Bytes>) -> Self {
        Batcher {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }
    fn push<'a>(&mut self, fields: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
        for (i, f) in fields.into_iter().enumerate() {
            format::push_csv_field(&mut self.buf, f, i == 0);
        }
        self.buf.extend_from_slice(b"\n");
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(())
    }
    fn send(&mut self) -> Result<()> {
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| anyhow::anyhow!("the repair writer stopped"))
    }
    fn finish(mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}
