//! One LISTEN connection per replica: what other replicas (and the command line)
//! changed in the tables replicas cache, as [`Changed`] batches.
//!
//! The tables' triggers (schema step "pgsync") send `NOTIFY cardgate_changes,
//! '<table>'` at commit. A notification sent while this replica was disconnected
//! is lost for good, so every (re)connect answers [`Changed::everything`] once
//! LISTEN is in place: the caller re-reads it all, and nothing committed before
//! that moment can be missed. The connection is its own (the pool's connections
//! drop notifications), reconnects with doubling back-off, and is pinged while
//! idle so a server that stopped answering is noticed, not waited on forever.

use std::str::FromStr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{CONNECT_TIMEOUT, PostgresError, error_text};

/// The channel the triggers notify on.
pub const CHANNEL: &str = "cardgate_changes";

/// First wait before reconnecting; doubles per failure up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts (a database back after an outage is
/// found within this).
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// An idle connection is pinged this often…
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// …and given up when a ping takes longer than this.
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Which cached tables changed. Several notifications coalesce into one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per table; a set of independent facts, not a state machine"
)]
pub struct Changed {
    /// Published rule sets.
    pub rulesets: bool,
    /// Control overrides.
    pub overrides: bool,
    /// Authorization allowances.
    pub allowances: bool,
    /// API keys.
    pub keys: bool,
    /// Approval rules.
    pub approval_rules: bool,
}

impl Changed {
    /// Everything (after a (re)connect).
    pub fn everything() -> Self {
        Changed {
            rulesets: true,
            overrides: true,
            allowances: true,
            keys: true,
            approval_rules: true,
        }
    }

    /// Whether anything changed.
    pub fn any(self) -> bool {
        self != Changed::default()
    }

    /// Both batches.
    #[must_use]
    pub fn union(self, o: Changed) -> Self {
        Changed {
            rulesets: self.rulesets | o.rulesets,
            overrides: self.overrides | o.overrides,
            allowances: self.allowances | o.allowances,
            keys: self.keys | o.keys,
            approval_rules: self.approval_rules | o.approval_rules,
        }
    }

    /// Adds a notification's payload (a table); an unknown one (a newer
    /// replica's) re-reads everything rather than miss it.
    fn add(&mut self, payload: &str) {
        match payload {
            "rulesets" => self.rulesets = true,
            "overrides" => self.overrides = true,
            "allowances" => self.allowances = true,
            "keys" => self.keys = true,
            "approval_rules" => self.approval_rules = true,
            _ => *self = self.union(Changed::everything()),
        }
    }
}

/// The listening connection, while it is up.
struct Connected {
    client: Client,
    payloads: mpsc::UnboundedReceiver<String>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Waits for changes on [`CHANNEL`], reconnecting as needed.
pub struct Listener {
    config: tokio_postgres::Config,
    conn: Option<Connected>,
    backoff: Duration,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener on the database at `url` (connects on the first [`next`]).
    ///
    /// [`next`]: Listener::next
    ///
    /// # Errors
    /// The URL does not parse.
    pub fn new(url: &str) -> Result<Listener, PostgresError> {
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| PostgresError::Url(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("cardgate-listen");
        Ok(Listener {
            config,
            conn: None,
            backoff: MIN_BACKOFF,
        })
    }

    /// Whether the listening connection is up.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The next batch of changes: [`Changed::everything`] right after a
    /// (re)connect, else what notifications arrived. Cancel-safe: a dropped call
    /// loses no notification that was received.
    pub async fn next(&mut self) -> Changed {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                match self.connect().await {
                    Ok(conn) => {
                        tracing::info!(
                            channel = CHANNEL,
                            "listening for changes from other replicas"
                        );
                        self.conn = Some(conn);
                        self.backoff = MIN_BACKOFF;
                        return Changed::everything();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_ms = u64::try_from(self.backoff.as_millis()).unwrap_or(u64::MAX), "cannot listen for changes; retrying");
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            };
            tokio::select! {
                payload = conn.payloads.recv() => {
                    if let Some(p) = payload {
                        let mut changed = Changed::default();
                        changed.add(&p);
                        while let Ok(p) = conn.payloads.try_recv() {
                            changed.add(&p);
                        }
                        return changed;
                    }
                    tracing::warn!("the change listener lost its connection; reconnecting");
                    self.conn = None;
                }
                () = tokio::time::sleep(PING_EVERY) => {
                    let ping = tokio::time::timeout(PING_TIMEOUT, conn.client.batch_execute("SELECT 1")).await;
                    if !matches!(ping, Ok(Ok(()))) {
                        tracing::warn!("the change listener's database stopped answering; reconnecting");
                        self.conn = None;
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<Connected, String> {
        let (client, mut connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| error_text(&e))?;
        let (tx, payloads) = mpsc::unbounded_channel();
        // The connection must be polled for anything to move, LISTEN included; it
        // ends (closing the channel) when the server goes or the client is dropped.
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(n.payload().to_string()).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %error_text(&e), "change listener connection ended");
                        return;
                    }
                    None => return,
                }
            }
        });
        let conn = Connected {
            client,
            payloads,
            driver,
        };
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            conn.client.batch_execute(&format!("LISTEN {CHANNEL}")),
        )
        .await
        .map_err(|_| "LISTEN timed out".to_string())?
        .map_err(|e| error_text(&e))?;
        Ok(conn)
    }
}
