//! Repository tasks, run as `cargo xtask TASK`: orchestration of the tools
//! and binaries of this workspace, with no logic that a user of `tender`
//! would need. One module per task; shared helpers in [`tooling`] and
//! [`workspace`].

mod bench;
mod demo;
mod release;
mod system;
mod test;
mod tooling;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tasks for developing Tender.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    Release(release::Args),
    Bench(bench::Args),
    Demo(demo::Args),
    Test(test::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Release(args) => release::run(args),
        Task::Bench(args) => bench::run(args),
        Task::Demo(args) => demo::run(args),
        Task::Test(args) => test::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
