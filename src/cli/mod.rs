//! The `cardgate` command line: argument definitions (clap), logging set-up, one
//! function per subcommand, exit codes. `main.rs` calls [`main`].
//!
//! Owns how a person talks to cardgate from a shell: `--help` texts, what goes to
//! stdout (results) and stderr (progress, errors), exit codes (0 ok, 1 failure or a
//! finding such as invalid rules, 78 `EX_CONFIG` for a configuration that cannot
//! start). The CLI is an edge like `http/`: it is the one place besides `main.rs`
//! that uses `anyhow`, because its errors end as a message to a person.

mod backtest;
mod rules;
mod sign;
mod simulate;
mod state;
mod store;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::app;
use crate::config::{self, Config, Overrides, ProcessEnv};

/// Real-time card authorization decisions for Stripe Issuing.
#[allow(
    clippy::doc_markdown,
    reason = "clap prints these doc comments as --help text, where backticks would show"
)]
#[derive(Parser)]
#[command(name = "cardgate", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[allow(
    clippy::doc_markdown,
    reason = "clap prints these doc comments as --help text, where backticks would show"
)]
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Serve the webhook endpoint (POST /webhooks/stripe), /metrics, /healthz,
    /// /readyz, the admin API (/v1/) and the reviewer page (/ui/).
    ///
    /// Prints "cardgate listening on http://ADDR" once bound (and, with
    /// --admin-listen, "cardgate admin listening on http://ADDR" on the next line).
    /// Stops on SIGTERM or SIGINT after in-flight requests finish.
    ///
    /// Connections: at most [server] max_connections at once per listener. A
    /// connection must send its request head within [http] header_read_timeout
    /// (default 10 s) and, kept alive, its next request within [http] idle_timeout
    /// (default 60 s); when every slot is taken, a new client evicts the connection
    /// that has waited longest without a request in flight.
    ///
    /// API keys: a key past its expires_at (keys create --expires-in, or
    /// expires_at/expires_in on POST /v1/api_keys) gets 401 api_key_expired, by the
    /// approvals clock; [approvals] max_key_lifetime (e.g. "90d") gives keys created
    /// without an expiry that lifetime and refuses longer ones.
    Serve {
        /// Config file (TOML).
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Address to listen on, IP:PORT; port 0 picks a free port. Overrides
        /// CARDGATE_LISTEN and the config file.
        #[arg(long)]
        listen: Option<String>,
        /// Serve the admin surface (/v1/…, /ui/, /metrics) on this address, IP:PORT,
        /// and only there: --listen then answers only POST /webhooks/stripe,
        /// /healthz and /readyz. Recommended in production (keep it off the
        /// network Stripe reaches). Overrides CARDGATE_ADMIN_LISTEN and [admin]
        /// listen; unset, one port serves everything.
        #[arg(long)]
        admin_listen: Option<String>,
        /// Directory of the ledger database (cardgate.db). Overrides
        /// CARDGATE_DATA_DIR and [store] data_dir (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Rules file (TOML + CEL). Seeds an empty store; afterwards the store's
        /// newest published set is live and this file mirrors it. Editing it or
        /// SIGHUP publishes it (as POST /v1/rulesets does).
        #[arg(long, env = "CARDGATE_RULES", default_value = "config/rules.toml")]
        rules: PathBuf,
        /// Payment approval rules (POST /v1/payment_approvals), same format with
        /// actions approve/decline. Reloaded like --rules.
        #[arg(
            long,
            env = "CARDGATE_PAYMENT_RULES",
            default_value = "config/payment_rules.toml"
        )]
        payment_rules: PathBuf,
        /// With a database URL: how long to wait at start for a PostgreSQL that
        /// does not answer (30s, 5m; humantime) before exiting with an error.
        /// Unset: wait until it answers, logging each attempt (every 0.5 s,
        /// doubling to every 10 s). Nothing is bound while waiting.
        #[arg(long, env = "CARDGATE_DATABASE_WAIT", value_parser = humantime::parse_duration)]
        wait_for_database: Option<std::time::Duration>,
    },
    /// Inspect the spend ledger stored in the data directory.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Check or try a rules file.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Replay recorded decisions through a candidate rule set and print what changes.
    ///
    /// Reads the decision log of the store (read-only, so it can run beside a live
    /// server), or a JSONL file with --log, oldest first, streaming. Decisions
    /// recorded with their replay record are replayed exactly (the unchanged rules
    /// reproduce every answer); older rows and JSONL records are replayed from their
    /// window totals and counted as approximate. When the candidate changes an
    /// answer, later decisions of the same card and cardholder see the spend it
    /// would have left: such changes are reported as knock-on, the others as direct.
    /// Prints a table per rule (matches, approve→decline, decline→approve, amount
    /// affected, examples) and the changes, or with --format json one object:
    /// {"replayed", "unchanged", "changed", "approximate", "skipped", "changes":
    /// [{"authorization", "before", "after", "knock_on"}], "rules": [...]}. The same
    /// log and rules always print the same report. Progress goes to stderr.
    ///
    /// Exit status: 0 the replay ran (whether or not anything changed); 1 the
    /// candidate rules file is invalid, or the config, store or log cannot be read.
    Backtest {
        /// The candidate rules file.
        #[arg(long)]
        rules: PathBuf,
        /// Only decisions made at or after this time: RFC 3339 in UTC
        /// (2026-11-24T09:00:00Z) or Unix seconds.
        #[arg(long, value_parser = rules::parse_since)]
        since: Option<i64>,
        /// Only decisions made before this time (same forms as --since).
        #[arg(long, value_parser = rules::parse_since)]
        until: Option<i64>,
        /// Only this card's decisions (ic_…). Its cardholder's other cards are
        /// replayed too, unreported, for their knock-on on cardholder limits.
        #[arg(long, conflicts_with = "log")]
        card: Option<String>,
        /// Stop after this many decisions replayed or skipped.
        #[arg(long)]
        limit: Option<usize>,
        /// Output: a table (text) or one JSON object (json).
        #[arg(long, value_enum, default_value = "text")]
        format: backtest::Format,
        /// Directory of cardgate.db. Default: CARDGATE_DATA_DIR, else [store]
        /// data_dir from --config, else ./data.
        #[arg(long, conflicts_with = "log")]
        data_dir: Option<PathBuf>,
        /// Read recorded decisions from this file instead of the store, one JSON
        /// RecordedDecision per line (replayed approximately).
        #[arg(long)]
        log: Option<PathBuf>,
        /// Config file whose [program] controls apply to approximate records (exact
        /// ones carry the program controls that were in force).
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Create, list or revoke admin API keys (the first admin key comes from here).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Move state between stores.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Print a Stripe-Signature header for a payload, signed the way Stripe signs.
    ///
    /// Reads the payload from FILE (or standard input when FILE is "-") and uses the
    /// secrets from --secret, else CARDGATE_WEBHOOK_SECRET, else the config file.
    /// Example: curl -H "Stripe-Signature: $(cardgate sign event.json)" --data-binary @event.json …
    Sign {
        /// The exact bytes that will be sent as the request body.
        file: PathBuf,
        /// Secret to sign with (repeat for several v1 signatures, as during a roll).
        #[arg(long)]
        secret: Vec<String>,
        /// Unix timestamp to sign at (default: now).
        #[arg(long)]
        timestamp: Option<i64>,
        /// Config file to take the secret from when none is given.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// A local stand-in for Stripe Issuing in test mode, and a seeded scenario
    /// runner that drives cardgate with realistic card traffic.
    Simulate {
        #[command(subcommand)]
        command: SimulateCommand,
    },
}

/// What the emulator needs to reach cardgate, shared by `simulate serve` and `run`.
#[allow(
    clippy::doc_markdown,
    reason = "clap prints these doc comments as --help text, where backticks would show"
)]
#[derive(clap::Args)]
pub(crate) struct EmulatorArgs {
    /// cardgate's webhook URL; request and lifecycle events are POSTed here.
    /// Optional for `serve` (set it later with POST /v1/webhook_endpoints url=…).
    #[arg(long)]
    pub(crate) webhook_url: Option<String>,
    /// Secret the events are signed with (whsec_…). Default: the first of
    /// CARDGATE_WEBHOOK_SECRET, else of webhook.secrets in --config.
    #[arg(long)]
    pub(crate) secret: Option<String>,
    /// Config file to take the secret from when none is given.
    #[arg(long, default_value = config::DEFAULT_PATH)]
    pub(crate) config: PathBuf,
    /// The real-time window in milliseconds: a request not answered within it
    /// gets the timeout fallback (reason webhook_timeout). Stripe waits 2 s.
    #[arg(long, default_value_t = 2000)]
    pub(crate) window_ms: u64,
    /// The account's timeout setting: "approve" or "decline".
    #[arg(long, default_value = "decline")]
    pub(crate) timeout_fallback: String,
    /// The Stripe API version the account is pinned to: events are shaped as
    /// that version (2024-06-20 to 2026-10-28.endive).
    #[arg(long, default_value = crate::simulate::cli::API_VERSION)]
    pub(crate) api_version: String,
}

#[allow(
    clippy::doc_markdown,
    reason = "clap prints these doc comments as --help text, where backticks would show"
)]
#[derive(Subcommand)]
pub(crate) enum SimulateCommand {
    /// Run the emulator's API (Stripe test helpers, cards, cardholders, the
    /// deprecated approve/decline calls) and send signed events to cardgate.
    ///
    /// Prints "cardgate simulator listening on http://ADDR" once bound. Every /v1
    /// call needs the API key (Authorization: Bearer KEY, or curl -u KEY:). Example:
    /// curl -u sk_test_cardgate_simulator: http://ADDR/v1/test_helpers/issuing/authorizations -d card=ic_… -d amount=4250
    Serve {
        #[command(flatten)]
        emulator: EmulatorArgs,
        /// Address to listen on (IP:PORT; port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:12111")]
        listen: String,
        /// Secret API key callers must present (the legacy approve/decline mode
        /// of cardgate uses it as its Stripe key).
        #[arg(
            long,
            env = "CARDGATE_SIM_API_KEY",
            default_value = "sk_test_cardgate_simulator"
        )]
        api_key: String,
        /// Namespace in every id the emulator makes (default: from the clock, so
        /// two runs against one cardgate never share ids).
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Run a scenario: cardholders spending over virtual days through the
    /// emulator into cardgate, checked by an oracle that knows the limits.
    ///
    /// Progress goes to stderr, the summary to stdout (approved/declined by
    /// reason, lifecycle counts, latency percentiles, oracle disagreements).
    /// Exits 1 when the oracle disagrees with any answer or an event was not
    /// accepted. The same seed gives the same summary (latencies aside); each run
    /// makes new cards, so runs against one cardgate do not share limits.
    Run {
        /// The scenario file (TOML; see config/scenario.toml).
        scenario: PathBuf,
        #[command(flatten)]
        emulator: EmulatorArgs,
        /// Seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Namespace in every id (default: from the clock). Give one to get the
        /// same ids every run (then use a fresh cardgate data dir each time).
        #[arg(long)]
        namespace: Option<String>,
        /// No progress display.
        #[arg(long)]
        quiet: bool,
    },
}

#[allow(
    clippy::doc_markdown,
    reason = "clap prints these doc comments as --help text, where backticks would show"
)]
#[derive(Subcommand)]
pub(crate) enum LedgerCommand {
    /// Print a card's authorizations (held and spent amounts) and its current
    /// daily/weekly/monthly/yearly/all-time totals beside its cardholder's.
    ///
    /// Reads the database read-only, so it can run beside a live server. Example:
    /// cardgate ledger show --card ic_1SbsKNr3Lk8vT3cGAOiDXANR --data-dir ./data
    Show {
        /// The card, ic_…
        #[arg(long)]
        card: String,
        /// Directory of cardgate.db. Default: CARDGATE_DATA_DIR, else [store]
        /// data_dir from --config, else ./data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Config file to take [store] data_dir from.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Unix time whose windows to total (default: now).
        #[arg(long)]
        at: Option<i64>,
    },
}

/// Where `keys` finds cardgate.db.
#[allow(
    clippy::doc_markdown,
    reason = "clap prints these doc comments as --help text, where backticks would show"
)]
#[derive(clap::Args)]
pub(crate) struct DataDirArgs {
    /// Directory of cardgate.db. Default: CARDGATE_DATA_DIR, else [store]
    /// data_dir from --config, else ./data.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Config file to take [store] data_dir from.
    #[arg(long, default_value = config::DEFAULT_PATH)]
    pub(crate) config: PathBuf,
}

#[allow(
    clippy::doc_markdown,
    reason = "clap prints these doc comments as --help text, where backticks would show"
)]
#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a key and print it once (it is stored hashed and cannot be shown
    /// again). Not gated by approval rules: the command line is the operator's
    /// local escape hatch; the creation is recorded in the security history.
    Create {
        /// admin, reviewer, analyst, agent or payments (POST /v1/payment_approvals
        /// only).
        #[arg(long)]
        role: String,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        /// Expire the key this long after now: 1h, 90d, "1h 30m" (humantime).
        /// An expired key is refused with 401 api_key_expired. Without it the key
        /// never expires, unless [approvals] max_key_lifetime in --config is set:
        /// then it gets that lifetime, and a longer --expires-in is refused.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        #[command(flatten)]
        dir: DataDirArgs,
    },
    /// List keys (ids, roles, state: active, revoked or expired; expiry as Unix
    /// seconds and UTC, or "never"; names; never secrets).
    List {
        #[command(flatten)]
        dir: DataDirArgs,
    },
    /// Revoke a key (not gated, recorded; see `create`).
    Revoke {
        /// key_…
        id: String,
        #[command(flatten)]
        dir: DataDirArgs,
    },
}

#[allow(
    clippy::doc_markdown,
    reason = "clap prints these doc comments as --help text, where backticks would show"
)]
#[derive(Subcommand)]
pub(crate) enum RulesCommand {
    /// Compile a rules file; exit 1 listing every error with rule, line and column.
    Check {
        /// The rules file.
        file: PathBuf,
        /// Check it as payment approval rules (the payment context and actions).
        #[arg(long)]
        payments: bool,
    },
    /// Decide one event with a rules file: prints the decision and every matching
    /// rule, shadow rules included. Spend is taken as zero.
    Test {
        /// The rules file.
        file: PathBuf,
        /// An issuing_authorization.request event (JSON).
        #[arg(long)]
        event: PathBuf,
        /// Config file whose [program] controls apply.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Clock for `now.*`, Unix seconds (default: the event's `created`).
        #[arg(long)]
        now: Option<i64>,
    },
}

/// Runs the command line: parses arguments, sets up logging, runs one subcommand and
/// maps its failure to an exit code (1; 78 for configuration errors).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
            data_dir,
            rules,
            payment_rules,
            wait_for_database,
        } => serve(
            &config,
            &Overrides {
                listen,
                data_dir,
                admin_listen,
            },
            rules,
            payment_rules,
            wait_for_database,
        ),
        Command::Ledger {
            command:
                LedgerCommand::Show {
                    card,
                    data_dir,
                    config,
                    at,
                },
        } => state::ledger_show(&card, data_dir, &config, at),
        Command::Rules {
            command: RulesCommand::Check { file, payments },
        } => rules::check(&file, payments),
        Command::Rules {
            command:
                RulesCommand::Test {
                    file,
                    event,
                    config,
                    now,
                },
        } => rules::test(&file, &event, &config, now),
        Command::Backtest {
            rules,
            since,
            until,
            card,
            limit,
            format,
            data_dir,
            log,
            config,
        } => backtest::run(&backtest::Options {
            rules,
            since,
            until,
            card,
            limit,
            format,
            data_dir,
            log,
            config,
        }),
        Command::Sign {
            file,
            secret,
            timestamp,
            config,
        } => sign::sign(&file, secret, timestamp, &config),
        Command::Simulate {
            command:
                SimulateCommand::Serve {
                    emulator,
                    listen,
                    api_key,
                    namespace,
                },
        } => simulate::serve(emulator, listen, api_key, namespace),
        Command::Simulate {
            command:
                SimulateCommand::Run {
                    scenario,
                    emulator,
                    seed,
                    namespace,
                    quiet,
                },
        } => simulate::run(&scenario, emulator, seed, namespace, quiet),
        Command::Keys { command } => state::keys(command),
        Command::Store { command } => store::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CARDGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("CARDGATE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub(crate) fn load_config(
    path: &std::path::Path,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Config> {
    let overrides = Overrides {
        listen,
        data_dir,
        ..Overrides::default()
    };
    Ok(Config::load(path, &ProcessEnv, &overrides)?)
}

/// The one tokio runtime a command runs on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn serve(
    config_path: &Path,
    overrides: &Overrides,
    rules: PathBuf,
    payment_rules: PathBuf,
    wait_for_database: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    let paths = app::RulePaths {
        rules,
        payment_rules,
    };
    let wait = wait_for_database.map_or(app::DatabaseWait::Forever, app::DatabaseWait::UpTo);
    let config =
        match Config::load(config_path, &ProcessEnv, overrides).map_err(anyhow::Error::from) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e:#}");
                // 78 = EX_CONFIG: tells supervisors not to restart in a loop.
                return Ok(ExitCode::from(78));
            }
        };
    let clock = crate::clock::Clock::system();
    runtime()?.block_on(async move {
        let built = match app::build_with(config, paths, clock, wait).await {
            Ok(b) => b,
            Err(e) if e.is_config() => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(78));
            }
            Err(e) => return Err(e.into()),
        };
        app::serve(built, app::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}
