//! `gim-export export`: make the next export folder (or, with `--catch-up`, every one that is due).

use std::path::PathBuf;

use anyhow::Result;

use super::{parse_date, parse_seconds, parse_span, parse_url, ConfigError};
use crate::db::ExportViews;
use crate::encoding::{OnUnmappable, OutputEncoding};
use crate::exit::ExitCode;
use crate::export::{self, ChainMode, ExportConfig, ExportReport};
use crate::ops::TableFilter;

/// Export the rows changed since the last export into the next export_XXX folder.
///
/// Reads the high-water mark from the newest folder in --output (or starts at --start-date, or at the
/// beginning of the data), takes the settled audit keys whose data lies at most one chunk ahead, and
/// writes the changed rows of every table that has CREATE_AUDIT_KEY. The folder appears whole or
/// not at all; a second run on the same output directory at the same time exits with code 4.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source Info Mart: sqlite://FILE, postgres://USER@HOST/DB or mysql://USER@HOST/DB (MariaDB too).
    #[arg(
        long,
        env = "GIM_EXPORT_SOURCE",
        default_value = "sqlite://infomart.db"
    )]
    pub source: String,
    /// Directory that holds the export folders.
    #[arg(long, short, env = "GIM_EXPORT_OUTPUT", default_value = "output")]
    pub output: PathBuf,
    /// Repeat until every settled audit key is exported.
    #[arg(long, env = "GIM_EXPORT_CATCH_UP")]
    pub catch_up: bool,
    /// First export of a new chain starts at this date (YYYY-MM-DD, UTC): on an empty output, or
    /// with --restart.
    #[arg(long, env = "GIM_EXPORT_START_DATE")]
    pub start_date: Option<String>,
    /// Start a new chain although --output holds exports: from --start-date, or from the beginning
    /// of the data. The present folders move to superseded-<time>/ in the output; the loader applies
    /// the new chain over what it loaded (see README, "Restarts and resyncs"). A one-off action: no
    /// environment variable or config key.
    #[arg(long, conflicts_with_all = ["reexport_last", "full_resync", "every"])]
    pub restart: bool,
    /// Re-export the last SPAN of data (2d, 12h, ...) back from the newest export, then go on: a
    /// partial resync for a target that fell out of sync. The folders it replaces move to
    /// superseded-<time>/; a loader applies the new ones even though it loaded the old.
    #[arg(long, value_name = "SPAN", alias = "resync-last",
          conflicts_with_all = ["start_date", "full_resync", "every"])]
    pub reexport_last: Option<String>,
    /// Export every row of every selected table in one folder. A loader merges it and then removes
    /// the target rows of those tables that the source no longer has.
    #[arg(long, conflicts_with_all = ["start_date", "every"])]
    pub full_resync: bool,
    /// Read each table through its export view (--export-views-prefix + table name, in
    /// --export-views-schema) instead of the table: the views fix the columns exported, whatever the
    /// Info Mart schema version. Tables without a view are not exported.
    #[arg(long, env = "GIM_EXPORT_USE_EXPORT_VIEWS")]
    pub use_export_views: bool,
    /// Name prefix of the export views.
    #[arg(
        long,
        env = "GIM_EXPORT_EXPORT_VIEWS_PREFIX",
        default_value = "exp_",
        value_name = "PREFIX"
    )]
    pub export_views_prefix: String,
    /// Schema that holds the export views (PostgreSQL; default: the current schema).
    #[arg(long, env = "GIM_EXPORT_EXPORT_VIEWS_SCHEMA", value_name = "SCHEMA")]
    pub export_views_schema: Option<String>,
    /// Character set of the CSVs: any WHATWG label (utf-8, windows-1252, iso-8859-15, utf-16le, ...).
    #[arg(
        long,
        env = "GIM_EXPORT_ENCODING",
        default_value = "utf-8",
        value_name = "LABEL"
    )]
    pub encoding: String,
    /// A character the --encoding cannot represent: `error` stops the export naming table, primary
    /// key and column; `replace` writes '?' and reports how many.
    #[arg(long, env = "GIM_EXPORT_ON_UNMAPPABLE", value_enum, default_value_t = OnUnmappable::Error)]
    pub on_unmappable: OnUnmappable,
    /// Longest span of data in one export: seconds, or 15m, 12h, 1d.
    #[arg(long, env = "GIM_EXPORT_CHUNK_SIZE", default_value = "1d")]
    pub chunk_size: String,
    /// Tables exported at the same time (default: the number of CPUs, at least 2).
    #[arg(long, env = "GIM_EXPORT_THREADS")]
    pub threads: Option<usize>,
    /// Deflate level for the zip: 1 (fastest) to 9 (smallest). The default 3 is within ~7% of level
    /// 6's size at almost twice its speed.
    #[arg(long, env = "GIM_EXPORT_COMPRESSION_LEVEL", default_value_t = 3,
          value_parser = clap::value_parser!(i64).range(1..=9))]
    pub compression_level: i64,
    /// Plan the next export(s) and count their rows per table; write nothing.
    #[arg(long, short = 'n', env = "GIM_EXPORT_DRY_RUN")]
    pub dry_run: bool,
    /// Only tables matching these patterns (`*`, `?`; comma-separated or repeated).
    #[arg(
        long,
        env = "GIM_EXPORT_INCLUDE",
        value_delimiter = ',',
        value_name = "PATTERN"
    )]
    pub include: Vec<String>,
    /// Leave out tables matching these patterns.
    #[arg(
        long,
        env = "GIM_EXPORT_EXCLUDE",
        value_delimiter = ',',
        value_name = "PATTERN"
    )]
    pub exclude: Vec<String>,
    /// Continue the chain although --include/--exclude differ from the newest folder's (recorded
    /// in its extracted.xml). Without it such a run is refused: a table left out would silently
    /// stop receiving changes. A table added holds only rows changed from then on; export
    /// --full-resync brings its older rows. A one-off: no environment variable or config key.
    #[arg(long)]
    pub allow_table_change: bool,
    /// When the chain cannot be continued (the state file or the newest folder unreadable, the
    /// chain lost from the output directory, pending audit keys gone from CTL_AUDIT_LOG), start a
    /// full resync instead of failing: what stands in the way moves to broken-<time>/, the reason
    /// is written in the new folder (<restart reason=...>), the run record and `status`. Off by
    /// default: a broken chain otherwise stops the export for a person to look at.
    #[arg(long, env = "GIM_EXPORT_RESYNC_ON_BROKEN_CHAIN")]
    pub resync_on_broken_chain: bool,
    /// Remove complete export folders published more than this many days ago (0 keeps them all).
    /// The newest folder is always kept.
    #[arg(long, env = "GIM_EXPORT_KEEP_DAYS", default_value_t = 14)]
    pub keep_days: u32,
    /// Command run after each publish (sh -c), with the folder's path as $1 and in
    /// GIM_EXPORT_FOLDER, and no other GIM_EXPORT_* variable; what it prints goes to the log. A
    /// failure does not undo the export: the run exits 8, retention keeps the folder, and the next
    /// run with --on-publish runs the hook for it again.
    #[arg(long, env = "GIM_EXPORT_ON_PUBLISH", value_name = "CMD")]
    pub on_publish: Option<String>,
    /// Write a Prometheus textfile here after each run (rows per table, duration, bytes, last success,
    /// lag).
    #[arg(long, env = "GIM_EXPORT_METRICS_FILE", value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Keep running: catch up, then export again every SPAN (15m, 1h, ...) as new keys settle. SIGTERM
    /// or Ctrl-C lets the export in progress finish, then exits 0 (a second one abandons it). Without
    /// --every a stop exits 143 (SIGTERM) or 130 (SIGINT) once the folder in progress is finished.
    #[arg(long, env = "GIM_EXPORT_EVERY", value_name = "SPAN")]
    pub every: Option<String>,
    /// Tries again after a transient database failure (connection lost, timeout, deadlock).
    #[arg(long, env = "GIM_EXPORT_MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,
    /// The first wait before trying again (doubling each time, at most 10 minutes).
    #[arg(
        long,
        env = "GIM_EXPORT_RETRY_DELAY",
        default_value = "30s",
        value_name = "SPAN"
    )]
    pub retry_delay: String,
    /// Exit code when there is nothing new to export: 3 (default) tells a script that no folder was
    /// written; 0 suits schedulers that count every other code as a failed job (a Kubernetes Job).
    #[arg(long, env = "GIM_EXPORT_IDLE_EXIT_CODE", default_value_t = 3, value_name = "CODE",
          value_parser = clap::builder::TypedValueParser::map(
              clap::builder::PossibleValuesParser::new(["0", "3"]),
              |s: String| s.parse::<u8>().expect("0 or 3")))]
    pub idle_exit_code: u8,
    /// Print one JSON object on stdout instead of text: outcome, exit code, each folder with its
    /// rows per table, totals, seconds (and, on failure, the error).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub seal: super::SealArgs,
    /// Deliver every published folder here too (repeatable, or comma-separated): a directory (local
    /// or mounted), sftp://user@host[:port]/path (key authentication) or s3://bucket/prefix (any
    /// S3-compatible store). Folders go in chain order and a receiver never sees one half written. A
    /// destination that is down is tried again (--deliver-retries), then caught up by the next run
    /// from the delivery record in the output directory; retention keeps what it has not received,
    /// and the run exits 8.
    #[arg(
        long,
        env = "GIM_EXPORT_DELIVER_TO",
        value_delimiter = ',',
        value_name = "DEST"
    )]
    pub deliver_to: Vec<String>,
    /// Folder names not delivered anywhere (patterns with * and ?, e.g. 'export_*_repair_*').
    #[arg(
        long,
        env = "GIM_EXPORT_DELIVER_EXCLUDE",
        value_delimiter = ',',
        value_name = "PATTERN"
    )]
    pub deliver_exclude: Vec<String>,
    /// Tries after a failed delivery of one folder, within a run, before the destination is left
    /// for the next run.
    #[arg(long, env = "GIM_EXPORT_DELIVER_RETRIES", default_value_t = 3)]
    pub deliver_retries: u32,
    /// The first wait before trying a delivery again (doubling, at most a minute).
    #[arg(
        long,
        env = "GIM_EXPORT_DELIVER_RETRY_DELAY",
        default_value = "5s",
        value_name = "SPAN"
    )]
    pub deliver_retry_delay: String,
    /// Private key for sftp:// destinations (default: ~/.ssh/id_ed25519, then ~/.ssh/id_rsa).
    #[arg(long, env = "GIM_EXPORT_SSH_KEY", value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts for sftp:// destinations (default ~/.ssh/known_hosts): the server's host key must
    /// be in it.
    #[arg(long, env = "GIM_EXPORT_SSH_KNOWN_HOSTS", value_name = "FILE")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// Endpoint of an S3-compatible store for s3:// destinations (default: AWS_ENDPOINT_URL, else
    /// AWS). Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "GIM_EXPORT_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Region for s3:// destinations (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "GIM_EXPORT_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Value written as gim-schema-version in extracted.xml.
    #[arg(long, env = "GIM_EXPORT_GIM_SCHEMA_VERSION", default_value = "8.5.116")]
    pub gim_schema_version: String,
}

impl Args {
    pub fn config(&self) -> Result<ExportConfig, ConfigError> {
        let threads = match self.threads {
            Some(0) => return Err(ConfigError("--threads must be at least 1".into())),
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(2),
        };
        Ok(ExportConfig {
            source: parse_url("--source", &self.source)?,
            output: self.output.clone(),
            chunk_seconds: parse_seconds("--chunk-size", &self.chunk_size)?,
            start_ts: self
                .start_date
                .as_deref()
                .map(|d| parse_date("--start-date", d))
                .transpose()?,
            catch_up: self.catch_up,
            threads,
            compression_level: self.compression_level,
            gim_schema_version: self.gim_schema_version.clone(),
            dry_run: self.dry_run,
            tables: TableFilter {
                include: self.include.clone(),
                exclude: self.exclude.clone(),
            },
            keep_days: self.keep_days,
            on_publish: self.on_publish.clone(),
            metrics_file: self.metrics_file.clone(),
            max_retries: self.max_retries,
            retry_delay_seconds: parse_seconds("--retry-delay", &self.retry_delay)? as u64,
            mode: if self.restart {
                ChainMode::Restart
            } else if self.full_resync {
                ChainMode::FullResync
            } else if let Some(span) = &self.reexport_last {
                ChainMode::Reexport {
                    seconds: parse_span("--reexport-last", span)?,
                }
            } else {
                ChainMode::Continue
            },
            views: self.use_export_views.then(|| ExportViews {
                prefix: self.export_views_prefix.clone(),
                schema: self.export_views_schema.clone(),
            }),
            allow_table_change: self.allow_table_change,
            sealing: self.seal.sealing()?,
            deliveries: std::sync::Arc::new(
                crate::deliver::Deliveries::new(
                    &self.deliver_to,
                    &self.deliver_exclude,
                    crate::deliver::Options {
                        ssh_key: self.ssh_key.clone(),
                        known_hosts: self.ssh_known_hosts.clone(),
                        s3_endpoint: self.s3_endpoint.clone(),
                        s3_region: self.s3_region.clone(),
                        retries: self.deliver_retries,
                        retry_delay: std::time::Duration::from_secs(
                            parse_seconds("--deliver-retry-delay", &self.deliver_retry_delay)?
                                as u64,
                        ),
                    },
                )
                .map_err(|e| ConfigError(format!("{e:#}")))?,
            ),
            resync_on_broken_chain: self.resync_on_broken_chain,
            encoding: OutputEncoding::from_label(&self.encoding, self.on_unmappable).ok_or_else(
                || {
                    ConfigError(format!(
                        "--encoding {:?}: not a character set this tool can write (WHATWG labels: utf-8, windows-1252, iso-8859-15, utf-16le, ...)",
                        self.encoding
                    ))
                },
            )?,
        })
    }
}

pub async fn run(args: Args) -> Result<ExitCode> {
    if args.json {
        crate::logging::want_json_summary();
    }
    let mut config = args.config()?;
    if let Some(every) = &args.every {
        let every = parse_seconds("--every", every)?;
        if config.dry_run {
            return Err(ConfigError("--every cannot be combined with --dry-run".into()).into());
        }
        config.catch_up = true;
        return follow(&config, every).await;
    }
    let idle = if args.idle_exit_code == 0 {
        ExitCode::Success
    } else {
        ExitCode::NothingToDo
    };
    let started = std::time::Instant::now();
    let report = export::run(&config).await?;
    if config.dry_run {
        return Ok(print_plan(&report));
    }
    if args.json {
        let code = print_json(&report, started.elapsed().as_secs_f64(), idle);
        return Ok(code);
    }
    let rows: u64 = report
        .published
        .iter()
        .flat_map(|p| p.meta.tables.iter())
        .map(|t| t.rows)
        .sum();
    for p in &report.published {
        let r: u64 = p.meta.tables.iter().map(|t| t.rows).sum();
        crate::out!(
            "published {} tables={} rows={}",
            p.folder.display(),
            p.meta.tables.len(),
            r
        );
    }
    match report.published.last() {
        Some(last) => {
            crate::out!(
                "exported {} folder(s), {} rows; chain at audit key {}, max-data-ts {}",
                report.published.len(),
                rows,
                last.meta.hwm_to.audit_key,
                export::iso(last.meta.max_data_ts)
            );
        }
        None => {
            crate::out!(
                "nothing to export: no newly settled audit keys{}",
                if report.waiting > 0 {
                    format!(
                        " ({} late key(s) will go with the next export)",
                        report.waiting
                    )
                } else {
                    String::new()
                }
            );
            if let (n @ 1.., Some(start)) = (report.before_start, report.chain_start_ts) {
                crate::out!(
                    "note: {n} settled audit key(s) hold data from before this chain's start date ({}): this chain never exports them; to include them, start a new chain with export --restart --start-date (an earlier date)",
                    export::iso(start)
                );
            }
        }
    }
    match report.outcome() {
        "stopped" => crate::out!(
            "{}",
            crate::signals::stopped(
                "the export stopped after the folder in progress; run again to go on"
            )
        ),
        "hook-failed" => crate::out!(
            "--on-publish failed for {} folder(s); they stay published, retention keeps them, and the next run runs the hook for them again",
            report.hook_failures.len()
        ),
        "delivery-failed" => crate::out!(
            "delivery failed: {}; the folders stay published and owed, retention keeps them, and the next run delivers them in chain order",
            report.delivery_failures.join("; ")
        ),
        _ => {}
    }
    Ok(exit_code(&report, idle))
}

/// The exit code of a run that returned a report.
fn exit_code(report: &ExportReport, idle: ExitCode) -> ExitCode {
    match report.outcome() {
        "stopped" => crate::signals::stopped("").exit_code(),
        "hook-failed" | "delivery-failed" => ExitCode::HookFailed,
        "nothing-to-do" => idle,
        _ => ExitCode::Success,
    }
}

/// `--json`: the run as one JSON object on stdout.
fn print_json(report: &ExportReport, seconds: f64, idle: ExitCode) -> ExitCode {
    let (code, outcome) = (exit_code(report, idle), report.outcome());
    let folders: Vec<serde_json::Value> = report
        .published
        .iter()
        .map(|p| {
            let rows: std::collections::BTreeMap<&str, u64> = p
                .meta
                .tables
                .iter()
                .map(|t| (t.name.as_str(), t.rows))
                .collect();
            serde_json::json!({
                "folder": p.meta.name().folder(),
                "path": p.folder.display().to_string(),
                "hwm_audit_key": p.meta.hwm_to.audit_key,
                "max_data_ts": p.meta.max_data_ts,
                "rows": rows,
                "rows_total": p.meta.tables.iter().map(|t| t.rows).sum::<u64>(),
                "csv_bytes": p.meta.tables.iter().map(|t| t.bytes).sum::<u64>(),
            })
        })
        .collect();
    crate::logging::print_json_summary(&serde_json::json!({
        "command": "export",
        "outcome": outcome,
        "exit_code": code as i32,
        "folders": folders,
        "rows": report.published.iter().flat_map(|p| p.meta.tables.iter()).map(|t| t.rows).sum::<u64>(),
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "late_keys_waiting": report.waiting,
        "keys_before_start": report.before_start,
        "hook_failures": report.hook_failures,
        "pruned": report.pruned,
        "lag_seconds": report.lag_seconds,
        "keys_behind": report.keys_behind,
    }));
    code
}

/// `--dry-run`: one block per export that would be written.
fn print_plan(report: &ExportReport) -> ExitCode {
    for p in &report.planned {
        let total: i64 = p.rows.values().sum();
        crate::out!(
            "would publish {} (audit keys {}, pending {}) rows={total}",
            p.name.folder(),
            p.window.keys,
            p.window.pending
        );
        for (table, rows) in p.rows.iter().filter(|(_, r)| **r > 0) {
            crate::out!("  {table:<28} {rows:>10}");
        }
    }
    if report.planned.is_empty() {
        crate::out!("dry run: nothing to export");
        ExitCode::NothingToDo
    } else {
        crate::out!(
            "dry run: {} export(s) planned, nothing written",
            report.planned.len()
        );
        ExitCode::Success
    }
}

/// `--every`: export until current, wait, again; SIGTERM or Ctrl-C ends it after the export in
/// progress, with exit code 0. Failures are logged and retried at the next tick, except those that
/// no tick can fix (configuration).
async fn follow(config: &ExportConfig, every: i64) -> Result<ExitCode> {
    tracing::info!(every_seconds = every, "follow mode");
    while !export::stop_requested() {
        match export::run(config).await {
            Ok(report) => {
                for p in &report.published {
                    let r: u64 = p.meta.tables.iter().map(|t| t.rows).sum();
                    crate::out!(
                        "published {} tables={} rows={r}",
                        p.folder.display(),
                        p.meta.tables.len()
                    );
                }
            }
            Err(e) if ExitCode::of(&e) == ExitCode::Config => return Err(e),
            Err(e) if export::stop_requested() => tracing::warn!("{e:#}"),
            Err(e) => tracing::error!("export failed: {e:#}; trying again in {every} s"),
        }
        export::sleep_unless_stopped(std::time::Duration::from_secs(every as u64)).await;
    }
    tracing::info!("stopped");
    Ok(ExitCode::Success)
}
