//! The export job: plan the next window, stream every changed table into a folder, publish it.
//!
//! One run: take the output lock, clear what a dead run left, read the chain state, then (repeatedly
//! with `catch_up`) plan a window from the audit log, write its tables in parallel, and publish.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::audit::{AuditKeySet, HighWaterMark};
use crate::db::{DbUrl, ExportViews, Source, Table};
use crate::encoding::{OutputEncoding, Transcoder};
use crate::format::{ExportMetadata, ExportName, Restart, RestartKind, TableSelection};
use crate::ops::{self, LastRun, Metrics, TableFilter};
use crate::outdir::{OutputDir, OutputError, RestartIntent};
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
    /// Plan and count, write nothing.
    pub dry_run: bool,
    pub tables: TableFilter,
    /// Remove complete folders older than this many days after a run (0: keep all).
    pub keep_days: u32,
    /// Run after each publish with the folder's path.
    pub on_publish: Option<String>,
    /// Write a Prometheus textfile here after each run.
    pub metrics_file: Option<PathBuf>,
    /// Tries again after a transient database failure (connection lost, timeout), this many times.
    pub max_retries: u32,
    /// The first wait before trying again; it doubles each time (at most 10 minutes).
    pub retry_delay_seconds: u64,
    /// Continue the chain, or start a new one.
    pub mode: ChainMode,
    /// The CSVs' character set.
    pub encoding: OutputEncoding,
    /// `--use-export-views`: read through these views instead of the tables.
    pub views: Option<ExportViews>,
    /// `--allow-table-change`: continue the chain with other `--include`/`--exclude` patterns.
    pub allow_table_change: bool,
    /// `--resync-on-broken-chain`: when the chain cannot be continued, start a full resync.
    pub resync_on_broken_chain: bool,
    /// `--encrypt-to`, `--sign-with`: what each folder gets before it is published.
    pub sealing: crate::crypto::Sealing,
    /// `--deliver-to`: where each published folder goes.
    pub deliveries: Arc<crate::deliver::Deliveries>,
}

/// Whether a run continues the chain in the output directory or replaces it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChainMode {
    /// The next export of the chain (a first one, from `--start-date`, on an empty directory).
    #[default]
    Continue,
    /// `--restart`: a new chain from `--start-date`, or from the beginning of the data.
    Restart,
    /// `--reexport-last SPAN`: the chain again from the newest export at least SPAN seconds of data
    /// older than the newest one.
    Reexport { seconds: i64 },
    /// `--full-resync`: every row of every table in one export; the loader removes target rows that
    /// are not in it.
    FullResync,
}

/// What every export of a run carries about its chain.
#[derive(Clone, Debug, Default)]
struct ChainInfo {
    generation: u32,
    /// Only on the first export of a new chain.
    restart: Option<Restart>,
    full_tables: Option<Vec<String>>,
    /// The tables this run exports, written in every folder.
    selection: TableSelection,
}

pub use crate::signals::{request_stop, sleep_unless_stopped, stop_requested};

/// An export `--dry-run` would make.
#[derive(Clone, Debug)]
pub struct PlannedExport {
    pub name: ExportName,
    pub window: AuditWindow,
    pub rows: BTreeMap<String, i64>,
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
    /// `--dry-run`: what would be exported.
    pub planned: Vec<PlannedExport>,
    /// Folders removed by retention.
    pub pruned: Vec<String>,
    /// Problems that did not fail the run (a failed `--on-publish`).
    pub warnings: Vec<String>,
    /// `--on-publish` failures of this run (new folders, or folders owed from earlier runs).
    pub hook_failures: Vec<String>,
    /// Folders whose `--on-publish` has not succeeded yet, after this run.
    pub hooks_owed: usize,
    /// `--deliver-to`: (destination, folder) delivered in this run.
    pub delivered: Vec<(String, String)>,
    /// Destinations that failed in this run (each stays owed what it did not get).
    pub delivery_failures: Vec<String>,
    /// Data time of the newest settled source key minus the chain's max-data-ts.
    pub lag_seconds: Option<i64>,
    /// Settled source keys not exported yet.
    pub keys_behind: Option<usize>,
    /// Settled keys past the chain's high-water mark whose data lies before the chain's start date
    /// (`--start-date`): this chain never exports them.
    pub before_start: usize,
    /// The chain's start date, when it has one.
    pub chain_start_ts: Option<i64>,
}

impl ExportReport {
    /// How the run ended, as the last-run record and `--json` say it: `stopped` (a signal),
    /// `hook-failed`, `nothing-to-do` or `success`.
    pub fn outcome(&self) -> &'static str {
        if crate::signals::received().is_some() {
            "stopped"
        } else if !self.hook_failures.is_empty() {
            "hook-failed"
        } else if !self.delivery_failures.is_empty() {
            "delivery-failed"
        } else if self.published.is_empty() {
            "nothing-to-do"
        } else {
            "success"
        }
    }
}

/// `--reexport-last` on a directory with no exports.
#[derive(Debug, thiserror::Error)]
#[error("{0} holds no exports: there is nothing to re-export (run a plain export first)")]
pub struct NothingToReexport(pub String);

/// Refused: `--include`/`--exclude` differ from the patterns the chain was exported with (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("the table selection changed: {latest} was exported with {before}, this run asks for {now}{delta}. A table left out stops receiving changes; a table added holds only rows changed from now on (export --full-resync brings its older rows). Give --allow-table-change if this is meant, or run with the chain's own selection")]
pub struct TableSelectionChanged {
    pub latest: String,
    pub before: String,
    pub now: String,
    pub delta: String,
}

/// `; tables added: a, b; tables left out: c` for two table lists.
fn table_delta(before: &[String], now: &[String]) -> String {
    let added: Vec<&str> = now
        .iter()
        .filter(|t| !before.contains(t))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = before
        .iter()
        .filter(|t| !now.contains(t))
        .map(String::as_str)
        .collect();
    let mut s = String::new();
    if !added.is_empty() {
        s.push_str(&format!("; tables added: {}", added.join(", ")));
    }
    if !removed.is_empty() {
        s.push_str(&format!("; tables left out: {}", removed.join(", ")));
    }
    s
}

/// Refused: `--restart --start-date` would move aside a full resync whose deletions a receiver may
/// not have loaded (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("--restart --start-date would move aside {folder} in {output}, a full resync: a receiver that has not loaded it would never learn of the rows the source deleted, and a chain from a start date cannot carry them. Run export --full-resync (every row, deletions included), or --restart without --start-date (which starts with a full resync)")]
pub struct RestartOverFullResync {
    pub folder: String,
    pub output: String,
}

/// Refused: a `--start-date` after the newest settled data of the source (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("--start-date {start} is after the newest settled data of the source ({newest}): the chain would start past every row and export nothing until data that late exists; give a date at or before {newest}")]
pub struct FutureStartDate {
    pub start: String,
    pub newest: String,
}

/// A Unix time as RFC 3339 (UTC).
pub fn iso(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| ts.to_string())
}

/// Refused: `--start-date` on a directory that already holds a chain.
#[derive(Debug, thiserror::Error)]
#[error("{output} already holds exports (latest {latest}); --start-date applies only to an empty output directory, or with --restart to start a new chain (the present folders move to superseded-<time>/)")]
pub struct StartDateOnExistingChain {
    pub output: String,
    pub latest: String,
}

/// Runs the export job, then records its outcome (unless it was a dry run or another run holds the
/// directory) for `status` and `--metrics-file`.
pub async fn run(config: &ExportConfig) -> Result<ExportReport> {
    let started = chrono::Utc::now().timestamp();
    let clock = std::time::Instant::now();
    let mut retry = crate::db::Retry::new(config.max_retries, config.retry_delay_seconds);
    let result = loop {
        let result = run_job(config).await;
        if let Err(e) = &result {
            if retry.again(e).await {
                continue;
            }
        }
        break result;
    };
    // A run a second signal abandoned fails with whatever the abandoned writer said: name the stop.
    let result = match result {
        Err(e)
            if crate::signals::abandon_requested()
                && e.downcast_ref::<crate::signals::Stopped>().is_none() =>
        {
            Err(e.context(crate::signals::stopped(
                "the folder in progress was abandoned; the next run starts it again",
            )))
        }
        r => r,
    };
    if !config.dry_run {
        record_run(config, started, clock.elapsed().as_secs_f64(), &result);
    }
    result
}

/// Removes a staging directory when dropped, unless disarmed (set to `None`) once published.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// The source has a table that no receiver could load; the user must fix or exclude it (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnloadableSource(pub String);

/// `--include` / `--exclude` select nothing, or an `--include` pattern matches no table: a typo that
/// would otherwise publish folders without the tables and move the chain past their rows (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EmptySelection(pub String);

/// Refuses an `--include` pattern that matches no exportable table, and a selection that leaves
/// none, naming the patterns and the tables there are.
fn check_selection(
    exportable: &[String],
    filter: &crate::ops::TableFilter,
) -> Result<(), EmptySelection> {
    let list = |names: &[String]| {
        let shown: Vec<&str> = names.iter().take(40).map(String::as_str).collect();
        let more = names.len().saturating_sub(shown.len());
        format!(
            "{}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    };
    let unmatched: Vec<&String> = filter
        .include
        .iter()
        .filter(|p| !exportable.iter().any(|t| crate::ops::glob_match(p, t)))
        .collect();
    if !unmatched.is_empty() {
        return Err(EmptySelection(format!(
            "--include {} matches no exportable table (a table with CREATE_AUDIT_KEY); the source has: {}",
            unmatched.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", "),
            list(exportable)
        )));
    }
    if !exportable.is_empty() && !exportable.iter().any(|t| filter.allows(t)) {
        return Err(EmptySelection(format!(
            "--include/--exclude leave no table to export (exclude: {}); the source has: {}",
            filter
                .exclude
                .iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            list(exportable)
        )));
    }
    Ok(())
}

/// The source tables to export: those with `CREATE_AUDIT_KEY` that the selection allows. A name
/// that is not a plain identifier (letters, digits and `_`, in any case) cannot be a GIM table nor a
/// file name: such a table is never exported, and every run warns about it. A table whose columns
/// no receiver could load (a name that is not a plain identifier, two names differing only in case),
/// or two tables whose names differ only in case, stop the export, naming them.
fn exportable_tables(all: Vec<Table>, config: &ExportConfig) -> Result<Vec<Table>> {
    let names: Vec<String> = all
        .iter()
        .filter(|t| t.is_exportable() && crate::target::is_plain_identifier(&t.lower_name()))
        .map(|t| t.lower_name())
        .collect();
    check_selection(&names, &config.tables)?;
    let mut out: Vec<Table> = Vec::new();
    for t in all
        .into_iter()
        .filter(|t| t.is_exportable() && config.tables.allows(&t.name))
    {
        if !crate::target::is_plain_identifier(&t.lower_name()) {
            warn!(
                table = ?t.name,
                "not exported: the table name is not a plain identifier, so it is not a GIM table"
            );
            continue;
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &t.columns {
            let lower = c.name.to_ascii_lowercase();
            if !crate::target::is_plain_identifier(&lower) {
                return Err(UnloadableSource(format!(
                    "table {}: column {:?} is not a plain identifier, so no receiver could load it: fix the source or leave the table out with --exclude {}",
                    t.name, c.name, t.name
                ))
                .into());
            }
            if !seen.insert(lower.clone()) {
                return Err(UnloadableSource(format!(
                    "table {}: two columns are named {lower} in different case; a CSV header cannot hold both: fix the source or leave the table out with --exclude {}",
                    t.name, t.name
                ))
                .into());
            }
        }
        if let Some(other) = out.iter().find(|o| o.lower_name() == t.lower_name()) {
            return Err(UnloadableSource(format!(
                "tables {:?} and {:?} differ only in case and would both be {}.csv: leave one out with --exclude",
                other.name,
                t.name,
                t.lower_name()
            ))
            .into());
        }
        out.push(t);
    }
    Ok(out)
}

async fn run_job(config: &ExportConfig) -> Result<ExportReport> {
    let out = OutputDir::new(&config.output)?;
    // Check the source before touching the output, so a bad source writes nothing.
    let source = Source::connect(&config.source, config.threads as u32).await?;
    source.read_audit_log(i64::MAX, &[]).await?;
    let all = match &config.views {
        Some(v) => source.export_view_tables(v).await?,
        None => source.tables().await?,
    };
    let tables = exportable_tables(all, config)?;
    // A table the role cannot read must stop the export: skipping it would move the chain past
    // its rows.
    let unreadable: Vec<String> = tables
        .iter()
        .filter(|t| !t.readable)
        .map(|t| t.name.clone())
        .collect();
    if !unreadable.is_empty() {
        return Err(crate::db::DbError::Unreadable {
            url: config.source.to_string(),
            tables: unreadable.join(", "),
        }
        .into());
    }

    let lock = if config.dry_run {
        None
    } else {
        let lock = out.lock()?;
        for name in out.clean_staging(&lock)? {
            warn!(staging = %name, "removed the unfinished folder of an interrupted run");
        }
        Some(lock)
    };
    let mut report = ExportReport::default();
    // Destinations that failed in this run: not tried again until the next one.
    let mut down: BTreeSet<String> = BTreeSet::new();
    if lock.is_some() {
        retry_owed_hooks(config, &out, &mut report).await?;
        deliver(config, &out, &mut report, &mut down).await?;
    }
    // A chain that cannot be continued: with --resync-on-broken-chain, what stands in the way is
    // moved aside and a full resync starts a new chain; the reason goes into its folder and the run.
    let mut broken: Option<String> = None;
    let heal = config.resync_on_broken_chain && lock.is_some();
    let mut latest = match (out.latest(), &lock) {
        (Ok(l), _) => l,
        (Err(e), Some(lock)) if heal => {
            let moved = out.move_broken_aside(lock)?;
            broken = Some(format!(
                "the chain's state could not be read ({e}); moved to broken-*/: {}",
                moved.join(", ")
            ));
            out.latest()?
        }
        (Err(e), _) => return Err(e.into()),
    };
    if heal && broken.is_none() {
        broken = broken_chain(config, &source, latest.as_ref()).await?;
    }
    if let Some(why) = &broken {
        warn!("the chain cannot be continued: {why}; starting a full resync (--resync-on-broken-chain)");
        report.warnings.push(format!("full resync started: {why}"));
    }
    let mut recorded = out.restart_intent()?;
    if let (Some(i), Some(l), Some(lock)) = (&recorded, &latest, &lock) {
        // The new chain's first folder is out; the run that published it died before moving the
        // replaced folders aside. Finish that, and go on from the new chain.
        if l.generation >= i.generation {
            let moved = out.finish_restart(i, lock)?;
            info!(kind = %i.kind, generation = i.generation, moved = moved.len(), "finished an interrupted restart");
            recorded = None;
            latest = out.latest()?;
        }
    }
    let intent = match recorded {
        Some(i) => {
            if config.mode != ChainMode::Continue {
                warn!(
                    kind = %i.kind,
                    "a restart recorded by an earlier run is not finished: finishing it first"
                );
            }
            Some(i)
        }
        None if broken.is_some() => {
            let resync = ExportConfig {
                mode: ChainMode::FullResync,
                ..config.clone()
            };
            plan_restart(&resync, &out, latest.as_ref())?.map(|mut i| {
                i.reason = broken.clone();
                i
            })
        }
        None => plan_restart(config, &out, latest.as_ref())?,
    };
    tracing::debug!(
        source = %config.source,
        output = %config.output.display(),
        chunk_seconds = config.chunk_seconds,
        threads = config.threads,
        mode = ?config.mode,
        tables = tables.len(),
        "export settings"
    );
    let selection = TableSelection::new(
        &config.tables.include,
        &config.tables.exclude,
        &tables.iter().map(|t| t.lower_name()).collect::<Vec<_>>(),
    );
    check_table_selection(config, intent.is_some(), latest.as_ref(), &selection)?;
    let start_ts = match &intent {
        Some(i) => i.start_ts,
        None => config.start_ts,
    };
    let mut state: Option<ChainState> = match &intent {
        Some(i) => i
            .boundary_xml
            .as_deref()
            .map(|x| ExportMetadata::from_xml(x, crate::outdir::RESTART_FILE))
            .transpose()?
            .map(|m| chain_state(&m)),
        None => latest.as_ref().map(chain_state),
    };
    let mut chain = match &intent {
        Some(i) => ChainInfo {
            generation: i.generation,
            restart: Some(Restart {
                kind: RestartKind::parse(&i.kind).unwrap_or(RestartKind::Restart),
                after: HighWaterMark {
                    audit_key: i.after_audit_key,
                    created_ts: i.after_created_ts,
                },
                reason: i.reason.clone(),
            }),
            full_tables: (i.kind == RestartKind::Full.as_str())
                .then(|| tables.iter().map(|t| t.lower_name()).collect()),
            selection: selection.clone(),
        },
        None => ChainInfo {
            generation: latest.as_ref().map_or(0, |m| m.generation),
            selection: selection.clone(),
            ..Default::default()
        },
    };
    let carried: Option<AuditKeySet> = intent
        .as_ref()
        .and_then(|i| i.carried_pending.as_deref())
        .and_then(|p| p.parse().ok());
    let mut pending_intent = intent;
    let catch_up = config.catch_up
        || matches!(
            config.mode,
            ChainMode::Reexport { .. } | ChainMode::FullResync
        );

    let source = Arc::new(source);
    let mut newest_source_data: Option<i64> = None;
    let mut settled_above: Vec<i64> = Vec::new();
    loop {
        if stop_requested() {
            break;
        }
        source.begin_snapshot().await?;
        let after = state.as_ref().map(|s| s.hwm.audit_key).unwrap_or(0);
        let pending: Vec<i64> = state
            .as_ref()
            .map(|s| s.pending.iter().collect())
            .unwrap_or_default();
        let log = source.read_audit_log(after, &pending).await?;
        let settled = log.iter().filter(|e| e.is_settled());
        newest_source_data =
            newest_source_data.max(settled.clone().filter_map(|e| e.max_chunk_ts).max());
        settled_above.clear();
        settled_above.extend(settled.clone().map(|e| e.audit_key));
        // A new chain cannot start after the newest settled data: it would publish a folder dated
        // in the future and then wait for data that late, exporting nothing for ever.
        if state.is_none() {
            let newest = settled.clone().filter_map(|e| e.max_chunk_ts).max();
            if let (Some(start), Some(newest)) = (start_ts, newest) {
                if start > newest {
                    return Err(FutureStartDate {
                        start: iso(start),
                        newest: iso(newest),
                    }
                    .into());
                }
            }
        }
        let chain_start = state.as_ref().map_or(start_ts, |s| s.start_ts);
        report.before_start = match chain_start {
            Some(start) => settled
                .filter(|e| e.max_chunk_ts.is_some_and(|t| t < start))
                .filter(|e| state.as_ref().is_none_or(|s| e.audit_key > s.hwm.audit_key))
                .count(),
            None => 0,
        };
        report.chain_start_ts = chain_start;
        let full = chain.full_tables.is_some();
        let plan = plan_next(PlanRequest {
            log: &log,
            previous: state.as_ref(),
            start_ts,
            // A full resync takes every settled key in one export.
            chunk_seconds: if full {
                i64::MAX / 4
            } else {
                config.chunk_seconds
            },
            carried_pending: carried.as_ref().filter(|_| state.is_none()),
        });
        tracing::debug!(
            after_audit_key = after,
            log_entries = log.len(),
            settled = settled_above.len(),
            pending = pending.len(),
            "audit log read"
        );
        let window = match plan {
            Plan::UpToDate { waiting } => {
                tracing::debug!(waiting, "up to date: no window to export");
                report.waiting = waiting;
                break;
            }
            Plan::Export(w) => w,
        };
        tracing::debug!(
            hwm_from = window.hwm_from.audit_key,
            hwm_to = window.hwm_to.audit_key,
            audit_keys = %compact(&window.keys),
            key_ranges = ?window.key_ranges,
            pending = %compact(&window.pending),
            max_data_ts_from = %iso(window.max_data_ts_from),
            max_data_ts = %iso(window.max_data_ts),
            "window planned"
        );
        if !window.dropped_pending.is_empty() {
            warn!(keys = %window.dropped_pending, "pending audit keys no longer in CTL_AUDIT_LOG; forgotten");
        }
        if config.dry_run {
            let mut rows = BTreeMap::new();
            for t in &tables {
                rows.insert(
                    t.lower_name(),
                    source.count_rows(t, &window.key_ranges).await?,
                );
            }
            report.planned.push(PlannedExport {
                name: ExportName {
                    hwm_to: window.hwm_to.audit_key,
                    max_data_ts: window.max_data_ts,
                    repair: 0,
                },
                window: window.clone(),
                rows,
            });
        } else {
            let lock_held = lock.as_ref().expect("a writing run holds the lock");
            let restarting = pending_intent.take();
            if let Some(intent) = &restarting {
                out.record_restart(intent, lock_held)?;
            }
            let published = export_window(
                &source,
                &tables,
                &window,
                config,
                &chain,
                &out,
                restarting.as_ref().map(|i| i.superseded_dir.as_str()),
            )
            .await?;
            if let Some(intent) = &restarting {
                let moved = out.finish_restart(intent, lock_held)?;
                info!(
                    kind = %intent.kind,
                    generation = intent.generation,
                    moved = moved.len(),
                    to = %intent.superseded_dir,
                    "new chain published: replaced folders moved aside"
                );
            }
            chain.restart = None;
            chain.full_tables = None;
            if let Some(cmd) = &config.on_publish {
                let name = published.meta.name().folder();
                if let Err(e) = publish_hook(cmd, &published.folder).await? {
                    let mut owed = ops::read_hooks_owed(out.path());
                    owed.insert(name, e.clone());
                    ops::write_hooks_owed(out.path(), &owed)?;
                    report.warnings.push(e.clone());
                    report.hook_failures.push(e);
                }
            }
            report.published.push(published);
            deliver(config, &out, &mut report, &mut down).await?;
        }
        state = Some(window.chain_state());
        if config.dry_run {
            chain.restart = None;
            chain.full_tables = None;
        }
        if !catch_up {
            break;
        }
    }
    if let Some(s) = &state {
        report.lag_seconds = newest_source_data.map(|t| (t - s.max_data_ts).max(0));
        report.keys_behind = Some(
            settled_above
                .iter()
                .filter(|k| **k > s.hwm.audit_key || s.pending.contains(**k))
                .count()
                .saturating_sub(report.before_start),
        );
    }
    if lock.is_some() {
        let mut owed = ops::read_hooks_owed(out.path());
        report.hooks_owed = owed.len();
        // Retention keeps what a destination has not received.
        for name in crate::deliver::owed_anywhere(out.path(), Some(&config.deliveries)) {
            owed.entry(name)
                .or_insert_with(|| "not delivered yet".into());
        }
        for name in ops::prune(
            out.path(),
            config.keep_days,
            std::time::SystemTime::now(),
            &owed,
        )? {
            info!(folder = %name, keep_days = config.keep_days, "removed by retention");
            report.pruned.push(name);
        }
    }
    drop(lock);
    if let Ok(source) = Arc::try_unwrap(source) {
        source.close().await;
    }
    Ok(report)
}

/// The tables a chain exports are part of it: a plain run whose `--include`/`--exclude` differ from
/// the newest folder's is refused unless `--allow-table-change`; the same patterns selecting other
/// tables (the source gained or lost one) are reported. A restart, re-export or full resync starts
/// a chain, and may choose its tables.
fn check_table_selection(
    config: &ExportConfig,
    new_chain: bool,
    latest: Option<&ExportMetadata>,
    now: &TableSelection,
) -> Result<()> {
    let Some((latest, before)) = latest.and_then(|m| m.selection.as_ref().map(|s| (m, s))) else {
        return Ok(());
    };
    let delta = table_delta(&before.tables, &now.tables);
    if !before.same_patterns(now) {
        if !new_chain && !config.allow_table_change && !config.dry_run {
            return Err(TableSelectionChanged {
                latest: latest.name().folder(),
                before: before.describe(),
                now: now.describe(),
                delta,
            }
            .into());
        }
        warn!(
            before = %before.describe(),
            now = %now.describe(),
            "the table selection changes{delta}"
        );
    } else if !delta.is_empty() {
        warn!(
            "the source's tables changed under the same selection{delta}: an added table holds only rows changed from now on (export --full-resync brings its older rows)"
        );
    }
    Ok(())
}

/// `--deliver-to`: every folder of the output directory that a destination has not received, in
/// chain order (a blocking pass on its own thread).
async fn deliver(
    config: &ExportConfig,
    out: &OutputDir,
    report: &mut ExportReport,
    down: &mut BTreeSet<String>,
) -> Result<()> {
    if config.deliveries.is_empty() || config.dry_run {
        return Ok(());
    }
    let (deliveries, dir, mut failed) = (
        Arc::clone(&config.deliveries),
        out.path().to_path_buf(),
        std::mem::take(down),
    );
    let (outcome, failed) = tokio::task::spawn_blocking(move || {
        let o = crate::deliver::deliver_owed(&deliveries, &dir, &mut failed);
        (o, failed)
    })
    .await
    .context("the delivery thread failed")?;
    *down = failed;
    let outcome = outcome?;
    report.delivered.extend(outcome.delivered);
    for f in outcome.failures {
        report.warnings.push(f.clone());
        report.delivery_failures.push(f);
    }
    Ok(())
}

/// Runs `--on-publish` for one folder on a blocking thread; `Ok(Err(text))` when the hook failed.
async fn publish_hook(cmd: &str, folder: &std::path::Path) -> Result<Result<(), String>> {
    let (cmd, folder) = (cmd.to_string(), folder.to_path_buf());
    let r = tokio::task::spawn_blocking(move || ops::run_hook(&cmd, &folder)).await?;
    if let Err(e) = &r {
        warn!("{e}; the folder stays published, retention keeps it, and the next run runs the hook for it again");
    }
    Ok(r)
}

/// Runs `--on-publish` again, in chain order, for the folders whose hook failed in earlier runs. A
/// folder no longer at the top of the output directory (moved aside by a restart, or by hand) is no
/// longer owed. Without `--on-publish` the owed folders are only reported: retention keeps them.
async fn retry_owed_hooks(
    config: &ExportConfig,
    out: &OutputDir,
    report: &mut ExportReport,
) -> Result<()> {
    let mut owed = ops::read_hooks_owed(out.path());
    if owed.is_empty() {
        return Ok(());
    }
    let Some(cmd) = &config.on_publish else {
        warn!(
            folders = owed.len(),
            "folders whose --on-publish failed in an earlier run wait for a run with --on-publish; retention keeps them (remove {} to give up on them)",
            ops::HOOK_OWED_FILE
        );
        return Ok(());
    };
    let present: BTreeMap<String, PathBuf> = out
        .exports()?
        .into_iter()
        .map(|(n, p)| (n.folder(), p))
        .collect();
    let names: Vec<String> = owed.keys().cloned().collect();
    for name in names {
        let Some(path) = present.get(&name) else {
            warn!(folder = %name, "owed an --on-publish but no longer in the output directory: forgotten");
            owed.remove(&name);
            continue;
        };
        info!(folder = %name, "running --on-publish again for a folder whose hook failed earlier");
        match publish_hook(cmd, path).await? {
            Ok(()) => {
                owed.remove(&name);
            }
            Err(e) => {
                owed.insert(name, e.clone());
                report.warnings.push(e.clone());
                report.hook_failures.push(e);
            }
        }
    }
    ops::write_hooks_owed(out.path(), &owed)?;
    Ok(())
}

/// Writes the last-run record and the metrics textfile. Failures here are logged, never fatal.
fn record_run(config: &ExportConfig, started: i64, seconds: f64, result: &Result<ExportReport>) {
    let dir = &config.output;
    if !dir.is_dir() {
        return; // nothing was written (bad source or output): nothing to record either
    }
    if let Err(e) = result {
        if matches!(
            e.downcast_ref::<OutputError>(),
            Some(OutputError::Locked(_))
        ) {
            return; // the other run records its own outcome
        }
    }
    let now = chrono::Utc::now().timestamp();
    let previous = ops::read_last_run(dir);
    let mut rows_per_table: BTreeMap<String, u64> = BTreeMap::new();
    let run = match result {
        Ok(report) => {
            for t in report.published.iter().flat_map(|p| p.meta.tables.iter()) {
                *rows_per_table.entry(t.name.clone()).or_default() += t.rows;
            }
            let failures: Vec<String> = report
                .hook_failures
                .iter()
                .chain(&report.delivery_failures)
                .cloned()
                .collect();
            let hook_failed = !failures.is_empty();
            LastRun {
                result: report.outcome().into(),
                started_at: started,
                finished_at: now,
                duration_seconds: seconds,
                folders: report.published.len(),
                rows: rows_per_table.values().sum(),
                bytes: report
                    .published
                    .iter()
                    .flat_map(|p| p.meta.tables.iter())
                    .map(|t| t.bytes)
                    .sum(),
                error: hook_failed.then(|| failures.join("; ")),
                warnings: report.warnings.clone(),
                last_success_at: if hook_failed {
                    previous.as_ref().and_then(|p| p.last_success_at)
                } else {
                    Some(now)
                },
            }
        }
        Err(e) => LastRun {
            result: if crate::signals::received().is_some() {
                "stopped"
            } else {
                "failed"
            }
            .into(),
            started_at: started,
            finished_at: now,
            duration_seconds: seconds,
            error: Some(format!("{e:#}")),
            last_success_at: previous.as_ref().and_then(|p| p.last_success_at),
            ..Default::default()
        },
    };
    if let Err(e) = ops::write_last_run(dir, &run) {
        warn!("could not record the run in {}: {e}", dir.display());
    }
    if let Some(path) = &config.metrics_file {
        let latest = OutputDir::new(dir)
            .ok()
            .and_then(|o| o.latest().ok().flatten());
        let metrics = Metrics {
            run,
            rows_per_table,
            on_publish_failures: ops::read_hooks_owed(dir).len(),
            hwm_audit_key: latest.as_ref().map(|m| m.hwm_to.audit_key),
            max_data_ts: latest.as_ref().map(|m| m.max_data_ts),
            lag_seconds: result.as_ref().ok().and_then(|r| r.lag_seconds),
            deliveries: crate::deliver::states(dir, Some(&config.deliveries)),
        };
        if let Err(e) = ops::write_metrics(path, &metrics) {
            warn!("could not write the metrics file {}: {e}", path.display());
        }
    }
}

/// Writes and publishes one export folder for `window`.
async fn export_window(
    source: &Arc<Source>,
    tables: &[Table],
    window: &AuditWindow,
    config: &ExportConfig,
    chain: &ChainInfo,
    out: &OutputDir,
    superseded: Option<&str>,
) -> Result<Published> {
    let name = ExportName {
        hwm_to: window.hwm_to.audit_key,
        max_data_ts: window.max_data_ts,
        repair: 0,
    };
    let started = std::time::Instant::now();
    let staging = out.staging(&name)?;
    // A failed run (a full disk, a database error) removes what it staged, freeing the space;
    // a killed one leaves it for the next run to clean.
    let mut unstage = RemoveOnDrop(Some(staging.clone()));
    let style = ZipStyle::new(config.compression_level, window.max_data_ts);
    let ranges: Arc<Vec<(i64, i64)>> = Arc::new(window.key_ranges.clone());

    let permits = Arc::new(Semaphore::new(config.threads.max(1)));
    // Every table writer (a blocking thread, which an abort cannot stop) holds a read guard until it
    // has closed its part file: a failed run takes the write guard before it removes the staging
    // folder, so no writer can create a file in it afterwards.
    let writers = Arc::new(tokio::sync::RwLock::new(()));
    let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let encoding = config.encoding;
    let mut jobs = JoinSet::new();
    for table in tables.iter().cloned() {
        let source = Arc::clone(source);
        let ranges = Arc::clone(&ranges);
        let permits = Arc::clone(&permits);
        let writers = Arc::clone(&writers);
        let abandoned = Arc::clone(&abandoned);
        let part_path = staging.join(format!("{}.part.zip", table.lower_name()));
        jobs.spawn(tracing::Instrument::in_current_span(async move {
            let _permit = permits.acquire_owned().await?;
            let (tx, rx) = mpsc::channel(8);
            let header = table.header();
            let lower = table.lower_name();
            let key: Vec<usize> = table
                .primary_key
                .iter()
                .filter_map(|k| {
                    table
                        .columns
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(k))
                })
                .collect();
            let transcoder = Transcoder::new(encoding, &lower, &header, &key);
            let key_names: Vec<String> = table
                .primary_key
                .iter()
                .map(|k| k.to_ascii_lowercase())
                .collect();
            let binary = table.binary_columns();
            let bar = crate::logging::progress_enabled().then(|| table_bar(&lower));
            let writing = writers.read_owned().await;
            let writer = tokio::task::spawn_blocking(move || {
                let _writing = writing;
                let r = package::write_table_part(
                    rx,
                    package::PartShape {
                        table: &lower,
                        header: &header,
                        key: &key_names,
                        binary: &binary,
                        abandoned: &abandoned,
                    },
                    &part_path,
                    style,
                    transcoder,
                    bar.clone(),
                );
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                r
            });
            let table_started = std::time::Instant::now();
            let read = source.copy_rows_csv(&table, &ranges, &tx).await;
            drop(tx);
            let written = writer.await.context("table writer panicked")?;
            read?;
            let part = written.with_context(|| format!("writing table {}", table.name))?;
            if let Some(p) = &part {
                tracing::debug!(
                    table = %p.summary.name,
                    rows = p.summary.rows,
                    csv_bytes = p.summary.bytes,
                    seconds = (table_started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                    "table read and written"
                );
            }
            anyhow::Ok(part)
        }));
    }
    let folder_progress =
        crate::logging::progress_enabled().then(|| folder_bar(&name.folder(), tables.len()));
    let mut parts: Vec<TablePart> = Vec::new();
    let failure: Option<anyhow::Error> = loop {
        let next = tokio::select! {
            done = jobs.join_next() => done,
            _ = crate::signals::abandoned() => break Some(anyhow::Error::new(crate::signals::stopped(
                format!("{} was abandoned; the next run starts it again", name.folder()),
            ))),
        };
        match next.map(|d| d.context("table task panicked").and_then(|r| r)) {
            None => break None,
            Some(Ok(Some(part))) => parts.push(part),
            Some(Ok(None)) => {}
            Some(Err(e)) => break Some(e),
        }
        if let Some(b) = &folder_progress {
            b.inc(1);
        }
    };
    if let Some(b) = folder_progress {
        b.finish_and_clear();
    }
    if let Some(e) = failure {
        // Stop the other tables, and wait for their writers to let go of the staging folder before
        // it is removed (on return, by `unstage`).
        abandoned.store(true, std::sync::atomic::Ordering::Relaxed);
        jobs.abort_all();
        while jobs.join_next().await.is_some() {}
        let _all_closed = writers.write().await;
        return Err(e);
    }
    parts.sort_by(|a, b| a.summary.name.cmp(&b.summary.name));
    for p in parts.iter().filter(|p| p.replaced > 0) {
        warn!(
            table = %p.summary.name,
            replaced = p.replaced,
            encoding = config.encoding.encoding.name(),
            "characters the encoding lacks were written as '?'"
        );
    }

    let mut meta = ExportMetadata {
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
        generation: chain.generation,
        restart: chain.restart.clone(),
        full_tables: chain.full_tables.clone(),
        encoding: config.encoding.xml_name(),
        selection: Some(chain.selection.clone()),
        repair: None,
        encrypted: None,
        signed: None,
        tables: parts.iter().map(|p| p.summary.clone()).collect(),
    };
    {
        let (staging, sealing) = (staging.clone(), config.sealing.clone());
        let written = meta.clone();
        meta = tokio::task::spawn_blocking(move || -> Result<ExportMetadata> {
            let mut meta = written;
            package::write_folder(&staging, &name, &parts, &meta, style)
                .with_context(|| format!("writing {}", staging.display()))?;
            sealing
                .seal(&staging, &name, &mut meta)
                .with_context(|| format!("sealing {}", staging.display()))?;
            Ok(meta)
        })
        .await
        .context("folder writer panicked")??;
    }
    let folder = out.publish(&staging, &name, superseded)?;
    unstage.0 = None;
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
        seconds = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        "published"
    );
    Ok(Published { folder, meta })
}

/// A progress line for one table: rows so far and rows per second (rounded).
fn table_bar(table: &str) -> indicatif::ProgressBar {
    let bar = crate::logging::bars().add(indicatif::ProgressBar::new_spinner());
    bar.set_style(crate::logging::bar_style(
        "{spinner}   {prefix:<28} {human_pos:>12} rows  {rate:>14}  {elapsed}",
    ));
    bar.set_prefix(table.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// The line above the tables' lines: the folder being written and how many of its tables are done.
fn folder_bar(folder: &str, tables: usize) -> indicatif::ProgressBar {
    let bar = crate::logging::bars().add(indicatif::ProgressBar::new(tables as u64));
    bar.set_style(crate::logging::bar_style(
        "{prefix} {pos}/{len} tables done  {elapsed}",
    ));
    bar.set_prefix(folder.to_string());
    bar
}

/// The chain state an export leaves.
fn chain_state(m: &ExportMetadata) -> ChainState {
    ChainState {
        hwm: m.hwm_to,
        max_data_ts: m.max_data_ts,
        pending: m.pending_audit_keys.clone().unwrap_or_default(),
        start_ts: m.start_ts,
    }
}

/// Decides how `--restart`, `--reexport-last` and `--full-resync` replace the chain in `out`, or
/// refuses `--start-date` on a directory that holds one. `None`: the chain goes on as it is.
/// Why the chain in the output directory cannot be continued, when it cannot: its pending audit keys
/// (in flight at its tip, owed later) are gone from `CTL_AUDIT_LOG`, so their rows can no longer be
/// found by key; or the directory holds no chain although a run here published folders (the chain
/// was lost), so only a full resync can tell a receiver what the source no longer has.
async fn broken_chain(
    config: &ExportConfig,
    source: &Source,
    latest: Option<&ExportMetadata>,
) -> Result<Option<String>> {
    let Some(tip) = latest else {
        let published_before =
            crate::ops::read_last_run(&config.output).is_some_and(|r| r.folders > 0);
        return Ok(published_before.then(|| {
            "the output directory holds no export, but an earlier run here published some: the chain was lost"
                .to_string()
        }));
    };
    let Some(pending) = tip.pending_audit_keys.as_ref().filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let keys: Vec<i64> = pending.iter().collect();
    let present: std::collections::HashSet<i64> = source
        .read_audit_log(tip.hwm_to.audit_key, &keys)
        .await?
        .iter()
        .map(|e| e.audit_key)
        .collect();
    let gone: AuditKeySet = keys.into_iter().filter(|k| !present.contains(k)).collect();
    Ok((!gone.is_empty()).then(|| {
        format!(
            "pending audit key(s) {} of {} are no longer in CTL_AUDIT_LOG: their rows cannot be found by key any more",
            compact(&gone),
            tip.name().folder()
        )
    }))
}

fn plan_restart(
    config: &ExportConfig,
    out: &OutputDir,
    latest: Option<&ExportMetadata>,
) -> Result<Option<RestartIntent>> {
    // Unique per output directory: the generation grows with every restart (the lock keeps two
    // runs apart, on any host); the time is for people. Two restarts in one second, or a clock that
    // stepped back, still get two names.
    let generation = latest.map_or(0, |m| m.generation + 1);
    let superseded_dir = format!(
        "{}g{generation}-{}",
        crate::outdir::SUPERSEDED_PREFIX,
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    let carried = |tip: &ExportMetadata| {
        tip.pending_audit_keys
            .as_ref()
            .filter(|p| !p.is_empty())
            .map(|p| p.to_string())
    };
    let intent = |kind: RestartKind, tip: &ExportMetadata| RestartIntent {
        carried_pending: carried(tip),
        kind: kind.as_str().into(),
        generation: tip.generation + 1,
        after_audit_key: tip.hwm_to.audit_key,
        after_created_ts: tip.hwm_to.created_ts,
        start_ts: None,
        keep_through: None,
        boundary_xml: None,
        superseded_dir: superseded_dir.clone(),
        reason: None,
    };
    // A full resync among the folders a restart or re-export would move aside carries deletions
    // that a receiver which has not loaded it yet would then never learn of: the new chain must
    // carry them itself, so it starts with a full resync of its own.
    let replaces_full_resync = |keep_through: Option<&str>| -> Result<Option<String>> {
        let Some(tip) = latest else { return Ok(None) };
        for (name, dir) in out.exports()? {
            if keep_through.is_some_and(|k| name.folder().as_str() <= k) {
                continue;
            }
            let m = crate::outdir::read_meta(&dir, &name)?;
            if m.generation == tip.generation
                && m.restart.is_some_and(|r| r.kind == RestartKind::Full)
            {
                return Ok(Some(name.folder()));
            }
        }
        Ok(None)
    };
    let as_full_resync = |tip: &ExportMetadata, folder: &str, asked: &str| {
        warn!(
            replaced = folder,
            "{asked} would move aside {folder}, a full resync a receiver may not have loaded yet; the new chain starts with a full resync instead, so that the rows the source deleted are removed everywhere"
        );
        intent(RestartKind::Full, tip)
    };
    Ok(match (config.mode, latest) {
        (ChainMode::Continue, Some(tip)) if config.start_ts.is_some() => {
            return Err(StartDateOnExistingChain {
                output: out.path().display().to_string(),
                latest: tip.name().folder(),
            }
            .into())
        }
        (ChainMode::Continue, _) | (ChainMode::Restart, None) => None,
        (ChainMode::Restart, Some(tip)) => match replaces_full_resync(None)? {
            Some(full) if config.start_ts.is_some() => {
                return Err(RestartOverFullResync {
                    folder: full,
                    output: out.path().display().to_string(),
                }
                .into())
            }
            Some(full) => Some(as_full_resync(tip, &full, "--restart")),
            None => Some(RestartIntent {
                start_ts: config.start_ts,
                ..intent(RestartKind::Restart, tip)
            }),
        },
        (ChainMode::Reexport { .. }, None) => {
            return Err(NothingToReexport(out.path().display().to_string()).into())
        }
        (ChainMode::Reexport { seconds }, Some(tip)) => {
            let since = tip.max_data_ts.saturating_sub(seconds);
            // The newest export of this chain whose data ends at least SPAN before the newest.
            let mut boundary = None;
            for (name, dir) in out.exports()?.into_iter().rev() {
                let m = crate::outdir::read_meta(&dir, &name)?;
                if m.generation == tip.generation && m.max_data_ts <= since {
                    boundary = Some(m);
                    break;
                }
            }
            if let Some(full) =
                replaces_full_resync(boundary.as_ref().map(|m| m.name().folder()).as_deref())?
            {
                return Ok(Some(as_full_resync(tip, &full, "--reexport-last")));
            }
            if boundary.is_none() {
                warn!(
                    "no export in {} ends {seconds} s of data before the newest: re-exporting the whole chain from its start",
                    out.path().display()
                );
            }
            Some(RestartIntent {
                start_ts: if boundary.is_none() {
                    tip.start_ts
                } else {
                    None
                },
                keep_through: boundary.as_ref().map(|m| m.name().folder()),
                boundary_xml: boundary.as_ref().map(|m| m.to_xml()),
                ..intent(RestartKind::Reexport, tip)
            })
        }
        (ChainMode::FullResync, Some(tip)) => Some(intent(RestartKind::Full, tip)),
        // On an empty directory too: the receiver is told to drop what the source no longer has.
        (ChainMode::FullResync, None) => Some(RestartIntent {
            kind: RestartKind::Full.as_str().into(),
            // After any chain whose folders were moved aside here (a lost chain's successor must
            // not look older to a receiver that followed it).
            generation: out.generation_aside().map_or(0, |g| g + 1),
            after_audit_key: 0,
            after_created_ts: 0,
            start_ts: None,
            keep_through: None,
            boundary_xml: None,
            superseded_dir,
            carried_pending: None,
            reason: None,
        }),
    })
}

fn compact(keys: &AuditKeySet) -> String {
    let s = keys.to_string();
    if s.len() > 80 {
        format!("{}... ({} keys)", &s[..77], keys.len())
    } else {
        s
    }
}
