//! What `config` shares with the modules whose flags it gathers (`tls`): how strict start-up is and the error
//! that names an invalid setting. It sits below all of them, so none has to import `config` back.

use clap::ValueEnum;

/// How strict start-up is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Local development: SQLite, the `log` gateway and a generated pepper are fine.
    Dev,
    /// Production: refuses development gateways, a missing pepper and a plaintext admin listener off loopback.
    Prod,
}

/// A setting is invalid.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting --{setting}: {message}")]
pub struct ConfigError {
    /// The flag's name.
    pub setting: &'static str,
    /// What is wrong.
    pub message: String,
}
