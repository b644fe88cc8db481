//! The shared SMS budgets and the pumping guard's figures (issue 18 §1–2), once for both backends. Times in these
//! tables are integer milliseconds on both, so every statement here is one text: `CASE` where one backend says
//! `GREATEST` and the other `MAX`, `CAST(… AS BIGINT)` where PostgreSQL could not type a bare parameter.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::steps::corrupt;
use super::{SqlStore, begin};
use crate::domain::audit::{AuditEvent, AuditKey, NewAuditEvent};
use crate::domain::guard::{Counts, GuardFigures, Override, OverrideAction, ScopeCounts};
use crate::store::StoreResult;
use crate::store::dialect::{Column, Dialect, Ts};
use crate::store::guard::{Budget, BudgetRefusal, GuardQuery, GuardStore, country_key, prefix_key};

/// The GCRA charge of one SMS against each row of `VALUES`: a row whose theoretical arrival time is at most
/// `interval × (burst − 1)` ahead of now passes and moves it one interval on; any other is left as it is and
/// marked refused. PostgreSQL locks each row it upserts until the statement ends, and evaluates `SET` on the row's
/// newest version, so concurrent charges from every replica queue on the row and none is lost.
const CHARGE_HEAD: &str = "INSERT INTO sms_budgets (key, tat_ms, interval_ms, burst, granted) VALUES ";
const CHARGE_TAIL: &str = " ON CONFLICT (key) DO UPDATE SET
    granted = CASE WHEN sms_budgets.tat_ms - $1 <= excluded.interval_ms * (excluded.burst - 1) THEN 1 ELSE 0 END,
    tat_ms = CASE WHEN sms_budgets.tat_ms - $1 <= excluded.interval_ms * (excluded.burst - 1)
                  THEN (CASE WHEN sms_budgets.tat_ms > $1 THEN sms_budgets.tat_ms ELSE $1 END) + excluded.interval_ms
                  ELSE sms_budgets.tat_ms END,
    interval_ms = excluded.interval_ms,
    burst = excluded.burst
    RETURNING key, granted, tat_ms, interval_ms, burst";

/// Both scopes' sums over the long window (and, within it, the short one), then the prefix's override: one read.
const FIGURES: &str = "SELECT key,
        CAST(COALESCE(SUM(CASE WHEN bucket_ms >= $3 THEN sends ELSE 0 END), 0) AS BIGINT),
        CAST(COALESCE(SUM(CASE WHEN bucket_ms >= $3 THEN approvals ELSE 0 END), 0) AS BIGINT),
        CAST(COALESCE(SUM(sends), 0) AS BIGINT),
        CAST(COALESCE(SUM(approvals), 0) AS BIGINT),
        CAST(NULL AS TEXT), CAST(NULL AS TEXT), CAST(NULL AS TEXT), CAST(NULL AS TEXT)
    FROM guard_counts WHERE key IN ($1, $2) AND bucket_ms >= $4 GROUP BY key
    UNION ALL
    SELECT 'override', until_ms, set_at_ms, CAST(0 AS BIGINT), CAST(0 AS BIGINT), action, ticket_id, reason, set_by
    FROM guard_overrides WHERE prefix = $5";

type FigureRow = (String, i64, i64, i64, i64, Option<String>, Option<String>, Option<String>, Option<String>);

fn time(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("guard time", &ms.to_string()))
}

#[async_trait::async_trait]
impl<DB> GuardStore for SqlStore<DB>
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
    Option<bool>: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
    Option<Ts>: Column<DB>,
{
    #[tracing::instrument(skip_all)]
    async fn charge_budgets(&self, budgets: &[Budget], now: DateTime<Utc>) -> StoreResult<Vec<BudgetRefusal>> {
        if budgets.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<String> = (0..budgets.len())
            .map(|i| {
                let (key, interval, burst) = (3 * i + 2, 3 * i + 3, 3 * i + 4);
                format!("(${key}, CAST($1 AS BIGINT) + CAST(${interval} AS BIGINT), ${interval}, ${burst}, 1)")
            })
            .collect();
        let sql = format!("{CHARGE_HEAD}{}{CHARGE_TAIL}", values.join(", "));
        let mut query = sqlx::query_as::<_, (String, i32, i64, i64, i32)>(&sql).bind(now.timestamp_millis());
        for budget in budgets {
            let burst = i32::try_from(budget.burst).unwrap_or(i32::MAX);
            query = query.bind(budget.key.as_str()).bind(budget.interval_ms).bind(burst);
        }
        let rows = query.fetch_all(self.pool()).await?;
        let refused: Vec<BudgetRefusal> = rows
            .iter()
            .filter(|(_, granted, ..)| *granted == 0)
            .map(|(key, _, tat, interval, burst)| {
                let retry_ms = tat - interval * i64::from(burst - 1);
                Ok(BudgetRefusal { key: key.clone(), retry_at: time(retry_ms)? })
            })
            .collect::<StoreResult<_>>()?;
        if !refused.is_empty() {
            // The send will not happen: give back the charge of every budget that passed.
            for (key, ..) in rows.iter().filter(|(_, granted, ..)| *granted == 1) {
                sqlx::query("UPDATE sms_budgets SET tat_ms = tat_ms - interval_ms WHERE key = $1")
                    .bind(key.as_str())
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(refused)
    }

    #[tracing::instrument(skip_all)]
    async fn guard_figures(&self, query: &GuardQuery) -> StoreResult<GuardFigures> {
        let (prefix, country) = (prefix_key(&query.prefix), country_key(&query.country));
        let rows: Vec<FigureRow> = sqlx::query_as(FIGURES)
            .bind(prefix.as_str())
            .bind(country.as_str())
            .bind(query.short_since_ms)
            .bind(query.long_since_ms)
            .bind(query.prefix.as_str())
            .fetch_all(self.pool())
            .await?;
        let mut figures = GuardFigures {
            prefix: ScopeCounts { key: query.prefix.clone(), ..ScopeCounts::default() },
            country: ScopeCounts { key: query.country.clone(), ..ScopeCounts::default() },
            override_: None,
        };
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        for (key, a, b, c, d, action, ticket, reason, set_by) in rows {
            if key == "override" {
                let action = action.unwrap_or_default();
                figures.override_ = Some(Override {
                    action: OverrideAction::from_db(&action).ok_or_else(|| corrupt("guard override", &action))?,
                    until: time(a)?,
                    set_at: time(b)?,
                    ticket_id: ticket.unwrap_or_default(),
                    reason: reason.unwrap_or_default(),
                    set_by: set_by.unwrap_or_default(),
                });
                continue;
            }
            let scope = if key == prefix {
                &mut figures.prefix
            } else if key == country {
                &mut figures.country
            } else {
                return Err(corrupt("guard key", &key));
            };
            scope.short = Counts { sends: count(a), approvals: count(b) };
            scope.long = Counts { sends: count(c), approvals: count(d) };
        }
        Ok(figures)
    }

    #[tracing::instrument(skip_all)]
    async fn count_guard(
        &self,
        prefix: &str,
        country: &str,
        bucket_ms: i64,
        sends: u32,
        approvals: u32,
    ) -> StoreResult<()> {
        let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        // The prefix's row before the country's, in every statement: concurrent counts never wait in a circle.
        sqlx::query(
            "INSERT INTO guard_counts (key, bucket_ms, sends, approvals) VALUES ($1, $3, $4, $5), ($2, $3, $4, $5)
             ON CONFLICT (key, bucket_ms) DO UPDATE SET sends = guard_counts.sends + excluded.sends,
                                                        approvals = guard_counts.approvals + excluded.approvals",
        )
        .bind(prefix_key(prefix))
        .bind(country_key(country))
        .bind(bucket_ms)
        .bind(n(sends))
        .bind(n(approvals))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn set_guard_override(
        &self,
        prefix: &str,
        value: Option<&Override>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<(Option<Override>, AuditEvent)> {
        let mut tx = begin(self.pool()).await?;
        Self::lock_chain(&mut tx).await?;
        let previous: Option<(String, i64, String, String, String, i64)> = sqlx::query_as(
            "SELECT action, until_ms, ticket_id, reason, set_by, set_at_ms FROM guard_overrides WHERE prefix = $1",
        )
        .bind(prefix)
        .fetch_optional(&mut *tx)
        .await?;
        let previous = match previous {
            Some((action, until, ticket_id, reason, set_by, set_at)) => Some(Override {
                action: OverrideAction::from_db(&action).ok_or_else(|| corrupt("guard override", &action))?,
                until: time(until)?,
                ticket_id,
                reason,
                set_by,
                set_at: time(set_at)?,
            }),
            None => None,
        };
        match value {
            Some(o) => {
                sqlx::query(
                    "INSERT INTO guard_overrides (prefix, action, until_ms, ticket_id, reason, set_by, set_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (prefix) DO UPDATE SET action = excluded.action, until_ms = excluded.until_ms,
                         ticket_id = excluded.ticket_id, reason = excluded.reason, set_by = excluded.set_by,
                         set_at_ms = excluded.set_at_ms",
                )
                .bind(prefix)
                .bind(o.action.as_str())
                .bind(o.until.timestamp_millis())
                .bind(o.ticket_id.as_str())
                .bind(o.reason.as_str())
                .bind(o.set_by.as_str())
                .bind(o.set_at.timestamp_millis())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM guard_overrides WHERE prefix = $1").bind(prefix).execute(&mut *tx).await?;
            }
        }
        let event = Self::append(&mut tx, event, key).await?;
        tx.commit().await?;
        Ok((previous, event))
    }

    async fn purge_guard(&self, before_ms: i64, now: DateTime<Utc>) -> StoreResult<u64> {
        let now = now.timestamp_millis();
        let counts = sqlx::query("DELETE FROM guard_counts WHERE bucket_ms < $1").bind(before_ms).execute(self.pool());
        let counts = DB::rows_affected(&counts.await?);
        let overrides = sqlx::query("DELETE FROM guard_overrides WHERE until_ms < $1").bind(now).execute(self.pool());
        let overrides = DB::rows_affected(&overrides.await?);
        let budgets = sqlx::query("DELETE FROM sms_budgets WHERE tat_ms < $1").bind(now).execute(self.pool());
        let budgets = DB::rows_affected(&budgets.await?);
        Ok(counts + overrides + budgets)
    }
}
