//! Logs go to stderr: readable on a terminal, JSON lines with `--log-format json`. Stdout is for results.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

static PROGRESS: AtomicBool = AtomicBool::new(false);
/// `--json` on a command: 0 off, 1 wanted, 2 printed.
static SUMMARY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The command prints one JSON object on stdout (`--json`) instead of text lines.
pub fn want_json_summary() {
    SUMMARY.store(1, Ordering::Relaxed);
}

pub fn json_summary() -> bool {
    SUMMARY.load(Ordering::Relaxed) != 0
}

/// A failed write of results to stdout: a closed pipe ends the program quietly (exit 141); any other
/// failure is reported on stderr (exit 7).
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("gim-export: error: writing results to stdout: {e}");
    std::process::exit(crate::exit::ExitCode::Io as i32);
}

/// Prints the command's JSON summary on stdout, once.
pub fn print_json_summary(value: &serde_json::Value) {
    if SUMMARY.swap(2, Ordering::Relaxed) != 2 {
        crate::out!("{value}");
    }
}
static JSON: AtomicBool = AtomicBool::new(false);

/// Logs are JSON lines (`--log-format json`): a failure is then reported as one of them.
pub fn json_enabled() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Reports the error that ends a run, once: a JSON log line with `--log-format json` (so a log
/// pipeline sees it, and nothing unparsable lands between its lines), else `gim-export: error: ...`.
/// With `--json`, stdout also gets the outcome (unless the command printed its summary already).
pub fn report_failure(err: &anyhow::Error, exit_code: i32) {
    if json_enabled() {
        let _span = root_span().entered();
        tracing::error!(error = %format!("{err:#}"), exit_code, "failed");
    } else {
        eprintln!("gim-export: error: {err:#}");
    }
    if json_summary() {
        print_json_summary(&serde_json::json!({
            "outcome": "failed",
            "exit_code": exit_code,
            "error": format!("{err:#}"),
        }));
    }
}

/// A usage error found before logging starts (clap's), as one JSON line when JSON logs were asked
/// for by flag or environment.
pub fn report_usage_error(message: &str, exit_code: i32, args: &[std::ffi::OsString]) -> bool {
    let json = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json")
        || std::env::var("GIM_EXPORT_LOG_FORMAT").is_ok_and(|v| v == "json");
    if json {
        eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": chrono::Utc::now().to_rfc3339(),
                "level": "ERROR",
                "message": "failed",
                "error": message.trim_end(),
                "exit_code": exit_code,
                "span": {"name": "gim-export"},
            })
        );
    }
    json
}
static BARS: OnceLock<indicatif::MultiProgress> = OnceLock::new();

/// The progress bars of this process (drawn only when [`progress_enabled`]).
pub fn bars() -> &'static indicatif::MultiProgress {
    BARS.get_or_init(indicatif::MultiProgress::new)
}

/// A bar style from `template`, where `{rate}` is rows per second, rounded (`1234 rows/s`).
pub fn bar_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .expect("a valid template")
        .with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} rows/s", s.per_sec());
            },
        )
}

/// Progress bars are drawn on a terminal with human logs, unless `--quiet` or `GIM_EXPORT_PROGRESS=0`.
pub fn progress_enabled() -> bool {
    PROGRESS.load(Ordering::Relaxed)
}

/// Stderr for log lines that lifts the progress bars out of the way while a line is written.
struct BarAwareStderr;

impl Write for BarAwareStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if progress_enabled() {
            bars().suspend(|| std::io::stderr().write_all(buf))?;
        } else {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// `--color`: whether human-format log lines carry ANSI colour codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour: `auto` only on a terminal, and never when `NO_COLOR` is set (non-empty).
    pub fn wanted(self, stderr_is_terminal: bool, no_color: Option<&str>) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => stderr_is_terminal && no_color.is_none_or(str::is_empty),
        }
    }
}

/// Installs the subscriber. `GIM_EXPORT_LOG` (an env-filter, e.g. `debug`) overrides `default_level`.
pub fn init(format: LogFormat, default_level: &str, color: ColorChoice) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    let wanted = std::env::var("GIM_EXPORT_PROGRESS").map_or(true, |v| v != "0" && v != "false");
    PROGRESS.store(
        wanted
            && format == LogFormat::Human
            && matches!(default_level, "info" | "debug")
            && std::io::stderr().is_terminal(),
        Ordering::Relaxed,
    );
    let filter = EnvFilter::try_from_env("GIM_EXPORT_LOG")
        // sqlx reports slow statements as warnings; ours are timed in our own log lines.
        .unwrap_or_else(|_| EnvFilter::new(format!("gim_export={default_level},sqlx=error,warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| BarAwareStderr)
        .with_ansi(color.wanted(
            std::io::stderr().is_terminal(),
            std::env::var("NO_COLOR").ok().as_deref(),
        ))
        .with_target(false);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// The span every log line of a run is inside: a fixed `gim-export` prefix on a terminal, a
/// `"span":{"name":"gim-export"}` field in JSON, for log pipelines to pick the lines out.
pub fn root_span() -> tracing::Span {
    // At error level: a span is filtered like an event, and this one must stay on every line
    // whatever GIM_EXPORT_LOG lets through.
    tracing::error_span!("gim-export")
}
