//! The ledger totals a copy compares: computed on each side on its own — the
//! source by rebuilding the in-memory ledger from its facts (what `serve` does at
//! start), the target by SQL over the records the database derived.

use std::collections::{BTreeMap, BTreeSet};

use crate::ledger::{Fact, Ledger};

/// One currency's ledger totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrencyTotals {
    /// Authorizations (and unlinked transactions) the ledger accounts.
    pub authorizations: i64,
    /// Of them, those holding funds now.
    pub open_holds: i64,
    /// Funds held now.
    pub held: i64,
    /// Spend counted against limits (held + captured − refunded).
    pub spend: i64,
    /// Captured by transactions (sum of captures, refunds not netted).
    pub captured: i64,
}

/// One cardholder's ledger totals, all currencies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardholderTotals {
    /// Authorizations (and unlinked transactions) accounted.
    pub authorizations: i64,
    /// Spend counted against limits.
    pub spend: i64,
}

/// The ledger's totals on one side of a copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerTotals {
    /// Per currency (lower-case ISO code).
    pub currencies: BTreeMap<String, CurrencyTotals>,
    /// Per cardholder.
    pub cardholders: BTreeMap<String, CardholderTotals>,
}

/// The source's totals: its facts rebuilt into the in-memory ledger, as `serve`
/// rebuilds it at start, read back per card.
pub(super) fn source_totals(facts: &[Fact]) -> LedgerTotals {
    let ledger = Ledger::new();
    let mut cards = BTreeSet::new();
    let mut out = LedgerTotals::default();
    for fact in facts {
        // Validated by the caller: `apply` refuses nothing here.
        let _ = ledger.apply(fact);
        cards.insert(fact.card());
        if let Fact::Transaction {
            currency, amount, ..
        } = fact
            && *amount < 0
        {
            let c = out
                .currencies
                .entry(currency.to_ascii_lowercase())
                .or_default();
            c.captured = c.captured.saturating_sub(*amount);
        }
    }
    // The report's window totals are not needed; any time will do.
    for card in cards {
        let Some(report) = ledger.card_report(card, 0) else {
            continue;
        };
        for a in &report.authorizations {
            let c = out
                .currencies
                .entry(a.currency.as_str().to_string())
                .or_default();
            c.authorizations += 1;
            c.open_holds += i64::from(a.held > 0);
            c.held = c.held.saturating_add(a.held);
            c.spend = c.spend.saturating_add(a.spend);
            let h = out
                .cardholders
                .entry(report.cardholder.clone())
                .or_default();
            h.authorizations += 1;
            h.spend = h.spend.saturating_add(a.spend);
        }
    }
    out
}

/// The target's totals, from the records the database derived and its facts.
pub(super) async fn target_totals(
    client: &tokio_postgres::Client,
) -> Result<LedgerTotals, tokio_postgres::Error> {
    let mut out = LedgerTotals::default();
    for r in client
        .query(
            "SELECT lower(currency), count(*), count(*) FILTER (WHERE held > 0),
                    COALESCE(sum(held), 0)::BIGINT, COALESCE(sum(spend), 0)::BIGINT
             FROM ledger_records GROUP BY 1",
            &[],
        )
        .await?
    {
        let c = out.currencies.entry(r.try_get(0)?).or_default();
        c.authorizations = r.try_get(1)?;
        c.open_holds = r.try_get(2)?;
        c.held = r.try_get(3)?;
        c.spend = r.try_get(4)?;
    }
    for r in client
        .query(
            "SELECT lower(currency), sum(-amount)::BIGINT FROM ledger_facts
             WHERE kind = 'transaction' AND amount < 0 GROUP BY 1",
            &[],
        )
        .await?
    {
        out.currencies.entry(r.try_get(0)?).or_default().captured = r.try_get(1)?;
    }
    for r in client
        .query(
            "SELECT cardholder, count(*), COALESCE(sum(spend), 0)::BIGINT
             FROM ledger_records GROUP BY cardholder",
            &[],
        )
        .await?
    {
        let h = out.cardholders.entry(r.try_get(0)?).or_default();
        h.authorizations = r.try_get(1)?;
        h.spend = r.try_get(2)?;
    }
    Ok(out)
}
