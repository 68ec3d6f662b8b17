//! The export job: plan the next window, stream every changed table into a folder, publish it.
//!
//! One run: take the output lock, clear what a dead run left, read the chain state, then (repeatedly
//! with `catch_up`) plan a window from the audit log, write its tables in parallel, and publish.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::audit::AuditKeySet;
use crate::db::{DbUrl, Source, Table};
use crate::format::{ExportMetadata, ExportName};
use crate::outdir::OutputDir;
use crate::package::{self, TablePart, ZipStyle};
use crate::window::{plan_next, AuditWindow, ChainState, Plan, PlanRequest};

/// What `gim-export` writes as `gim-version`.
pub fn gim_version() -> String {
    format!("gim-export {}", env!("CARGO_PKG_VERSION"))
}

/// A validated export configuration.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    pub source: DbUrl,
    pub output: PathBuf,
    pub chunk_seconds: i64,
    pub start_ts: Option<i64>,
    pub catch_up: bool,
    pub threads: usize,
    pub compression_level: i64,
    pub gim_schema_version: String,
}

/// One published export.
#[derive(Clone, Debug)]
pub struct Published {
    pub folder: PathBuf,
    pub meta: ExportMetadata,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct ExportReport {
    pub published: Vec<Published>,
    /// Settled late keys held back because alone they would not move the chain.
    pub waiting: usize,
}

/// Refused: `--start-date` on a directory that already holds a chain.
#[derive(Debug, thiserror::Error)]
#[error("{output} already holds exports (latest {latest}); --start-date applies only to an empty output directory")]
pub struct StartDateOnExistingChain {
    pub output: String,
    pub latest: String,
}

pub async fn run(config: &ExportConfig) -> Result<ExportReport> {
    let out = OutputDir::new(&config.output)?;
    // Check the source before touching the output, so a bad source writes nothing.
    let source = Source::connect(&config.source, config.threads as u32).await?;
    source.read_audit_log(i64::MAX, &[]).await?;
    let tables: Vec<Table> = source
        .tables()
        .await?
        .into_iter()
        .filter(Table::is_exportable)
        .collect();

    let lock = out.lock()?;
    for name in out.clean_staging(&lock)? {
        warn!(staging = %name, "removed the unfinished folder of an interrupted run");
    }
    let latest = out.latest()?;
    if let (Some(latest), Some(_)) = (&latest, config.start_ts) {
        return Err(StartDateOnExistingChain {
            output: out.path().display().to_string(),
            latest: latest.name().folder(),
        }
        .into());
    }
    let mut state: Option<ChainState> = latest.map(|m| ChainState {
        hwm: m.hwm_to,
        max_data_ts: m.max_data_ts,
        pending: m.pending_audit_keys.clone().unwrap_or_default(),
        start_ts: m.start_ts,
    });

    let source = Arc::new(source);
    let mut report = ExportReport::default();
    loop {
        source.begin_snapshot().await?;
        let after = state.as_ref().map(|s| s.hwm.audit_key).unwrap_or(0);
        let pending: Vec<i64> = state
            .as_ref()
            .map(|s| s.pending.iter().collect())
            .unwrap_or_default();
        let log = source.read_audit_log(after, &pending).await?;
        let plan = plan_next(PlanRequest {
            log: &log,
            previous: state.as_ref(),
            start_ts: config.start_ts,
            chunk_seconds: config.chunk_seconds,
        });
        let window = match plan {
            Plan::UpToDate { waiting } => {
                report.waiting = waiting;
                break;
            }
            Plan::Export(w) => w,
        };
        if !window.dropped_pending.is_empty() {
            warn!(keys = %window.dropped_pending, "pending audit keys no longer in CTL_AUDIT_LOG; forgotten");
        }
        let published = export_window(&source, &tables, &window, config, &out).await?;
        state = Some(window.chain_state());
        report.published.push(published);
        if !config.catch_up {
            break;
        }
    }
    drop(lock);
    if let Ok(source) = Arc::try_unwrap(source) {
        source.close().await;
    }
    Ok(report)
}

/// Writes and publishes one export folder for `window`.
async fn export_window(
    source: &Arc<Source>,
    tables: &[Table],
    window: &AuditWindow,
    config: &ExportConfig,
    out: &OutputDir,
) -> Result<Published> {
    let name = ExportName {
        hwm_to: window.hwm_to.audit_key,
        max_data_ts: window.max_data_ts,
    };
    let started = std::time::Instant::now();
    let staging = out.staging(&name)?;
    let style = ZipStyle::new(config.compression_level, window.max_data_ts);
    let ranges: Arc<Vec<(i64, i64)>> = Arc::new(window.key_ranges.clone());

    let permits = Arc::new(Semaphore::new(config.threads.max(1)));
    let mut jobs = JoinSet::new();
    for table in tables.iter().cloned() {
        let source = Arc::clone(source);
        let ranges = Arc::clone(&ranges);
        let permits = Arc::clone(&permits);
        let part_path = staging.join(format!("{}.part.zip", table.lower_name()));
        jobs.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let (tx, rx) = mpsc::channel(8);
            let header = table.header();
            let lower = table.lower_name();
            let writer = tokio::task::spawn_blocking(move || {
                package::write_table_part(rx, &lower, &header, &part_path, style)
            });
            let read = source.copy_rows_csv(&table, &ranges, &tx).await;
            drop(tx);
            let written = writer.await.context("table writer panicked")?;
            read?;
            let part = written.with_context(|| format!("writing table {}", table.name))?;
            anyhow::Ok(part)
        });
    }
    let mut parts: Vec<TablePart> = Vec::new();
    while let Some(done) = jobs.join_next().await {
        if let Some(part) = done.context("table task panicked")?? {
            parts.push(part);
        }
    }
    parts.sort_by(|a, b| a.summary.name.cmp(&b.summary.name));

    let meta = ExportMetadata {
        created_ts: window.created_ts,
        gim_schema_version: config.gim_schema_version.clone(),
        gim_version: gim_version(),
        hwm_from: window.hwm_from,
        hwm_to: window.hwm_to,
        max_data_ts: window.max_data_ts,
        max_data_ts_from: Some(window.max_data_ts_from),
        chunk_seconds: Some(config.chunk_seconds),
        start_ts: window.start_ts,
        audit_keys: Some(window.keys.clone()),
        pending_audit_keys: Some(window.pending.clone()),
        tables: parts.iter().map(|p| p.summary.clone()).collect(),
    };
    {
        let (staging, meta) = (staging.clone(), meta.clone());
        tokio::task::spawn_blocking(move || {
            package::write_folder(&staging, &name, &parts, &meta, style)
                .with_context(|| format!("writing {}", staging.display()))
        })
        .await
        .context("folder writer panicked")??;
    }
    let folder = out.publish(&staging, &name)?;
    out.record_state(&meta)?;

    let rows: u64 = meta.tables.iter().map(|t| t.rows).sum();
    let bytes: u64 = meta.tables.iter().map(|t| t.bytes).sum();
    info!(
        folder = %name.folder(),
        audit_keys = %compact(&window.keys),
        pending = %compact(&window.pending),
        tables = meta.tables.len(),
        rows,
        csv_bytes = bytes,
        seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
        "published"
    );
    Ok(Published { folder, meta })
}

fn compact(keys: &AuditKeySet) -> String {
    let s = keys.to_string();
    if s.len() > 80 {
        format!("{}... ({} keys)", &s[..77], keys.len())
    } else {
        s
    }
}
