//! What a scheduled job and its on-call admin need around an export: which tables, how long folders
//! are kept, a command run after publishing, a Prometheus textfile, and the record of the last run that
//! `status` reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::format::{ExportMetadata, ExportName};
use crate::outdir::{list_exports, OutputError};
use crate::package;

/// Where the last run's result is recorded, inside the output directory.
pub const LAST_RUN_FILE: &str = ".gim-export.last-run.json";

/// `--include` / `--exclude`: glob patterns (`*`, `?`) over lower-case table names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl TableFilter {
    pub fn allows(&self, table: &str) -> bool {
        let t = table.to_ascii_lowercase();
        (self.include.is_empty() || self.include.iter().any(|p| glob_match(p, &t)))
            && !self.exclude.iter().any(|p| glob_match(p, &t))
    }
}

/// `*` matches any run of characters, `?` one character; case-insensitive.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A folder is complete when its name, its three files and its metadata are all there and agree.
fn is_complete_folder(dir: &Path, name: &ExportName) -> bool {
    let xml = dir.join(name.xml_file());
    ((dir.join(name.zip_file()).is_file() && dir.join(name.zip_sha1_file()).is_file())
        || (dir.join(name.p7m_file()).is_file() && dir.join(name.p7m_sha1_file()).is_file()))
        && fs::read_to_string(&xml)
            .ok()
            .and_then(|t| ExportMetadata::from_xml(&t, "").ok())
            .is_some_and(|m| m.name() == *name)
}

/// Removes complete export folders published more than `keep_days` days before `now` (by the folder's
/// modification time). The newest folder is always kept, and so is every folder in `keep` (those
/// whose `--on-publish` has not succeeded: they may never have reached the receiver); anything that is
/// not a complete export folder is never touched. Returns the names removed.
pub fn prune(
    dir: &Path,
    keep_days: u32,
    now: SystemTime,
    keep: &HooksOwed,
) -> Result<Vec<String>, OutputError> {
    let mut removed = Vec::new();
    if keep_days == 0 {
        return Ok(removed);
    }
    let cutoff = now - Duration::from_secs(u64::from(keep_days) * 86_400);
    // Repair folders (`compare --repair`) are a receiver's, not the chain's: never removed here.
    let mut folders: Vec<_> = list_exports(dir)?
        .into_iter()
        .filter(|(n, _)| n.repair == 0)
        .collect();
    folders.pop(); // the newest stays: it carries the chain
    for (name, path) in folders {
        let modified = fs::metadata(&path).and_then(|m| m.modified());
        if keep.contains_key(&name.folder()) {
            continue;
        }
        if matches!(modified, Ok(t) if t < cutoff) && is_complete_folder(&path, &name) {
            fs::remove_dir_all(&path).map_err(|source| OutputError::Io {
                path: path.clone(),
                error: source,
            })?;
            removed.push(name.folder());
        }
    }
    Ok(removed)
}

/// Folders whose `--on-publish` has not succeeded yet, inside the output directory: retention keeps
/// them, and the next run with `--on-publish` runs the hook for them again, in chain order.
pub const HOOK_OWED_FILE: &str = ".gim-export.on-publish-owed.json";

/// Folder name -> the last failure of its hook.
pub type HooksOwed = BTreeMap<String, String>;

pub fn read_hooks_owed(dir: &Path) -> HooksOwed {
    fs::read_to_string(dir.join(HOOK_OWED_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Records the folders still owed a successful hook (removes the record when none is).
pub fn write_hooks_owed(dir: &Path, owed: &HooksOwed) -> Result<(), OutputError> {
    let path = dir.join(HOOK_OWED_FILE);
    let written = if owed.is_empty() {
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    } else {
        serde_json::to_string_pretty(owed)
            .map_err(std::io::Error::other)
            .and_then(|text| package::replace_file(&path, text.as_bytes()))
    };
    written.map_err(|error| OutputError::Io { path, error })
}

/// Runs `--on-publish`: `sh -c CMD` with the folder's path as `$1` and in `GIM_EXPORT_FOLDER`.
/// The hook sees none of gim-export's settings (no other `GIM_EXPORT_*` variable: the source URL may
/// hold a password); what it prints goes to the log (stderr), never to our stdout, which is for
/// results. Returns an error text when it fails; the export stands either way.
pub fn run_hook(command: &str, folder: &Path) -> Result<(), String> {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .arg("gim-export-on-publish")
        .arg(folder)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GIM_EXPORT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("GIM_EXPORT_FOLDER", folder);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("--on-publish could not start: {e}"))?;
    let span = tracing::Span::current();
    let relay = |pipe: Box<dyn std::io::Read + Send>, stream: &'static str| {
        let span = span.clone();
        std::thread::spawn(move || {
            let _entered = span.enter();
            let mut last = Vec::new();
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                tracing::info!(stream, "on-publish: {line}");
                last.push(line);
                if last.len() > 3 {
                    last.remove(0);
                }
            }
            last
        })
    };
    let out = relay(Box::new(child.stdout.take().expect("piped")), "stdout");
    let err = relay(Box::new(child.stderr.take().expect("piped")), "stderr");
    let status = child
        .wait()
        .map_err(|e| format!("--on-publish could not be waited for: {e}"))?;
    let _ = out.join();
    let said = err.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "--on-publish `{command}` failed ({status}) for {}{}",
            folder.display(),
            if said.is_empty() {
                String::new()
            } else {
                format!(": {}", said.join(" / "))
            }
        ))
    }
}

/// The result of the last run, as `status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    /// `success`, `nothing-to-do`, `hook-failed` (published, but `--on-publish` failed), `stopped`
    /// (SIGTERM or SIGINT) or `failed`.
    pub result: String,
    pub started_at: i64,
    pub finished_at: i64,
    #[serde(default)]
    pub duration_seconds: f64,
    pub folders: usize,
    pub rows: u64,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Unix time of the last run that succeeded (carried over from earlier records).
    #[serde(default)]
    pub last_success_at: Option<i64>,
}

impl LastRun {
    /// Succeeded or had nothing to do.
    pub fn succeeded(&self) -> bool {
        matches!(self.result.as_str(), "success" | "nothing-to-do")
    }
}

pub fn read_last_run(dir: &Path) -> Option<LastRun> {
    let text = fs::read_to_string(dir.join(LAST_RUN_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn write_last_run(dir: &Path, run: &LastRun) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(run).map_err(std::io::Error::other)?;
    package::replace_file(&dir.join(LAST_RUN_FILE), text.as_bytes())
}

/// What goes into the Prometheus textfile.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub run: LastRun,
    pub rows_per_table: BTreeMap<String, u64>,
    /// Folders whose `--on-publish` has not succeeded yet.
    pub on_publish_failures: usize,
    pub hwm_audit_key: Option<i64>,
    pub max_data_ts: Option<i64>,
    pub lag_seconds: Option<i64>,
    /// `--deliver-to`: where each destination stands.
    pub deliveries: Vec<crate::deliver::DestinationState>,
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition format, for node_exporter's textfile collector.
pub fn metrics_text(m: &Metrics) -> String {
    let mut s = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(s, "# HELP gim_export_{name} {help}");
        let _ = writeln!(s, "# TYPE gim_export_{name} gauge");
        for (labels, v) in samples {
            let _ = writeln!(s, "gim_export_{name}{labels} {v}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    gauge(
        "last_run_success",
        "1 if the last run succeeded or had nothing to do, 0 if it failed, was stopped or its --on-publish failed.",
        &one(if m.run.succeeded() { 1.0 } else { 0.0 }),
    );
    gauge(
        "on_publish_failures",
        "Published folders whose --on-publish has not succeeded yet (retention keeps them; the next run retries).",
        &one(m.on_publish_failures as f64),
    );
    gauge(
        "last_run_duration_seconds",
        "Wall time of the last run.",
        &one(m.run.duration_seconds),
    );
    gauge(
        "last_run_folders",
        "Export folders published by the last run.",
        &one(m.run.folders as f64),
    );
    gauge(
        "last_run_bytes",
        "CSV bytes exported by the last run.",
        &one(m.run.bytes as f64),
    );
    let rows: Vec<(String, f64)> = m
        .rows_per_table
        .iter()
        .map(|(t, r)| (format!("{{table=\"{t}\"}}"), *r as f64))
        .collect();
    gauge(
        "last_run_rows",
        "Rows exported by the last run, per table.",
        &rows,
    );
    if let Some(t) = m.run.last_success_at {
        gauge(
            "last_success_timestamp_seconds",
            "Unix time of the last successful run.",
            &one(t as f64),
        );
    }
    if let Some(k) = m.hwm_audit_key {
        gauge(
            "hwm_audit_key",
            "hwm-to audit key of the newest export.",
            &one(k as f64),
        );
    }
    if let Some(t) = m.max_data_ts {
        gauge(
            "max_data_timestamp_seconds",
            "max-data-ts of the newest export.",
            &one(t as f64),
        );
    }
    if let Some(l) = m.lag_seconds {
        gauge(
            "lag_seconds",
            "Data time of the newest settled source key minus max-data-ts.",
            &one(l as f64),
        );
    }
    if !m.deliveries.is_empty() {
        let per =
            |f: &dyn Fn(&crate::deliver::DestinationState) -> Option<f64>| -> Vec<(String, f64)> {
                m.deliveries
                    .iter()
                    .filter_map(|d| {
                        f(d).map(|v| {
                            (
                                format!("{{destination=\"{}\"}}", label_value(&d.destination)),
                                v,
                            )
                        })
                    })
                    .collect()
            };
        gauge(
            "delivery_owed_folders",
            "Published folders a --deliver-to destination has not received (retention keeps them).",
            &per(&|d| Some(d.owed as f64)),
        );
        gauge(
            "delivery_lag_seconds",
            "max-data-ts of the newest folder minus that of the newest folder the destination holds in chain order.",
            &per(&|d| Some(d.lag_seconds as f64)),
        );
        gauge(
            "delivery_failing",
            "1 while the destination's last delivery failed.",
            &per(&|d| Some(if d.error.is_some() { 1.0 } else { 0.0 })),
        );
        gauge(
            "delivery_last_success_timestamp_seconds",
            "Unix time of the destination's last delivered folder.",
            &per(&|d| d.last_at.map(|t| t as f64)),
        );
    }
    s
}

/// The loader's metrics (Prometheus text format): `outcome` is the folders the run applied, or its
/// error; `position` where the target stands, when it could be read.
pub fn load_metrics_text(
    outcome: &Result<usize, String>,
    position: Option<&crate::load::TargetPosition>,
) -> String {
    let mut s = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(s, "# HELP gim_export_load_{name} {help}");
        let _ = writeln!(s, "# TYPE gim_export_load_{name} gauge");
        let _ = writeln!(s, "gim_export_load_{name} {value}");
    };
    gauge(
        "last_run_success",
        "1 if the last load (or look, with --every) applied what it found or found nothing, 0 if it failed.",
        if outcome.is_ok() { 1.0 } else { 0.0 },
    );
    gauge(
        "last_run_applied_folders",
        "Folders the last load applied.",
        *outcome.as_ref().unwrap_or(&0) as f64,
    );
    gauge(
        "last_run_timestamp_seconds",
        "When the last load ended (UTC epoch seconds).",
        chrono::Utc::now().timestamp() as f64,
    );
    if let Some(p) = position {
        gauge(
            "applied_folders",
            "Folders in the target's ledger.",
            p.applied as f64,
        );
        gauge(
            "waiting_folders",
            "Folders in --input after the last applied one and not applied yet.",
            p.waiting.len() as f64,
        );
        if let Some(last) = &p.last {
            gauge(
                "last_applied_audit_key",
                "hwm-to of the last folder applied to the target.",
                last.hwm_to.audit_key as f64,
            );
            gauge(
                "last_applied_max_data_ts_seconds",
                "max-data-ts of the last folder applied (UTC epoch seconds).",
                last.max_data_ts as f64,
            );
        }
    }
    s
}

pub fn write_metrics(path: &Path, m: &Metrics) -> std::io::Result<()> {
    package::replace_file(path, metrics_text(m).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("irf_*", "irf_user_data_cust_1"));
        assert!(glob_match("*_fact", "interaction_fact"));
        assert!(glob_match("user_data_cust_dim_?", "user_data_cust_dim_1"));
        assert!(!glob_match("user_data_cust_dim_?", "user_data_cust_dim_12"));
        assert!(glob_match("*", "x"));
        assert!(!glob_match("a*b", "acd"));
        let f = TableFilter {
            include: vec!["*_fact".into(), "tenant".into()],
            exclude: vec!["sm_*".into()],
        };
        assert!(f.allows("INTERACTION_FACT"));
        assert!(f.allows("tenant"));
        assert!(!f.allows("sm_res_state_fact"));
        assert!(!f.allows("resource_"));
        assert!(TableFilter::default().allows("anything"));
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let m = Metrics {
            run: LastRun {
                result: "success".into(),
                started_at: 10,
                finished_at: 13,
                duration_seconds: 3.0,
                folders: 2,
                rows: 5,
                bytes: 100,
                last_success_at: Some(13),
                ..Default::default()
            },
            rows_per_table: [("interaction_fact".to_string(), 5)].into(),
            on_publish_failures: 2,
            hwm_audit_key: Some(95),
            max_data_ts: Some(1_704_153_579),
            lag_seconds: Some(60),
            deliveries: vec![crate::deliver::DestinationState {
                destination: "s3://bucket/\"odd\"".into(),
                last_folder: None,
                last_at: None,
                owed: 3,
                lag_seconds: 7200,
                error: Some("down".into()),
            }],
        };
        let text = metrics_text(&m);
        assert!(
            text.contains(
                "gim_export_delivery_owed_folders{destination=\"s3://bucket/\\\"odd\\\"\"} 3\n"
            ),
            "{text}"
        );
        assert!(text
            .contains("gim_export_delivery_failing{destination=\"s3://bucket/\\\"odd\\\"\"} 1\n"));
        assert!(!text.contains("delivery_last_success_timestamp_seconds{"));
        assert!(text.contains("gim_export_last_run_rows{table=\"interaction_fact\"} 5\n"));
        assert!(text.contains("gim_export_last_run_duration_seconds 3\n"));
        assert!(text.contains("# TYPE gim_export_lag_seconds gauge\n"));
        assert!(text.contains("gim_export_last_success_timestamp_seconds 13\n"));
        assert!(text.contains("gim_export_on_publish_failures 2\n"));
        assert!(text.contains("gim_export_last_run_success 1\n"));
    }
}
