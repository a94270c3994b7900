//! `cardgate store copy`: moves an installation from its SQLite data dir to a
//! PostgreSQL database (issue 14) and prints what it verified, table by table.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[allow(
    clippy::doc_markdown,
    reason = "clap prints these doc comments as --help text, where backticks would show"
)]
#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Copy the state in a SQLite data dir into an empty PostgreSQL database:
    /// API keys, approval rules and requests, security history, events and
    /// outbox, overrides, allowances and published rule sets, in one transaction.
    /// Prints each table's rows on both sides; exits 1 unless they all match.
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
    let counted = runtime
        .block_on(crate::store::copy(&from, &to))
        .map_err(|e| anyhow::anyhow!("store copy: {e}; nothing was copied"))?;
    let mut same = true;
    println!("{:<20} {:>10} {:>10}", "table", "sqlite", "postgres");
    for c in &counted {
        let mark = if c.source == c.target {
            ""
        } else {
            "  MISMATCH"
        };
        same &= c.source == c.target;
        println!("{:<20} {:>10} {:>10}{mark}", c.table, c.source, c.target);
    }
    eprintln!(
        "note: ledger facts and the decision log are not copied by this build (their \
         PostgreSQL tables come with the PostgreSQL ledger)"
    );
    if same {
        println!("verified: every table has the same rows on both sides");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: row counts differ (see MISMATCH)");
        Ok(ExitCode::from(1))
    }
}
