//! Exit codes: the documented contract with cron, CronJobs and scripts.

use crate::db::DbError;
use crate::export::StartDateOnExistingChain;
use crate::outdir::OutputError;
use crate::verify::VerifyFailed;

/// Every exit code `gim-export` uses. Documented in the README and in `--help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// The command did its work.
    Success = 0,
    /// An unexpected failure (a bug, or an error with no better code).
    Failure = 1,
    /// Bad flags, environment or configuration.
    Config = 2,
    /// `export`: nothing new has settled; no folder was written. `load`: no folder to apply.
    NothingToDo = 3,
    /// Another run holds the lock on the output directory.
    Locked = 4,
    /// `verify` found a problem in an export folder.
    VerifyFailed = 5,
    /// The source or target database failed or could not be reached.
    Database = 6,
    /// Reading or writing files failed (output directory, export folders).
    Io = 7,
    /// `export`: folders were published, but `--on-publish` failed for at least one, or a
    /// `--deliver-to` destination did not receive one (retention keeps them; the next run runs the
    /// hook again and catches the destination up).
    HookFailed = 8,
    /// Stopped by SIGINT (Ctrl-C) before the work was done: the folder in progress was finished (or,
    /// at a second signal, abandoned) and the run recorded. 128 + 2, as a shell reports it.
    Interrupted = 130,
    /// Stopped by SIGTERM before the work was done (as `Interrupted`). 128 + 15.
    Terminated = 143,
}

/// The text for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  unexpected failure
  2  configuration or usage error
  3  nothing to do (export: no newly settled data; load: no new folder)
  4  another run holds the output directory's lock (export) or the target (load)
  5  verification failed (a folder is damaged, incomplete, out of chain, or cannot be loaded);
     compare: the source and the target differ
  6  source or target database error
  7  file error (output directory, export folders)
  8  export: published, but --on-publish failed or a --deliver-to destination did not receive the
     folder (it is kept; the next run retries the hook and catches the destination up)
130  stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM: the folder in progress was finished, or
     abandoned at a second signal, and the run recorded; run again to go on. With --every a stop
     is the normal end: 0
141  stdout was closed by its reader (`| head`): results stopped there, as with SIGPIPE";

impl ExitCode {
    /// The code for an error: the first error in its chain that has a meaning of its own.
    pub fn of(err: &anyhow::Error) -> ExitCode {
        for cause in err.chain() {
            if let Some(s) = cause.downcast_ref::<crate::signals::Stopped>() {
                return s.exit_code();
            }
            if let Some(e) = cause.downcast_ref::<OutputError>() {
                return match e {
                    OutputError::Locked(_) => ExitCode::Locked,
                    OutputError::NotADirectory(_) => ExitCode::Config,
                    _ => ExitCode::Io,
                };
            }
            if cause.downcast_ref::<DbError>().is_some()
                || cause.downcast_ref::<sqlx::Error>().is_some()
            {
                return ExitCode::Database;
            }
            if cause.downcast_ref::<crate::load::TargetLocked>().is_some() {
                return ExitCode::Locked;
            }
            if cause.downcast_ref::<VerifyFailed>().is_some()
                || cause.downcast_ref::<crate::load::LoadRefused>().is_some()
            {
                return ExitCode::VerifyFailed;
            }
            if cause.downcast_ref::<StartDateOnExistingChain>().is_some()
                || cause
                    .downcast_ref::<crate::export::FutureStartDate>()
                    .is_some()
                || cause
                    .downcast_ref::<crate::export::TableSelectionChanged>()
                    .is_some()
                || cause
                    .downcast_ref::<crate::export::RestartOverFullResync>()
                    .is_some()
                || cause
                    .downcast_ref::<crate::export::NothingToReexport>()
                    .is_some()
                || cause.downcast_ref::<crate::db::NoExportViews>().is_some()
                || cause
                    .downcast_ref::<crate::export::UnloadableSource>()
                    .is_some()
                || cause
                    .downcast_ref::<crate::export::EmptySelection>()
                    .is_some()
                || cause.downcast_ref::<crate::cmd::ConfigError>().is_some()
                || cause
                    .downcast_ref::<crate::simulate::NotASimulatedInfoMart>()
                    .is_some()
            {
                return ExitCode::Config;
            }
            if let Some(e) = cause.downcast_ref::<std::io::Error>() {
                // Data the encoding cannot hold is not a file problem.
                if e.get_ref()
                    .is_some_and(|i| i.is::<crate::encoding::Unmappable>())
                {
                    return ExitCode::Failure;
                }
                return ExitCode::Io;
            }
        }
        ExitCode::Failure
    }
}
