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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve { config, listen } => serve(config, listen),
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

fn serve(config_path: PathBuf, listen: Option<String>) -> anyhow::Result<ExitCode> {
    let config = match load_config(&config_path, listen) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 78 = EX_CONFIG: tells supervisors not to restart in a loop.
            return Ok(ExitCode::from(78));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState::new(config, RuleSet::empty()));
        tracing::info!(%addr, secrets = state.secrets.len(), "serving");
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
