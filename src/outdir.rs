//! The output directory: published export folders, the lock that keeps runs apart, staging folders of
//! interrupted runs, and the chain state that the next export starts from.
//!
//! ```text
//! output/
//!   export_..._2024_01_01_23_59_00/   published folders (whole, or absent)
//!   .gim-export.lock                   held (flock) by the running export
//!   .gim-export.state                  copy of the last published extracted.xml
//!   .staging-export_.../               an export being written; removed if a run died
//!   .gim-export.restart.json           a restart under way (until its first export is published)
//!   superseded-<time>/export_.../      folders a restart replaced, moved aside, never deleted
//! ```
//!
//! The newest published folder is the truth. The state file is a copy that lets the chain go on when
//! folders were moved away (by `--on-publish`, retention, or the receiver).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::format::{ExportMetadata, ExportName};
use crate::package;

pub const LOCK_FILE: &str = ".gim-export.lock";
pub const STATE_FILE: &str = ".gim-export.state";
pub const RESTART_FILE: &str = ".gim-export.restart.json";
pub const SUPERSEDED_PREFIX: &str = "superseded-";
const STAGING_PREFIX: &str = ".staging-";

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output path {0} exists and is not a directory")]
    NotADirectory(PathBuf),
    #[error("another gim-export run holds the lock on {0}")]
    Locked(PathBuf),
    /// The OS error is part of the message, not a separate cause, so that it is said once.
    #[error("{path}: {error}", path = path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: {reason}")]
    BadState { path: PathBuf, reason: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

/// An output directory (it may not exist yet).
#[derive(Clone, Debug)]
pub struct OutputDir {
    path: PathBuf,
}

/// Held while a run works on the directory; released on drop.
pub struct OutputLock {
    _file: File,
}

impl OutputDir {
    /// Checks that `path` is a directory or absent; nothing is created.
    pub fn new(path: &Path) -> Result<OutputDir, OutputError> {
        if path.exists() && !path.is_dir() {
            return Err(OutputError::NotADirectory(path.to_path_buf()));
        }
        Ok(OutputDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory if needed and takes the lock, or fails at once if another run holds it.
    pub fn lock(&self) -> Result<OutputLock, OutputError> {
        fs::create_dir_all(&self.path).map_err(io_at(&self.path))?;
        let lock_path = self.path.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(OutputError::Locked(self.path.clone())),
            Err(TryLockError::Error(e)) => return Err(io_at(&lock_path)(e)),
        }
        // Who holds it, for `status` and for the admin who looks.
        let _ = file.set_len(0);
        let _ = writeln!(
            file,
            "pid={} started={}",
            std::process::id(),
            chrono::Utc::now().to_rfc3339()
        );
        Ok(OutputLock { _file: file })
    }

    /// True when another process holds the lock right now.
    pub fn is_locked(&self) -> bool {
        let Ok(file) = File::open(self.path.join(LOCK_FILE)) else {
            return false;
        };
        matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
    }

    /// Removes staging folders left by runs that died. Needs the lock.
    pub fn clean_staging(&self, _lock: &OutputLock) -> Result<Vec<String>, OutputError> {
        let mut removed = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(io_at(&self.path))? {
            let entry = entry.map_err(io_at(&self.path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(STAGING_PREFIX) || (name.starts_with('.') && name.ends_with(".tmp"))
            {
                let p = entry.path();
                if p.is_dir() {
                    fs::remove_dir_all(&p).map_err(io_at(&p))?;
                } else {
                    fs::remove_file(&p).map_err(io_at(&p))?;
                }
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Published export folders, in name (= export) order. A repair folder that `compare --repair`
    /// wrote here is a receiver's business, not part of the exporter's chain: left out.
    pub fn exports(&self) -> Result<Vec<(ExportName, PathBuf)>, OutputError> {
        Ok(list_exports(&self.path)?
            .into_iter()
            .filter(|(n, _)| n.repair == 0)
            .collect())
    }

    /// The metadata of the newest export of the chain: the newest folder, or the state file when
    /// that records a newer one. `None` for a fresh directory.
    pub fn latest(&self) -> Result<Option<ExportMetadata>, OutputError> {
        let newest_folder = self.exports()?.pop();
        let state_path = self.path.join(STATE_FILE);
        let from_state = match fs::read_to_string(&state_path) {
            Ok(text) => Some(
                ExportMetadata::from_xml(&text, &state_path.display().to_string()).map_err(
                    |e| OutputError::BadState {
                        path: state_path.clone(),
                        reason: e.to_string(),
                    },
                )?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_at(&state_path)(e)),
        };
        let from_folder = newest_folder
            .map(|(name, dir)| read_meta(&dir, &name))
            .transpose()?;
        // A later chain (a restart) wins over an earlier one, whatever the names say.
        Ok(match (from_folder, from_state) {
            (Some(f), Some(s)) => Some(if (s.generation, s.name()) >= (f.generation, f.name()) {
                s
            } else {
                f
            }),
            (f, s) => f.or(s),
        })
    }

    /// The restart under way, if a run recorded one and has not published its first export yet.
    pub fn restart_intent(&self) -> Result<Option<RestartIntent>, OutputError> {
        let p = self.path.join(RESTART_FILE);
        match fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| OutputError::BadState {
                    path: p,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&p)(e)),
        }
    }

    /// Records `intent` before anything of the new chain is written, so that a run that dies
    /// half-way is finished by the next one.
    pub fn record_restart(
        &self,
        intent: &RestartIntent,
        _lock: &OutputLock,
    ) -> Result<(), OutputError> {
        let p = self.path.join(RESTART_FILE);
        let json = serde_json::to_vec_pretty(intent).expect("plain data serializes");
        package::replace_file(&p, &json).map_err(io_at(&p))?;
        package::checkpoint();
        Ok(())
    }

    /// Moves the folders `intent` replaces aside, once the new chain's first folder is published:
    /// the top level holds a complete, loadable chain at every moment (a receiver that mirrors it
    /// never sees it empty). Safe to repeat after a crash.
    pub fn supersede(
        &self,
        intent: &RestartIntent,
        _lock: &OutputLock,
    ) -> Result<Vec<String>, OutputError> {
        let mut moved = Vec::new();
        for (name, dir) in self.exports()? {
            if intent
                .keep_through
                .as_ref()
                .is_some_and(|k| name.folder() <= *k)
            {
                continue;
            }
            if read_meta(&dir, &name).is_ok_and(|m| m.generation >= intent.generation) {
                continue; // part of the new chain
            }
            self.move_aside(&dir, &name, &intent.superseded_dir)?;
            moved.push(name.folder());
        }
        // A state file that describes the replaced chain goes with it.
        let state = self.path.join(STATE_FILE);
        let stale = match fs::read_to_string(&state) {
            Ok(text) => ExportMetadata::from_xml(&text, "")
                .map_or(true, |m| m.generation < intent.generation),
            Err(_) => false,
        };
        if stale {
            fs::remove_file(&state).map_err(io_at(&state))?;
        }
        package::sync_dir(&self.path).map_err(io_at(&self.path))?;
        package::checkpoint();
        Ok(moved)
    }

    /// The highest chain generation whose folders were moved aside here (`superseded-g<N>-...`), if
    /// any: a new chain on a directory that lost its own must come after it.
    pub fn generation_aside(&self) -> Option<u32> {
        fs::read_dir(&self.path)
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let rest = name.strip_prefix(SUPERSEDED_PREFIX)?.strip_prefix('g')?;
                rest.split('-').next()?.parse::<u32>().ok()
            })
            .max()
    }

    /// `export --resync-on-broken-chain`: moves what makes [`OutputDir::latest`] fail into
    /// `broken-<time>/` (an unreadable state file; the newest folders whose XML cannot be read), so
    /// that a full resync can start a new chain. Returns what was moved.
    pub fn move_broken_aside(&self, _lock: &OutputLock) -> Result<Vec<String>, OutputError> {
        let aside = format!("broken-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
        let mut moved = Vec::new();
        let state = self.path.join(STATE_FILE);
        if let Ok(text) = fs::read(&state) {
            let readable = std::str::from_utf8(&text)
                .ok()
                .is_some_and(|t| ExportMetadata::from_xml(t, "").is_ok());
            if !readable {
                let dir = self.path.join(&aside);
                fs::create_dir_all(&dir).map_err(io_at(&dir))?;
                let to = dir.join(STATE_FILE);
                fs::rename(&state, &to).map_err(io_at(&to))?;
                moved.push(STATE_FILE.to_string());
            }
        }
        for (name, dir) in self.exports()?.into_iter().rev() {
            if read_meta(&dir, &name).is_ok() {
                break;
            }
            self.move_aside(&dir, &name, &aside)?;
            moved.push(name.folder());
        }
        package::sync_dir(&self.path).map_err(io_at(&self.path))?;
        Ok(moved)
    }

    /// Moves one export folder into `superseded` (created if needed). A name already taken there (an
    /// intent recorded by an older version, two restarts in one second) gets a suffix: moving aside
    /// never fails on a collision.
    fn move_aside(
        &self,
        dir: &Path,
        name: &ExportName,
        superseded: &str,
    ) -> Result<(), OutputError> {
        let aside = self.path.join(superseded);
        fs::create_dir_all(&aside).map_err(io_at(&aside))?;
        let mut to = aside.join(name.folder());
        let mut n = 1;
        while to.exists() {
            n += 1;
            to = aside.join(format!("{}.{n}", name.folder()));
        }
        fs::rename(dir, &to).map_err(io_at(&to))
    }

    /// The new chain's first folder is published: move the replaced folders aside and forget the
    /// restart. Returns the folders moved.
    pub fn finish_restart(
        &self,
        intent: &RestartIntent,
        lock: &OutputLock,
    ) -> Result<Vec<String>, OutputError> {
        let moved = self.supersede(intent, lock)?;
        self.end_restart()?;
        Ok(moved)
    }

    /// The first export of the new chain is published: the restart is done.
    pub fn end_restart(&self) -> Result<(), OutputError> {
        let p = self.path.join(RESTART_FILE);
        match fs::remove_file(&p) {
            Ok(()) => package::sync_dir(&self.path).map_err(io_at(&self.path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_at(&p)(e)),
        }
    }

    /// Records `meta` as the chain's newest export (after its folder is published).
    pub fn record_state(&self, meta: &ExportMetadata) -> Result<(), OutputError> {
        let p = self.path.join(STATE_FILE);
        package::replace_file(&p, meta.to_xml().as_bytes()).map_err(io_at(&p))
    }

    /// A fresh, empty staging folder for `name`.
    pub fn staging(&self, name: &ExportName) -> Result<PathBuf, OutputError> {
        let p = self.path.join(format!("{STAGING_PREFIX}{}", name.folder()));
        if p.exists() {
            fs::remove_dir_all(&p).map_err(io_at(&p))?;
        }
        fs::create_dir(&p).map_err(io_at(&p))?;
        Ok(p)
    }

    /// Moves a finished staging folder into place: one rename, then an fsync of the directory. The
    /// first folder of a restarted chain may bear the name of a folder of the chain it replaces
    /// (`superseded`): that one moves aside just before.
    pub fn publish(
        &self,
        staging: &Path,
        name: &ExportName,
        superseded: Option<&str>,
    ) -> Result<PathBuf, OutputError> {
        let target = self.path.join(name.folder());
        if target.exists() {
            match superseded {
                Some(aside) => self.move_aside(&target, name, aside)?,
                None => {
                    return Err(OutputError::BadState {
                        path: target,
                        reason: "an export folder of this name already exists".into(),
                    })
                }
            }
        }
        fs::rename(staging, &target).map_err(io_at(&target))?;
        package::sync_dir(&self.path).map_err(io_at(&self.path))?;
        package::checkpoint();
        Ok(target)
    }
}

/// A restart under way (`--restart`, `--reexport-last`, `--full-resync`), recorded in the output
/// directory before any folder moves so that a run that dies half-way is finished by the next one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestartIntent {
    /// `restart`, `reexport` or `full-resync`.
    pub kind: String,
    /// The new chain's generation.
    pub generation: u32,
    /// The end of the chain being replaced.
    pub after_audit_key: i64,
    pub after_created_ts: i64,
    /// `--start-date` of the new chain.
    pub start_ts: Option<i64>,
    /// `--reexport-last`: the export the new chain continues from (kept, with all before it), and its
    /// metadata, so the plan does not depend on the folder staying where it is.
    pub keep_through: Option<String>,
    pub boundary_xml: Option<String>,
    /// Where the replaced folders go, inside the output directory.
    pub superseded_dir: String,
    /// The replaced chain's pending audit keys (in flight at its tip): a receiver of that chain
    /// waits for them, so the new chain owes them and exports them when they settle, whatever its
    /// start date.
    #[serde(default)]
    pub carried_pending: Option<String>,
    /// Why: set when the exporter restarted a broken chain by itself (`--resync-on-broken-chain`).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Reads an export folder's extracted.xml.
pub fn read_meta(dir: &Path, name: &ExportName) -> Result<ExportMetadata, OutputError> {
    let xml = dir.join(name.xml_file());
    let text = fs::read_to_string(&xml).map_err(io_at(&xml))?;
    ExportMetadata::from_xml(&text, &xml.display().to_string()).map_err(|e| OutputError::BadState {
        path: xml,
        reason: e.to_string(),
    })
}

/// Export folders directly inside `dir`, sorted by name.
pub fn list_exports(dir: &Path) -> Result<Vec<(ExportName, PathBuf)>, OutputError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_at(dir)(e)),
    };
    for entry in rd {
        let entry = entry.map_err(io_at(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = ExportName::parse(&name) {
            if entry.path().is_dir() {
                out.push((n, entry.path()));
            }
        }
    }
    out.sort_by_key(|(n, _)| n.folder());
    Ok(out)
}
