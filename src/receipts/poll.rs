//! Receipts from providers that post no webhook otpd can take (Naver Cloud SENS, Solapi): every
//! `--receipt-poll-interval`, the attempts such a provider accepted in the last [`WINDOW`] that have no receipt
//! yet are looked up with the provider's result-query API, and a final result is recorded as a webhook's would be
//! (the newest receipt wins, so replicas polling the same attempts change nothing twice).

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::{RECEIPT_CLOCK_SKEW, ReceiptOutcome};
use crate::store::Store;

/// What a provider's result-query API says about one accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    /// Not final yet (queued, with the carrier, waiting for its report).
    Pending,
    /// Final: delivered or given up, with the carrier's code and time.
    Done(crate::domain::Receipt),
    /// The provider does not know the id (yet, or any more).
    Unknown,
}

/// A provider whose results are read back by polling its result-query API (SENS, Solapi: neither posts a
/// webhook otpd can take), written once per provider beside its send format.
#[async_trait::async_trait]
pub trait ResultQuery: Send + Sync + 'static {
    /// The gateway name the attempts were recorded under (`sens`, `solapi`).
    fn gateway(&self) -> &'static str;

    /// Where the provider is, as `host:port`, for log lines.
    fn endpoint(&self) -> String;

    /// Reads the result of the message the provider accepted as `provider_id`; Err: the query failed (logged,
    /// tried again on the next round).
    async fn poll(&self, client: &reqwest::Client, provider_id: &str) -> Result<Polled, String>;
}

/// How far back unanswered attempts are asked about: carriers report within minutes, and a day later nobody reads
/// the answer.
const WINDOW: TimeDelta = TimeDelta::hours(24);
/// Attempts asked about per provider per round, so that a backlog cannot turn one round into a flood.
const PER_ROUND: u32 = 200;
/// How long one result query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How the poller runs.
#[derive(Debug, Clone, Copy)]
pub struct PollSettings {
    /// Time between rounds.
    pub interval: Duration,
}

/// Polls `queries` every `settings.interval` until `shutdown`, recording what they report in `store`.
pub async fn poll(
    store: Arc<dyn Store>,
    queries: Vec<Arc<dyn ResultQuery>>,
    clock: Arc<dyn Clock>,
    settings: PollSettings,
    shutdown: CancellationToken,
) {
    if queries.is_empty() || settings.interval.is_zero() {
        return;
    }
    let client = match reqwest::Client::builder()
        .user_agent(concat!("otpd/", env!("CARGO_PKG_VERSION")))
        .timeout(QUERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(error = %crate::telemetry::ErrorChain(&error), "receipt polling off: no HTTP client");
            return;
        }
    };
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        for query in &queries {
            round(&*store, &**query, &client, &*clock).await;
        }
    }
}

/// One round for one provider.
async fn round(store: &dyn Store, query: &dyn ResultQuery, client: &reqwest::Client, clock: &dyn Clock) {
    let gateway = query.gateway();
    let now = clock.now();
    let ids = match store.awaiting_receipts(gateway, now - WINDOW, now, PER_ROUND).await {
        Ok(ids) => ids,
        Err(error) => {
            tracing::warn!(gateway, error = %crate::telemetry::ErrorChain(&error), "receipt polling: store failed");
            return;
        }
    };
    let (mut recorded, mut pending) = (0, 0);
    for id in ids {
        match query.poll(client, &id).await {
            Ok(Polled::Done(receipt)) => {
                // The provider's clock may run ahead of ours by the skew a webhook is allowed.
                let receipt =
                    crate::domain::Receipt { at: receipt.at.min(clock.now() + RECEIPT_CLOCK_SKEW), ..receipt };
                match store.record_receipt(gateway, &id, &receipt).await {
                    Ok(ReceiptOutcome::Recorded) => recorded += 1,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(gateway, error = %crate::telemetry::ErrorChain(&error), "recording a polled receipt failed");
                        return;
                    }
                }
            }
            Ok(Polled::Pending | Polled::Unknown) => pending += 1,
            Err(why) => {
                // Where and why, never the message or the credentials; the next round tries again.
                tracing::warn!(gateway, provider = %query.endpoint(), error = %why, "receipt query failed");
                return;
            }
        }
    }
    if recorded > 0 {
        tracing::info!(gateway, receipts = recorded, pending, "delivery receipts polled");
    }
}
