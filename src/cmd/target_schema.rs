//! `gim-export target-schema`: print or apply the target schema script for a dialect.

use anyhow::Result;

use super::{parse_url, ConfigError};
use crate::db::Dialect;
use crate::exit::ExitCode;
use crate::load::Target;
use crate::target;

/// Print the target schema script (update_target_gim_db) for a dialect, or apply it to a database.
///
/// The script is idempotent: on an empty database it creates every table the exporter can export plus
/// the loader's ledger; on an older target it adds missing tables and columns and never drops anything.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// sqlite or postgresql (with --target, taken from the URL when omitted).
    #[arg(long)]
    pub dialect: Option<String>,
    /// Apply the script to this target database instead of printing it (`--apply` is the old name).
    #[arg(long, value_name = "URL", alias = "apply")]
    pub target: Option<String>,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let dialect: Option<Dialect> = args
        .dialect
        .as_deref()
        .map(|d| {
            d.parse()
                .map_err(|e: String| ConfigError(format!("--dialect: {e}")))
        })
        .transpose()?;
    match args.target {
        None => {
            let dialect = dialect
                .ok_or_else(|| ConfigError("--dialect is required to print the script".into()))?;
            crate::out!("{}", target::script(dialect).trim_end_matches('\n'));
        }
        Some(url) => {
            let url = parse_url("--target", &url)?;
            if dialect.is_some_and(|d| d != url.dialect()) {
                return Err(ConfigError(format!(
                    "--dialect does not match the --target URL {url}"
                ))
                .into());
            }
            let target = Target::connect(&url).await?;
            let changes = target.ensure_schema().await?;
            for c in &changes {
                crate::out!("{c}");
            }
            crate::out!(
                "target schema of {url} is up to date ({} change(s))",
                changes.len()
            );
            target.close().await;
        }
    }
    Ok(ExitCode::Success)
}
