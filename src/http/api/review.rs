//! `GET /v1/approval_requests/{id}/review`: what a reviewer needs beside the
//! Approve button. For a rule-set publish or a list change, the line diff of the
//! proposed rules file against the live one and the backtest of the proposed set
//! on the last `days` days of recorded decisions (the same replay as `cardgate
//! backtest`); for a control override, the card or cardholder, the override in
//! force and the recent decisions it would turn into declines; for an allowance,
//! the card, merchant and amount and the decision it changes.
//!
//! *Why a server-side diff, written here:* the page stays one static script with
//! no third-party code (its CSP allows only this origin), the diff is tested with
//! the rest of the crate, and a rules file is at most a few thousand lines, so a
//! plain longest-common-subsequence table is fast enough without a new dependency.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{Value, json};

use super::decisions::{READERS, log, read_failed};
use super::routes::Query;
use super::{ApiError, Result, bad_param, need, ok};
use crate::approvals::{Action, Actor, AllowanceSpec, Approvals, OverrideSpec, Scope};
use crate::decision::ProgramControls;
use crate::http::AppState;
use crate::journal::{DecisionQuery, LoggedDecision};
use crate::rules::RuleSet;
use crate::rules::backtest::{Replay, Report};

/// Days of recorded traffic the backtest replays unless `days` says otherwise.
const DEFAULT_DAYS: i64 = 7;
/// Most days a reviewer may ask for.
const MAX_DAYS: i64 = 90;
/// Most decisions one review replays (the newest): bounds the page's wait.
const MAX_REPLAYED: usize = 50_000;
/// Past this many lines on either side the diff is not computed cell by cell
/// (the table would be too large); the reviewer gets both whole files instead.
const MAX_DIFF_LINES: usize = 4_000;
/// Recent decisions shown for an override.
const OVERRIDE_EXAMPLES: u32 = 20;

/// `GET /v1/approval_requests/{id}/review`.
pub(super) async fn review(
    state: &Arc<AppState>,
    actor: &Actor,
    approvals: &Arc<Approvals>,
    id: &str,
    query: &Query,
) -> Result<(StatusCode, Value)> {
    need(actor, READERS)?;
    let days = match query.int("days")? {
        None => DEFAULT_DAYS,
        Some(d) if (1..=MAX_DAYS).contains(&d) => d,
        Some(_) => return Err(bad_param("days", "days must be between 1 and 90")),
    };
    let request = approvals.get_request(id).await?;
    let live = state.rules().load_full();
    let mut out = json!({"object": "approval_review", "approval_request": request.id,
        "action": request.action.kind().as_str(), "status": request.status.as_str()});
    match &request.action {
        Action::PublishRuleset { source } => {
            out["ruleset"] = proposed_set(state, &live, source.clone(), days).await?;
        }
        Action::UpdateList { name, values } => {
            out["list"] = json!({"name": name, "values": values});
            match crate::approvals::action::replace_list(live.source(), name, values) {
                Ok(src) => out["ruleset"] = proposed_set(state, &live, src, days).await?,
                Err(e) => out["ruleset"] = json!({"error": e}),
            }
        }
        Action::SetControlOverride(spec) => {
            out["override"] = override_subject(state, approvals, spec).await?;
        }
        Action::AuthorizationAllowance(spec) => {
            out["allowance"] = allowance_subject(state, spec).await?;
        }
        _ => {}
    }
    ok(out)
}

/// The diff against the live set and the backtest of `proposed`.
async fn proposed_set(
    state: &Arc<AppState>,
    live: &RuleSet,
    proposed: String,
    days: i64,
) -> Result<Value> {
    let diff = line_diff(live.source(), &proposed);
    let candidate = match RuleSet::from_toml_unmetered(&proposed) {
        Ok(set) => set,
        Err(e) => {
            return Ok(json!({"live_version": live.version(), "diff": diff,
                "error": e.to_string()}));
        }
    };
    let since = state.now() - days * 86_400;
    let program = state.config.program.clone();
    let version = candidate.version().to_string();
    let log = log(state)?;
    let (rows, truncated) = log
        .recent(since, MAX_REPLAYED)
        .await
        .map_err(|e| read_failed(&e))?;
    let blobs = log.blobs().await.map_err(|e| read_failed(&e))?;
    // The replay is CPU work over up to MAX_REPLAYED rows: off the runtime.
    let report = tokio::task::spawn_blocking(move || backtest(&candidate, &program, &rows, blobs))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "backtest",
                "the backtest was interrupted",
            )
        })?;
    Ok(json!({
        "live_version": live.version(),
        "proposed_version": version,
        "diff": diff,
        "backtest": {"days": days, "since": since, "truncated": truncated,
            "report": report_json(&report)},
    }))
}

/// The one call into the backtest (`crate::rules::backtest`), fed the way
/// `cardgate backtest` feeds it from the store, so the page and the CLI agree.
fn backtest(
    candidate: &RuleSet,
    program: &ProgramControls,
    rows: &[LoggedDecision],
    blobs: std::collections::HashMap<i64, Vec<u8>>,
) -> Report {
    let mut replay = Replay::new(candidate, program, blobs);
    for (index, row) in rows.iter().enumerate() {
        replay.push_logged(index, row);
    }
    replay.finish()
}

/// Examples the page lists (the report keeps the first of each kind).
const REVIEW_EXAMPLES: usize = 20;

fn report_json(r: &Report) -> Value {
    let counts = |c: &crate::rules::backtest::Counts| {
        json!({"approve_to_decline": c.approve_to_decline,
            "decline_to_approve": c.decline_to_approve, "amount": c.amount,
            "reason": c.reason, "total": c.total()})
    };
    let outcome = |o: &crate::rules::backtest::Outcome| json!({"approved": o.approved, "amount": o.amount, "reason": o.reason, "rule": o.rule});
    json!({
        "replayed": r.replayed,
        "approximate": r.approximate,
        "skipped": r.skipped,
        "unchanged": r.unchanged,
        "changed": counts(&r.changes),
        "knock_on": counts(&r.knock_on),
        "by_rule": r.rules.iter().filter(|(_, s)| s.counts.total() > 0).map(|(rule, s)| {
            let mut v = counts(&s.counts);
            v["rule"] = json!(rule);
            v["matches"] = json!(s.matches);
            v["amount_affected"] = json!(s.amount_affected);
            v
        }).collect::<Vec<_>>(),
        "examples": r.changed.iter().take(REVIEW_EXAMPLES).map(|e| json!({
            "authorization": e.authorization,
            "change": e.change.as_str(),
            "knock_on": e.knock_on,
            "before": outcome(&e.before),
            "after": outcome(&e.after),
        })).collect::<Vec<_>>(),
    })
}

/// The override asked for, the one in force, and the card's (or cardholder's)
/// recent decisions with those the override would decline marked.
async fn override_subject(
    state: &Arc<AppState>,
    approvals: &Arc<Approvals>,
    spec: &OverrideSpec,
) -> Result<Value> {
    let current = approvals
        .list_overrides()
        .await?
        .into_iter()
        .find(|o| o.spec.scope == spec.scope && o.spec.id == spec.id)
        .map(|o| o.spec);
    let scope = spec.scope.as_str();
    let mut q = DecisionQuery {
        limit: OVERRIDE_EXAMPLES,
        ..DecisionQuery::default()
    };
    match spec.scope {
        Scope::Card => q.card = Some(spec.id.clone()),
        Scope::Cardholder => q.cardholder = Some(spec.id.clone()),
    }
    let (rows, _) = log(state)?.search(&q).await.map_err(|e| read_failed(&e))?;
    let per_auth = spec.spending_limits.iter().map(|l| l.amount).min();
    let recent: Vec<Value> = rows
        .iter()
        .map(|d| {
            let declined_by = if !d.approved {
                None
            } else if per_auth.is_some_and(|max| d.amount > max) {
                Some("spending_limits")
            } else if spec.blocked_categories.contains(&d.merchant_category) {
                Some("blocked_categories")
            } else if spec
                .blocked_merchant_countries
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&d.merchant_country))
            {
                Some("blocked_merchant_countries")
            } else {
                None
            };
            json!({"authorization": d.authorization_id, "decided_at": d.decided_at,
                "card": d.card, "merchant": d.merchant_name, "amount": d.amount,
                "currency": d.currency, "approved": d.approved, "reason": d.reason,
                "would_decline": declined_by})
        })
        .collect();
    Ok(
        json!({"scope": scope, "id": spec.id, "proposed": spec, "current": current,
        "clears": spec.is_empty(), "recent_decisions": recent}),
    )
}

/// The allowance and the declined decision it would let through once.
async fn allowance_subject(state: &Arc<AppState>, spec: &AllowanceSpec) -> Result<Value> {
    let declined = match &spec.authorization {
        Some(auth) => {
            let q = DecisionQuery {
                authorization: Some(auth.clone()),
                limit: 1,
                ..DecisionQuery::default()
            };
            let (rows, _) = log(state)?.search(&q).await.map_err(|e| read_failed(&e))?;
            rows.first().map(|d| {
                json!({"authorization": d.authorization_id, "decided_at": d.decided_at,
                    "approved": d.approved, "reason": d.reason, "rule": d.rule,
                    "amount": d.amount, "currency": d.currency, "merchant": d.merchant_name,
                    "merchant_country": d.merchant_country,
                    "merchant_category": d.merchant_category})
            })
        }
        None => None,
    };
    Ok(
        json!({"card": spec.card, "merchant": spec.merchant, "amount": spec.amount,
        "currency": spec.currency, "authorization": spec.authorization, "rule": spec.rule,
        "details": spec.details, "declined_decision": declined,
        "effect": "one retry by this card at this merchant for exactly this amount is approved past the review rule"}),
    )
}

/// A line diff: each line of `old` and `new` once, as `equal`, `delete` (only in
/// `old`) or `insert` (only in `new`), in reading order, with 1-based line numbers.
pub(super) fn line_diff(old: &str, new: &str) -> Value {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let line = |op: &str, o: Option<usize>, n: Option<usize>, text: &str| json!({"op": op, "old": o.map(|i| i + 1), "new": n.map(|i| i + 1), "text": text});
    let mut out = Vec::new();
    if a.len() > MAX_DIFF_LINES || b.len() > MAX_DIFF_LINES {
        out.extend(
            a.iter()
                .enumerate()
                .map(|(i, t)| line("delete", Some(i), None, t)),
        );
        out.extend(
            b.iter()
                .enumerate()
                .map(|(j, t)| line("insert", None, Some(j), t)),
        );
        return Value::Array(out);
    }
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let w = b.len() + 1;
    let mut lcs = vec![0u32; (a.len() + 1) * w];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i * w + j] = if a[i] == b[j] {
                lcs[(i + 1) * w + j + 1] + 1
            } else {
                lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(line("equal", Some(i), Some(j), a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
            // Deletions first, as `diff` prints them.
            out.push(line("delete", Some(i), None, a[i]));
            i += 1;
        } else {
            out.push(line("insert", None, Some(j), b[j]));
            j += 1;
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let sign = match l["op"].as_str().unwrap() {
                    "equal" => ' ',
                    "insert" => '+',
                    _ => '-',
                };
                format!("{sign}{}", l["text"].as_str().unwrap())
            })
            .collect()
    }

    #[test]
    fn line_diff_keeps_common_lines_and_marks_the_changed_ones() {
        let old = "[lists]\na = [1]\n\n[[rule]]\nname = \"x\"\namount = 10000\n";
        let new =
            "[lists]\na = [1]\n\n[[rule]]\nname = \"x\"\namount = 5000\n[[rule]]\nname = \"y\"\n";
        assert_eq!(
            ops(&line_diff(old, new)),
            [
                " [lists]",
                " a = [1]",
                " ",
                " [[rule]]",
                " name = \"x\"",
                "-amount = 10000",
                "+amount = 5000",
                "+[[rule]]",
                "+name = \"y\"",
            ]
        );
        let d = line_diff(old, new);
        assert_eq!(
            (d[5]["old"].clone(), d[5]["new"].clone()),
            (json!(6), Value::Null)
        );
        assert_eq!(
            (d[6]["old"].clone(), d[6]["new"].clone()),
            (Value::Null, json!(6))
        );
    }

    #[test]
    fn line_diff_of_equal_and_empty_files() {
        assert_eq!(ops(&line_diff("a\nb\n", "a\nb\n")), [" a", " b"]);
        assert_eq!(ops(&line_diff("", "a\n")), ["+a"]);
        assert_eq!(ops(&line_diff("a\n", "")), ["-a"]);
    }
}
