//! The `[store]` config section: where cardgate keeps its state (SQLite in the data
//! directory, or one PostgreSQL database shared by replicas), how durable an
//! approval is, and the database's share of the decision deadline.
//!
//! ```toml
//! [store]
//! data_dir = "./data"          # SQLite (CARDGATE_DATA_DIR / --data-dir); unused with a url
//! durability = "sync"          # or "async"
//! url = "postgres://cardgate:pw@db:5432/cardgate"   # CARDGATE_DATABASE_URL wins
//! pool_size = 16               # connections per replica
//! statement_timeout_ms = 1500  # default: the webhook deadline
//! ```
//!
//! **One budget.** A decision makes at most two round trips to PostgreSQL (the
//! spend snapshot, then the reserve function), each bounded on the client by what
//! is left of `webhook.deadline_ms`: waiting for a pooled connection, connecting
//! and the statement all come out of that one budget, so a slow or silent
//! database turns into the configured fallback, never a late answer. The
//! server-side `statement_timeout` (at most the deadline, by default equal to it)
//! makes the database give up a statement nobody waits for any more, so its row
//! lock on the cardholder is released instead of queueing the next request behind
//! it. `pool_size` bounds concurrent round trips per replica (the approvals store
//! keeps its own small pool of 8 beside it): replicas × (`pool_size` + 8) must stay
//! below the server's `max_connections`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Durability, Env, Overrides};

/// `[store]`: where the ledger and decision log live and how durable approvals are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Run the ledger and store at all. Off only for benchmarks comparing against a
    /// ledger-less server: interval limits then see no past spend.
    pub enabled: bool,
    /// Directory of `cardgate.db` (SQLite); not used when `url` is set.
    pub data_dir: PathBuf,
    /// When an approval may be answered relative to its commit.
    pub durability: Durability,
    /// `postgres://…`: keep all state in this PostgreSQL database (replicas);
    /// `None` keeps it in SQLite under `data_dir`.
    pub url: Option<String>,
    /// Connections each process opens to PostgreSQL at most.
    pub pool_size: usize,
    /// PostgreSQL's `statement_timeout` for cardgate's sessions.
    pub statement_timeout: Duration,
}

/// Connections per replica unless configured: enough for a 2-core replica's
/// concurrent decisions, small against PostgreSQL's default `max_connections`
/// (100) for a handful of replicas.
pub const DEFAULT_POOL_SIZE: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct StoreSection {
    enabled: bool,
    data_dir: String,
    durability: String,
    url: Option<String>,
    pool_size: usize,
    statement_timeout_ms: Option<u64>,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            enabled: true,
            data_dir: "./data".into(),
            durability: "sync".into(),
            url: None,
            pool_size: DEFAULT_POOL_SIZE,
            statement_timeout_ms: None,
        }
    }
}

/// Validates `[store]` with its environment and flag overrides; problems are
/// added to the config's report.
pub(super) fn build(
    file: &StoreSection,
    env: &dyn Env,
    overrides: &Overrides,
    deadline: Duration,
    problems: &mut Vec<String>,
) -> StoreConfig {
    let durability = match file.durability.as_str() {
        "sync" => Durability::Sync,
        "async" => Durability::Async,
        other => {
            problems.push(format!(
                "store.durability {other:?} must be \"sync\" or \"async\""
            ));
            Durability::Sync
        }
    };
    let url = env
        .var("CARDGATE_DATABASE_URL")
        .or_else(|| file.url.clone())
        .filter(|u| !u.trim().is_empty());
    if let Some(u) = &url {
        if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
            // Never echo the URL: it may carry a password.
            problems.push(
                "store.url / CARDGATE_DATABASE_URL must start with postgres:// or postgresql://"
                    .into(),
            );
        }
        if let Some(dir) = &overrides.data_dir {
            problems.push(format!(
                "--data-dir {} and a database URL (store.url / CARDGATE_DATABASE_URL) were both \
                 given: with a URL all state is in PostgreSQL and nothing is written to a data \
                 directory; drop one of them",
                dir.display()
            ));
        }
    }
    let data_dir = overrides
        .data_dir
        .clone()
        .or_else(|| env.var("CARDGATE_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(&file.data_dir));
    if data_dir.as_os_str().is_empty() {
        problems.push("store.data_dir must not be empty".into());
    }
    if file.pool_size == 0 || file.pool_size > 1000 {
        problems.push(format!(
            "store.pool_size = {} must be between 1 and 1000",
            file.pool_size
        ));
    }
    let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
    let statement_timeout_ms = file.statement_timeout_ms.unwrap_or(deadline_ms);
    if statement_timeout_ms == 0 || statement_timeout_ms > deadline_ms {
        problems.push(format!(
            "store.statement_timeout_ms = {statement_timeout_ms} must be between 1 and \
             webhook.deadline_ms ({deadline_ms}): a statement may not outlive the answer it serves"
        ));
    }
    StoreConfig {
        enabled: file.enabled,
        data_dir,
        durability,
        url,
        pool_size: file.pool_size,
        statement_timeout: Duration::from_millis(statement_timeout_ms),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn load(text: &str, env: &[(&str, &str)], over: &Overrides) -> Result<Config, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Config::from_toml(text, Path::new("t.toml"), &env, over).map_err(|e| e.to_string())
    }

    const BASE: &str = "[webhook]\nsecrets = [\"whsec_a\"]\ndeadline_ms = 800\n";

    #[test]
    fn url_from_env_wins_over_the_file_and_budget_defaults_to_the_deadline() {
        let text = format!("{BASE}[store]\nurl = \"postgres://f@h/db\"\npool_size = 4\n");
        let c = load(&text, &[], &Overrides::default()).unwrap();
        assert_eq!(c.store.url.as_deref(), Some("postgres://f@h/db"));
        assert_eq!(c.store.pool_size, 4);
        assert_eq!(c.store.statement_timeout, Duration::from_millis(800));
        let c = load(
            &text,
            &[("CARDGATE_DATABASE_URL", "postgresql://e@h/db")],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.store.url.as_deref(), Some("postgresql://e@h/db"));
        let c = load(BASE, &[], &Overrides::default()).unwrap();
        assert_eq!(c.store.url, None);
        assert_eq!(c.store.pool_size, DEFAULT_POOL_SIZE);
    }

    #[test]
    fn data_dir_flag_with_a_url_is_an_error_naming_both() {
        let over = Overrides {
            data_dir: Some("/var/lib/cg".into()),
            ..Overrides::default()
        };
        let err = load(
            BASE,
            &[("CARDGATE_DATABASE_URL", "postgres://u:secretpw@h/db")],
            &over,
        )
        .unwrap_err();
        assert!(
            err.contains("--data-dir /var/lib/cg") && err.contains("CARDGATE_DATABASE_URL"),
            "{err}"
        );
        assert!(!err.contains("secretpw"), "{err}");
        // Without a URL the flag is the SQLite directory, as before.
        assert_eq!(
            load(BASE, &[], &over).unwrap().store.data_dir,
            PathBuf::from("/var/lib/cg")
        );
    }

    #[test]
    fn bad_urls_pools_and_timeouts_are_reported_together() {
        let text = format!(
            "{BASE}[store]\nurl = \"mysql://u:pw@h/db\"\npool_size = 0\nstatement_timeout_ms = 900\n"
        );
        let err = load(&text, &[], &Overrides::default()).unwrap_err();
        for needle in [
            "postgres://",
            "store.pool_size",
            "statement_timeout_ms = 900",
        ] {
            assert!(err.contains(needle), "{needle} not in {err}");
        }
        assert!(!err.contains("pw@"), "{err}");
    }
}
