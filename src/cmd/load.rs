//! `gim-export load`: merge export folders, in order, into the target database.

use std::path::PathBuf;

use anyhow::Result;

use super::parse_url;
use crate::exit::ExitCode;
use crate::load::{self, LoadConfig, LoadEvent};

/// Merge export folders, in chain order, into the target database by primary key.
///
/// Creates or migrates the target schema first. Folders already in the target's ledger are skipped.
/// Before a folder is applied its checksums, metadata and place in the hwm chain are checked; on any
/// problem the load stops with an error naming the folder, and nothing of it is applied. Each folder is
/// applied in one transaction together with its ledger row. Empty CSV fields load as NULL.
///
/// A restarted chain (export --restart, --reexport-last, --full-resync) is applied over what the
/// target holds once the target reaches the point it restarts from; folders of the chain it replaced
/// are then skipped. A full resync also removes the rows of its tables that the source no longer has.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An export folder, a directory of export folders, or s3://bucket/prefix (folders complete
    /// when their .zip.sha1 object is there; copied into --download-dir first).
    #[arg(long, short, env = "GIM_EXPORT_INPUT", default_value = "output")]
    pub input: PathBuf,
    /// Target database: sqlite://FILE (created if missing), postgres://USER@HOST/DB or
    /// mysql://USER@HOST/DB (MariaDB too; mariadb:// alike).
    #[arg(long, env = "GIM_EXPORT_TARGET", default_value = "sqlite://target.db")]
    pub target: String,
    /// Start an empty target at this folder instead of the first one found (e.g. after retention
    /// removed the oldest folders).
    #[arg(long, value_name = "FOLDER")]
    pub from: Option<String>,
    /// What a folder may change in the target's schema beyond the GIM model. `evolve` (default):
    /// create a table the model does not know (its CSV must have create_audit_key; primary key
    /// from the folder's extracted.xml, else <table>_key, <table>_id, id, else the first column),
    /// add a column the model does not know, typed from the folder's values (integer, bigint,
    /// numeric, else text; text while a column holds no value), and widen such a column when a
    /// later folder needs it (never narrow). `freeze`: refuse such a folder, naming table and
    /// column. Either way, what the GIM model describes is created, and every change runs in the
    /// folder's transaction, is printed, logged and recorded in its ledger row.
    #[arg(
        long,
        value_name = "POLICY",
        env = "GIM_EXPORT_SCHEMA_CHANGES",
        default_value = "evolve"
    )]
    pub schema_changes: crate::load::SchemaPolicy,
    /// Let folders write to this existing target table although it is neither a GIM table nor one
    /// the loader created (repeatable, or comma-separated). Without it such a table is refused: a
    /// folder writes only to tables the loader owns.
    #[arg(
        long,
        value_name = "TABLE",
        env = "GIM_EXPORT_ADOPT_TABLE",
        value_delimiter = ','
    )]
    pub adopt_table: Vec<String>,
    /// A full resync (export --full-resync) removes the target rows its folder does not hold; refuse
    /// one that would remove more than this share of a table's rows (0-100; 100: no limit). Emptying
    /// a table counts as 100%.
    #[arg(long, value_name = "PERCENT", env = "GIM_EXPORT_MAX_RESYNC_REMOVAL", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_resync_removal: u32,
    /// Apply the first folder of a restarted chain (export --restart, --reexport-last,
    /// --full-resync: a new chain generation) over what the target holds. Without it such a folder
    /// stops the load (exit 5) with what it would replace: a generation switch replaces the chain the
    /// target follows, so it is accepted only when asked for (a folder's writer may not be the
    /// sender). A restart that does not fit what the target holds is refused either way.
    #[arg(long, env = "GIM_EXPORT_ACCEPT_RESTART")]
    pub accept_restart: bool,
    /// Refuse a folder with a CSV field longer than this many bytes (memory stays bounded whatever
    /// a folder holds).
    #[arg(long, value_name = "BYTES", env = "GIM_EXPORT_MAX_FIELD_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_field_bytes: u64,
    /// Refuse a folder with a CSV whose size is more than this many times its compressed size (a zip
    /// bomb); real exports compress 5 to 20 times.
    #[arg(
        long,
        value_name = "RATIO",
        env = "GIM_EXPORT_MAX_ZIP_RATIO",
        default_value_t = 200
    )]
    pub max_zip_ratio: u64,
    /// Refuse a CSV of more rows than this when its folder declares no row count (folders of this
    /// exporter declare them, and the count must then match exactly).
    #[arg(
        long,
        value_name = "ROWS",
        env = "GIM_EXPORT_MAX_ROWS",
        default_value_t = 100_000_000
    )]
    pub max_rows: u64,
    /// Print one JSON object on stdout instead of text: outcome, exit code, each applied folder
    /// with its rows per table, schema changes and removals, totals, seconds (and, on failure, the
    /// error).
    #[arg(long)]
    pub json: bool,
    /// Tries again after a transient database failure (connection lost, timeout, deadlock). Each
    /// folder is one transaction: a retry goes on from the first folder not committed.
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
    /// Keep running: apply what --input holds, then look again every SPAN (1m, 15m, ...) and apply
    /// the folders that arrived. A folder still being copied in (its checksums do not hold yet, or
    /// the folder before it has not arrived) is left for a later look, with a warning that names it;
    /// so is a target that is busy or unreachable. SIGTERM or Ctrl-C finishes the folder in
    /// progress and ends with exit code 0.
    #[arg(
        long,
        value_name = "SPAN",
        env = "GIM_EXPORT_LOAD_EVERY",
        conflicts_with = "json"
    )]
    pub every: Option<String>,
    /// Write Prometheus metrics here after each run (or each look, with --every), for the node
    /// exporter's textfile collector: success, folders applied, folders waiting, the last folder.
    #[arg(long, value_name = "FILE", env = "GIM_EXPORT_LOAD_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub open: super::OpenArgs,
    #[command(flatten)]
    pub remote: super::RemoteArgs,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    args.open.install()?;
    if args.json {
        crate::logging::want_json_summary();
    }
    let started = std::time::Instant::now();
    let input = args.remote.input(&args.input)?;
    input.fetch().await?;
    let config = LoadConfig {
        input: input.dir.clone(),
        remote: input.remote.clone(),
        target: parse_url("--target", &args.target)?,
        from_folder: args.from.clone(),
        schema_changes: args.schema_changes,
        adopt_tables: args
            .adopt_table
            .iter()
            .flat_map(|t| t.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect(),
        max_resync_removal: args.max_resync_removal,
        accept_restart: args.accept_restart,
        limits: crate::load::LoadLimits {
            max_field_bytes: args.max_field_bytes,
            max_zip_ratio: args.max_zip_ratio,
            max_rows: args.max_rows,
        },
        max_retries: args.max_retries,
        retry_delay_seconds: super::parse_seconds("--retry-delay", &args.retry_delay)? as u64,
    };
    if let Some(every) = &args.every {
        let every = super::parse_seconds("--every", every)?;
        return follow(&config, every as u64, args.metrics_file.as_deref()).await;
    }
    if load::input_folders(&config.input)?.is_empty() {
        write_metrics(args.metrics_file.as_deref(), &config, Ok(0)).await;
        let note = format!(
            "no export folder in {}: nothing to load (the target is left as it is)",
            config.input.display()
        );
        if args.json {
            crate::logging::print_json_summary(&serde_json::json!({
                "command": "load",
                "outcome": "nothing-to-do",
                "exit_code": ExitCode::NothingToDo as i32,
                "note": note,
                "applied": [],
            }));
        } else {
            crate::out!("{note}");
        }
        return Ok(ExitCode::NothingToDo);
    }
    let report = if args.json {
        load::run(&config, &mut |_| {}).await
    } else {
        load::run(&config, &mut print_event).await
    };
    write_metrics(
        args.metrics_file.as_deref(),
        &config,
        report
            .as_ref()
            .map(|r| r.applied.len())
            .map_err(|e| e.to_string()),
    )
    .await;
    let report = report?;
    let code = if report.applied.is_empty() {
        ExitCode::NothingToDo
    } else {
        ExitCode::Success
    };
    if args.json {
        let applied: Vec<serde_json::Value> = report
            .applied
            .iter()
            .map(|a| {
                serde_json::json!({
                    "folder": a.folder,
                    "rows": a.rows,
                    "rows_total": a.rows.values().sum::<u64>(),
                    "removed": a.removed,
                    "schema_changes": a.schema_changes,
                })
            })
            .collect();
        crate::logging::print_json_summary(&serde_json::json!({
            "command": "load",
            "outcome": if code == ExitCode::Success { "success" } else { "nothing-to-do" },
            "exit_code": code as i32,
            "target": config.target.to_string(),
            "migrations": report.migrations,
            "applied": applied,
            "rows": report.applied.iter().flat_map(|a| a.rows.values()).sum::<u64>(),
            "already_applied": report.already_applied,
            "superseded": report.superseded,
            "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        }));
        return Ok(code);
    }
    if !report.superseded.is_empty() {
        crate::out!(
            "skipped {} folder(s) of a chain that a restart replaced",
            report.superseded.len()
        );
    }
    let rows: u64 = report.applied.iter().flat_map(|a| a.rows.values()).sum();
    crate::out!(
        "loaded {} folder(s), {} rows into {}; {} already applied",
        report.applied.len(),
        rows,
        config.target,
        report.already_applied
    );
    Ok(code)
}

/// `load --every`: apply what has arrived, wait, look again. What a later look can fix (a folder
/// still being copied in, a refused or missing folder, a busy or unreachable target) is logged and
/// left for that look; a configuration error ends it. SIGTERM or Ctrl-C ends it after the folder in
/// progress, with exit code 0.
async fn follow(
    config: &LoadConfig,
    every: u64,
    metrics: Option<&std::path::Path>,
) -> Result<ExitCode> {
    tracing::info!(every_seconds = every, input = %config.input.display(), "follow mode");
    let mut last_warning = String::new();
    while !crate::signals::stop_requested() {
        let result = if load::input_folders(&config.input)?.is_empty() {
            Ok(load::LoadReport::default())
        } else {
            load::run(config, &mut print_event).await
        };
        match &result {
            Ok(_) => last_warning.clear(),
            Err(e) if ExitCode::of(e) == ExitCode::Config => return Err(anyhow::anyhow!("{e:#}")),
            Err(e) if e.downcast_ref::<crate::signals::Stopped>().is_some() => {
                tracing::warn!("{e:#}")
            }
            Err(e) => {
                // Said once while it stays the same: a folder being copied in is not news each look.
                let said = format!("{e:#}");
                if said != last_warning {
                    tracing::warn!("not applied yet, looking again in {every} s: {said}");
                    last_warning = said;
                }
            }
        }
        write_metrics(
            metrics,
            config,
            result
                .as_ref()
                .map(|r| r.applied.len())
                .map_err(|e| format!("{e:#}")),
        )
        .await;
        crate::signals::sleep_unless_stopped(std::time::Duration::from_secs(every)).await;
    }
    tracing::info!("stopped");
    Ok(ExitCode::Success)
}

/// The loader's metrics: whether the run (or look) succeeded, the folders it applied, the folders
/// in --input not yet in the target's ledger, and the newest applied folder.
async fn write_metrics(
    path: Option<&std::path::Path>,
    config: &LoadConfig,
    outcome: std::result::Result<usize, String>,
) {
    let Some(path) = path else {
        return;
    };
    let position = load::position(&config.input, &config.target).await;
    let text = crate::ops::load_metrics_text(&outcome, position.as_ref().ok());
    if let Err(e) = crate::package::replace_file(path, text.as_bytes()) {
        tracing::error!("cannot write the metrics file {}: {e}", path.display());
    }
    if let Err(e) = position {
        tracing::debug!("target position unknown for the metrics: {e:#}");
    }
}

/// Prints each result as it happens, so that what was committed is on stdout even when a later
/// folder fails.
fn print_event(event: LoadEvent<'_>) {
    match event {
        LoadEvent::Migrated(migrations) => {
            // The model's tables on one line (a new target gets them all); each added column on its own.
            let created: Vec<&str> = migrations
                .iter()
                .filter_map(|m| m.strip_prefix("created table "))
                .collect();
            if !created.is_empty() {
                crate::out!(
                    "migrated created {} table(s) of the GIM model: {}",
                    created.len(),
                    created.join(", ")
                );
            }
            for m in migrations
                .iter()
                .filter(|m| !m.starts_with("created table "))
            {
                crate::out!("migrated {m}");
            }
        }
        LoadEvent::Applied(a) => {
            for c in &a.schema_changes {
                crate::out!("schema change in {}: {c}", a.folder);
            }
            let removed: u64 = a.removed.values().sum();
            crate::out!(
                "applied {} tables={} rows={}{}",
                a.folder,
                a.rows.len(),
                a.rows.values().sum::<u64>(),
                if a.removed.is_empty() {
                    String::new()
                } else {
                    let why = if crate::format::ExportName::parse(&a.folder)
                        .is_some_and(|n| n.repair > 0)
                    {
                        "keys the repair deletes"
                    } else {
                        "full resync"
                    };
                    format!(" removed={removed} ({why})")
                }
            );
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
