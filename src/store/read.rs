//! Read-only access for the CLI, the backtest and the start-up rebuild: readers
//! open their own connection (WAL: they never block the writer).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::minutes::first_id_since;
use super::schema::{
    BODY_COLUMNS, EXACT_REPLAY_VERSION, HOLD_COLUMNS_VERSION, PARTS_VERSION, RESERVES_VERSION,
};
use super::{LoggedDecision, StoreError, sqlite};
use crate::journal::seen::Seen;
use crate::ledger::{AuthMeta, Fact};
use crate::signals::{self, SignalSource, SignalState};

pub(super) fn read_only(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Sqlite {
            path: path.to_path_buf(),
            message: "no such file".into(),
        });
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite(path))?;
    super::integrity::check(&conn, path)?;
    Ok(conn)
}

/// A hold's decision-row columns, before its amount and window time.
const HELD_COLUMNS: &str = "d.event_id, d.authorization_id, d.card, d.cardholder, d.currency,
                            d.merchant_category, d.merchant_mcc";

/// Reads the ledger facts of the database at `path` without the writer (for
/// `cardgate ledger show`, which may run beside a live server), optionally only
/// those of one card's cardholder: `ledger_facts` in commit order, then the holds
/// kept beside decision rows in decision order (`ledger_reserves`, then the rows'
/// own `hold_*` columns, which every hold since schema 10 uses). The ledger is
/// order-independent but for reserves among themselves, and each place holds only
/// reserves written after every one in the place before it.
pub fn read_facts(path: &Path, cardholder: Option<&str>) -> Result<Vec<Fact>, StoreError> {
    let mut out = Vec::new();
    for_each_fact(path, cardholder, |fact| out.push(fact))?;
    Ok(out)
}

/// [`read_facts`], each fact handed to `f` as it is read instead of collected:
/// a start-up applies a large ledger's facts without holding all of them at once
/// (977,939 facts: the start's peak resident memory 831 → 508 MB). Returns how many
/// were read.
pub fn for_each_fact(
    path: &Path,
    cardholder: Option<&str>,
    mut f: impl FnMut(Fact),
) -> Result<usize, StoreError> {
    let conn = read_only(path)?;
    let err = sqlite(path);
    let mut stmt = conn
        .prepare(
            "SELECT seq, body FROM ledger_facts WHERE ?1 IS NULL OR cardholder = ?1 ORDER BY seq",
        )
        .map_err(&err)?;
    let rows = stmt
        .query_map(params![cardholder], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(&err)?;
    let mut n = 0;
    for row in rows {
        let (seq, body) = row.map_err(&err)?;
        let fact = serde_json::from_slice(&body).map_err(|e| StoreError::BadFact {
            path: path.to_path_buf(),
            seq,
            message: e.to_string(),
        })?;
        f(fact);
        n += 1;
    }
    let version = schema_version(&conn, path)?;
    if version < RESERVES_VERSION {
        return Ok(n);
    }
    let mut places = vec![format!(
        "SELECT {HELD_COLUMNS}, r.amount, r.window_at
         FROM ledger_reserves r JOIN decisions d ON d.id = r.decision_id
         WHERE ?1 IS NULL OR d.cardholder = ?1
         ORDER BY r.decision_id"
    )];
    if version >= HOLD_COLUMNS_VERSION {
        places.push(format!(
            "SELECT {HELD_COLUMNS}, d.hold_amount, d.hold_window_at FROM decisions d
             WHERE d.hold_amount IS NOT NULL AND (?1 IS NULL OR d.cardholder = ?1)
             ORDER BY d.id"
        ));
    }
    for sql in places {
        let mut stmt = conn.prepare(&sql).map_err(&err)?;
        let rows = stmt
            .query_map(params![cardholder], |r| {
                Ok(Fact::Reserve {
                    event_id: r.get(0)?,
                    auth: AuthMeta {
                        id: r.get(1)?,
                        card: r.get(2)?,
                        cardholder: r.get(3)?,
                        currency: r.get(4)?,
                        category: r.get(5)?,
                        mcc: r.get(6)?,
                        created: r.get(8)?,
                    },
                    amount: r.get(7)?,
                })
            })
            .map_err(&err)?;
        for fact in rows {
            f(fact.map_err(&err)?);
            n += 1;
        }
    }
    Ok(n)
}

/// The cardholder of `card`, from the stored facts or, failing those, the
/// decision log (every decided request names both).
pub fn cardholder_of(path: &Path, card: &str) -> Result<Option<String>, StoreError> {
    let conn = read_only(path)?;
    let found = conn
        .query_row(
            "SELECT cardholder FROM ledger_facts WHERE card = ?1 LIMIT 1",
            params![card],
            |r| r.get(0),
        )
        .optional()
        .map_err(sqlite(path))?;
    if found.is_some() {
        return Ok(found);
    }
    conn.query_row(
        "SELECT cardholder FROM decisions WHERE card = ?1 LIMIT 1",
        params![card],
        |r| r.get(0),
    )
    .optional()
    .map_err(sqlite(path))
}

/// Which decision-log rows a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionFilter {
    /// Decided at or after (Unix seconds).
    pub since: Option<i64>,
    /// Decided before (Unix seconds).
    pub until: Option<i64>,
    /// Only this cardholder's rows.
    pub cardholder: Option<String>,
}

/// [`Store::decision_log`] of the database at `path`, read-only without the writer,
/// all rows in memory (tests, small logs; the backtest streams with
/// [`for_each_decision`]).
pub fn read_decision_log(
    path: &Path,
    since: Option<i64>,
) -> Result<Vec<LoggedDecision>, StoreError> {
    let mut out = Vec::new();
    let filter = DecisionFilter {
        since,
        ..DecisionFilter::default()
    };
    for_each_decision(path, &filter, |row| {
        out.push(row);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// How many rows [`for_each_decision`] would visit (for progress output).
pub fn count_decisions(path: &Path, filter: &DecisionFilter) -> Result<u64, StoreError> {
    let conn = read_only(path)?;
    let first = first_id_since(&conn, filter.since).map_err(sqlite(path))?;
    conn.query_row(
        "SELECT COUNT(*) FROM decisions
         WHERE id >= ?4 AND decided_at >= ?1 AND decided_at < ?2
           AND (?3 IS NULL OR cardholder = ?3)",
        params![
            filter.since.unwrap_or(i64::MIN),
            filter.until.unwrap_or(i64::MAX),
            filter.cardholder,
            first
        ],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| u64::try_from(n).unwrap_or(0))
    .map_err(sqlite(path))
}

/// Streams the decision-log rows of the database at `path` that pass `filter`,
/// oldest first, read-only (it may run beside a live server); `f` stops it early
/// with `Break`. Memory stays one row whatever the log's size. A file written
/// before exact replay gives every row format 0.
pub fn for_each_decision(
    path: &Path,
    filter: &DecisionFilter,
    mut f: impl FnMut(LoggedDecision) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let conn = read_only(path)?;
    let err = sqlite(path);
    let version = schema_version(&conn, path)?;
    let first = first_id_since(&conn, filter.since).map_err(&err)?;
    let sql = format!(
        "SELECT id, event_id, authorization_id, card, cardholder, amount, currency,
                merchant_category, merchant_mcc, merchant_country, merchant_name,
                approved, approved_amount, reason, rule, ruleset, latency_us,
                decided_at, {}, spend_json, shadow_rules, {}
         FROM decisions
         WHERE id >= ?4 AND +decided_at >= ?1 AND +decided_at < ?2
           AND (?3 IS NULL OR cardholder = ?3)
         ORDER BY id",
        if version >= PARTS_VERSION {
            BODY_COLUMNS
        } else {
            "event_json, NULL, NULL"
        },
        if version >= EXACT_REPLAY_VERSION {
            "format, seen"
        } else {
            "0, NULL"
        }
    );
    // The unary `+` keeps SQLite off the `decided_at` index of a file older than
    // schema 11: through it, `ORDER BY id` would sort every row, events
    // included, before the first one is returned; the rowid scan streams them in
    // order, from the first id the minute table allows.
    let mut stmt = conn.prepare(&sql).map_err(&err)?;
    let mut rows = stmt
        .query(params![
            filter.since.unwrap_or(i64::MIN),
            filter.until.unwrap_or(i64::MAX),
            filter.cardholder,
            first
        ])
        .map_err(&err)?;
    while let Some(r) = rows.next().map_err(&err)? {
        let id: i64 = r.get(0).map_err(&err)?;
        let event_json = super::parts::join(
            r.get(18).map_err(&err)?,
            r.get(19).map_err(&err)?,
            r.get(20).map_err(&err)?,
        )
        .ok_or_else(|| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("decision {id}: its body's card object lies outside it"),
        })?;
        let row = LoggedDecision {
            id,
            event_id: r.get(1).map_err(&err)?,
            authorization_id: r.get(2).map_err(&err)?,
            card: r.get(3).map_err(&err)?,
            cardholder: r.get(4).map_err(&err)?,
            amount: r.get(5).map_err(&err)?,
            currency: r.get(6).map_err(&err)?,
            merchant_category: r.get(7).map_err(&err)?,
            merchant_mcc: r.get(8).map_err(&err)?,
            merchant_country: r.get(9).map_err(&err)?,
            merchant_name: r.get(10).map_err(&err)?,
            approved: r.get(11).map_err(&err)?,
            approved_amount: r.get(12).map_err(&err)?,
            reason: r.get(13).map_err(&err)?,
            rule: r.get(14).map_err(&err)?,
            ruleset: r.get(15).map_err(&err)?,
            latency_us: r.get(16).map_err(&err)?,
            decided_at: r.get(17).map_err(&err)?,
            event_json: event_json.into(),
            spend_json: r.get(21).map_err(&err)?,
            shadow_rules: r.get(22).map_err(&err)?,
            format: r.get(23).map_err(&err)?,
            seen: r
                .get::<_, Option<Vec<u8>>>(24)
                .map_err(&err)?
                .unwrap_or_default(),
            blobs: Vec::new(),
        };
        if f(row).is_break() {
            break;
        }
    }
    Ok(())
}

/// Every body the decision log names by hash (program controls, overrides); empty
/// for a file written before exact replay.
pub fn read_decision_blobs(path: &Path) -> Result<HashMap<i64, Vec<u8>>, StoreError> {
    let conn = read_only(path)?;
    if schema_version(&conn, path)? < EXACT_REPLAY_VERSION {
        return Ok(HashMap::new());
    }
    let err = sqlite(path);
    let mut stmt = conn
        .prepare("SELECT hash, body FROM decision_blobs")
        .map_err(&err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .map_err(&err)?;
    rows.collect::<Result<HashMap<_, _>, _>>().map_err(&err)
}

fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite(path))
}

/// Rebuilds the behavioural signals from the decision log at `path`: each card's
/// first decision, then the last `signals::DAYS` days of decisions before `now`,
/// in log order — what an uninterrupted run would hold. Returns the rows replayed.
pub fn rebuild_signals(path: &Path, state: &SignalState, now: i64) -> Result<usize, StoreError> {
    let conn = read_only(path)?;
    let err = sqlite(path);
    let mut first = conn
        .prepare("SELECT card, MIN(decided_at) FROM decisions GROUP BY card")
        .map_err(&err)?;
    let mut rows = first.query([]).map_err(&err)?;
    while let Some(r) = rows.next().map_err(&err)? {
        let card: String = r.get(0).map_err(&err)?;
        state.first_seen(&card, r.get(1).map_err(&err)?);
    }
    let version = schema_version(&conn, path)?;
    let exact = version >= EXACT_REPLAY_VERSION;
    let since = now - signals::DAYS * 86_400;
    let first = first_id_since(&conn, Some(since)).map_err(&err)?;
    let sql = format!(
        "SELECT card, cardholder, amount, approved, approved_amount, merchant_country,
                merchant_name, decided_at, {}
         FROM decisions WHERE id >= ?2 AND +decided_at >= ?1 ORDER BY id",
        if exact { "seen" } else { "NULL" }
    );
    let mut stmt = conn.prepare(&sql).map_err(&err)?;
    let mut rows = stmt.query(params![since, first]).map_err(&err)?;
    let mut n = 0;
    while let Some(r) = rows.next().map_err(&err)? {
        let card: String = r.get(0).map_err(&err)?;
        let cardholder: String = r.get(1).map_err(&err)?;
        let country: String = r.get(5).map_err(&err)?;
        let name: String = r.get(6).map_err(&err)?;
        let seen = r
            .get::<_, Option<Vec<u8>>>(8)
            .map_err(&err)?
            .and_then(|b| Seen::decode(&b).ok());
        // Rows from before the replay record lack the merchant's network id: keyed
        // by name, as the signals would for a merchant without one.
        let (merchant, at) = match &seen {
            Some(s) => (s.merchant, s.at),
            None => (signals::merchant_key(&name), r.get(7).map_err(&err)?),
        };
        let approved: bool = r.get(3).map_err(&err)?;
        state.note(&signals::Observation {
            key: signals::Key {
                card: &card,
                cardholder: &cardholder,
                merchant,
            },
            country: signals::country(&country),
            amount: r.get(2).map_err(&err)?,
            approved_amount: r.get(4).map_err(&err)?,
            declined: !approved,
            now: at,
        });
        n += 1;
    }
    Ok(n)
}
