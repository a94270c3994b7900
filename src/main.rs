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
use cardgate::rules::RuleSet;

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
        /// Rules file (TOML + CEL). Reloaded when it changes, on SIGHUP, and
        /// replaced by POST /v1/rulesets from this machine.
        #[arg(long, env = "CARDGATE_RULES", default_value = "config/rules.toml")]
        rules: PathBuf,
    },
    /// Check or try a rules file.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Replay recorded decisions through a candidate rule set and print what changes.
    Backtest {
        /// The candidate rules file.
        #[arg(long)]
        rules: PathBuf,
        /// Recorded decisions, one JSON RecordedDecision per line.
        #[arg(long)]
        log: PathBuf,
        /// Config file whose [program] controls the replay applies.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
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
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Compile a rules file; exit 1 listing every error with rule, line and column.
    Check {
        /// The rules file.
        file: PathBuf,
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
            rules,
        } => serve(config, listen, rules),
        Command::Rules {
            command: RulesCommand::Check { file },
        } => rules_check(file),
        Command::Rules {
            command:
                RulesCommand::Test {
                    file,
                    event,
                    config,
                    now,
                },
        } => rules_test(file, event, config, now),
        Command::Backtest { rules, log, config } => backtest(rules, log, config),
        Command::Sign {
            file,
            secret,
            timestamp,
            config,
        } => sign(file, secret, timestamp, config),
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

fn load_config(path: &std::path::Path, listen: Option<String>) -> anyhow::Result<Config> {
    Ok(Config::load(path, &ProcessEnv, &Overrides { listen })?)
}

fn serve(
    config_path: PathBuf,
    listen: Option<String>,
    rules_path: PathBuf,
) -> anyhow::Result<ExitCode> {
    let config = match load_config(&config_path, listen) {
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState::new(config, rules));
        tokio::spawn(cardgate::rules::reload::watch(
            rules_path,
            state.clone(),
            |s: &AppState| &s.rules,
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

fn rules_check(file: PathBuf) -> anyhow::Result<ExitCode> {
    match RuleSet::load(&file) {
        Ok(set) => {
            println!(
                "{}: ok, {} rules, version {}",
                file.display(),
                set.len(),
                set.version()
            );
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
    let config = load_config(&config_path, None)?;
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

fn backtest(rules: PathBuf, log: PathBuf, config_path: PathBuf) -> anyhow::Result<ExitCode> {
    use cardgate::rules::backtest::{RecordedDecision, backtest};
    use std::io::BufRead;
    let src = cardgate::rules::read_rules_file(&rules)?;
    let set = match RuleSet::from_toml_unmetered(&src) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", rules.display());
            return Ok(ExitCode::from(1));
        }
    };
    let config = load_config(&config_path, None)?;
    let f = std::fs::File::open(&log).with_context(|| format!("opening {}", log.display()))?;
    let mut records = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: RecordedDecision = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a recorded decision", log.display(), n + 1))?;
        records.push(rec);
    }
    println!("candidate {} ({} rules)", set.version(), set.len());
    print!("{}", backtest(&set, &config.program, &records));
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
        load_config(&config_path, None)
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
