//! gim-export: incremental export of Genesys Info Mart tables into checksummed zip folders.
//!
//! The binary is a thin shell over [`cmd::run`]. The domain lives in modules named after it:
//! [`audit`] and [`window`] plan what goes into an export, [`format`] is the folder format shared by
//! every side, [`db`] reads the databases, [`package`] and [`outdir`] write and publish folders,
//! [`export`] runs the job, [`verify`] checks folders as a receiver would, [`simulate`] makes a
//! source Info Mart to practise on.

pub mod audit;
pub mod cmd;
pub mod config;
pub mod db;
pub mod encoding;
pub mod exit;
pub mod export;
pub mod format;
pub mod load;
pub mod logging;
pub mod ops;
pub mod outdir;
pub mod package;
pub mod schema;
pub mod signals;
pub mod simulate;
pub mod target;
pub mod verify;
pub mod window;
