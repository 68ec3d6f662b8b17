//! Logs go to stderr: readable on a terminal, JSON lines with `--log-format json`. Stdout is for results.

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Installs the subscriber. `GIM_EXPORT_LOG` (an env-filter, e.g. `debug`) overrides `default_level`.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_env("GIM_EXPORT_LOG")
        // sqlx reports slow statements as warnings; ours are timed in our own log lines.
        .unwrap_or_else(|_| EnvFilter::new(format!("gim_export={default_level},sqlx=error,warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
    tracing::info_span!("gim-export")
}
