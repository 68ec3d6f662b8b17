//! `gim-export status`: is an export running, where the chain stands, how far behind the source it
//! is, and how the last run ended.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use super::parse_url;
use crate::db::Source;
use crate::exit::ExitCode;
use crate::export::iso;
use crate::ops;
use crate::outdir::{OutputDir, LOCK_FILE};

/// Show `In progress` or `Ready to start`, the newest export, how far behind the source the chain is,
/// and the last run's result.
///
/// The state comes from the output directory's lock; the position from the newest folder; the lag from
/// the source's CTL_AUDIT_LOG (settled audit keys not yet exported, and the data time between the
/// newest settled key and max-data-ts). An unreachable source is reported, not fatal.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory that holds the export folders.
    #[arg(long, short, env = "GIM_EXPORT_OUTPUT", default_value = "output")]
    pub output: PathBuf,
    /// Source Info Mart, to measure the lag (sqlite://FILE, postgres://USER@HOST/DB or mysql://USER@HOST/DB (MariaDB too)). Without
    /// it the lag is not measured (status never guesses a source).
    #[arg(long, env = "GIM_EXPORT_SOURCE")]
    pub source: Option<String>,
    /// Target database of a loader, to show its ledger position and how many folders of --output
    /// (the loader's --input) it has not applied yet. Read only: no lock taken, no file created.
    #[arg(long, env = "GIM_EXPORT_TARGET")]
    pub target: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    if !args.output.exists() {
        // A typo in --output, or no export has run here: either way, not "Ready to start".
        let msg = format!(
            "the output directory {} does not exist: no export has run there (check --output / GIM_EXPORT_OUTPUT)",
            args.output.display()
        );
        if args.json {
            crate::out!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "state": "No output directory",
                    "output": args.output.display().to_string(),
                    "error": msg,
                }))?
            );
        } else {
            crate::out!("state:        No output directory");
            crate::out!("output:       {msg}");
        }
        return Ok(ExitCode::Config);
    }
    let out = OutputDir::new(&args.output)?;
    let in_progress = out.is_locked();
    let holder = std::fs::read_to_string(args.output.join(LOCK_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|_| in_progress);
    let last_run = ops::read_last_run(&args.output);
    // A directory the next run cannot go on from: say so, why, and what to run.
    let mut blocked: Option<String> = None;
    let latest = match out.latest() {
        Ok(l) => l,
        Err(e) => {
            blocked = Some(format!(
                "the chain's state cannot be read: {e}. Move the damaged file or folder aside (or restore it) and run export again; export --restart starts a new chain"
            ));
            None
        }
    };
    let intent = match out.restart_intent() {
        Ok(i) => i,
        Err(e) => {
            blocked.get_or_insert(format!(
                "the record of a restart under way cannot be read: {e}. Remove it to give the restart up, then run export again"
            ));
            None
        }
    };
    let restart_note = intent.as_ref().map(|i| {
        format!(
            "a {} (chain generation {}) is under way; the next export run finishes it (folders replaced go to {})",
            i.kind, i.generation, i.superseded_dir
        )
    });
    if let (Some(i), Some(r)) = (&intent, &last_run) {
        if r.result == "failed" {
            blocked.get_or_insert(format!(
                "the last run could not finish a {} recorded in {}: {}. Fix that cause and run export again: it finishes the {} first",
                i.kind,
                crate::outdir::RESTART_FILE,
                r.error.as_deref().unwrap_or("(no error recorded)"),
                i.kind
            ));
        }
    }

    // The lag, when the source answers. Keys whose data lies before the chain's start date are not
    // behind: this chain never exports them.
    let url = args
        .source
        .as_deref()
        .map(|s| parse_url("--source", s))
        .transpose()?;
    let source_origin = match &args.source {
        None => "not given",
        Some(v) if std::env::var("GIM_EXPORT_SOURCE").is_ok_and(|e| &e == v) => {
            crate::config::source_of("GIM_EXPORT_SOURCE")
        }
        Some(_) => "--source",
    };
    let (mut behind_keys, mut behind_seconds, mut source_error) = (None, None, None);
    let mut before_start = 0usize;
    let chain_start = latest.as_ref().and_then(|m| m.start_ts);
    match &url {
        None => {
            source_error = Some(
                "no --source given (or GIM_EXPORT_SOURCE): the lag is not measured".to_string(),
            )
        }
        Some(url) => match Source::connect(url, 1).await {
            Ok(source) => {
                let after = latest.as_ref().map(|m| m.hwm_to.audit_key).unwrap_or(0);
                let pending: Vec<i64> = latest
                    .as_ref()
                    .and_then(|m| m.pending_audit_keys.clone())
                    .map(|p| p.iter().collect())
                    .unwrap_or_default();
                match source.read_audit_log(after, &pending).await {
                    Ok(log) => {
                        let (settled, early): (Vec<&crate::audit::AuditEntry>, Vec<_>) =
                            log.iter().filter(|e| e.is_settled()).partition(|e| {
                                !matches!((chain_start, e.max_chunk_ts), (Some(s), Some(t)) if t < s)
                            });
                        before_start = early.len();
                        behind_keys = Some(settled.len());
                        let newest = settled.iter().filter_map(|e| e.max_chunk_ts).max();
                        let from = latest.as_ref().map(|m| m.max_data_ts);
                        behind_seconds = match (newest, from) {
                            (Some(n), Some(f)) => Some((n - f).max(0)),
                            _ => None,
                        };
                    }
                    Err(e) => source_error = Some(e.to_string()),
                }
                source.close().await;
            }
            Err(e) => source_error = Some(e.to_string()),
        },
    }

    // The receiving side: where the target's ledger stands against the folders here.
    let target_url = args
        .target
        .as_deref()
        .map(|t| parse_url("--target", t))
        .transpose()?;
    let target = match &target_url {
        Some(u) => Some(
            crate::load::position(&args.output, u)
                .await
                .map_err(|e| format!("{e:#}")),
        ),
        None => None,
    };
    let target_json = target.as_ref().map(|t| match t {
        Ok(p) => json!({
            "url": target_url.as_ref().map(|u| u.to_string()),
            "applied_folders": p.applied,
            "last_applied": p.last.as_ref().map(|l| l.folder.clone()),
            "last_applied_audit_key": p.last.as_ref().map(|l| l.hwm_to.audit_key),
            "last_applied_max_data_ts": p.last.as_ref().map(|l| l.max_data_ts),
            "waiting_folders": p.waiting,
        }),
        Err(e) => json!({
            "url": target_url.as_ref().map(|u| u.to_string()),
            "error": e,
        }),
    });

    let deliveries = crate::deliver::states(&args.output, None);
    let state = if in_progress {
        "In progress"
    } else if blocked.is_some() {
        "Blocked"
    } else {
        "Ready to start"
    };
    if args.json {
        let v = json!({
            "state": state,
            "lock_holder": holder,
            "output": args.output.display().to_string(),
            "last_folder": latest.as_ref().map(|m| m.name().folder()),
            "hwm_audit_key": latest.as_ref().map(|m| m.hwm_to.audit_key),
            "hwm_created_ts": latest.as_ref().map(|m| m.hwm_to.created_ts),
            "max_data_ts": latest.as_ref().map(|m| m.max_data_ts),
            "pending_audit_keys": latest.as_ref().and_then(|m| m.pending_audit_keys.as_ref()).map(|p| p.to_string()),
            "behind_audit_keys": behind_keys,
            "behind_seconds": behind_seconds,
            "source": url.as_ref().map(|u| u.to_string()),
            "source_from": source_origin,
            "source_error": source_error,
            "chain_start_ts": chain_start,
            "before_start_audit_keys": before_start,
            "last_run": last_run,
            "blocked": blocked,
            "restart_under_way": restart_note,
            "resync_reason": latest.as_ref().and_then(|m| m.restart.as_ref()).and_then(|r| r.reason.clone()),
            "target": target_json,
            "deliveries": deliveries,
        });
        crate::out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::Success);
    }
    crate::out!(
        "state:        {state}{}",
        holder.map(|h| format!(" ({h})")).unwrap_or_default()
    );
    crate::out!("output:       {}", args.output.display());
    if let Some(b) = &blocked {
        crate::out!("blocked:      {b}");
    }
    if let Some(r) = &restart_note {
        crate::out!("restart:      {r}");
    }
    match &url {
        Some(u) => crate::out!("source:       {u} (from {source_origin})"),
        None => crate::out!("source:       not given"),
    }
    match &latest {
        Some(m) => {
            crate::out!("last folder:  {}", m.name().folder());
            crate::out!(
                "hwm:          audit key {} (created {})",
                m.hwm_to.audit_key,
                iso(m.hwm_to.created_ts)
            );
            crate::out!("max-data-ts:  {}", iso(m.max_data_ts));
            if let Some(p) = m.pending_audit_keys.as_ref().filter(|p| !p.is_empty()) {
                crate::out!("pending keys: {p}");
            }
            if let Some(why) = m.restart.as_ref().and_then(|r| r.reason.as_ref()) {
                crate::out!(
                    "resync:       this chain began with a full resync the exporter started by itself: {why}"
                );
            }
        }
        None => crate::out!("last folder:  none yet (no export in this directory)"),
    }
    match (&source_error, behind_keys) {
        (Some(e), _) => crate::out!("behind:       unknown: {e}"),
        (None, Some(k)) => crate::out!(
            "behind:       {k} settled audit key(s){}",
            behind_seconds
                .map(|s| format!(", {s} s of data"))
                .unwrap_or_default()
        ),
        _ => {}
    }
    if let (n @ 1.., Some(start)) = (before_start, chain_start) {
        crate::out!(
            "before start: {n} settled audit key(s) hold data from before the chain's start date ({}): this chain never exports them (export --restart --start-date EARLIER to include them)",
            iso(start)
        );
    }
    match (&target_url, &target) {
        (Some(u), Some(Ok(p))) => {
            crate::out!("target:       {u}");
            match &p.last {
                Some(l) => crate::out!(
                    "applied:      {} folder(s), the last {} (audit key {}, max-data-ts {})",
                    p.applied,
                    l.folder,
                    l.hwm_to.audit_key,
                    iso(l.max_data_ts)
                ),
                None => crate::out!("applied:      nothing yet"),
            }
            match p.waiting.last() {
                Some(newest) => crate::out!(
                    "waiting:      {} folder(s) here not applied yet, the newest {newest}",
                    p.waiting.len()
                ),
                None => crate::out!("waiting:      none: the target holds every folder here"),
            }
        }
        (Some(u), Some(Err(e))) => crate::out!("target:       {u}: unknown: {e}"),
        _ => {}
    }
    for d in &deliveries {
        crate::out!(
            "delivery:     {}: {}{}{}",
            d.destination,
            match (&d.last_folder, d.last_at) {
                (Some(f), Some(t)) => format!("last {f} at {}", iso(t)),
                _ => "nothing delivered yet".to_string(),
            },
            if d.owed > 0 {
                format!(
                    "; owed {} folder(s), {} s of data behind",
                    d.owed, d.lag_seconds
                )
            } else {
                "; up to date".to_string()
            },
            d.error
                .as_ref()
                .map(|e| format!("; last failure: {e}"))
                .unwrap_or_default()
        );
    }
    match last_run {
        Some(r) => crate::out!(
            "last run:     {} at {}: {} folder(s), {} rows{}{}",
            r.result,
            iso(r.finished_at),
            r.folders,
            r.rows,
            r.error.map(|e| format!("; error: {e}")).unwrap_or_default(),
            if r.warnings.is_empty() {
                String::new()
            } else {
                format!("; warnings: {}", r.warnings.join("; "))
            }
        ),
        None => crate::out!("last run:     none recorded"),
    }
    Ok(ExitCode::Success)
}
