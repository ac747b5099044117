//! The `lectern` binary: parse the command line, start telemetry, run.

use std::process::ExitCode;

use clap::Parser;
use lectern::cli::Cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => match lectern::cli::setting_error(&err) {
            Some(line) => {
                eprintln!("lectern: {line}");
                return ExitCode::from(2);
            }
            None => err.exit(),
        },
    };
    lectern::telemetry::init(if cli.serves() {
        lectern::telemetry::SERVER_LOGS
    } else {
        "off"
    });
    match lectern::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, with the cause chain, and never a backtrace.
            eprintln!("lectern: {err:#}");
            ExitCode::FAILURE
        }
    }
}
