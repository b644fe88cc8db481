//! `otpctl`: the team lead's tool for otp.v1.SupervisorService. Everything lives in `otpd::ctl`.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    otpd::ctl::run(otpd::ctl::Args::parse()).await
}
