//! Delivery attempts and receipts in PostgreSQL.

use sqlx::PgConnection;

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::domain::{AttemptStatus, DeliveryAttempt, RECEIPT_CLOCK_SKEW, Receipt, ReceiptOutcome};
use crate::store::{CodeId, StoreResult, attempt_status, carried_by};

/// The attempts of one code, in order.
pub(super) async fn attempts(conn: &mut PgConnection, code: i64) -> StoreResult<Vec<AttemptStatus>> {
    let rows: Vec<crate::store::AttemptRow<DateTime<Utc>>> = sqlx::query_as(
        "SELECT channel, gateway, attempted_at, outcome, provider_id, receipt, receipt_at, receipt_code
         FROM delivery_attempts WHERE code_id = $1 ORDER BY id",
    )
    .bind(code)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(|row| attempt_status(row, Ok)).collect()
}

impl PgStore {
    /// See [`crate::store::Store::record_attempts`].
    pub(super) async fn insert_attempts(&self, code: CodeId, attempts: &[DeliveryAttempt]) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        for a in attempts {
            sqlx::query(
                "INSERT INTO delivery_attempts (code_id, channel, gateway, attempted_at, outcome, provider_id)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(code.0)
            .bind(a.channel.as_str())
            .bind(a.gateway)
            .bind(a.at)
            .bind(a.outcome.as_str())
            .bind(&a.provider_id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE codes SET delivered_by = $2 WHERE id = $1")
            .bind(code.0)
            .bind(carried_by(attempts))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// See [`crate::store::Store::record_receipt`].
    pub(super) async fn update_receipt(
        &self,
        gateway: &str,
        provider_id: &str,
        receipt: &Receipt,
    ) -> StoreResult<ReceiptOutcome> {
        // Only a newer receipt moves the result (a replay or a late older one never does), and only one dated
        // after its attempt.
        let updated = sqlx::query(
            "UPDATE delivery_attempts SET receipt = $3, receipt_at = $4, receipt_code = $5
             WHERE gateway = $1 AND provider_id = $2 AND outcome IN ('accepted', 'unconfirmed')
               AND (receipt_at IS NULL OR receipt_at < $4) AND attempted_at <= $6",
        )
        .bind(gateway)
        .bind(provider_id)
        .bind(if receipt.delivered { "delivered" } else { "failed" })
        .bind(receipt.at)
        .bind(&receipt.code)
        .bind(receipt.at + RECEIPT_CLOCK_SKEW)
        .execute(self.pool())
        .await?;
        if updated.rows_affected() > 0 {
            return Ok(ReceiptOutcome::Recorded);
        }
        // Not applied: tell a receipt that changes nothing from one for a message otpd never sent (rare, so
        // this second statement costs the ordinary path nothing).
        let known: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM delivery_attempts
             WHERE gateway = $1 AND provider_id = $2 AND outcome IN ('accepted', 'unconfirmed') LIMIT 1",
        )
        .bind(gateway)
        .bind(provider_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(if known.is_some() { ReceiptOutcome::Superseded } else { ReceiptOutcome::Unknown })
    }
}
