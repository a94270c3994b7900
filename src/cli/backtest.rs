//! `cardgate backtest`: replay the recorded decisions (the store's decision log, or
//! a JSONL file) through a candidate rules file; the report goes to stdout as a
//! table or as JSON, progress to stderr. The store's log is read through
//! [`DecisionLog`]: the SQLite file of the data directory, or PostgreSQL when
//! `CARDGATE_DATABASE_URL` / `[store] url` is set; both stream.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::load_config;
use crate::rules::RuleSet;
use crate::rules::backtest::{RecordedDecision, Replay};
use crate::store::{self, DecisionFilter};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// A table per rule and the changes.
    Text,
    /// One JSON object.
    Json,
}

/// The options of `cardgate backtest`.
pub(super) struct Options {
    pub rules: PathBuf,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub card: Option<String>,
    pub limit: Option<usize>,
    pub format: Format,
    pub data_dir: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub config: PathBuf,
}

/// A decision log the backtest can stream: what it needs of a store.
trait DecisionLog {
    /// How the report names the source.
    fn name(&self) -> String;
    /// The bodies rows name by hash.
    fn blobs(&self) -> anyhow::Result<HashMap<i64, Vec<u8>>>;
    /// Rows `filter` passes (progress; `None` if unknown).
    fn count(&self, filter: &DecisionFilter) -> Option<u64>;
    /// Streams rows `filter` passes, oldest first; `f` may stop early.
    fn for_each(
        &self,
        filter: &DecisionFilter,
        f: &mut dyn FnMut(crate::journal::LoggedDecision) -> ControlFlow<()>,
    ) -> anyhow::Result<()>;
}

/// The SQLite file of a data directory.
struct SqliteLog(PathBuf);

impl DecisionLog for SqliteLog {
    fn name(&self) -> String {
        self.0.display().to_string()
    }

    fn blobs(&self) -> anyhow::Result<HashMap<i64, Vec<u8>>> {
        Ok(store::read_decision_blobs(&self.0)?)
    }

    fn count(&self, filter: &DecisionFilter) -> Option<u64> {
        store::count_decisions(&self.0, filter).ok()
    }

    fn for_each(
        &self,
        filter: &DecisionFilter,
        f: &mut dyn FnMut(crate::journal::LoggedDecision) -> ControlFlow<()>,
    ) -> anyhow::Result<()> {
        Ok(store::for_each_decision(&self.0, filter, f)?)
    }
}

/// The shared PostgreSQL database, read on a runtime of its own.
struct SharedLog {
    runtime: tokio::runtime::Runtime,
    db: store::Database,
}

impl DecisionLog for SharedLog {
    fn name(&self) -> String {
        self.db.name().to_string()
    }

    fn blobs(&self) -> anyhow::Result<HashMap<i64, Vec<u8>>> {
        self.runtime
            .block_on(store::read_shared_decision_blobs(&self.db))
            .map_err(anyhow::Error::msg)
    }

    fn count(&self, filter: &DecisionFilter) -> Option<u64> {
        self.runtime
            .block_on(store::count_shared_decisions(&self.db, filter))
            .ok()
    }

    fn for_each(
        &self,
        filter: &DecisionFilter,
        f: &mut dyn FnMut(crate::journal::LoggedDecision) -> ControlFlow<()>,
    ) -> anyhow::Result<()> {
        self.runtime
            .block_on(store::for_each_shared_decision(&self.db, filter, f))
            .map_err(anyhow::Error::msg)
    }
}

/// The configured store's decision log.
fn open_log(config: &crate::config::Config) -> anyhow::Result<Box<dyn DecisionLog>> {
    Ok(match &config.store.url {
        Some(url) => {
            let runtime = super::runtime()?;
            let db = runtime.block_on(store::Database::connect(url))?;
            Box::new(SharedLog { runtime, db })
        }
        None => Box::new(SqliteLog(config.store.data_dir.join(store::FILE_NAME))),
    })
}

/// Prints progress about once a second, only for replays long enough to need it.
struct Progress {
    started: Instant,
    last: Instant,
    total: Option<u64>,
}

impl Progress {
    fn tick(&mut self, done: usize) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            let of = self.total.map(|t| format!(" of {t}")).unwrap_or_default();
            eprintln!(
                "backtest: {done}{of} decisions replayed ({:.0}s)",
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

pub(super) fn run(o: &Options) -> anyhow::Result<ExitCode> {
    let src = crate::rules::read_rules_file(&o.rules)?;
    let set = match RuleSet::from_toml_unmetered(&src) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", o.rules.display());
            return Ok(ExitCode::from(1));
        }
    };
    let config = load_config(&o.config, None, o.data_dir.clone())?;
    let limit = o.limit.unwrap_or(usize::MAX);
    let mut progress = Progress {
        started: Instant::now(),
        last: Instant::now(),
        total: None,
    };
    let (source, report) = if let Some(log) = &o.log {
        let mut replay = Replay::new(&set, &config.program, HashMap::new())
            .keep_all_changes(o.format == Format::Json);
        replay_jsonl(log, o, limit, &mut replay, &mut progress)?;
        (log.display().to_string(), replay.finish())
    } else {
        let log = open_log(&config)?;
        let read =
            |e: anyhow::Error| anyhow::anyhow!("reading the decision log of {}: {e:#}", log.name());
        let blobs = log.blobs().map_err(read)?;
        let cardholder = match &o.card {
            Some(card) => Some(cardholder_of(&*log, card)?),
            None => None,
        };
        let filter = DecisionFilter {
            since: o.since,
            until: o.until,
            cardholder,
        };
        progress.total = log.count(&filter);
        let mut replay = Replay::new(&set, &config.program, blobs)
            .only_card(o.card.clone())
            .keep_all_changes(o.format == Format::Json);
        let mut index = 0;
        log.for_each(&filter, &mut |row| {
            let counted = o.card.as_ref().is_none_or(|c| *c == row.card);
            if counted && replay.seen() >= limit {
                return ControlFlow::Break(());
            }
            replay.push_logged(index, &row);
            index += 1;
            progress.tick(replay.seen());
            ControlFlow::Continue(())
        })
        .map_err(read)?;
        (log.name(), replay.finish())
    };
    match o.format {
        Format::Json => println!("{}", report.to_json()),
        Format::Text => {
            let mut scope = Vec::new();
            if let Some(s) = o.since {
                scope.push(format!("since {s}"));
            }
            if let Some(u) = o.until {
                scope.push(format!("until {u}"));
            }
            if let Some(c) = &o.card {
                scope.push(format!("card {c}"));
            }
            if let Some(l) = o.limit {
                scope.push(format!("limit {l}"));
            }
            println!(
                "candidate {} ({} rules) against {source}{}{}",
                set.version(),
                set.len(),
                if scope.is_empty() { "" } else { " " },
                scope.join(", ")
            );
            print!("{report}");
        }
    }
    if report.approximate > 0 {
        eprintln!(
            "backtest: {} of {} decisions replayed approximately (recorded without what exact replay needs)",
            report.approximate, report.replayed
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The cardholder of `card` from the decision log, so `--card` replays the
/// cardholder's other cards too (their changes move its cardholder-wide spend).
fn cardholder_of(log: &dyn DecisionLog, card: &str) -> anyhow::Result<String> {
    let mut found = None;
    let filter = DecisionFilter::default();
    log.for_each(&filter, &mut |row| {
        if row.card == card {
            found = Some(row.cardholder);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    found.with_context(|| format!("no decision of card {card} in {}", log.name()))
}

fn replay_jsonl(
    log: &Path,
    o: &Options,
    limit: usize,
    replay: &mut Replay<'_>,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    use std::io::BufRead;
    let f = std::fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
    let mut index = 0;
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: RecordedDecision = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a recorded decision", log.display(), n + 1))?;
        let in_time = o.since.is_none_or(|s| rec.now >= s) && o.until.is_none_or(|u| rec.now < u);
        if !in_time {
            continue;
        }
        if replay.seen() >= limit {
            break;
        }
        replay.push(index, &rec);
        index += 1;
        progress.tick(replay.seen());
    }
    Ok(())
}
