//! What `otpd` does with its command line: serve (default) or migrate.

use std::process::ExitCode;

use crate::config::{Cli, Command};
use crate::startup::Application;
use crate::telemetry::{self, ErrorChain};

/// Runs the command and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    telemetry::init(cli.settings.log_format);
    for name in crate::config::unknown_env_vars() {
        tracing::warn!(variable = %name, "unknown OTPD_* environment variable ignored");
    }
    let config = match cli.settings.validate() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("otpd: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match Application::build(config).await {
            Ok(app) => app.run_until(shutdown_signal()).await,
            Err(error) => Err(error),
        },
        Command::Migrate => migrate(&config.database_url).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let chain = ErrorChain(error.as_ref());
            tracing::error!(error = %chain, "otpd failed");
            eprintln!("otpd: {chain}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(url: &str) -> anyhow::Result<()> {
    let store = crate::store::connect(url).await?;
    store.migrate().await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops otpd");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
