//! The command line: one module per subcommand, each with its clap `Args` and a `run`.
//!
//! Flags are turned into validated configs here (paths, URLs, dates, durations) before the domain
//! modules see them; the domain never sees clap types.

pub mod check;
pub mod compare;
pub mod export;
pub mod load;
pub mod simulate;
pub mod status;
pub mod target_schema;
pub mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::exit::{ExitCode, EXIT_CODES_HELP};
use crate::logging::{self, LogFormat};

/// A flag or setting that cannot be used, named in the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Incremental export of Genesys Info Mart tables to checksummed zip folders.
///
/// `export` copies the data changed since the last export (at most one day of it per folder) into an
/// `export_XXX` folder; `verify` checks folders as a receiver would; `load` merges them, in order, into
/// a target database; `status` tells whether a run is in progress and how far behind the source the
/// chain is; `target-schema` prints or applies the target schema; `simulate` builds a source Info Mart
/// to practise on. Settings come from flags, then GIM_EXPORT_* environment variables, then --config
/// FILE, then defaults (`gim-export config` shows them).
#[derive(Debug, Parser)]
#[command(name = "gim-export", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_enum,
        default_value = "human",
        env = "GIM_EXPORT_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Colour in human-format logs: `auto` colours only when stderr is a terminal and `NO_COLOR` is
    /// not set; `always` and `never` decide regardless.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_enum,
        default_value = "auto",
        env = "GIM_EXPORT_COLOR"
    )]
    pub color: logging::ColorChoice,
    /// Only warnings and errors on stderr.
    #[arg(long, short, global = true, help_heading = "Global options")]
    pub quiet: bool,
    /// More detail on stderr (debug level).
    #[arg(
        long,
        short,
        global = true,
        help_heading = "Global options",
        conflicts_with = "quiet"
    )]
    pub verbose: bool,
    /// A TOML file of settings (keys named after the flags: source = "...", keep-days = 7). Flags and
    /// GIM_EXPORT_* environment variables take precedence over it.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "GIM_EXPORT_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<std::path::PathBuf>,
    /// A PostgreSQL connection that passes no data for this many seconds while rows stream (COPY
    /// to or from the server) is taken as dead: the run fails with a transient error that
    /// --max-retries retries, instead of hanging. The server also probes idle clients (TCP
    /// keepalive after 30 s, 3 probes 10 s apart), so a loader that vanished releases its lock.
    #[arg(long, global = true,
        help_heading = "Global options", env = "GIM_EXPORT_DB_TIMEOUT", value_name = "SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(after_help = SIMULATE_EXAMPLES)]
    Simulate(simulate::Args),
    #[command(after_help = EXPORT_EXAMPLES)]
    Export(Box<export::Args>),
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(verify::Args),
    #[command(after_help = LOAD_EXAMPLES)]
    Load(load::Args),
    #[command(after_help = STATUS_EXAMPLES)]
    Status(status::Args),
    #[command(after_help = CONFIG_EXAMPLES)]
    Config(ConfigArgs),
    #[command(after_help = TARGET_SCHEMA_EXAMPLES)]
    TargetSchema(target_schema::Args),
    #[command(after_help = CHECK_EXAMPLES)]
    Check(check::Args),
    #[command(after_help = COMPARE_EXAMPLES)]
    Compare(compare::Args),
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
}

const COMPARE_EXAMPLES: &str = "\
Examples:
  gim-export compare --source postgres://reader@infomart/gim --target postgres://loader@warehouse/gim
  gim-export compare --source sqlite://infomart.db --target sqlite://target.db --table interaction_fact --json
Exit codes: 0 in sync, 5 they differ; see gim-export --help.";

const SIMULATE_EXAMPLES: &str = "\
Examples:
  gim-export simulate --days 3                          # ./infomart.db, three days from 2024-01-01
  gim-export simulate --source postgres://postgres@127.0.0.1/sim --days 30 --partitioned
Exit codes: see gim-export --help.";

const EXPORT_EXAMPLES: &str = "\
Examples:
  gim-export export --source postgres://reader@infomart/gim -o /data/exports --catch-up
  gim-export export --catch-up --every 15m --chunk-size 15m     # as a service
  gim-export export --restart --start-date 2024-06-01 --catch-up  # a backfill from a fixed date
  gim-export export --catch-up -n                               # what would be exported, per table
  gim-export export --catch-up --json --idle-exit-code 0        # for a scheduler
Exit codes: 0 done, 3 nothing new, 4 locked, 8 hook failed, 130/143 stopped; see gim-export --help.";

const VERIFY_EXAMPLES: &str = "\
Examples:
  gim-export verify --input /data/inbox
  gim-export verify --input /data/inbox/export_0000000000000000289_2024_01_03_23_10_20 --json
Exit codes: 0 every folder passed, 5 a folder failed; see gim-export --help.";

const LOAD_EXAMPLES: &str = "\
Examples:
  gim-export load --input /data/inbox --target postgres://loader@warehouse/gim
  gim-export load --input /data/inbox --target mysql://loader:secret@warehouse:3306/gim
  gim-export load --input /data/inbox --target sqlite://gim.db --accept-restart
  gim-export load --input /data/inbox --target postgres://loader@warehouse/gim --from export_0000000000000000289_2024_01_03_23_10_20
Exit codes: 0 applied, 3 nothing new, 4 another loader runs, 5 a folder refused, 130/143 stopped; see gim-export --help.";

const STATUS_EXAMPLES: &str = "\
Examples:
  gim-export status -o /data/exports --source postgres://reader@infomart/gim
  gim-export status -o /data/exports --json
Exit codes: 0, or 2 when the output directory does not exist.";

const CONFIG_EXAMPLES: &str = "\
Examples:
  gim-export config > /etc/gim-export.toml    # every setting, a file --config reads back
  gim-export --config /etc/gim-export.toml export --catch-up";

const TARGET_SCHEMA_EXAMPLES: &str = "\
Examples:
  gim-export target-schema --dialect postgresql > update_target_gim_db.sql
  gim-export target-schema --target postgres://loader@warehouse/gim";

const CHECK_EXAMPLES: &str = "\
Examples:
  gim-export check --source postgres://reader@infomart/gim -o /data/exports
  gim-export check --target postgres://loader@warehouse/gim --input /data/inbox
Exit codes: 0 every check passed, 2 nothing to check, 6 a database check failed, 7 a directory check failed.";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  gim-export completions bash > /etc/bash_completion.d/gim-export
  gim-export completions zsh > \"${fpath[1]}/_gim-export\"
  gim-export completions fish > ~/.config/fish/completions/gim-export.fish";

/// Print a shell completion script for gim-export on stdout.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

/// Runs the command line; errors carry their exit code (see [`ExitCode::of`]).
/// What a sender seals folders with: `export`, and `compare --repair`.
#[derive(Debug, Clone, clap::Args)]
pub struct SealArgs {
    /// Encrypt each folder's zip for this receiver's X.509 certificate (PEM; repeatable or
    /// comma-separated: each receiver named can open it): CMS EnvelopedData with AES-256, which stock
    /// `openssl cms -decrypt` opens. The folder then holds export_XXX.zip.p7m and its .sha1 instead of
    /// the zip; extracted.xml names the certificates (SHA-256 fingerprints) and the zip's checksum.
    #[arg(
        long,
        env = "GIM_EXPORT_ENCRYPT_TO",
        value_delimiter = ',',
        value_name = "CERT.pem"
    )]
    pub encrypt_to: Vec<PathBuf>,
    /// Sign each folder with this private key (PEM, unencrypted): detached CMS signatures over the zip
    /// (export_XXX.zip.sig) and over extracted.xml (export_XXX.extracted.xml.sig), which stock
    /// `openssl cms -verify` checks; receivers refuse anything else with `--trust`. Needs --sign-cert.
    #[arg(
        long,
        env = "GIM_EXPORT_SIGN_WITH",
        value_name = "KEY.pem",
        requires = "sign_cert"
    )]
    pub sign_with: Option<PathBuf>,
    /// The certificate of --sign-with's key, included in each signature.
    #[arg(
        long,
        env = "GIM_EXPORT_SIGN_CERT",
        value_name = "CERT.pem",
        requires = "sign_with"
    )]
    pub sign_cert: Option<PathBuf>,
}

impl SealArgs {
    /// Reads the certificates and the key (exit 2 when one cannot be read or they do not match).
    pub fn sealing(&self) -> Result<crate::crypto::Sealing, ConfigError> {
        crate::crypto::Sealing::new(
            &self.encrypt_to,
            self.sign_with.as_deref(),
            self.sign_cert.as_deref(),
        )
        .map_err(|e| ConfigError(format!("{e:#}")))
    }
}

/// What a receiver opens folders with: `verify` and `load`.
#[derive(Debug, Clone, clap::Args)]
pub struct OpenArgs {
    /// The receiver's private key (PEM, unencrypted), for folders encrypted with --encrypt-to: the
    /// .zip.p7m's checksum is checked before decrypting, the zip's after; a folder it cannot open is
    /// refused, naming it. Needs --decrypt-cert.
    #[arg(
        long,
        env = "GIM_EXPORT_DECRYPT_KEY",
        value_name = "KEY.pem",
        requires = "decrypt_cert"
    )]
    pub decrypt_key: Option<PathBuf>,
    /// The certificate of --decrypt-key (the one the sender encrypted to).
    #[arg(
        long,
        env = "GIM_EXPORT_DECRYPT_CERT",
        value_name = "CERT.pem",
        requires = "decrypt_key"
    )]
    pub decrypt_cert: Option<PathBuf>,
    /// Take only folders signed (export --sign-with) by this certificate or one it issued (PEM;
    /// repeatable or comma-separated). An unsigned folder, one signed by anyone else, or one whose zip
    /// or extracted.xml changed after signing is refused, naming it.
    #[arg(
        long,
        env = "GIM_EXPORT_TRUST",
        value_delimiter = ',',
        value_name = "CERT.pem"
    )]
    pub trust: Vec<PathBuf>,
}

/// Where `--input s3://bucket/prefix` is read from and copied to (`verify` and `load`).
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteArgs {
    /// With --input s3://...: the directory complete folders are copied into (kept, so the next run
    /// copies only new ones). Default: a temporary directory removed when the run ends.
    #[arg(long, env = "GIM_EXPORT_DOWNLOAD_DIR", value_name = "DIR")]
    pub download_dir: Option<PathBuf>,
    /// Endpoint of the S3-compatible store for --input s3://... (default: AWS_ENDPOINT_URL, else AWS).
    /// Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "GIM_EXPORT_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Region for --input s3://... (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "GIM_EXPORT_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
}

/// An `--input`: a local directory, or an S3 prefix mirrored into one.
pub struct Input {
    pub dir: PathBuf,
    pub remote: Option<std::sync::Arc<crate::deliver::s3::S3>>,
    /// The temporary download directory, removed when this is dropped.
    temporary: Option<PathBuf>,
}

impl Drop for Input {
    fn drop(&mut self) {
        if let Some(t) = &self.temporary {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

impl RemoteArgs {
    /// The local directory to read `input` from (an S3 prefix's folders are copied there by
    /// [`Input::fetch`]).
    pub fn input(&self, input: &std::path::Path) -> Result<Input, ConfigError> {
        let text = input.to_string_lossy();
        if !text.starts_with("s3://") {
            return Ok(Input {
                dir: input.to_path_buf(),
                remote: None,
                temporary: None,
            });
        }
        let s3 = crate::deliver::s3::S3::open(
            &text,
            &crate::deliver::s3::S3Options {
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
            },
        )
        .map_err(|e| ConfigError(format!("--input {e:#}")))?;
        let (dir, temporary) = match &self.download_dir {
            Some(d) => (d.clone(), None),
            None => {
                // A fresh private directory (0700): never one someone else made and filled.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or_default();
                let d = std::env::temp_dir()
                    .join(format!("gim-export-s3-{}-{nanos:09}", std::process::id()));
                let mut b = std::fs::DirBuilder::new();
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
                b.create(&d).map_err(|e| {
                    ConfigError(format!("--input {text}: creating {}: {e}", d.display()))
                })?;
                (d.clone(), Some(d))
            }
        };
        Ok(Input {
            dir,
            remote: Some(std::sync::Arc::new(s3)),
            temporary,
        })
    }
}

impl Input {
    /// Copies the complete folders of an S3 input that the directory lacks.
    pub async fn fetch(&self) -> anyhow::Result<()> {
        if let Some(r) = &self.remote {
            r.mirror(&self.dir).await?;
        }
        Ok(())
    }
}

impl OpenArgs {
    /// Reads the keys and certificates and sets them for this process's checks (exit 2 when one
    /// cannot be read).
    pub fn install(&self) -> Result<(), ConfigError> {
        crate::crypto::Opening::new(
            self.decrypt_key.as_deref(),
            self.decrypt_cert.as_deref(),
            &self.trust,
        )
        .map_err(|e| ConfigError(format!("{e:#}")))?
        .install();
        Ok(())
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let level = if cli.quiet {
        "warn"
    } else if cli.verbose {
        "debug"
    } else {
        "info"
    };
    logging::init(cli.log_format, level, cli.color);
    crate::db::set_io_timeout(cli.db_timeout);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let span = logging::root_span();
    let work = async move {
        if matches!(cli.command, Command::Export(_) | Command::Load(_)) {
            crate::signals::install();
        }
        match cli.command {
            Command::Simulate(a) => simulate::run(a).await,
            Command::Export(a) => export::run(*a).await,
            Command::Verify(a) => verify::run(a).await,
            Command::Load(a) => load::run(a).await,
            Command::Status(a) => status::run(a).await,
            Command::Config(a) => print_config(a.show_secrets),
            Command::TargetSchema(a) => target_schema::run(a).await,
            Command::Check(a) => check::run(a).await,
            Command::Compare(a) => compare::run(a).await,
            Command::Completions(a) => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(a.shell, &mut cmd, "gim-export", &mut std::io::stdout());
                Ok(ExitCode::Success)
            }
        }
    };
    // Every log line of the run is inside this span (a fixed `gim-export` prefix or JSON field).
    runtime.block_on(tracing::Instrument::instrument(work, span))
}

/// Print the effective configuration: every setting, its value (passwords masked) and where it comes
/// from (file, environment, default).
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Print passwords in database URLs as they are (by default they are masked, and a file
    /// written from the output needs them put back).
    #[arg(long)]
    pub show_secrets: bool,
}

fn print_config(show_secrets: bool) -> anyhow::Result<ExitCode> {
    // Every setting with its default and whether it is an on/off flag.
    let mut defaults: std::collections::BTreeMap<String, (String, bool)> = Default::default();
    fn walk(cmd: &clap::Command, out: &mut std::collections::BTreeMap<String, (String, bool)>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                let d: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                let flag = !arg.get_action().takes_values();
                out.entry(env.to_string_lossy().into_owned())
                    .or_insert_with(|| (d.join(","), flag));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    walk(&<Cli as clap::CommandFactory>::command(), &mut defaults);
    // A TOML file that --config reads back: every key named after its flag, a comment saying where
    // its value comes from; settings with no value are commented out.
    crate::out!("# gim-export settings: flags > GIM_EXPORT_* environment > this file > defaults");
    for (env, flag) in crate::config::known_settings() {
        if flag == "config" {
            continue;
        }
        let (default, is_flag) = defaults.get(&env).cloned().unwrap_or_default();
        let set = std::env::var(&env).ok();
        let origin = crate::config::source_of(&env);
        let line = if is_flag {
            let on = set.as_deref().is_some_and(|v| {
                !matches!(
                    v.to_ascii_lowercase().as_str(),
                    "" | "0" | "false" | "no" | "off" | "n" | "f"
                )
            });
            format!("{flag} = {on}")
        } else {
            match set.or_else(|| Some(default).filter(|d| !d.is_empty())) {
                Some(v) => {
                    let shown = if v.contains("://") && !show_secrets {
                        crate::db::redact(&v)
                    } else {
                        v
                    };
                    format!("{flag} = {}", toml_string(&shown))
                }
                None => format!("# {flag} = (not set)"),
            }
        };
        crate::out!("{line:<60} # {env}, from {origin}");
    }
    Ok(ExitCode::Success)
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads `YYYY-MM-DD` (midnight UTC) or an RFC 3339 time as UTC epoch seconds.
pub fn parse_date(flag: &str, s: &str) -> Result<i64, ConfigError> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    Err(ConfigError(format!(
        "{flag} {s:?}: expected a date YYYY-MM-DD (UTC) or an RFC 3339 time{}",
        crate::config::origin_note(flag)
    )))
}

/// Reads a span: seconds (`86400`) or a number with a unit (`90s`, `15m`, `12h`, `1d`).
/// A span that must carry its unit (`2d`, `12h`, `30m`, `90s`): for flags where a bare number is
/// more likely days meant than seconds (`--reexport-last 2`).
pub fn parse_span(flag: &str, s: &str) -> Result<i64, ConfigError> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError(format!(
            "{flag} {s:?}: give a unit: {t}d for days, {t}h for hours, {t}m or {t}s{}",
            crate::config::origin_note(flag)
        )));
    }
    parse_seconds(flag, s)
}

pub fn parse_seconds(flag: &str, s: &str) -> Result<i64, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "{flag} {s:?}: expected seconds or a span such as 15m, 12h, 1d{}",
            crate::config::origin_note(flag)
        ))
    };
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let v = n.checked_mul(mult).ok_or_else(bad)?;
    if v <= 0 {
        return Err(ConfigError(format!("{flag} {s:?}: must be more than zero")));
    }
    Ok(v)
}

/// Parses a database URL flag.
pub fn parse_url(flag: &str, s: &str) -> Result<crate::db::DbUrl, ConfigError> {
    let url = crate::db::DbUrl::parse(s)
        .map_err(|e| ConfigError(format!("{flag}: {e}{}", crate::config::origin_note(flag))))?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_dates() {
        assert_eq!(parse_seconds("--chunk-size", "86400").unwrap(), 86_400);
        assert_eq!(parse_seconds("--chunk-size", "12h").unwrap(), 43_200);
        assert_eq!(parse_seconds("--chunk-size", "1d").unwrap(), 86_400);
        let e = parse_seconds("--chunk-size", "1w").unwrap_err();
        assert!(e.to_string().contains("--chunk-size"));
        assert!(parse_seconds("--chunk-size", "0").is_err());
    }

    #[test]
    fn reexport_last_without_a_unit_is_refused_not_read_as_seconds() {
        // Regression: `--reexport-last 2` meant two seconds.
        let e = parse_span("--reexport-last", "2").unwrap_err().to_string();
        assert!(e.contains("--reexport-last") && e.contains("2d"), "{e}");
        assert_eq!(parse_span("--reexport-last", "2d").unwrap(), 172_800);
        assert_eq!(parse_span("--reexport-last", "90s").unwrap(), 90);
        assert_eq!(
            parse_date("--start-date", "2024-01-01").unwrap(),
            1_704_067_200
        );
        assert_eq!(
            parse_date("--start-date", "2024-01-01T01:00:00Z").unwrap(),
            1_704_070_800
        );
        assert!(parse_date("--start-date", "01/02/2024").is_err());
    }
}
