//! The `cardgate` command line: parses arguments, sets up logging, runs a
//! subcommand, maps failures to exit codes. The only user of `anyhow`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use cardgate::config::{self, Config, Overrides, ProcessEnv};
use cardgate::http::{self, AppState};
use cardgate::ledger::Ledger;
use cardgate::payments::PaymentRuleSet;
use cardgate::rules::RuleSet;
use cardgate::store::{self, Store};

/// Real-time card authorization decisions for Stripe Issuing.
#[derive(Parser)]
#[command(name = "cardgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the webhook endpoint (POST /webhooks/stripe), /metrics, /healthz and /readyz.
    ///
    /// Prints "cardgate listening on http://ADDR" once bound. Stops on SIGTERM or
    /// SIGINT after in-flight requests finish.
    Serve {
        /// Config file (TOML).
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Address to listen on, IP:PORT; port 0 picks a free port. Overrides
        /// CARDGATE_LISTEN and the config file.
        #[arg(long)]
        listen: Option<String>,
        /// Directory of the ledger database (cardgate.db). Overrides
        /// CARDGATE_DATA_DIR and [store] data_dir (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Rules file (TOML + CEL). Reloaded when it changes and on SIGHUP; the
        /// admin API's POST /v1/rulesets replaces it in memory until then.
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
    /// server), or a JSONL file with --log. Prints how many decisions change
    /// (approve→decline, decline→approve, amount), by rule, with examples; the same
    /// log and rules always print the same report. Progress goes to stderr.
    Backtest {
        /// The candidate rules file.
        #[arg(long)]
        rules: PathBuf,
        /// Only decisions made at or after this time: RFC 3339 in UTC
        /// (2026-11-24T09:00:00Z) or Unix seconds.
        #[arg(long, value_parser = parse_since)]
        since: Option<i64>,
        /// Directory of cardgate.db. Default: CARDGATE_DATA_DIR, else [store]
        /// data_dir from --config, else ./data.
        #[arg(long, conflicts_with = "log")]
        data_dir: Option<PathBuf>,
        /// Read recorded decisions from this file instead of the store, one JSON
        /// RecordedDecision per line.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Config file whose [program] controls the replay applies.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Create, list or revoke admin API keys (the first admin key comes from here).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
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
#[derive(clap::Args)]
struct EmulatorArgs {
    /// cardgate's webhook URL; request and lifecycle events are POSTed here.
    /// Optional for `serve` (set it later with POST /v1/webhook_endpoints url=…).
    #[arg(long)]
    webhook_url: Option<String>,
    /// Secret the events are signed with (whsec_…). Default: the first of
    /// CARDGATE_WEBHOOK_SECRET, else of webhook.secrets in --config.
    #[arg(long)]
    secret: Option<String>,
    /// Config file to take the secret from when none is given.
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// The real-time window in milliseconds: a request not answered within it
    /// gets the timeout fallback (reason webhook_timeout). Stripe waits 2 s.
    #[arg(long, default_value_t = 2000)]
    window_ms: u64,
    /// The account's timeout setting: "approve" or "decline".
    #[arg(long, default_value = "decline")]
    timeout_fallback: String,
}

#[derive(Subcommand)]
enum SimulateCommand {
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

#[derive(Subcommand)]
enum LedgerCommand {
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
#[derive(clap::Args)]
struct DataDirArgs {
    /// Directory of cardgate.db. Default: CARDGATE_DATA_DIR, else [store]
    /// data_dir from --config, else ./data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Config file to take [store] data_dir from.
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once (it is stored hashed and cannot be shown
    /// again). Not gated by approval rules: the command line is the operator's
    /// local escape hatch; the creation is recorded in the security history.
    Create {
        /// admin, reviewer, analyst or agent.
        #[arg(long)]
        role: String,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        dir: DataDirArgs,
    },
    /// List keys (ids, roles, names; never secrets).
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

#[derive(Subcommand)]
enum RulesCommand {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            rules,
            payment_rules,
        } => serve(config, listen, data_dir, rules, payment_rules),
        Command::Ledger {
            command:
                LedgerCommand::Show {
                    card,
                    data_dir,
                    config,
                    at,
                },
        } => ledger_show(card, data_dir, config, at),
        Command::Rules {
            command: RulesCommand::Check { file, payments },
        } => rules_check(file, payments),
        Command::Rules {
            command:
                RulesCommand::Test {
                    file,
                    event,
                    config,
                    now,
                },
        } => rules_test(file, event, config, now),
        Command::Backtest {
            rules,
            since,
            data_dir,
            log,
            config,
        } => backtest(rules, since, data_dir, log, config),
        Command::Sign {
            file,
            secret,
            timestamp,
            config,
        } => sign(file, secret, timestamp, config),
        Command::Simulate {
            command:
                SimulateCommand::Serve {
                    emulator,
                    listen,
                    api_key,
                    namespace,
                },
        } => simulate_serve(emulator, listen, api_key, namespace),
        Command::Simulate {
            command:
                SimulateCommand::Run {
                    scenario,
                    emulator,
                    seed,
                    namespace,
                    quiet,
                },
        } => simulate_run(scenario, emulator, seed, namespace, quiet),
        Command::Keys { command } => keys(command),
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

fn load_config(
    path: &std::path::Path,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Config> {
    Ok(Config::load(
        path,
        &ProcessEnv,
        &Overrides { listen, data_dir },
    )?)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Opens the store and rebuilds the ledger from it, before anything binds: a
/// database that cannot be read stops the start (its error names the file), so the
/// service never decides against an empty ledger while a full one sits on disk.
fn open_ledger(config: &Config) -> anyhow::Result<(Arc<Ledger>, Arc<Store>)> {
    let started = std::time::Instant::now();
    let store = Store::open(&config.store.data_dir, config.store.durability)
        .context("refusing to start: the ledger store is unusable")?;
    let facts = store
        .facts()
        .context("refusing to start: the ledger store is unreadable")?;
    let ledger = Ledger::new();
    for fact in &facts {
        // Facts were validated before they were stored; one failing now means the
        // row was edited by hand. Say so and go on: the others are still right.
        if let Err(e) = ledger.apply(fact) {
            tracing::error!(path = %store.path().display(), "stored fact skipped: {e}");
        }
    }
    tracing::info!(
        path = %store.path().display(),
        facts = facts.len(),
        holds = ledger.holds(),
        millis = started.elapsed().as_millis() as u64,
        "ledger rebuilt from the store"
    );
    Ok((Arc::new(ledger), Arc::new(store)))
}

fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    use cardgate::approvals::{Actor, Role};
    use cardgate::store::approvals::open_tool;
    let dir_of = |d: DataDirArgs| match d.data_dir {
        Some(d) => d,
        None => match load_config(&d.config, None, None) {
            Ok(c) => c.store.data_dir,
            Err(_) => std::env::var_os("CARDGATE_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("./data")),
        },
    };
    // The key store's interface is async (a backend may be a network database):
    // one small runtime carries this command.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
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

fn ledger_show(
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
    let at = at.unwrap_or_else(unix_now);
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

fn serve(
    config_path: PathBuf,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    rules_path: PathBuf,
    payment_rules_path: PathBuf,
) -> anyhow::Result<ExitCode> {
    let config = match load_config(&config_path, listen, data_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 78 = EX_CONFIG: tells supervisors not to restart in a loop.
            return Ok(ExitCode::from(78));
        }
    };
    // The recorder must exist before the rule set: its per-rule counters are bound
    // when the set is built.
    cardgate::metrics::install();
    let rules = match RuleSet::load(&rules_path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(78));
        }
    };
    cardgate::rules::reload::publish(&RuleSet::empty(), &rules);
    let payment_rules = match PaymentRuleSet::load(&payment_rules_path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(78));
        }
    };
    cardgate::rules::reload::publish(&PaymentRuleSet::empty(), &payment_rules);
    let ledger = if config.store.enabled {
        Some(open_ledger(&config)?)
    } else {
        tracing::warn!("[store] enabled = false: no ledger, interval limits see no past spend");
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let approvals = if config.store.enabled {
        Some(Arc::new(
            runtime
                .block_on(cardgate::store::approvals::open(
                    &config.store.data_dir,
                    cardgate::config::ApprovalsConfig {
                        rules_file: Some(rules_path.clone()),
                        ..config.approvals.clone()
                    },
                ))
                .context("refusing to start: the approvals tables are unusable")?,
        ))
    } else {
        tracing::warn!("[store] enabled = false: no admin API (it keeps its state in the store)");
        None
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let mut state = AppState::new(config, rules).with_payment_rules(payment_rules);
        if let Some((ledger, store)) = ledger {
            state = state.with_ledger(ledger, Some(store));
        }
        if let Some(a) = approvals {
            tokio::spawn(cardgate::approvals::events::run(
                a.clone(),
                http::outbox::HttpDeliver::new(),
            ));
            tokio::spawn(a.clone().run_reviews());
            state = state.with_approvals(a);
        }
        let state = Arc::new(state);
        tokio::spawn(cardgate::rules::reload::watch(
            rules_path,
            state.clone(),
            |s: &AppState| &s.rules,
        ));
        tokio::spawn(cardgate::rules::reload::watch(
            payment_rules_path,
            state.clone(),
            |s: &AppState| &s.payment_rules,
        ));
        tracing::info!(%addr, secrets = state.secrets.len(), ruleset = state.rules.load().version(), "serving");
        println!("cardgate listening on http://{addr}");
        std::io::stdout().flush()?;
        http::serve(listener, state, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

fn rules_check(file: PathBuf, payments: bool) -> anyhow::Result<ExitCode> {
    let loaded = if payments {
        PaymentRuleSet::load(&file).map(|s| (s.len(), s.version().to_string()))
    } else {
        RuleSet::load(&file).map(|s| (s.len(), s.version().to_string()))
    };
    match loaded {
        Ok((len, version)) => {
            println!("{}: ok, {len} rules, version {version}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(cardgate::rules::LoadError::Invalid { errors, .. }) => {
            for e in &errors.errors {
                eprintln!(
                    "{}:{}:{}: rule `{}`: {}",
                    file.display(),
                    e.line,
                    e.col,
                    e.rule,
                    e.kind
                );
            }
            eprintln!("{}: {} error(s)", file.display(), errors.errors.len());
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

fn rules_test(
    file: PathBuf,
    event: PathBuf,
    config_path: PathBuf,
    now: Option<i64>,
) -> anyhow::Result<ExitCode> {
    use cardgate::decision::{Context, NoSpend, decide_traced};
    let src = cardgate::rules::read_rules_file(&file)?;
    let set = match RuleSet::from_toml_unmetered(&src) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return Ok(ExitCode::from(1));
        }
    };
    let config = load_config(&config_path, None, None)?;
    let mut body = std::fs::read(&event).with_context(|| format!("reading {}", event.display()))?;
    let doc = cardgate::stripe::parse_document(&mut body)?;
    let ev = cardgate::stripe::Event::read(&doc)?;
    anyhow::ensure!(
        ev.event_type == cardgate::stripe::AUTHORIZATION_REQUEST,
        "{} is a {} event, not {}",
        event.display(),
        ev.event_type,
        cardgate::stripe::AUTHORIZATION_REQUEST
    );
    let auth = ev.authorization_request()?;
    let ctx = Context::new(
        &auth,
        &config.program,
        &set,
        &NoSpend,
        now.unwrap_or(auth.created),
    );
    let (decision, verdict) = decide_traced(&ctx);
    println!(
        "{}",
        String::from_utf8_lossy(&cardgate::stripe::encode_decision(&decision, set.version()))
    );
    match &verdict.decisive {
        Some(m) => println!("decisive: {} ({})", m.name, m.action.as_str()),
        None => println!("decisive: none"),
    }
    for m in &verdict.shadow {
        println!("shadow:   {} ({}, not applied)", m.name, m.action.as_str());
    }
    if verdict.decisive.is_none()
        && verdict.shadow.is_empty()
        && decision.reason.as_str() != "approved"
    {
        println!(
            "rules not reached: {} decided first",
            decision.reason.as_str()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `--since`: RFC 3339 (UTC) or Unix seconds.
fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("`{s}` is neither Unix seconds nor RFC 3339 in UTC: {e}"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0))
}

fn backtest(
    rules: PathBuf,
    since: Option<i64>,
    data_dir: Option<PathBuf>,
    log: Option<PathBuf>,
    config_path: PathBuf,
) -> anyhow::Result<ExitCode> {
    use cardgate::rules::backtest::{RecordedDecision, Replay};
    use std::io::BufRead;
    let src = cardgate::rules::read_rules_file(&rules)?;
    let set = match RuleSet::from_toml_unmetered(&src) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", rules.display());
            return Ok(ExitCode::from(1));
        }
    };
    let config = load_config(&config_path, None, data_dir.clone())?;
    let mut replay = Replay::new(&set, &config.program);
    let started = std::time::Instant::now();
    let mut last = started;
    let mut progress = |replay: &Replay<'_>, total: Option<usize>| {
        // About once a second, and only for replays long enough to need it.
        if last.elapsed() >= std::time::Duration::from_secs(1) {
            last = std::time::Instant::now();
            let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
            eprintln!(
                "backtest: {}{of} decisions replayed ({:.0}s)",
                replay.seen(),
                started.elapsed().as_secs_f64()
            );
        }
    };
    let source = match &log {
        Some(log) => {
            let f =
                std::fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
            let mut index = 0;
            for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let rec: RecordedDecision = serde_json::from_str(&line).with_context(|| {
                    format!("{}:{}: not a recorded decision", log.display(), n + 1)
                })?;
                if since.is_none_or(|s| rec.now >= s) {
                    replay.push(index, &rec);
                    index += 1;
                    progress(&replay, None);
                }
            }
            log.display().to_string()
        }
        None => {
            let path = config.store.data_dir.join(store::FILE_NAME);
            let rows = store::read_decision_log(&path, since)
                .with_context(|| format!("reading the decision log of {}", path.display()))?;
            let total = rows.len();
            for (index, row) in rows.iter().enumerate() {
                match RecordedDecision::from_logged(row) {
                    Ok(rec) => replay.push(index, &rec),
                    Err(why) => replay.skip(index, format!("row {}: {why}", row.id)),
                }
                progress(&replay, Some(total));
            }
            path.display().to_string()
        }
    };
    println!(
        "candidate {} ({} rules) against {source}{}",
        set.version(),
        set.len(),
        since.map(|s| format!(" since {s}")).unwrap_or_default()
    );
    print!("{}", replay.finish());
    Ok(ExitCode::SUCCESS)
}

fn sign(
    file: PathBuf,
    secrets: Vec<String>,
    timestamp: Option<i64>,
    config_path: PathBuf,
) -> anyhow::Result<ExitCode> {
    let mut body = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut body)?;
    } else {
        body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    }
    let secrets = if secrets.is_empty() {
        load_config(&config_path, None, None)
            .context("no --secret given and the config could not supply one")?
            .webhook_secrets
    } else {
        secrets
    };
    let t = timestamp.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    println!("{}", cardgate::stripe::sign_header(&secrets, t, &body));
    Ok(ExitCode::SUCCESS)
}

fn emulator_config(
    args: &EmulatorArgs,
    api_key: &str,
) -> anyhow::Result<http::emulator::EmulatorConfig> {
    let from_env = std::env::var("CARDGATE_WEBHOOK_SECRET").ok().and_then(|v| {
        v.split(',')
            .map(str::trim)
            .find(|s| !s.is_empty())
            .map(str::to_string)
    });
    let secret = match args.secret.clone().or(from_env) {
        Some(s) => s,
        None => load_config(&args.config, None, None)
            .context("no --secret given and the config could not supply one")?
            .webhook_secrets
            .into_iter()
            .next()
            .context("no webhook secret configured")?,
    };
    anyhow::ensure!(
        (1..=60_000).contains(&args.window_ms),
        "--window-ms must be between 1 and 60000"
    );
    Ok(http::emulator::EmulatorConfig::new(
        args.webhook_url.as_deref(),
        &secret,
        std::time::Duration::from_millis(args.window_ms),
        api_key,
    )?)
}

fn timeout_fallback(text: &str) -> anyhow::Result<cardgate::simulate::TimeoutFallback> {
    match text {
        "approve" => Ok(cardgate::simulate::TimeoutFallback::Approve),
        "decline" => Ok(cardgate::simulate::TimeoutFallback::Decline),
        other => anyhow::bail!("--timeout-fallback {other:?} must be approve or decline"),
    }
}

fn simulate_serve(
    args: EmulatorArgs,
    listen: String,
    api_key: String,
    namespace: Option<String>,
) -> anyhow::Result<ExitCode> {
    let config = emulator_config(&args, &api_key)?;
    let fallback = timeout_fallback(&args.timeout_fallback)?;
    let listen: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not IP:PORT"))?;
    let namespace = namespace.unwrap_or_else(clock_namespace);
    anyhow::ensure!(
        !namespace.is_empty() && namespace.chars().all(|c| c.is_ascii_alphanumeric()),
        "--namespace must be letters and digits"
    );
    let model = cardgate::simulate::Emulator::new(&namespace, fallback, "2026-10-28.endive");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let webhook = config
            .webhook_url
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_else(|| "none yet".into());
        let sim = Arc::new(http::emulator::Simulator::new(model, config));
        tracing::info!(%addr, %webhook, "simulator serving");
        println!("cardgate simulator listening on http://{addr}");
        std::io::stdout().flush()?;
        http::emulator::serve(listener, sim, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn simulate_run(
    path: PathBuf,
    args: EmulatorArgs,
    seed: Option<u64>,
    namespace: Option<String>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    use cardgate::simulate::scenario::{self, Scenario};
    use std::sync::atomic::{AtomicU64, Ordering};
    anyhow::ensure!(args.webhook_url.is_some(), "--webhook-url is required");
    let scenario = Arc::new(Scenario::load(&path)?);
    let seed = seed.unwrap_or(scenario.seed);
    // The runner calls the emulator in-process: no API key is ever presented.
    let config = emulator_config(&args, "sk_test_unused")?;
    let fallback = timeout_fallback(&args.timeout_fallback)?;
    let namespace = namespace.unwrap_or_else(clock_namespace);
    anyhow::ensure!(
        !namespace.is_empty() && namespace.chars().all(|c| c.is_ascii_alphanumeric()),
        "--namespace must be letters and digits"
    );
    let total = scenario.purchases(seed);
    let model = cardgate::simulate::Emulator::new(&namespace, fallback, "2026-10-28.endive");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let started = std::time::Instant::now();
    let summary = runtime.block_on(async move {
        let sim = Arc::new(http::emulator::Simulator::new(model, config));
        let progress = Arc::new(AtomicU64::new(0));
        let ticker = (!quiet).then(|| {
            let progress = progress.clone();
            tokio::spawn(async move {
                use std::io::IsTerminal;
                // A redrawn bar on a terminal; one line per tenth in a log file.
                let tty = std::io::stderr().is_terminal();
                let mut last = u64::MAX;
                loop {
                    let done = progress.load(Ordering::Relaxed);
                    let tenth = (done * 10).checked_div(total).unwrap_or(10);
                    if !tty && tenth != last {
                        last = tenth;
                        eprintln!("{done}/{total} purchases");
                    } else if tty && done != last {
                        last = done;
                        let width = 30u64;
                        let filled = (done * width).checked_div(total).unwrap_or(width);
                        eprint!(
                            "\r[{}{}] {done}/{total} purchases",
                            "#".repeat(filled as usize),
                            " ".repeat((width - filled.min(width)) as usize)
                        );
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            })
        });
        let summary = scenario::run(scenario, seed, sim, progress.clone()).await;
        if let Some(t) = ticker {
            t.abort();
            let done = progress.load(Ordering::Relaxed);
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!("\r[{}] {done}/{total} purchases", "#".repeat(30));
            } else {
                eprintln!("{done}/{total} purchases: done");
            }
        }
        summary
    });
    let elapsed = started.elapsed();
    print!("{}", summary.render());
    let requests = summary.approved + summary.partial + summary.declined;
    println!(
        "throughput: {requests} requests in {:.1}s ({:.0}/s)",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    let ok = summary.disagreements == 0 && summary.undelivered == 0 && summary.errors.is_empty();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Base-36 milliseconds: short ids, distinct between runs.
fn clock_namespace() -> String {
    let mut n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut s = String::new();
    while n > 0 {
        s.insert(0, char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
    }
    s
}
