//! The configuration file (`--config FILE` or `GIM_EXPORT_CONFIG`): TOML with flat keys named after
//! the flags (`source`, `chunk-size`, `keep-days`, ...).
//!
//! Precedence is flags, then `GIM_EXPORT_*` environment variables, then the file, then defaults. The
//! file is applied before the command line is parsed, by setting each of its keys as the matching
//! environment variable where the real environment has not: clap then resolves and validates every
//! setting the same way, whatever its origin. An unknown key is an error naming the key and the file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::CommandFactory;

use crate::cmd::{Cli, ConfigError};

/// Environment variables set from the file: name -> (file, key).
static FROM_FILE: OnceLock<BTreeMap<String, (PathBuf, String)>> = OnceLock::new();

/// The environment variable of a key: `chunk-size` -> `GIM_EXPORT_CHUNK_SIZE`.
pub fn env_name(key: &str) -> String {
    format!("GIM_EXPORT_{}", key.to_ascii_uppercase().replace('-', "_"))
}

/// Every `GIM_EXPORT_*` variable the command line knows, with the long flag it belongs to.
pub fn known_settings() -> BTreeMap<String, String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeMap<String, String>) {
        for arg in cmd.get_arguments() {
            if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
                out.insert(env.to_string_lossy().into_owned(), long.to_string());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(&Cli::command(), &mut out);
    out
}

/// The `--config` path in `args`, else `GIM_EXPORT_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("GIM_EXPORT_CONFIG").map(PathBuf::from)
}

/// Reads the configuration file, if any, into the environment (where not already set). Call once, at
/// the start of `main`, before any thread exists.
pub fn apply_file(args: &[OsString]) -> Result<Option<PathBuf>, ConfigError> {
    let Some(path) = config_path(args) else {
        let _ = FROM_FILE.set(BTreeMap::new());
        return Ok(None);
    };
    let settings = read_file(&path)?;
    let mut applied = BTreeMap::new();
    for (env, (key, value)) in settings {
        if std::env::var_os(&env).is_none() {
            std::env::set_var(&env, &value);
            applied.insert(env, (path.clone(), key));
        }
    }
    let _ = FROM_FILE.set(applied);
    Ok(Some(path))
}

/// The file's settings: environment variable -> (key, value as text). Validates keys and shapes.
pub fn read_file(path: &Path) -> Result<BTreeMap<String, (String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| ConfigError(format!("{}: not valid TOML: {e}", path.display())))?;
    let known = known_settings();
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let env = env_name(&key);
        if !known.contains_key(&env) || key == "config" {
            let mut names: Vec<String> =
                known.values().filter(|l| *l != "config").cloned().collect();
            names.sort();
            names.dedup();
            return Err(ConfigError(format!(
                "{}: unknown key {key:?} (known: {})",
                path.display(),
                names.join(", ")
            )));
        }
        let text = match &value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(ConfigError(format!(
                        "{}: key {key:?}: expected a list of strings, found a {}",
                        path.display(),
                        other.type_str()
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => {
                return Err(ConfigError(format!(
                    "{}: key {key:?}: expected a string, number, boolean or list, found {}",
                    path.display(),
                    other.type_str()
                )))
            }
        };
        out.insert(env, (key, text));
    }
    Ok(out)
}

/// ` (from key "chunk-size" in /etc/gim-export.toml)` when `flag`'s value came from the file.
pub fn origin_note(flag: &str) -> String {
    let env = env_name(flag.trim_start_matches('-'));
    FROM_FILE
        .get()
        .and_then(|m| m.get(&env))
        .map(|(file, key)| format!(" (from key {key:?} in {})", file.display()))
        .unwrap_or_default()
}

/// For a command-line error that names flags: where each named flag's value came from, when the
/// command line did not give it (`GIM_EXPORT_KEEP_DAYS="abc" in the environment`, or the file's key).
pub fn origin_of_error(message: &str, args: &[OsString]) -> Vec<String> {
    let given = |long: &str| {
        args.iter().any(|a| {
            let a = a.to_string_lossy();
            a == format!("--{long}") || a.starts_with(&format!("--{long}="))
        })
    };
    let mut notes = Vec::new();
    for (env, long) in known_settings() {
        let named = message.contains(&format!("'--{long} "))
            || message.contains(&format!("'--{long}'"))
            || message.contains(&format!("--{long} <"));
        if !named || given(&long) {
            continue;
        }
        let Ok(value) = std::env::var(&env) else {
            continue;
        };
        let value = if value.contains("://") {
            crate::db::redact(&value)
        } else {
            value
        };
        match FROM_FILE.get().and_then(|m| m.get(&env)) {
            Some((file, key)) => notes.push(format!(
                "--{long} was not given: the value {value:?} comes from key {key:?} in {}",
                file.display()
            )),
            None => notes.push(format!(
                "--{long} was not given: the value comes from the environment, {env}={value:?}"
            )),
        }
    }
    notes
}

/// `key (file)` for every setting taken from the configuration file.
pub fn settings_from_file() -> Vec<String> {
    FROM_FILE
        .get()
        .map(|m| {
            m.values()
                .map(|(file, key)| format!("{key} ({})", file.display()))
                .collect()
        })
        .unwrap_or_default()
}

/// Where a setting's value comes from, for `gim-export config`.
pub fn source_of(env: &str) -> &'static str {
    if FROM_FILE.get().is_some_and(|m| m.contains_key(env)) {
        "file"
    } else if std::env::var_os(env).is_some() {
        "environment"
    } else {
        "default"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_environment_variables() {
        assert_eq!(env_name("chunk-size"), "GIM_EXPORT_CHUNK_SIZE");
        let known = known_settings();
        assert_eq!(
            known.get("GIM_EXPORT_SOURCE").map(String::as_str),
            Some("source")
        );
        assert_eq!(
            known.get("GIM_EXPORT_KEEP_DAYS").map(String::as_str),
            Some("keep-days")
        );
    }

    #[test]
    fn files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "source = \"sqlite://x.db\"\nkeep-days = 3\ninclude = [\"*_fact\", \"tenant\"]\ncatch-up = true\n").unwrap();
        let s = read_file(&p).unwrap();
        assert_eq!(s["GIM_EXPORT_KEEP_DAYS"].1, "3");
        assert_eq!(s["GIM_EXPORT_INCLUDE"].1, "*_fact,tenant");
        assert_eq!(s["GIM_EXPORT_CATCH_UP"].1, "true");
        std::fs::write(&p, "sourse = \"x\"\n").unwrap();
        let e = read_file(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("\"sourse\""), "{e}");
        std::fs::write(&p, "source = [1]\n").unwrap();
        assert!(read_file(&p)
            .unwrap_err()
            .to_string()
            .contains("list of strings"));
        std::fs::write(&p, "source = \n").unwrap();
        assert!(read_file(&p)
            .unwrap_err()
            .to_string()
            .contains("not valid TOML"));
    }
}
