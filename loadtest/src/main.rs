//! The `spark-loadtest` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use spark_loadtest::cli::{self, Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cli::run(args).await,
        Command::MockUpstream(args) => cli::mock_upstream(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
