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

/// Opens the approvals service for a tool on the configured store, with the
/// config's `[approvals]` settings (`keys create` applies `max_key_lifetime`).
async fn open_tool(d: DataDirArgs) -> anyhow::Result<crate::approvals::Approvals> {
    let settings =
        crate::config::ApprovalsConfig::from_config_file(&d.config, &crate::config::ProcessEnv)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    match app::store_location(d.data_dir, &d.config).map_err(anyhow::Error::msg)? {
        app::StoreLocation::Sqlite(dir) => crate::store::approvals::open_tool_with(&dir, settings)
            .await
            .context("opening the key store"),
        app::StoreLocation::Postgres(url) => {
            crate::store::open_shared_approvals_tool(&url, settings)
                .await
                .context("opening the key store")
        }
    }
}

pub(super) fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    use crate::approvals::{Actor, KeyExpiry, Role};
    // The key store's interface is async (a backend may be a network database).
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        match command {
            KeysCommand::Create {
                role,
                name,
                expires_in,
                dir,
            } => {
                let Some(role) = Role::parse(&role) else {
                    anyhow::bail!(
                        "role {role:?} is not one of admin, reviewer, analyst, agent, payments"
                    );
                };
                let expiry = match expires_in {
                    None => KeyExpiry::Unset,
                    Some(d) if d.as_secs() == 0 => {
                        anyhow::bail!("--expires-in must be at least 1s")
                    }
                    Some(d) => KeyExpiry::After(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                };
                let a = open_tool(dir).await?;
                let (key, secret) = a
                    .create_expiring_key(&Actor::cli(), role, name.as_deref(), expiry)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                eprintln!(
                    "created {} ({}, expires {}); the key is shown once:",
                    key.id,
                    role.as_str(),
                    expiry_text(key.expires_at)
                );
                println!("{secret}");
            }
            KeysCommand::List { dir } => {
                let a = open_tool(dir).await?;
                let now = a.now();
                for k in a.list_keys().await.map_err(|e| anyhow::anyhow!("{e}"))? {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else if k.expired(now) {
                        "expired"
                    } else {
                        "active "
                    };
                    println!(
                        "{}  {:<8}  {}  expires {}  {}",
                        k.id,
                        k.role.as_str(),
                        state,
                        expiry_text(k.expires_at),
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

/// `never`, or the Unix time and its UTC date.
fn expiry_text(expires_at: Option<i64>) -> String {
    match expires_at {
        None => "never".into(),
        Some(at) => {
            let utc = u64::try_from(at)
                .ok()
                .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .unwrap_or_default();
            format!("{at} {utc}").trim_end().to_string()
        }
    }
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
