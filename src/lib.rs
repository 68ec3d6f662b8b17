//! gim-export: incremental export of Genesys Info Mart tables into checksummed zip folders.
//!
//! The binary is a thin shell over [`cmd::run`]. The domain lives in modules named after it:
//! [`audit`] and [`window`] plan what goes into an export, [`format`] is the folder format shared by
//! every side, [`db`] reads the databases, [`package`] and [`outdir`] write and publish folders,
//! [`export`] runs the job, [`verify`] checks folders as a receiver would, [`simulate`] makes a
//! source Info Mart to practise on.

/// `println!` for results on stdout. A reader that closed stdout (`gim-export status | head -3`) ends
/// the program quietly with 141, as a shell reports SIGPIPE, instead of a panic; the process keeps
/// ignoring SIGPIPE so that a vanished database peer stays an error, not a death.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = writeln!(stdout, $($arg)*).and_then(|()| stdout.flush()) {
            $crate::logging::stdout_failed(e);
        }
    }};
}

pub mod audit;
pub mod cmd;
pub mod compare;
pub mod config;
pub mod crypto;
pub mod db;
pub mod deliver;
pub mod encoding;
pub mod exit;
pub mod export;
pub mod format;
pub mod load;
pub mod logging;
pub mod ops;
pub mod outdir;
pub mod package;
pub mod repair;
pub mod schema;
pub mod signals;
pub mod simulate;
pub mod target;
pub mod verify;
pub mod window;
