//! The commands that read or write the state — in the data directory, or in
//! PostgreSQL when `CARDGATE_DATABASE_URL` / `[store] url` is set: `keys` (admin
//! API keys) and `ledger show`. Any of them may be the first to touch an empty
//! database: opening it migrates it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::{DataDirArgs, KeysCommand};
use crate::app;
use crate::clock::Clock;
use crate::ledger::Ledger;
use crate::store;

/// Opens the approvals service for a tool on the configured store.
async fn open_tool(d: DataDirArgs) -> anyhow::Result<crate::approvals::Approvals> {
    match app::store_location(d.data_dir, &d.config).map_err(anyhow::Error::msg)? {
        app::StoreLocation::Sqlite(dir) => crate::store::approvals::open_tool(&dir)
            .await
            .context("opening the key store"),
        app::StoreLocation::Postgres(url) => crate::store::open_shared_approvals_tool(&url)
            .await
            .context("opening the key store"),
    }
}

pub(super) fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    use crate::approvals::{Actor, Role};
    // The key store's interface is async (a backend may be a network database).
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        match command {
            KeysCommand::Create { role, name, dir } => {
                let Some(role) = Role::parse(&role) else {
                    anyhow::bail!("role {role:?} is not one of admin, reviewer, analyst, agent");
                };
                let a = open_tool(dir).await?;
                let (id, secret) = a
                    .create_key(&Actor::cli(), role, name.as_deref())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                eprintln!("created {id} ({}); the key is shown once:", role.as_str());
                println!("{secret}");
            }
            KeysCommand::List { dir } => {
                let a = open_tool(dir).await?;
                for k in a.list_keys().await.map_err(|e| anyhow::anyhow!("{e}"))? {
                    println!(
                        "{}  {:<8}  {}  {}",
                        k.id,
                        k.role.as_str(),
                        if k.revoked_at.is_none() {
                            "active "
                        } else {
                            "revoked"
                        },
                        k.name.as_deref().unwrap_or("")
                    );
                }
            }
            KeysCommand::Revoke { id, dir } => {
                let a = open_tool(dir).await?;
                a.revoke_key_cli(&id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("revoked {id}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn ledger_show(
    card: &str,
    data_dir: Option<PathBuf>,
    config_path: &Path,
    at: Option<i64>,
) -> anyhow::Result<ExitCode> {
    let (source, facts) =
        match app::store_location(data_dir, config_path).map_err(anyhow::Error::msg)? {
            app::StoreLocation::Sqlite(dir) => {
                let path = dir.join(store::FILE_NAME);
                let facts = match store::cardholder_of(&path, card)? {
                    Some(cardholder) => store::read_facts(&path, Some(&cardholder))?,
                    None => Vec::new(),
                };
                (path.display().to_string(), facts)
            }
            app::StoreLocation::Postgres(url) => super::runtime()?.block_on(async {
                use crate::store::{Database, read_shared_facts, shared_cardholder_of};
                let db = Database::connect(&url).await?;
                let facts = match shared_cardholder_of(&db, card)
                    .await
                    .map_err(anyhow::Error::msg)?
                {
                    Some(cardholder) => read_shared_facts(&db, Some(&cardholder))
                        .await
                        .map_err(anyhow::Error::msg)?,
                    None => Vec::new(),
                };
                anyhow::Ok((db.name().to_string(), facts))
            })?,
        };
    let ledger = Ledger::new();
    for fact in &facts {
        if let Err(e) = ledger.apply(fact) {
            eprintln!("warning: stored fact skipped: {e}");
        }
    }
    let at = at.unwrap_or_else(|| Clock::system().now());
    let Some(report) = ledger.card_report(card, at) else {
        println!("card {card}: no ledger entries in {source}");
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "card {} (cardholder {}), windows at unix time {at}",
        report.card, report.cardholder
    );
    println!("authorizations:");
    for a in &report.authorizations {
        println!(
            "  {}  created={}  {}  status={}  held={}  spend={}",
            a.id, a.created, a.currency, a.status, a.held, a.spend
        );
    }
    println!("totals:");
    for t in &report.totals {
        println!(
            "  {:<8} {}  window_start={}  card={}  cardholder={}",
            t.interval.as_str(),
            t.currency,
            t.start,
            t.card,
            t.cardholder
        );
    }
    Ok(ExitCode::SUCCESS)
}
