//! The `lectern` binary: parse the command line, start telemetry, run.

use std::process::ExitCode;

use clap::Parser;
use lectern::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    lectern::telemetry::init();
    match lectern::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, with the cause chain, and never a backtrace.
            eprintln!("lectern: {err:#}");
            ExitCode::FAILURE
        }
    }
}
