//! [`crate::ledger::Holds`] on PostgreSQL: the spend snapshot is one read, the
//! reserve one call of `cardgate_reserve` and a lifecycle fact one call of
//! `cardgate_apply` (see `ledger_schema.rs`), so every replica decides against
//! every other's holds and the database alone decides whether a hold fits.
//!
//! Per decision: two round trips, the snapshot (a read: `decide()` must see the
//! spend of all replicas) and the reserve (the atomic re-check under the
//! cardholder's row lock, the hold, and the remembered answer). The limits the
//! reserve re-checks are computed here exactly as the in-memory ledger computes
//! them (`decision::interval_limits`) and handed over as arrays; the window of
//! each is passed as `[start, next start)` of the request's time.

use tokio_postgres::Row;

use super::{Database, error_text};
use crate::decision::{
    self, AuthRequest, Currency, Decision, Interval, Level, MerchantCategory, ProgramControls,
    Reason, Source, category_by_mcc, category_by_name,
};
use crate::ledger::{
    Applied, AuthMeta, AuthStatus, Fact, Holds, HoldsError, HoldsFuture, Reservation,
    SnapshotTotal, SpendSnapshot, WINDOWS, window_start,
};
use crate::metrics as m;

const DAY: i64 = 86_400;

// The two statements of every decision are prepared once per pooled connection
// (`prepare_cached`): sent as text, each call cost a parse/describe round trip
// and the server's parse, analysis and planning before it ran (the snapshot's
// planning alone took longer than its execution).

/// Per interval window the spend of the cardholder's records by own card,
/// currency and category (rows `i` >= 0), from the window totals
/// (`ledger_windows`: a few rows per window, however long the cardholder's
/// history), and the velocity counts of the card's authorizations in the last
/// hour (-1) and day (-2), both from one read of the card's last day.
pub(super) const SNAPSHOT: &str = "SELECT w.i, r.card = $2, r.currency, r.category, r.mcc,
        SUM(r.spend)::BIGINT
 FROM unnest($3::int[], $4::bigint[], $5::bigint[]) AS w(i, lo, hi)
 JOIN ledger_windows r ON r.cardholder = $1
      AND r.lo = w.lo AND r.hi = w.hi AND r.spend <> 0
 GROUP BY 1, 2, 3, 4, 5
 UNION ALL
 SELECT v.i, FALSE, '', '', '', v.n
 FROM (SELECT COUNT(*) FILTER (WHERE created > $6::bigint - 3600) AS hour, COUNT(*) AS day
       FROM ledger_records
       WHERE cardholder = $1 AND card = $2 AND from_auth
         AND created > $6::bigint - 86400 AND created <= $6::bigint) c,
      LATERAL (VALUES (-1, c.hour), (-2, c.day)) AS v(i, n)";

/// [`SNAPSHOT`]'s window arguments for time `at`: each of [`WINDOWS`] as its
/// index and its `[lo, hi)` bounds.
pub(super) fn snapshot_windows(at: i64) -> (Vec<i32>, Vec<i64>, Vec<i64>) {
    let (mut index, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
    for (i, interval) in (0i32..).zip(WINDOWS) {
        let (l, h) = window_bounds(interval, at);
        index.push(i);
        lo.push(l);
        hi.push(h);
    }
    (index, lo, hi)
}

/// The reserve: one call of `cardgate_reserve` (`ledger_schema.rs`).
const RESERVE: &str = "SELECT o_outcome, o_amount, o_cut, o_reason FROM cardgate_reserve(
     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
     $16, $17, $18, $19, $20, $21, $22, $23, $24)";

/// The holds of all replicas, decided by one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgHolds {
    db: Database,
}

impl PgHolds {
    /// Holds on a connected, migrated database.
    pub fn new(db: Database) -> Self {
        PgHolds { db }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }
}

fn unavailable(e: &tokio_postgres::Error) -> HoldsError {
    HoldsError::Unavailable(error_text(e))
}

/// `[start, end)` of the `interval` window holding `at`. `all_time` is every
/// time; the others end where the next window starts.
pub(super) fn window_bounds(interval: Interval, at: i64) -> (i64, i64) {
    let lo = window_start(interval, at);
    match interval {
        Interval::PerAuthorization => (lo, lo.saturating_add(1)),
        Interval::Daily => (lo, lo + DAY),
        Interval::Weekly => (lo, lo + 7 * DAY),
        // A month is at most 31 days and a year 366: a day past them is in the next.
        Interval::Monthly => (lo, window_start(interval, lo + 31 * DAY)),
        Interval::Yearly => (lo, window_start(interval, lo + 366 * DAY)),
        Interval::AllTime => (i64::MIN, i64::MAX),
    }
}

/// Category ids as the SQL filters compare them (the in-memory `CatKey`).
fn cat_ids(category: &str, mcc: &str) -> (Option<i32>, Option<i32>) {
    (
        category_by_name(category).map(i32::from),
        category_by_mcc(mcc).map(i32::from),
    )
}

/// `Reason` from its `as_str` (the answer a first delivery gave, for a duplicate).
fn reason_of(text: &str) -> Reason {
    [
        Reason::Approved,
        Reason::CardInactive,
        Reason::CardCanceled,
        Reason::CardholderInactive,
        Reason::CardholderBlocked,
        Reason::CategoryBlocked,
        Reason::CategoryNotAllowed,
        Reason::CountryBlocked,
        Reason::CountryNotAllowed,
        Reason::CardPresenceBlocked,
        Reason::CardPresenceNotAllowed,
        Reason::MccBlocked,
        Reason::SpendingLimit,
        Reason::CurrencyMismatch,
        Reason::Rule,
        Reason::Review,
    ]
    .into_iter()
    .find(|r| r.as_str() == text)
    .unwrap_or(Reason::SpendingLimit)
}

impl Holds for PgHolds {
    fn snapshot<'a>(
        &'a self,
        auth: &'a AuthRequest<'a>,
        at: i64,
    ) -> HoldsFuture<'a, SpendSnapshot> {
        Box::pin(async move {
            let (index, lo, hi) = snapshot_windows(at);
            let client = self.db.client().await.map_err(HoldsError::Unavailable)?;
            let statement = client
                .prepare_cached(SNAPSHOT)
                .await
                .map_err(|e| unavailable(&e))?;
            let rows = client
                .query(
                    &statement,
                    &[&auth.cardholder.id, &auth.card.id, &index, &lo, &hi, &at],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            snapshot_of(&rows).map_err(|e| unavailable(&e))
        })
    }

    fn reserve<'a>(
        &'a self,
        event_id: &'a str,
        auth: &'a AuthRequest<'a>,
        program: &'a ProgramControls,
        at: i64,
        decision: Decision,
    ) -> HoldsFuture<'a, Reservation> {
        Box::pin(async move { self.reserve_in(event_id, auth, program, at, decision).await })
    }

    fn apply<'a>(&'a self, fact: &'a Fact) -> HoldsFuture<'a, Applied> {
        Box::pin(async move {
            fact.validate()?;
            let client = self.db.client().await.map_err(HoldsError::Unavailable)?;
            let outcome = apply_with(&**client, fact)
                .await
                .map_err(|e| unavailable(&e))?;
            Ok(match outcome.as_str() {
                "duplicate" => Applied::Duplicate,
                "unknown_authorization" => Applied::UnknownAuthorization,
                _ => Applied::Applied,
            })
        })
    }

    fn cancel(&self, _fact: &Fact) {
        // Never called: `durable()` is true, a hold is committed when `reserve`
        // answers and stays (the conservative side; Stripe's events release it).
    }

    fn durable(&self) -> bool {
        true
    }
}

/// A fact as the arguments of `cardgate_apply`, in its order.
pub(super) struct FactColumns<'a> {
    pub(super) event_id: &'a str,
    pub(super) kind: &'static str,
    pub(super) cardholder: &'a str,
    pub(super) record: String,
    pub(super) card: &'a str,
    pub(super) created: i64,
    pub(super) currency: &'a str,
    pub(super) category: &'a str,
    pub(super) mcc: &'a str,
    pub(super) cat_name: Option<i32>,
    pub(super) cat_mcc: Option<i32>,
    pub(super) amount: i64,
    pub(super) event_created: Option<i64>,
    pub(super) approved: Option<bool>,
    pub(super) status: Option<&'static str>,
    pub(super) approved_requests: Option<i32>,
    pub(super) txn_id: Option<&'a str>,
    pub(super) authorization: Option<&'a str>,
}

impl<'a> FactColumns<'a> {
    pub(super) fn of(fact: &'a Fact) -> Self {
        let record = fact.record_id();
        // (kind, auth-or-transaction columns, authorization state, transaction ids)
        let (kind, cardholder, card, created, currency, category, mcc, amount) = match fact {
            Fact::Reserve { auth, amount, .. } | Fact::Authorization { auth, amount, .. } => (
                if matches!(fact, Fact::Reserve { .. }) {
                    "reserve"
                } else {
                    "authorization"
                },
                &auth.cardholder,
                &auth.card,
                auth.created,
                &auth.currency,
                &auth.category,
                &auth.mcc,
                *amount,
            ),
            Fact::Transaction {
                card,
                cardholder,
                created,
                currency,
                category,
                mcc,
                amount,
                ..
            } => (
                "transaction",
                cardholder,
                card,
                *created,
                currency,
                category,
                mcc,
                *amount,
            ),
        };
        let (event_created, approved, status, approved_requests) = match fact {
            Fact::Authorization {
                event_created,
                approved,
                status,
                approved_requests,
                ..
            } => (
                Some(*event_created),
                Some(*approved),
                Some(status.as_str()),
                Some(i32::try_from(*approved_requests).unwrap_or(i32::MAX)),
            ),
            _ => (None, None, None, None),
        };
        let (txn_id, authorization) = match fact {
            Fact::Transaction {
                txn_id,
                authorization,
                ..
            } => (Some(txn_id.as_str()), authorization.as_deref()),
            _ => (None, None),
        };
        let (cat_name, cat_mcc) = cat_ids(category, mcc);
        FactColumns {
            event_id: fact.event_id(),
            kind,
            cardholder,
            record,
            card,
            created,
            currency,
            category,
            mcc,
            cat_name,
            cat_mcc,
            amount,
            event_created,
            approved,
            status,
            approved_requests,
            txn_id,
            authorization,
        }
    }
}

/// Calls `cardgate_apply` for one validated fact; answers its outcome text.
pub(super) async fn apply_with(
    client: &impl tokio_postgres::GenericClient,
    fact: &Fact,
) -> Result<String, tokio_postgres::Error> {
    let c = FactColumns::of(fact);
    let row = client
        .query_one(
            "SELECT cardgate_apply($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                   $15, $16, $17, $18)",
            &[
                &c.event_id,
                &c.kind,
                &c.cardholder,
                &c.record,
                &c.card,
                &c.created,
                &c.currency,
                &c.category,
                &c.mcc,
                &c.cat_name,
                &c.cat_mcc,
                &c.amount,
                &c.event_created,
                &c.approved,
                &c.status,
                &c.approved_requests,
                &c.txn_id,
                &c.authorization,
            ],
        )
        .await?;
    row.try_get(0)
}

fn snapshot_of(rows: &[Row]) -> Result<SpendSnapshot, tokio_postgres::Error> {
    let mut velocity = (0, 0);
    let mut parsed = Vec::with_capacity(rows.len());
    for row in rows {
        let i: i32 = row.try_get(0)?;
        let amount: i64 = row.try_get::<_, Option<i64>>(5)?.unwrap_or(0);
        match i {
            -1 => velocity.0 = amount,
            -2 => velocity.1 = amount,
            _ => {
                let currency: &str = row.try_get(2)?;
                let (Some(interval), Some(currency)) = (
                    usize::try_from(i).ok().and_then(|i| WINDOWS.get(i)),
                    Currency::parse(currency),
                ) else {
                    continue;
                };
                parsed.push((
                    *interval,
                    row.try_get::<_, bool>(1)?,
                    currency,
                    row.try_get::<_, &str>(3)?,
                    row.try_get::<_, &str>(4)?,
                    amount,
                ));
            }
        }
    }
    Ok(SpendSnapshot::from_totals(
        parsed.iter().map(
            |&(interval, own_card, currency, category, mcc, amount)| SnapshotTotal {
                interval,
                own_card,
                currency,
                category,
                mcc,
                amount,
            },
        ),
        velocity,
    ))
}

impl PgHolds {
    async fn reserve_in(
        &self,
        event_id: &str,
        auth: &AuthRequest<'_>,
        program: &ProgramControls,
        at: i64,
        decision: Decision,
    ) -> Result<Reservation, HoldsError> {
        let wanted = decision.amount.unwrap_or(auth.amount);
        let approving = decision.approved && wanted > 0;
        let category = MerchantCategory::new(auth.merchant.category, auth.merchant.category_code);
        let limits = decision::interval_limits(auth, program, &category);
        let meta = AuthMeta {
            id: auth.id.to_string(),
            card: auth.card.id.to_string(),
            cardholder: auth.cardholder.id.to_string(),
            created: at,
            currency: auth.currency.as_str().to_string(),
            category: auth.merchant.category.to_string(),
            mcc: auth.merchant.category_code.to_string(),
        };
        if approving
            && (Fact::Reserve {
                event_id: event_id.to_string(),
                auth: meta.clone(),
                amount: wanted,
            })
            .validate()
            .is_err()
        {
            // As the in-memory ledger: what cannot be accounted is declined.
            return Ok(Reservation {
                decision: Decision::decline(
                    Reason::SpendingLimit,
                    Source::Control(Level::Program, "ledger"),
                ),
                fact: None,
            });
        }
        let l = LimitArrays::of(&limits, at);
        let (cn, cm) = cat_ids(auth.merchant.category, auth.merchant.category_code);
        let currency = auth.currency.as_str();
        let reason = decision.reason.as_str();
        let client = self.db.client().await.map_err(HoldsError::Unavailable)?;
        let statement = client
            .prepare_cached(RESERVE)
            .await
            .map_err(|e| unavailable(&e))?;
        let row = client
            .query_one(
                &statement,
                &[
                    &event_id,
                    &auth.cardholder.id,
                    &auth.id,
                    &auth.card.id,
                    &at,
                    &currency,
                    &auth.merchant.category,
                    &auth.merchant.category_code,
                    &cn,
                    &cm,
                    &approving,
                    &wanted,
                    &auth.is_amount_controllable,
                    &auth.cashback_amount,
                    &reason,
                    &l.card_scope,
                    &l.lo,
                    &l.hi,
                    &l.amount,
                    &l.filtered,
                    &l.cat_limit,
                    &l.cat_id,
                    &l.unk_limit,
                    &l.unk_name,
                ],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        let first = Stored {
            outcome: row.try_get(0).map_err(|e| unavailable(&e))?,
            granted: row.try_get(1).map_err(|e| unavailable(&e))?,
            cut: row.try_get(2).map_err(|e| unavailable(&e))?,
            reason: row.try_get(3).map_err(|e| unavailable(&e))?,
        };
        Ok(answer(
            event_id, auth, &limits, meta, wanted, decision, &first,
        ))
    }
}

/// What `cardgate_reserve` answered.
struct Stored<'r> {
    outcome: &'r str,
    granted: i64,
    /// 1-based index of the limit that cut or declined.
    cut: Option<i32>,
    /// The first answer's reason (duplicates).
    reason: Option<&'r str>,
}

/// The reservation `cardgate_reserve`'s answer stands for, built as
/// `Ledger::reserve` builds its own.
fn answer(
    event_id: &str,
    auth: &AuthRequest<'_>,
    limits: &[decision::IntervalLimit<'_>],
    meta: AuthMeta,
    wanted: i64,
    decision: Decision,
    first: &Stored<'_>,
) -> Reservation {
    let granted = first.granted;
    let cut_source = first
        .cut
        .and_then(|c| usize::try_from(c - 1).ok())
        .and_then(|c| limits.get(c))
        .map(|l| Source::Control(l.level, l.limit.interval.as_str()));
    let answer = match first.outcome {
        "passed" => decision,
        "declined" => {
            metrics::counter!(m::LEDGER_RESERVE_REFUSED).increment(1);
            Decision::decline(
                Reason::SpendingLimit,
                cut_source.unwrap_or(Source::Control(Level::Program, "ledger")),
            )
        }
        "held" => {
            let decision = match cut_source {
                Some(source) => {
                    metrics::counter!(m::LEDGER_RESERVE_REFUSED).increment(1);
                    Decision {
                        approved: true,
                        amount: Some(granted),
                        reason: Reason::SpendingLimit,
                        source: Some(source),
                    }
                }
                None => decision,
            };
            return Reservation {
                decision,
                fact: Some(Fact::Reserve {
                    event_id: event_id.to_string(),
                    auth: meta,
                    amount: granted,
                }),
            };
        }
        "duplicate" => duplicate_approval(decision, auth.amount, wanted, granted, cut_source),
        // "duplicate_declined": the first delivery was declined.
        _ if !decision.approved => decision,
        _ => Decision::decline(
            reason_of(first.reason.unwrap_or("")),
            cut_source.unwrap_or(Source::Control(Level::Program, "ledger")),
        ),
    };
    Reservation {
        decision: answer,
        fact: None,
    }
}

/// The interval limits of one request as `cardgate_reserve`'s parallel arrays
/// (limit `i` is element `i`, 1-based in SQL; category ids and unknown names
/// of a filtered limit are listed under its index).
#[derive(Default)]
struct LimitArrays<'a> {
    card_scope: Vec<bool>,
    lo: Vec<i64>,
    hi: Vec<i64>,
    amount: Vec<i64>,
    filtered: Vec<bool>,
    cat_limit: Vec<i32>,
    cat_id: Vec<i32>,
    unk_limit: Vec<i32>,
    unk_name: Vec<&'a str>,
}

impl<'a> LimitArrays<'a> {
    fn of(limits: &'a [decision::IntervalLimit<'a>], at: i64) -> Self {
        let mut out = LimitArrays::default();
        for (i, l) in (1i32..).zip(limits) {
            let (a, b) = window_bounds(l.limit.interval, at);
            out.card_scope
                .push(matches!(l.scope, decision::Scope::Card));
            out.lo.push(a);
            out.hi.push(b);
            out.amount.push(l.limit.amount);
            out.filtered.push(l.limit.categories.is_some());
            if let Some(set) = &l.limit.categories {
                for id in set.ids() {
                    out.cat_limit.push(i);
                    out.cat_id.push(i32::from(id));
                }
                for name in set.unknown_names() {
                    out.unk_limit.push(i);
                    out.unk_name.push(name);
                }
            }
        }
        out
    }
}

/// The answer to a request event another delivery already approved (and held):
/// the same approval and amount, whatever this delivery's own `decide()` saw (its
/// snapshot may include the first delivery's hold).
fn duplicate_approval(
    own: Decision,
    requested: i64,
    wanted: i64,
    granted: i64,
    cut: Option<Source>,
) -> Decision {
    match cut {
        Some(source) => Decision {
            approved: true,
            amount: Some(granted),
            reason: Reason::SpendingLimit,
            source: Some(source),
        },
        None if own.approved && wanted == granted => own,
        None => Decision {
            approved: true,
            amount: (granted != requested).then_some(granted),
            reason: Reason::Approved,
            source: None,
        },
    }
}

/// Reads stored facts, in arrival order, optionally one cardholder's (`ledger
/// show`, tests).
pub async fn read_facts(db: &Database, cardholder: Option<&str>) -> Result<Vec<Fact>, String> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT kind, event_id, cardholder, record_id, card, created, currency, category, mcc,
                    amount, event_created, approved, status, approved_requests, txn_id,
                    authorization_id
             FROM ledger_facts WHERE $1::text IS NULL OR cardholder = $1 ORDER BY seq",
            &[&cardholder],
        )
        .await
        .map_err(|e| error_text(&e))?;
    rows.iter()
        .map(|r| fact_of(r).map_err(|e| error_text(&e)))
        .collect()
}

/// Authorizations holding funds now, over all replicas (the
/// `cardgate_ledger_holds` gauge; the in-memory ledger's `Ledger::holds`).
pub async fn count_open_holds(db: &Database) -> Result<i64, String> {
    let client = db.client().await?;
    client
        .query_one("SELECT count(*) FROM ledger_records WHERE held > 0", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| error_text(&e))
}

/// The cardholder of `card`, from the stored facts.
pub async fn cardholder_of(db: &Database, card: &str) -> Result<Option<String>, String> {
    let client = db.client().await?;
    client
        .query_opt(
            "SELECT cardholder FROM ledger_facts WHERE card = $1 LIMIT 1",
            &[&card],
        )
        .await
        .map_err(|e| error_text(&e))?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(|e| error_text(&e))
}

fn fact_of(r: &Row) -> Result<Fact, tokio_postgres::Error> {
    let kind: &str = r.try_get(0)?;
    let event_id: String = r.try_get(1)?;
    let cardholder: String = r.try_get(2)?;
    let record_id: String = r.try_get(3)?;
    let card: String = r.try_get(4)?;
    let created: i64 = r.try_get(5)?;
    let currency: String = r.try_get(6)?;
    let category: String = r.try_get(7)?;
    let mcc: String = r.try_get(8)?;
    let amount: i64 = r.try_get(9)?;
    let auth = |id: String| AuthMeta {
        id,
        card: card.clone(),
        cardholder: cardholder.clone(),
        created,
        currency: currency.clone(),
        category: category.clone(),
        mcc: mcc.clone(),
    };
    Ok(match kind {
        "reserve" => Fact::Reserve {
            event_id,
            auth: auth(record_id),
            amount,
        },
        "authorization" => Fact::Authorization {
            event_id,
            event_created: r.try_get::<_, Option<i64>>(10)?.unwrap_or(0),
            auth: auth(record_id),
            approved: r.try_get::<_, Option<bool>>(11)?.unwrap_or(false),
            status: match r.try_get::<_, Option<&str>>(12)?.unwrap_or("closed") {
                "pending" => AuthStatus::Pending,
                "reversed" => AuthStatus::Reversed,
                "expired" => AuthStatus::Expired,
                _ => AuthStatus::Closed,
            },
            amount,
            approved_requests: u32::try_from(r.try_get::<_, Option<i32>>(13)?.unwrap_or(0))
                .unwrap_or(0),
        },
        _ => Fact::Transaction {
            event_id,
            txn_id: r.try_get::<_, Option<String>>(14)?.unwrap_or_default(),
            authorization: r.try_get(15)?,
            card: card.clone(),
            cardholder: cardholder.clone(),
            created,
            currency: currency.clone(),
            category: category.clone(),
            mcc: mcc.clone(),
            amount,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_hold_exactly_the_times_of_the_window() {
        // 2026-11-18 12:00 UTC, and the ends of months and years around it.
        for at in [
            1_795_003_200 + 12 * 3600,
            1_798_761_599,
            1_798_761_600,
            0,
            -1,
        ] {
            for interval in WINDOWS {
                let (lo, hi) = window_bounds(interval, at);
                assert!(lo <= at && at < hi, "{interval:?} {at}");
                if interval != Interval::AllTime {
                    assert_eq!(window_start(interval, lo), lo);
                    assert_eq!(window_start(interval, hi - 1), lo, "{interval:?}");
                    assert_eq!(window_start(interval, hi), hi, "{interval:?}");
                }
            }
        }
    }
}
