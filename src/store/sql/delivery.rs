//! Delivery attempts and receipts.

use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::SqlStore;
use crate::domain::{AttemptStatus, DeliveryAttempt, Receipt};
use crate::store::dialect::{Column, Dialect, Ts, Uid};
use crate::store::{AttemptRow, CodeId, StoreResult, attempt_status, carried_by};

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    bool: Column<DB>,
    i16: Column<DB>,
    i32: Column<DB>,
    i64: Column<DB>,
    String: Column<DB>,
    Ts: Column<DB>,
    Uid: Column<DB>,
    Option<bool>: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
    Option<Ts>: Column<DB>,
{
    /// The attempts of one code, in order.
    pub(super) async fn attempts(conn: &mut DB::Connection, code: i64) -> StoreResult<Vec<AttemptStatus>> {
        let rows: Vec<AttemptRow<Ts>> = sqlx::query_as(
            "SELECT channel, gateway, attempted_at, outcome, provider_id, receipt, receipt_at, receipt_code
             FROM delivery_attempts WHERE code_id = $1 ORDER BY id",
        )
        .bind(code)
        .fetch_all(conn)
        .await?;
        rows.into_iter().map(|row| attempt_status(row, |at: Ts| Ok(at.0))).collect()
    }

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
            .bind(Ts(a.at))
            .bind(a.outcome.as_str())
            .bind(a.provider_id.as_deref())
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
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE delivery_attempts SET receipt = $3, receipt_at = $4, receipt_code = $5
             WHERE gateway = $1 AND provider_id = $2 AND outcome IN ('accepted', 'unconfirmed')",
        )
        .bind(gateway)
        .bind(provider_id)
        .bind(if receipt.delivered { "delivered" } else { "failed" })
        .bind(Ts(receipt.at))
        .bind(receipt.code.as_deref())
        .execute(self.pool())
        .await?;
        Ok(DB::rows_affected(&updated) > 0)
    }
}
