//! `otpd`: parse the command line and run. Everything else lives in the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    otpd::cli::run(otpd::config::Cli::parse()).await
}
