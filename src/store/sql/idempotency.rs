//! Idempotency keys (see `store/idempotency.rs`), written once for both backends: the claim is one upsert that
//! only an expired row lets through, and every later write of the claim's owner names its token.

use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::SqlStore;
use crate::store::CodeId;
use crate::store::StoreResult;
use crate::store::dialect::{Column, Db, Dialect, Ts};
use crate::store::idempotency::{Claimed, KeyClaim, KeyOutcome, KeyRecord, KeyStore, SendProgress};

/// A key's row joined with its send's code: fingerprint, outcome code, message, body, lease, code id,
/// provisional answer, the code's delivery.
type RecordRow =
    (String, Option<i32>, Option<String>, Option<Vec<u8>>, Option<Ts>, Option<i64>, Option<Vec<u8>>, Option<String>);

#[async_trait::async_trait]
impl<DB> KeyStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    i32: Column<DB>,
    i64: Column<DB>,
    String: Column<DB>,
    Vec<u8>: Column<DB>,
    Option<i32>: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
    Option<Vec<u8>>: Column<DB>,
    Option<Ts>: Column<DB>,
{
    #[tracing::instrument(skip_all)]
    async fn claim_key(&self, claim: &KeyClaim) -> StoreResult<Claimed> {
        // A purge may remove the row between the upsert and the read: then the claim is tried again.
        for _ in 0..3 {
            let claimed: Option<Db<uuid::Uuid>> = sqlx::query_scalar(
                "INSERT INTO idempotency_keys (scope, idem_key, fingerprint, token, lease_until, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (scope, idem_key) DO UPDATE SET
                     fingerprint = excluded.fingerprint, token = excluded.token, lease_until = excluded.lease_until,
                     code_id = NULL, provisional = NULL,
                     outcome_code = NULL, outcome_message = NULL, outcome_body = NULL,
                     created_at = excluded.created_at, expires_at = excluded.expires_at
                 WHERE idempotency_keys.expires_at <= $6
                 RETURNING token",
            )
            .bind(claim.scope.as_str())
            .bind(claim.key.as_str())
            .bind(claim.fingerprint.as_str())
            .bind(Db(claim.token))
            .bind(Db(claim.lease_until))
            .bind(Db(claim.now))
            .bind(Db(claim.expires_at))
            .fetch_optional(self.pool())
            .await?;
            if claimed.is_some_and(|token| token.0 == claim.token) {
                return Ok(Claimed::Mine);
            }
            if let Some(record) = self.key_record(&claim.scope, &claim.key).await? {
                return Ok(Claimed::Taken(record));
            }
        }
        Err(crate::store::StoreError::Corrupt("an idempotency key neither claimed nor found".into()))
    }

    #[tracing::instrument(skip_all)]
    async fn key_record(&self, scope: &str, key: &str) -> StoreResult<Option<KeyRecord>> {
        let row: Option<RecordRow> = sqlx::query_as(
            "SELECT k.fingerprint, k.outcome_code, k.outcome_message, k.outcome_body, k.lease_until, k.code_id,
                    k.provisional, c.delivery
             FROM idempotency_keys k LEFT JOIN codes c ON c.id = k.code_id
             WHERE k.scope = $1 AND k.idem_key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(fingerprint, code, message, body, lease_until, code_id, provisional, delivery)| KeyRecord {
            fingerprint,
            outcome: code.map(|code| KeyOutcome {
                code,
                message: message.unwrap_or_default(),
                body: body.unwrap_or_default(),
            }),
            lease_until: lease_until.map(|at| at.0),
            progress: code_id.zip(provisional).map(|(code, provisional)| SendProgress {
                code: CodeId(code),
                delivery,
                provisional,
            }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn take_over_key(&self, claim: &KeyClaim) -> StoreResult<bool> {
        let taken = sqlx::query(
            "UPDATE idempotency_keys SET token = $3, lease_until = $4
             WHERE scope = $1 AND idem_key = $2 AND outcome_code IS NULL AND lease_until <= $5 AND fingerprint = $6",
        )
        .bind(claim.scope.as_str())
        .bind(claim.key.as_str())
        .bind(Db(claim.token))
        .bind(Db(claim.lease_until))
        .bind(Db(claim.now))
        .bind(claim.fingerprint.as_str())
        .execute(self.pool())
        .await?;
        Ok(DB::rows_affected(&taken) == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn renew_key(
        &self,
        scope: &str,
        key: &str,
        token: uuid::Uuid,
        until: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool> {
        let renewed = sqlx::query(
            "UPDATE idempotency_keys SET lease_until = $4
             WHERE scope = $1 AND idem_key = $2 AND token = $3 AND outcome_code IS NULL",
        )
        .bind(scope)
        .bind(key)
        .bind(Db(token))
        .bind(Db(until))
        .execute(self.pool())
        .await?;
        Ok(DB::rows_affected(&renewed) == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn key_progress(
        &self,
        scope: &str,
        key: &str,
        token: uuid::Uuid,
        code: CodeId,
        provisional: &[u8],
    ) -> StoreResult<bool> {
        let recorded = sqlx::query(
            "UPDATE idempotency_keys SET code_id = $4, provisional = $5
             WHERE scope = $1 AND idem_key = $2 AND token = $3 AND outcome_code IS NULL",
        )
        .bind(scope)
        .bind(key)
        .bind(Db(token))
        .bind(code.0)
        .bind(provisional.to_vec())
        .execute(self.pool())
        .await?;
        Ok(DB::rows_affected(&recorded) == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn finish_key(&self, scope: &str, key: &str, token: uuid::Uuid, outcome: &KeyOutcome) -> StoreResult<bool> {
        let finished = sqlx::query(
            "UPDATE idempotency_keys SET outcome_code = $4, outcome_message = $5, outcome_body = $6, lease_until = NULL
             WHERE scope = $1 AND idem_key = $2 AND token = $3 AND outcome_code IS NULL",
        )
        .bind(scope)
        .bind(key)
        .bind(Db(token))
        .bind(outcome.code)
        .bind(outcome.message.as_str())
        .bind(outcome.body.clone())
        .execute(self.pool())
        .await?;
        Ok(DB::rows_affected(&finished) == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn release_key(&self, scope: &str, key: &str, token: uuid::Uuid) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND token = $3 AND outcome_code IS NULL",
        )
        .bind(scope)
        .bind(key)
        .bind(Db(token))
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
