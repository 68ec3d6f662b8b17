//! The `gim-export` binary: parse, run, turn the outcome into an exit code.

use clap::Parser;
use gim_export::cmd::{self, Cli};
use gim_export::exit::ExitCode;

fn main() {
    // The configuration file fills in what flags and the environment leave unset.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(e) = gim_export::config::apply_file(&args) {
        eprintln!("gim-export: error: {e}");
        std::process::exit(ExitCode::Config as i32);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            let from_file = gim_export::config::settings_from_file();
            if e.use_stderr() && !from_file.is_empty() {
                eprintln!(
                    "note: settings read from the configuration file: {}",
                    from_file.join(", ")
                );
            }
            std::process::exit(e.exit_code());
        }
    };
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            gim_export::logging::report_failure(&err);
            ExitCode::of(&err)
        }
    };
    std::process::exit(code as i32);
}
