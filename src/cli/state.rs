//! The commands that read or write the state in the data directory: `keys`
//! (admin API keys) and `ledger show`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::{DataDirArgs, KeysCommand};
use crate::app;
use crate::clock::Clock;
use crate::ledger::Ledger;
use crate::store;

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
                let a = open_keys(dir).await?;
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
                let a = open_keys(dir).await?;
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
                let a = open_keys(dir).await?;
                a.revoke_key_cli(&id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("revoked {id}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The key store of `dir`, with the config's `[approvals]` settings (the longest
/// key lifetime, the approvals clock's test offset).
async fn open_keys(dir: DataDirArgs) -> anyhow::Result<crate::approvals::Approvals> {
    let settings =
        crate::config::ApprovalsConfig::from_config_file(&dir.config, &crate::config::ProcessEnv)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let data = app::data_dir(dir.data_dir, &dir.config);
    crate::store::approvals::open_tool_with(&data, settings)
        .await
        .context("opening the key store")
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
    let dir = app::data_dir(data_dir, config_path);
    let path = dir.join(store::FILE_NAME);
    let Some(cardholder) = store::cardholder_of(&path, card)? else {
        println!("card {card}: no ledger entries in {}", path.display());
        return Ok(ExitCode::SUCCESS);
    };
    let ledger = Ledger::new();
    for fact in store::read_facts(&path, Some(&cardholder))? {
        if let Err(e) = ledger.apply(&fact) {
            eprintln!("warning: stored fact skipped: {e}");
        }
    }
    let at = at.unwrap_or_else(|| Clock::system().now());
    let Some(report) = ledger.card_report(card, at) else {
        println!("card {card}: no ledger entries in {}", path.display());
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
