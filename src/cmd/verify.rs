//! `gim-export verify`: check export folders as a receiver would.

use std::path::PathBuf;

use anyhow::Result;

use crate::exit::ExitCode;
use crate::verify::{self, VerifyFailed};

/// Check export folders: checksums, metadata, the hwm chain, the span of each export.
///
/// --input is one export_XXX folder or a directory of them. Every problem is printed with the folder
/// it was found in; the exit code is 5 if there is any.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An export folder, a directory of export folders, or s3://bucket/prefix (folders complete
    /// when their .zip.sha1 object is there; copied into --download-dir first).
    #[arg(long, short, env = "GIM_EXPORT_INPUT", default_value = "output")]
    pub input: PathBuf,
    /// Print one JSON object on stdout instead of text: outcome, exit code, each folder with its
    /// problems and rows per table, and the totals.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub open: super::OpenArgs,
    #[command(flatten)]
    pub remote: super::RemoteArgs,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    args.open.install()?;
    let remote = args.remote.input(&args.input)?;
    remote.fetch().await?;
    let input = remote.dir.clone();
    if args.json {
        crate::logging::want_json_summary();
    }
    let checks = tokio::task::spawn_blocking(move || verify::check_input(&input)).await??;
    if args.json {
        let mut totals: std::collections::BTreeMap<&str, u64> = Default::default();
        for c in checks.iter().filter(|c| c.is_ok()) {
            for (table, rows) in &c.rows {
                *totals.entry(table.as_str()).or_default() += rows;
            }
        }
        let failed = checks.iter().filter(|c| !c.is_ok()).count();
        let problems: usize = checks.iter().map(|c| c.problems.len()).sum();
        let ok = failed == 0 && !checks.is_empty();
        let code = if ok {
            ExitCode::Success
        } else {
            ExitCode::VerifyFailed
        };
        let folders: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "folder": c.folder,
                    "ok": c.is_ok(),
                    "problems": c.problems,
                    "rows": c.rows,
                })
            })
            .collect();
        crate::logging::print_json_summary(&serde_json::json!({
            "command": "verify",
            "outcome": if ok { "ok" } else { "failed" },
            "exit_code": code as i32,
            "input": args.input.display().to_string(),
            "folders": folders,
            "rows_per_table": totals,
            "note": checks.is_empty().then_some("no export folders found"),
        }));
        if !ok {
            return Err(VerifyFailed {
                problems: problems.max(1),
                folders: failed.max(1),
            }
            .into());
        }
        return Ok(code);
    }
    let mut problems = 0;
    for c in &checks {
        if c.is_ok() {
            let rows: u64 = c.rows.values().sum();
            crate::out!("OK    {}  tables={} rows={rows}", c.folder, c.rows.len());
        } else {
            for p in &c.problems {
                crate::out!("FAIL  {}  {p}", c.folder);
            }
            problems += c.problems.len();
        }
    }
    if checks.is_empty() {
        crate::out!("FAIL  {}  no export folders found", args.input.display());
        problems += 1;
    }
    if problems > 0 {
        return Err(VerifyFailed {
            problems,
            folders: checks.iter().filter(|c| !c.is_ok()).count().max(1),
        }
        .into());
    }
    let mut totals: std::collections::BTreeMap<&str, u64> = Default::default();
    for c in &checks {
        for (table, rows) in &c.rows {
            *totals.entry(table.as_str()).or_default() += rows;
        }
    }
    crate::out!("rows per table across these folders:");
    for (table, rows) in &totals {
        crate::out!("  {table:<28} {rows:>10}");
    }
    crate::out!("verified {} folder(s): all checks passed", checks.len());
    Ok(ExitCode::Success)
}
