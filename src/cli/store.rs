//! `cardgate store copy`: moves an installation from its SQLite data dir to a
//! PostgreSQL database (issue 14) and prints what it verified: each table's rows
//! on both sides, then the ledger totals each side computed on its own.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::store::{Copied, LedgerTotals};

#[allow(
    clippy::doc_markdown,
    reason = "clap prints these doc comments as --help text, where backticks would show"
)]
#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Copy the state in a SQLite data dir into an empty PostgreSQL database:
    /// API keys, approval rules and requests, security history, events and
    /// outbox, overrides, allowances, published rule sets, the ledger's facts
    /// and the decision log, in one transaction. Prints each table's rows on
    /// both sides and the ledger totals per currency (authorizations, open
    /// holds, held, spend, captured) and per cardholder, each side computed on
    /// its own; exits 1 unless they all match. Progress goes to stderr.
    /// Stop the server first. Example:
    /// cardgate store copy --from ./data --to postgres://cardgate@db/cardgate
    Copy {
        /// The data directory holding cardgate.db.
        #[arg(long)]
        from: PathBuf,
        /// The target database URL (migrated if new; must hold no state).
        #[arg(long)]
        to: String,
    },
}

pub(super) fn run(command: StoreCommand) -> anyhow::Result<ExitCode> {
    let StoreCommand::Copy { from, to } = command;
    let runtime = super::runtime()?;
    let copied = runtime
        .block_on(crate::store::copy(&from, &to))
        .map_err(|e| anyhow::anyhow!("store copy: {e}; nothing was copied"))?;
    for id in &copied.skipped_facts {
        eprintln!("warning: stored fact {id} is not valid (edited by hand?): not copied");
    }
    let same = print(&copied);
    if same {
        println!("verified: every table and every ledger total is the same on both sides");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: the two sides differ (see MISMATCH); the copy is committed, check it");
        Ok(ExitCode::from(1))
    }
}

/// Prints the comparison; true when everything matches.
fn print(c: &Copied) -> bool {
    let mut same = true;
    let mut mark = |equal: bool| {
        same &= equal;
        if equal { "" } else { "  MISMATCH" }
    };
    println!("{:<20} {:>10} {:>10}", "table", "sqlite", "postgres");
    for t in &c.counted {
        let m = mark(t.source == t.target);
        println!("{:<20} {:>10} {:>10}{m}", t.table, t.source, t.target);
    }
    println!(
        "{:<8} {:<8} {:>14} {:>11} {:>16} {:>16} {:>16}",
        "ledger", "currency", "authorizations", "open_holds", "held", "spend", "captured"
    );
    let currencies: std::collections::BTreeSet<&String> = c
        .source
        .currencies
        .keys()
        .chain(c.target.currencies.keys())
        .collect();
    for currency in currencies {
        let side = |t: &LedgerTotals| t.currencies.get(currency).cloned().unwrap_or_default();
        let (s, t) = (side(&c.source), side(&c.target));
        let m = mark(s == t);
        for (name, v) in [("sqlite", &s), ("postgres", &t)] {
            println!(
                "{name:<8} {currency:<8} {:>14} {:>11} {:>16} {:>16} {:>16}{m}",
                v.authorizations, v.open_holds, v.held, v.spend, v.captured
            );
        }
    }
    let differ: Vec<&String> = c
        .source
        .cardholders
        .keys()
        .chain(c.target.cardholders.keys())
        .filter(|h| c.source.cardholders.get(*h) != c.target.cardholders.get(*h))
        .collect();
    let m = mark(differ.is_empty());
    println!(
        "cardholders: {} sqlite, {} postgres, {} with different spend or authorizations{m}",
        c.source.cardholders.len(),
        c.target.cardholders.len(),
        differ.len()
    );
    for h in differ.iter().take(20) {
        let side = |t: &LedgerTotals| t.cardholders.get(*h).cloned().unwrap_or_default();
        let (s, t) = (side(&c.source), side(&c.target));
        println!(
            "  {h}: sqlite {} authorizations, spend {}; postgres {} authorizations, spend {}",
            s.authorizations, s.spend, t.authorizations, t.spend
        );
    }
    same
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CardholderTotals, Counted, CurrencyTotals};

    fn copied() -> Copied {
        let mut totals = LedgerTotals::default();
        totals.currencies.insert(
            "usd".into(),
            CurrencyTotals {
                authorizations: 2,
                open_holds: 1,
                held: 300,
                spend: 700,
                captured: 400,
            },
        );
        totals.cardholders.insert(
            "ich_1".into(),
            CardholderTotals {
                authorizations: 2,
                spend: 700,
            },
        );
        Copied {
            counted: vec![Counted {
                table: "ledger_facts",
                source: 3,
                target: 3,
            }],
            source: totals.clone(),
            target: totals,
            skipped_facts: Vec::new(),
        }
    }

    #[test]
    fn a_copy_verifies_only_when_every_count_and_total_matches() {
        assert!(print(&copied()));
        let mut rows = copied();
        rows.counted[0].target = 2;
        assert!(!print(&rows));
        let mut held = copied();
        held.target.currencies.get_mut("usd").unwrap().held = 0;
        assert!(!print(&held));
        let mut holder = copied();
        holder.target.cardholders.get_mut("ich_1").unwrap().spend = 699;
        assert!(!print(&holder));
        let mut missing = copied();
        missing.target.cardholders.clear();
        assert!(!print(&missing));
    }
}
