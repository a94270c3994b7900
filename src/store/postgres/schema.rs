//! The PostgreSQL schema: numbered migrations, applied at connect under an
//! advisory lock so that concurrent starts of replicas and tools are safe.
//!
//! Tables keep the SQLite schema's logical shape (the approvals tables of SQLite
//! migration 3) with PostgreSQL's types: `BIGINT` for Unix times, `BOOLEAN` for
//! flags, `TEXT` for JSON (kept byte for byte: an event body is signed as
//! written). SQLite's `rowid` order ("newest first") becomes an identity column
//! `seq`. Two guards SQLite gets from its single writer are indexes here:
//! at most one active rule per action, at most one open request per dedupe key.

use super::{Database, PostgresError, error_text};

/// Schema migrations; entry `i` moves the schema from version `i` to `i + 1`.
/// Append only: a released migration never changes.
pub const MIGRATIONS: &[&str] = &[
    // 1: two-party approvals (see `crate::approvals`): keys, rules, requests,
    // append-only security history, events and their outbox, overrides, allowances.
    "CREATE TABLE api_keys (
         seq        BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
         id         TEXT PRIMARY KEY,
         name       TEXT,
         role       TEXT NOT NULL,
         hash       TEXT NOT NULL UNIQUE,
         created    BIGINT NOT NULL,
         created_by TEXT NOT NULL,
         revoked_at BIGINT
     );
     CREATE TABLE approval_rules (
         seq     BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
         id      TEXT PRIMARY KEY,
         action  TEXT NOT NULL,
         body    TEXT NOT NULL,
         active  BOOLEAN NOT NULL,
         created BIGINT NOT NULL
     );
     CREATE UNIQUE INDEX approval_rules_one_active ON approval_rules (action) WHERE active;
     CREATE TABLE approval_requests (
         seq            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
         id             TEXT PRIMARY KEY,
         action         TEXT NOT NULL,
         params         TEXT NOT NULL,
         status         TEXT NOT NULL,
         requested_by   TEXT NOT NULL,
         requester_role TEXT NOT NULL,
         requester_name TEXT,
         rule_id        TEXT,
         rule_name      TEXT,
         reviewers      TEXT NOT NULL,
         reason         TEXT,
         created        BIGINT NOT NULL,
         expires_at     BIGINT NOT NULL,
         submitted_at   BIGINT,
         review         TEXT,
         result         TEXT,
         error          TEXT,
         transitions    TEXT NOT NULL DEFAULT '{}',
         dedupe         TEXT
     );
     CREATE INDEX approval_requests_status ON approval_requests (status, expires_at);
     CREATE UNIQUE INDEX approval_requests_one_open ON approval_requests (dedupe)
         WHERE dedupe IS NOT NULL
           AND status IN ('pending', 'requires_review', 'requires_execution');
     CREATE TABLE security_history (
         id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         type      TEXT NOT NULL,
         actor     TEXT NOT NULL,
         object_id TEXT NOT NULL,
         created   BIGINT NOT NULL,
         details   TEXT NOT NULL
     );
     CREATE FUNCTION security_history_append_only() RETURNS trigger
         LANGUAGE plpgsql AS $$
         BEGIN
             RAISE EXCEPTION 'security_history is append-only';
         END $$;
     CREATE TRIGGER security_history_append_only
         BEFORE UPDATE OR DELETE OR TRUNCATE ON security_history
         FOR EACH STATEMENT EXECUTE FUNCTION security_history_append_only();
     CREATE TABLE events (
         seq        BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
         id         TEXT PRIMARY KEY,
         type       TEXT NOT NULL,
         created    BIGINT NOT NULL,
         related_id TEXT NOT NULL,
         body       TEXT NOT NULL
     );
     CREATE TABLE outbox (
         id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         event_id        TEXT NOT NULL,
         endpoint        TEXT NOT NULL,
         attempts        BIGINT NOT NULL DEFAULT 0,
         next_attempt_ms BIGINT NOT NULL,
         delivered_ms    BIGINT,
         failed          BOOLEAN NOT NULL DEFAULT FALSE,
         last_error      TEXT
     );
     CREATE INDEX outbox_due ON outbox (next_attempt_ms) WHERE delivered_ms IS NULL AND NOT failed;
     CREATE INDEX outbox_event ON outbox (event_id);
     CREATE TABLE control_overrides (
         scope   TEXT NOT NULL,
         id      TEXT NOT NULL,
         body    TEXT NOT NULL,
         updated BIGINT NOT NULL,
         PRIMARY KEY (scope, id)
     );
     CREATE TABLE allowances (
         seq        BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
         id         TEXT PRIMARY KEY,
         card       TEXT NOT NULL,
         merchant   TEXT NOT NULL,
         amount     BIGINT NOT NULL,
         currency   TEXT NOT NULL,
         body       TEXT NOT NULL,
         created    BIGINT NOT NULL,
         expires_at BIGINT NOT NULL,
         used_at    BIGINT,
         used_by    TEXT
     );",
    // 2: the ledger (facts, per-authorization records, answered requests), the
    // decision log, and the functions that decide holds in the database.
    super::ledger_schema::LEDGER,
    // 3: exact replay (issue 16), as SQLite's migration 4: `format` says how `seen`
    // is encoded (0: written before exact replay); `seen` is what the decision saw
    // beyond its event body (`journal::seen`); bodies it names by hash are stored
    // once in `decision_blobs`.
    "ALTER TABLE decisions ADD COLUMN format BIGINT NOT NULL DEFAULT 0;
     ALTER TABLE decisions ADD COLUMN seen BYTEA;
     CREATE TABLE decision_blobs (hash BIGINT PRIMARY KEY, body BYTEA NOT NULL);",
    // 4: published authorization rule sets (newest row = live set); a claim
    // lease on allowances, so a one-time allowance passes one authorization
    // whichever replica the retries reach; and a change notification on the
    // tables replicas cache (`notify.rs` listens; the payload names the table).
    "CREATE TABLE rulesets (
         seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         version      TEXT NOT NULL,
         source       TEXT NOT NULL,
         published_at BIGINT NOT NULL,
         actor        TEXT NOT NULL
     );
     ALTER TABLE allowances ADD COLUMN claimed_by TEXT, ADD COLUMN claimed_until BIGINT;
     CREATE FUNCTION cardgate_changed() RETURNS trigger
         LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM pg_notify('cardgate_changes', TG_ARGV[0]);
             RETURN NULL;
         END $$;
     CREATE TRIGGER rulesets_changed AFTER INSERT OR UPDATE OR DELETE ON rulesets
         FOR EACH STATEMENT EXECUTE FUNCTION cardgate_changed('rulesets');
     CREATE TRIGGER control_overrides_changed AFTER INSERT OR UPDATE OR DELETE ON control_overrides
         FOR EACH STATEMENT EXECUTE FUNCTION cardgate_changed('overrides');
     CREATE TRIGGER allowances_changed AFTER INSERT OR UPDATE OR DELETE ON allowances
         FOR EACH STATEMENT EXECUTE FUNCTION cardgate_changed('allowances');
     CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
         FOR EACH STATEMENT EXECUTE FUNCTION cardgate_changed('keys');
     CREATE TRIGGER approval_rules_changed AFTER INSERT OR UPDATE OR DELETE ON approval_rules
         FOR EACH STATEMENT EXECUTE FUNCTION cardgate_changed('approval_rules');",
    // 5: API key expiry (Unix seconds; NULL: never, which keys created before
    // this migration keep).
    "ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;",
    // 6: a reserve that opens a record writes it directly instead of settling
    // it from its facts (the same row; see `ledger_schema.rs`).
    super::ledger_schema::RESERVE_FIRST_HOLD,
    // 7: window totals kept as records change (`ledger_windows`), so a snapshot
    // and a reserve read a cardholder's windows, not its whole history.
    super::ledger_schema::WINDOW_TOTALS,
];

/// The advisory-lock key migrations run under (any constant every cardgate
/// build agrees on; "cardgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x6361_7264_6761_7465;

/// Brings the schema up to [`MIGRATIONS`]`.len()`, all pending steps in one
/// transaction: either the database ends at the new version or it is untouched.
pub(super) async fn migrate(db: &Database) -> Result<(), PostgresError> {
    let fail = |e: tokio_postgres::Error| db.error(error_text(&e));
    let mut client = db.client().await.map_err(|m| db.error(m))?;
    let tx = client.transaction().await.map_err(fail)?;
    // Held until commit or rollback: a second replica starting now waits here,
    // then finds the schema current and does nothing.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS cardgate_schema (
             one     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
             version BIGINT NOT NULL
         )",
    )
    .await
    .map_err(fail)?;
    let found: i64 = tx
        .query_opt("SELECT version FROM cardgate_schema", &[])
        .await
        .map_err(fail)?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(fail)?
        .unwrap_or(0);
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if found > known {
        return Err(PostgresError::TooNew {
            db: db.name().to_string(),
            found,
            known,
        });
    }
    if found == known {
        return tx.commit().await.map_err(fail);
    }
    if found > 0 {
        // A step may rebuild ledger data (7 sums every ledger record: about 20 s
        // per million on a small machine), so a large database's start is not
        // silent while it runs, as SQLite's is not.
        tracing::info!(db = %db.name(), from = found, to = known,
            "store schema migrating; a large database may take a while (replicas starting now wait for it)");
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.batch_execute(sql).await.map_err(|e| {
            db.error(format!(
                "migration to schema version {version} failed: {}",
                error_text(&e)
            ))
        })?;
    }
    tx.execute(
        "INSERT INTO cardgate_schema (one, version) VALUES (TRUE, $1)
         ON CONFLICT (one) DO UPDATE SET version = excluded.version",
        &[&known],
    )
    .await
    .map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    tracing::info!(db = %db.name(), from = found, to = known, "store schema migrated");
    Ok(())
}
