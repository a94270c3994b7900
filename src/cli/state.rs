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
    use crate::approvals::{Actor, Role};
    use crate::store::approvals::open_tool;
    let dir_of = |d: DataDirArgs| app::data_dir(d.data_dir, &d.config);
    // The key store's interface is async (a backend may be a network database).
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        match command {
            KeysCommand::Create { role, name, dir } => {
                let Some(role) = Role::parse(&role) else {
                    anyhow::bail!("role {role:?} is not one of admin, reviewer, analyst, agent");
                };
                let a = open_tool(&dir_of(dir))
                    .await
                    .context("opening the key store")?;
                let (id, secret) = a
                    .create_key(&Actor::cli(), role, name.as_deref())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                eprintln!("created {id} ({}); the key is shown once:", role.as_str());
                println!("{secret}");
            }
            KeysCommand::List { dir } => {
                let a = open_tool(&dir_of(dir))
                    .await
                    .context("opening the key store")?;
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
                let a = open_tool(&dir_of(dir))
                    .await
                    .context("opening the key store")?;
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
