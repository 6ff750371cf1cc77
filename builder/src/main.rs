//! `tender`: generate keys and write signed releases of a colcon workspace.
//!
//! Results go to stdout; logs (`RUST_LOG`, default `info`) and progress bars
//! go to stderr. Exit status 0 is success, 1 a failure, 2 a usage error.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::init_tracing();
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if cli::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", cli::error_message(&error));
            ExitCode::FAILURE
        }
    }
}
