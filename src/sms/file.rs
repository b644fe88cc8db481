//! The file gateway: appends each SMS as one JSON object per line, so tests and demos can read the code the
//! driver would have received. The file holds codes in clear; production mode refuses it.

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{Delivery, SmsError, SmsGateway, SmsMessage};

/// Appends messages to a JSON-lines file.
#[derive(Debug)]
pub struct FileGateway {
    path: PathBuf,
    file: Mutex<tokio::fs::File>,
}

/// One line of the file.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct FileSms {
    /// E.164 destination.
    pub to: String,
    /// The sender number.
    pub from: String,
    /// The text, with the code.
    pub body: String,
    /// The verification the code belongs to.
    pub verification_id: String,
    /// RFC 3339.
    pub sent_at: String,
}

impl FileGateway {
    /// Opens (creating if needed) `path` for appending.
    pub async fn open(path: &Path) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
        Ok(Self { path: path.to_owned(), file: Mutex::new(file) })
    }
}

#[async_trait::async_trait]
impl SmsGateway for FileGateway {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn send(&self, message: &SmsMessage, _deadline: super::Deadline) -> Result<Delivery, SmsError> {
        let line = FileSms {
            to: message.to.e164().to_owned(),
            from: message.from.clone(),
            body: message.body.expose_secret().to_owned(),
            verification_id: message.verification_id.to_string(),
            sent_at: message.sent_at.to_rfc3339(),
        };
        let mut bytes = serde_json::to_vec(&line).map_err(|e| SmsError::Unavailable(e.to_string()))?;
        bytes.push(b'\n');
        let mut file = self.file.lock().await;
        file.write_all(&bytes)
            .await
            .and(file.flush().await)
            .map_err(|e| SmsError::Unavailable(format!("{}: {e}", self.path.display())))?;
        Ok(Delivery::default())
    }
}
