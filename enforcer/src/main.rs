use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match enforcer::cli::run(enforcer::cli::Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
