//! `rules check`, `rules test` and `backtest`: a rules file compiled, tried on one
//! event, or replayed against the recorded decisions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::load_config;
use crate::payments::PaymentRuleSet;
use crate::rules::RuleSet;
use crate::store;

pub(super) fn check(file: &Path, payments: bool) -> anyhow::Result<ExitCode> {
    let loaded = if payments {
        PaymentRuleSet::load(file).map(|s| (s.len(), s.version().to_string()))
    } else {
        RuleSet::load(file).map(|s| (s.len(), s.version().to_string()))
    };
    match loaded {
        Ok((len, version)) => {
            println!("{}: ok, {len} rules, version {version}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(crate::rules::LoadError::Invalid { errors, .. }) => {
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

pub(super) fn test(
    file: &Path,
    event: &Path,
    config_path: &Path,
    now: Option<i64>,
) -> anyhow::Result<ExitCode> {
    use crate::decision::{Context, NoSpend, decide_traced};
    let src = crate::rules::read_rules_file(file)?;
    let set = match RuleSet::from_toml_unmetered(&src) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return Ok(ExitCode::from(1));
        }
    };
    let config = load_config(config_path, None, None)?;
    let mut body = std::fs::read(event).with_context(|| format!("reading {}", event.display()))?;
    let doc = crate::stripe::parse_document(&mut body)?;
    let ev = crate::stripe::Event::read(&doc)?;
    anyhow::ensure!(
        ev.event_type == crate::stripe::AUTHORIZATION_REQUEST,
        "{} is a {} event, not {}",
        event.display(),
        ev.event_type,
        crate::stripe::AUTHORIZATION_REQUEST
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
        String::from_utf8_lossy(&crate::stripe::encode_decision(&decision, set.version()))
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
pub(super) fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("`{s}` is neither Unix seconds nor RFC 3339 in UTC: {e}"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0))
}

pub(super) fn backtest(
    rules: &Path,
    since: Option<i64>,
    data_dir: Option<PathBuf>,
    log: Option<&Path>,
    config_path: &Path,
) -> anyhow::Result<ExitCode> {
    use crate::rules::backtest::{RecordedDecision, Replay};
    use std::io::BufRead;
    let src = crate::rules::read_rules_file(rules)?;
    let set = match RuleSet::from_toml_unmetered(&src) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", rules.display());
            return Ok(ExitCode::from(1));
        }
    };
    let config = load_config(config_path, None, data_dir)?;
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
    let source = if let Some(log) = log {
        let f = std::fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
        let mut index = 0;
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let rec: RecordedDecision = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not a recorded decision", log.display(), n + 1))?;
            if since.is_none_or(|s| rec.now >= s) {
                replay.push(index, &rec);
                index += 1;
                progress(&replay, None);
            }
        }
        log.display().to_string()
    } else {
        let (source, rows) = if let Some(url) = &config.store.url {
            super::runtime()?.block_on(async {
                let db = crate::store::Database::connect(url).await?;
                let rows = crate::store::read_shared_decisions(&db, since)
                    .await
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("reading the decision log of {}", db.name()))?;
                anyhow::Ok((db.name().to_string(), rows))
            })?
        } else {
            let path = config.store.data_dir.join(store::FILE_NAME);
            let rows = store::read_decision_log(&path, since)
                .with_context(|| format!("reading the decision log of {}", path.display()))?;
            (path.display().to_string(), rows)
        };
        let total = rows.len();
        for (index, row) in rows.iter().enumerate() {
            match RecordedDecision::from_logged(row) {
                Ok(rec) => replay.push(index, &rec),
                Err(why) => replay.skip(index, format!("row {}: {why}", row.id)),
            }
            progress(&replay, Some(total));
        }
        source
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
