//! The development gateway: prints each SMS on standard output, apart from the service's logs (which never
//! contain codes). Production mode refuses it.

use std::io::Write;

use secrecy::ExposeSecret;

use super::{Delivery, SmsError, SmsGateway, SmsMessage};

/// Prints messages on standard output.
#[derive(Debug, Default)]
pub struct LogGateway;

#[async_trait::async_trait]
impl SmsGateway for LogGateway {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn send(&self, message: &SmsMessage, _deadline: super::Deadline) -> Result<Delivery, SmsError> {
        let text = format!(
            "--- dev SMS from {} to {} (verification {}) ---\n{}\n---\n",
            message.from,
            message.to.e164(),
            message.verification_id,
            message.body.expose_secret()
        );
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| SmsError::Unavailable(e.to_string()))?;
        Ok(Delivery::default())
    }
}
