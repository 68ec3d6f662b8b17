//! The `gim-export` binary: parse, run, turn the outcome into an exit code.

use clap::Parser;
use gim_export::cmd::{self, Cli};
use gim_export::exit::ExitCode;

fn main() {
    let cli = Cli::parse();
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("gim-export: error: {err:#}");
            ExitCode::of(&err)
        }
    };
    std::process::exit(code as i32);
}
