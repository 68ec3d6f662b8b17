//! `gim-export compare`: are the source's settled rows and the target's rows the same?

use anyhow::Result;

use super::parse_url;
use crate::exit::ExitCode;

/// Compare the rows a target should hold with the source's, table by table.
///
/// In scope: the rows whose newest audit key is at or below the hwm-to of the target's last
/// applied export (its ledger), and settled in the source; rows changed later are left out on both
/// sides. Both sides are read in primary-key order as an export would write them (NULL and empty
/// text count as equal) and merged as two streams: memory stays flat at any size. Prints, per table,
/// the rows on each side and in sync or not, then the differing keys: missing in the target, extra
/// in the target, or with other values (and which columns). Exit 0 in sync, 5 when they differ.
///
/// With `--repair DIR` it also writes a repair folder into DIR (give the receiver's `load --input`):
/// `load` applies it after the target's last export, and the target then holds the source's rows for
/// every differing key, without the extra ones. It is named after that export,
/// `<export>_repair_NNN`, so it sorts after it and before the next export; a target that has moved on
/// skips it (run compare again).
///
/// Examples:
///   gim-export compare --source postgres://gim@infomart/gim --target postgres://dw@warehouse/gim
///   gim-export compare --table interaction_fact --json
///   gim-export compare --repair /data/inbox; gim-export load --input /data/inbox
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source Info Mart: sqlite://FILE, postgres://USER@HOST/DB or mysql://USER@HOST/DB.
    #[arg(
        long,
        env = "GIM_EXPORT_SOURCE",
        default_value = "sqlite://infomart.db"
    )]
    pub source: String,
    /// Target database (a gim-export load target): sqlite://FILE, postgres://... or mysql://...
    #[arg(long, env = "GIM_EXPORT_TARGET", default_value = "sqlite://target.db")]
    pub target: String,
    /// Compare only this table (repeatable, or comma-separated); default: every exportable source
    /// table that the target has.
    #[arg(long, value_name = "TABLE", value_delimiter = ',')]
    pub table: Vec<String>,
    /// How many differing keys to list per table (the counts are always complete).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_differences: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// auto: where both sides are PostgreSQL (or both MariaDB) with the same column types and one
    /// integer key, each database sums segments of its rows and only segments that differ are read;
    /// other tables are read whole. rows: read every row of both sides.
    #[arg(long, value_enum, default_value_t = crate::compare::Method::Auto)]
    pub method: crate::compare::Method,
    /// Write a repair folder into DIR when anything differs: the source's rows for keys missing or
    /// different in the target, and the target's extra keys to delete. Load it with `load --input DIR`.
    #[arg(long, value_name = "DIR")]
    pub repair: Option<std::path::PathBuf>,
    /// With --repair: leave the target's extra rows in place (a warehouse that keeps rows the Info
    /// Mart has purged). They are still reported.
    #[arg(long, requires = "repair")]
    pub repair_keep_extra: bool,
    /// With --repair: refuse (exit 2, nothing written) when a table would lose more than this share
    /// of its target rows, and more than 1,000 rows (a warehouse that keeps purged history looks like
    /// that).
    #[arg(
        long,
        value_name = "PERCENT",
        default_value_t = 10,
        requires = "repair"
    )]
    pub max_repair_removal: u32,
    // With --repair: the repair folder is encrypted and signed as export does its folders.
    #[command(flatten)]
    pub seal: super::SealArgs,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let source = parse_url("--source", &args.source)?;
    let target = parse_url("--target", &args.target)?;
    if target.dialect() == crate::db::Dialect::Sqlite
        && !crate::db::sqlite::options(&target)?.get_filename().exists()
    {
        return Err(super::ConfigError(format!(
            "--target: {target}: no such database file (compare reads a target that load has written)"
        ))
        .into());
    }
    let only: Vec<String> = args
        .table
        .iter()
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let sealing = args.seal.sealing()?;
    let repair = args
        .repair
        .as_ref()
        .map(|dir| crate::repair::RepairOptions {
            dir: dir.clone(),
            keep_extra: args.repair_keep_extra,
            max_removal_percent: args.max_repair_removal,
            sealing: sealing.clone(),
        });
    let options = crate::compare::Options {
        only,
        max_examples: args.max_differences,
        method: args.method,
        repair,
    };
    let report = crate::compare::run(&source, &target, &options).await?;
    let code = if report.in_sync() {
        ExitCode::Success
    } else {
        ExitCode::VerifyFailed
    };
    if args.json {
        crate::out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "command": "compare",
                "in_sync": report.in_sync(),
                "exit_code": code as i32,
                "source": source.to_string(),
                "target": target.to_string(),
                "report": report,
            }))?
        );
    } else {
        crate::out!("{}", crate::compare::text(&report).trim_end());
    }
    Ok(code)
}
