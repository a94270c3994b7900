//! [`journal::DecisionLog`] on PostgreSQL: the decisions explorer's search and the
//! review page's backtest window, read from the `decisions` table all replicas
//! write. The twin of `store/decisions.rs` (SQLite); rows are mapped by
//! `journal.rs` (the columns and `decision_of` the CLI backtest streams with),
//! and the bodies rows name by hash come from its `read_decision_blobs`.
//!
//! Admin reads, seconds apart: each takes a pooled connection of the replica's
//! pool for one statement.

use std::collections::HashMap;

use super::journal::{DECISION_COLUMNS, decision_of, read_decision_blobs};
use super::{Database, error_text};
use crate::journal::{DecisionLog, DecisionQuery, LogReadError, LoggedDecision, MAX_SEARCH};

type LogFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, LogReadError>> + Send + 'a>>;

/// The decision log of a shared database.
#[derive(Debug, Clone)]
pub struct PgDecisionLog {
    db: Database,
}

impl PgDecisionLog {
    /// The log in `db` (connected, migrated).
    pub fn new(db: Database) -> Self {
        PgDecisionLog { db }
    }

    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<LoggedDecision>, LogReadError> {
        let failed = |e: tokio_postgres::Error| LogReadError(error_text(&e));
        let client = self.db.client().await.map_err(LogReadError)?;
        let rows = client.query(sql, params).await.map_err(failed)?;
        rows.iter()
            .map(|r| decision_of(r).map_err(failed))
            .collect()
    }
}

impl DecisionLog for PgDecisionLog {
    fn search<'a>(&'a self, q: &'a DecisionQuery) -> LogFuture<'a, (Vec<LoggedDecision>, bool)> {
        Box::pin(async move {
            let limit = q.limit.clamp(1, MAX_SEARCH);
            // One statement for every combination, as on SQLite: an unset filter
            // is NULL and matches all. A rule matches the deciding rule or any
            // shadow match; `shadow_rules` is a JSON array of rule names, and rule
            // names are ASCII letters, digits and `-_.:` (`rules::` refuses
            // others), so the quoted name occurs in the text exactly when it is an
            // element — and a text search cannot fail on a malformed row the way
            // a `::jsonb` cast would.
            let sql = format!(
                "SELECT {DECISION_COLUMNS} FROM decisions
                 WHERE ($1::text IS NULL OR authorization_id = $1)
                   AND ($2::text IS NULL OR card = $2)
                   AND ($3::text IS NULL OR cardholder = $3)
                   AND ($4::text IS NULL OR reason = $4)
                   AND ($5::text IS NULL OR rule = $5
                        OR strpos(shadow_rules, '\"' || $5 || '\"') > 0)
                   AND decided_at >= $6
                   AND id < $7
                 ORDER BY id DESC LIMIT $8"
            );
            let mut out = self
                .rows(
                    &sql,
                    &[
                        &q.authorization,
                        &q.card,
                        &q.cardholder,
                        &q.reason,
                        &q.rule,
                        &q.since.unwrap_or(i64::MIN),
                        &q.before_id.unwrap_or(i64::MAX),
                        &(i64::from(limit) + 1),
                    ],
                )
                .await?;
            let more = out.len() > limit as usize;
            out.truncate(limit as usize);
            Ok((out, more))
        })
    }

    fn get(&self, id: i64) -> LogFuture<'_, Option<LoggedDecision>> {
        Box::pin(async move {
            let sql = format!("SELECT {DECISION_COLUMNS} FROM decisions WHERE id = $1");
            Ok(self.rows(&sql, &[&id]).await?.into_iter().next())
        })
    }

    fn recent(&self, since: i64, max: usize) -> LogFuture<'_, (Vec<LoggedDecision>, bool)> {
        Box::pin(async move {
            let cap = i64::try_from(max).unwrap_or(i64::MAX).saturating_add(1);
            // The newest `max`, handed back oldest first like the CLI's replay.
            let sql = format!(
                "SELECT {DECISION_COLUMNS} FROM decisions WHERE decided_at >= $1
                 ORDER BY id DESC LIMIT $2"
            );
            let mut out = self.rows(&sql, &[&since, &cap]).await?;
            let more = out.len() > max;
            out.truncate(max);
            out.reverse();
            Ok((out, more))
        })
    }

    fn blobs(&self) -> LogFuture<'_, HashMap<i64, Vec<u8>>> {
        Box::pin(async move { read_decision_blobs(&self.db).await.map_err(LogReadError) })
    }
}
