//! `cardgate backtest`: replay the recorded decisions (the store's decision log, or
//! a JSONL file) through a candidate rules file; the report goes to stdout as a
//! table or as JSON, progress to stderr.

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
        let path = config.store.data_dir.join(store::FILE_NAME);
        let read = |e| format!("reading the decision log of {}: {e}", path.display());
        let blobs = store::read_decision_blobs(&path).map_err(|e| anyhow::anyhow!(read(e)))?;
        let cardholder = match &o.card {
            Some(card) => Some(cardholder_of(&path, card)?),
            None => None,
        };
        let filter = DecisionFilter {
            since: o.since,
            until: o.until,
            cardholder,
        };
        progress.total = store::count_decisions(&path, &filter).ok();
        let mut replay = Replay::new(&set, &config.program, blobs)
            .only_card(o.card.clone())
            .keep_all_changes(o.format == Format::Json);
        let mut index = 0;
        store::for_each_decision(&path, &filter, |row| {
            let counted = o.card.as_ref().is_none_or(|c| *c == row.card);
            if counted && replay.seen() >= limit {
                return ControlFlow::Break(());
            }
            replay.push_logged(index, &row);
            index += 1;
            progress.tick(replay.seen());
            ControlFlow::Continue(())
        })
        .map_err(|e| anyhow::anyhow!(read(e)))?;
        (path.display().to_string(), replay.finish())
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
fn cardholder_of(path: &Path, card: &str) -> anyhow::Result<String> {
    let mut found = None;
    let filter = DecisionFilter::default();
    store::for_each_decision(path, &filter, |row| {
        if row.card == card {
            found = Some(row.cardholder);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    found.with_context(|| format!("no decision of card {card} in {}", path.display()))
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
