//! `gim-export check`: tell a new user what is wrong before the first run: the source answers and
//! has an audit log it can read, the output directory is writable, the target accepts the loader's
//! writes, the input directory holds folders.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{parse_url, ConfigError};
use crate::db::Source;
use crate::exit::ExitCode;
use crate::load::Target;

/// Check the connections and directories of an export or a load without changing anything that
/// matters: the source is only read; the target gets a probe table created and dropped; the output
/// directory a probe file written and removed.
///
/// Give what you will use: --source and --output for export, --target and --input for load. Each
/// check prints `ok` or `FAIL` with what to do.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source Info Mart to check (sqlite://FILE, postgres://USER@HOST/DB or mysql://USER@HOST/DB (MariaDB too)): reachable, its
    /// CTL_AUDIT_LOG readable, every exportable table readable.
    #[arg(long, env = "GIM_EXPORT_SOURCE")]
    pub source: Option<String>,
    /// Output directory of the exports to check: writable, not locked by a run.
    #[arg(long, short, env = "GIM_EXPORT_OUTPUT")]
    pub output: Option<PathBuf>,
    /// Target database to check: reachable, writable (a probe table is created and dropped), its
    /// loader lock free.
    #[arg(long, env = "GIM_EXPORT_TARGET")]
    pub target: Option<String>,
    /// Input directory of a load to check: it exists and holds export folders.
    #[arg(long, short, env = "GIM_EXPORT_INPUT")]
    pub input: Option<PathBuf>,
}

/// The outcome of the checks: the worst exit code so far.
struct Checks {
    code: ExitCode,
}

impl Checks {
    fn ok(&self, what: &str) {
        crate::out!("ok    {what}");
    }
    fn fail(&mut self, code: ExitCode, what: &str) {
        crate::out!("FAIL  {what}");
        if self.code == ExitCode::Success {
            self.code = code;
        }
    }
}

pub async fn run(args: Args) -> Result<ExitCode> {
    if args.source.is_none()
        && args.output.is_none()
        && args.target.is_none()
        && args.input.is_none()
    {
        return Err(ConfigError(
            "nothing to check: give --source and --output (export), --target and --input (load)"
                .into(),
        )
        .into());
    }
    let mut c = Checks {
        code: ExitCode::Success,
    };
    if let Some(s) = &args.source {
        check_source(&mut c, &parse_url("--source", s)?).await;
    }
    if let Some(dir) = &args.output {
        check_output(&mut c, dir);
    }
    if let Some(t) = &args.target {
        check_target(&mut c, &parse_url("--target", t)?).await;
    }
    if let Some(dir) = &args.input {
        match crate::load::input_folders(dir) {
            Ok(f) if f.is_empty() => c.fail(
                ExitCode::Io,
                &format!("input {}: no export folder in it yet", dir.display()),
            ),
            Ok(f) => c.ok(&format!(
                "input {}: {} export folder(s), the newest {}",
                dir.display(),
                f.len(),
                f.last().map(|(n, _)| n.as_str()).unwrap_or_default()
            )),
            Err(e) => c.fail(ExitCode::Io, &format!("input {}: {e:#}", dir.display())),
        }
    }
    crate::out!(
        "{}",
        if c.code == ExitCode::Success {
            "every check passed"
        } else {
            "some checks failed: see FAIL above"
        }
    );
    Ok(c.code)
}

async fn check_source(c: &mut Checks, url: &crate::db::DbUrl) {
    let source = match Source::connect(url, 1).await {
        Ok(s) => s,
        Err(e) => return c.fail(ExitCode::Database, &format!("source: {e:#}")),
    };
    c.ok(&format!("source {url}: connected"));
    match source.read_audit_log(0, &[]).await {
        Ok(log) => {
            let settled = log.iter().filter(|e| e.is_settled()).count();
            let newest = log
                .iter()
                .filter(|e| e.is_settled())
                .filter_map(|e| e.max_chunk_ts)
                .max();
            c.ok(&format!(
                "source: CTL_AUDIT_LOG readable, {} audit key(s), {settled} settled{}",
                log.len(),
                newest
                    .map(|t| format!(", newest data {}", crate::export::iso(t)))
                    .unwrap_or_default()
            ));
        }
        Err(e) => c.fail(
            ExitCode::Database,
            &format!("source: the audit log cannot be read: {e:#}"),
        ),
    }
    match source.tables().await {
        Ok(tables) => {
            let exportable: Vec<_> = tables.iter().filter(|t| t.is_exportable()).collect();
            let unreadable: Vec<&str> = exportable
                .iter()
                .filter(|t| !t.readable)
                .map(|t| t.name.as_str())
                .collect();
            if exportable.is_empty() {
                c.fail(
                    ExitCode::Database,
                    "source: no table with CREATE_AUDIT_KEY: nothing would be exported",
                );
            } else if !unreadable.is_empty() {
                c.fail(
                    ExitCode::Database,
                    &format!(
                        "source: the role cannot read {} (grant SELECT, or leave them out with --exclude)",
                        unreadable.join(", ")
                    ),
                );
            } else {
                c.ok(&format!(
                    "source: {} exportable table(s), all readable",
                    exportable.len()
                ));
            }
        }
        Err(e) => c.fail(
            ExitCode::Database,
            &format!("source: the catalog cannot be read: {e:#}"),
        ),
    }
    source.close().await;
}

fn check_output(c: &mut Checks, dir: &Path) {
    let out = match crate::outdir::OutputDir::new(dir) {
        Ok(o) => o,
        Err(e) => return c.fail(ExitCode::Config, &format!("output: {e}")),
    };
    // The nearest existing directory must be writable: the export creates the rest.
    let mut existing = dir.to_path_buf();
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p.to_path_buf(),
            _ => {
                existing = PathBuf::from(".");
                break;
            }
        }
    }
    let probe = existing.join(format!(".gim-export-check-{}.tmp", std::process::id()));
    match std::fs::write(&probe, b"probe") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            if out.is_locked() {
                c.ok(&format!(
                    "output {}: writable; a run holds its lock now",
                    dir.display()
                ));
            } else {
                c.ok(&format!(
                    "output {}: writable{}",
                    dir.display(),
                    if dir.exists() {
                        ""
                    } else {
                        " (created by the first export)"
                    }
                ));
            }
        }
        Err(e) => c.fail(
            ExitCode::Io,
            &format!(
                "output {}: cannot write in {}: {e}",
                dir.display(),
                existing.display()
            ),
        ),
    }
}

async fn check_target(c: &mut Checks, url: &crate::db::DbUrl) {
    let mut target = match Target::connect(url).await {
        Ok(t) => t,
        Err(e) => return c.fail(ExitCode::Database, &format!("target: {e:#}")),
    };
    c.ok(&format!("target {url}: connected"));
    match target.lock().await {
        Ok(()) => c.ok("target: the loader lock is free"),
        Err(e) => c.fail(ExitCode::Locked, &format!("target: {e:#}")),
    }
    let probe = format!("gim_export_check_probe_{}", std::process::id());
    let created = target
        .execute(&format!("CREATE TABLE {probe} (x INTEGER)"))
        .await;
    match created {
        Ok(()) => {
            let dropped = target.execute(&format!("DROP TABLE {probe}")).await;
            match dropped {
                Ok(()) => c.ok("target: writable (a probe table was created and dropped)"),
                Err(e) => c.fail(
                    ExitCode::Database,
                    &format!("target: created {probe} but cannot drop it: {e:#}"),
                ),
            }
        }
        Err(e) => c.fail(
            ExitCode::Database,
            &format!(
                "target: cannot create a table (the loader creates and alters its tables): {e:#}"
            ),
        ),
    }
    match target.ledger().await {
        Ok(l) if l.is_empty() => c.ok("target: no folder applied yet"),
        Ok(l) => c.ok(&format!(
            "target: {} folder(s) applied, the last {}",
            l.len(),
            l.last().map(|e| e.folder.as_str()).unwrap_or_default()
        )),
        Err(_) => c.ok("target: no ledger yet (the first load creates the schema)"),
    }
    target.close().await;
}
