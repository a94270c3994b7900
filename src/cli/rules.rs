//! `rules check` and `rules test`: a rules file compiled, or tried on one event
//! (`backtest.rs` replays one against the recorded decisions).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::load_config;
use crate::payments::PaymentRuleSet;
use crate::rules::RuleSet;

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

/// `--since`/`--until`: RFC 3339 (UTC) or Unix seconds.
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
