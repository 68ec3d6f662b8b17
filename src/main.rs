//! The `gim-export` binary: parse, run, turn the outcome into an exit code.

use clap::Parser;
use gim_export::cmd::{self, Cli};
use gim_export::exit::ExitCode;

fn main() {
    // The configuration file fills in what flags and the environment leave unset.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(e) = gim_export::config::apply_file(&args) {
        let code = ExitCode::Config as i32;
        if !gim_export::logging::report_usage_error(&e.to_string(), code, &args) {
            eprintln!("gim-export: error: {e}");
        }
        std::process::exit(code);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if e.use_stderr()
                && gim_export::logging::report_usage_error(&e.to_string(), e.exit_code(), &args)
            {
                std::process::exit(e.exit_code());
            }
            let _ = e.print();
            if e.use_stderr() {
                // A bad value that came from the environment or the file: name where it came from,
                // not only the flag the user never typed.
                let notes = gim_export::config::origin_of_error(&e.to_string(), &args);
                for note in &notes {
                    eprintln!("note: {note}");
                }
                let from_file = gim_export::config::settings_from_file();
                if notes.is_empty() && !from_file.is_empty() {
                    eprintln!(
                        "note: settings read from the configuration file: {}",
                        from_file.join(", ")
                    );
                }
            }
            std::process::exit(e.exit_code());
        }
    };
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let code = ExitCode::of(&err);
            gim_export::logging::report_failure(&err, code as i32);
            code
        }
    };
    std::process::exit(code as i32);
}
