//! The commands that read or write the state in the data directory: `keys`
//! (admin API keys) and `ledger show`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{DataDirArgs, KeysCommand, load_config};
use crate::clock::Clock;
use crate::ledger::Ledger;
use crate::store;

pub(super) fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    use crate::approvals::{Actor, Approvals, Role};
    let dir_of = |d: DataDirArgs| match d.data_dir {
        Some(d) => d,
        None => match load_config(&d.config, None, None) {
            Ok(c) => c.store.data_dir,
            Err(_) => std::env::var_os("CARDGATE_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("./data")),
        },
    };
    let open = |dir: &std::path::Path| Approvals::open_tool(dir).context("opening the key store");
    match command {
        KeysCommand::Create { role, name, dir } => {
            let Some(role) = Role::parse(&role) else {
                anyhow::bail!("role {role:?} is not one of admin, reviewer, analyst, agent");
            };
            let a = open(&dir_of(dir))?;
            let (id, secret) = a
                .create_key(&Actor::cli(), role, name.as_deref())
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            eprintln!("created {id} ({}); the key is shown once:", role.as_str());
            println!("{secret}");
        }
        KeysCommand::List { dir } => {
            let a = open(&dir_of(dir))?;
            for k in a.list_keys().map_err(|e| anyhow::anyhow!("{e:?}"))? {
                println!(
                    "{}  {:<8}  {}  {}",
                    k["id"].as_str().unwrap_or(""),
                    k["role"].as_str().unwrap_or(""),
                    if k["revoked_at"].is_null() {
                        "active "
                    } else {
                        "revoked"
                    },
                    k["name"].as_str().unwrap_or("")
                );
            }
        }
        KeysCommand::Revoke { id, dir } => {
            let a = open(&dir_of(dir))?;
            a.revoke_key_cli(&id)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            println!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn ledger_show(
    card: String,
    data_dir: Option<PathBuf>,
    config_path: PathBuf,
    at: Option<i64>,
) -> anyhow::Result<ExitCode> {
    let dir = match data_dir {
        Some(d) => d,
        None => match load_config(&config_path, None, None) {
            Ok(c) => c.store.data_dir,
            Err(_) => std::env::var_os("CARDGATE_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("./data")),
        },
    };
    let path = dir.join(store::FILE_NAME);
    let Some(cardholder) = store::cardholder_of(&path, &card)? else {
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
    let Some(report) = ledger.card_report(&card, at) else {
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
