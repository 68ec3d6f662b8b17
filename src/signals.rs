//! SIGTERM and SIGINT in the long commands (`export`, `load`): the first asks the run to stop after
//! the unit in progress (an export folder is finished and published; a folder being loaded commits);
//! a second abandons that unit (the staging folder is removed; the load's transaction rolls back).
//! Either way the run is recorded and the process exits with 128 + the signal (130, 143), except in
//! `export --every`, where a stop is the normal end of the service (exit 0).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use tokio::sync::Notify;

static STOP: AtomicBool = AtomicBool::new(false);
static ABANDON: AtomicBool = AtomicBool::new(false);
/// The first signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static STOP_NOTIFY: Notify = Notify::const_new();
static ABANDON_NOTIFY: Notify = Notify::const_new();

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// The run was stopped by a signal before its work was done.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {}: {what}", signal_name(*signal))]
pub struct Stopped {
    pub signal: i32,
    pub what: String,
}

impl Stopped {
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        if self.signal == SIGINT {
            crate::exit::ExitCode::Interrupted
        } else {
            crate::exit::ExitCode::Terminated
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Listens for SIGTERM and SIGINT for the rest of the process (call inside the runtime).
pub fn install() {
    let watcher = async {
        let (Ok(mut term), Ok(mut int)) = (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot listen for SIGTERM and SIGINT: they will end the run at once");
            return;
        };
        loop {
            let signal = tokio::select! {
                _ = term.recv() => SIGTERM,
                _ = int.recv() => SIGINT,
            };
            if !STOP.load(Ordering::SeqCst) {
                tracing::info!(
                    signal = signal_name(signal),
                    "stop requested: finishing the folder in progress (send it again to abandon that folder)"
                );
                request_stop_by(signal);
            } else {
                tracing::warn!(
                    signal = signal_name(signal),
                    "second stop request: abandoning the folder in progress"
                );
                ABANDON.store(true, Ordering::SeqCst);
                ABANDON_NOTIFY.notify_waiters();
                STOP_NOTIFY.notify_waiters();
            }
        }
    };
    tokio::spawn(tracing::Instrument::in_current_span(watcher));
}

fn request_stop_by(signal: i32) {
    let _ = SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
    STOP_NOTIFY.notify_waiters();
}

/// Asks the running job to stop after the unit in progress, as SIGTERM does.
pub fn request_stop() {
    request_stop_by(SIGTERM);
}

/// A stop was asked for: start no new unit of work.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// A second stop was asked for: give up the unit in progress.
pub fn abandon_requested() -> bool {
    ABANDON.load(Ordering::SeqCst)
}

/// The signal that asked for the stop, if one did.
pub fn received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The error for a run a signal cut short.
pub fn stopped(what: impl Into<String>) -> Stopped {
    Stopped {
        signal: received().unwrap_or(SIGTERM),
        what: what.into(),
    }
}

/// Resolves when the unit in progress is to be abandoned.
pub async fn abandoned() {
    loop {
        let notified = ABANDON_NOTIFY.notified();
        if abandon_requested() {
            return;
        }
        notified.await;
    }
}

/// Sleeps for `d`, or less if a stop is requested meanwhile.
pub async fn sleep_unless_stopped(d: std::time::Duration) {
    let notified = STOP_NOTIFY.notified();
    if stop_requested() {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = notified => {}
    }
}
