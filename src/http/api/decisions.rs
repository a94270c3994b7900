//! `GET /v1/decisions` and `GET /v1/decisions/{id}`: the decisions explorer. An
//! analyst (or a reviewer or admin) searches recent decisions by authorization,
//! card, cardholder, reason or rule, and opens one to read everything the decision
//! log kept about it: the controls the payload carried, the rule that decided and
//! the shadow rules that matched, the spend snapshot, the rule-set version and the
//! latency. Read-only; the log is read through `journal::DecisionLog`.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{Value, json};

use super::routes::Query;
use super::{ApiError, Result, bad_param, need, ok};
use crate::approvals::{Actor, Role};
use crate::http::AppState;
use crate::journal::{DecisionLog, DecisionQuery, LoggedDecision};

/// Who may read the decision log: it names cards and cardholders, so not the
/// automation (`agent`) and checkout (`payments`) keys.
pub(super) const READERS: &[Role] = &[Role::Admin, Role::Reviewer, Role::Analyst];

/// Rows a search returns unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 20;

/// The API id of a decision-log row.
fn api_id(row: i64) -> String {
    format!("dec_{row}")
}

fn parse_id(id: &str) -> Option<i64> {
    id.strip_prefix("dec_")?.parse().ok().filter(|n| *n > 0)
}

pub(super) fn log(state: &AppState) -> Result<Arc<dyn DecisionLog>> {
    state.decision_log().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "decision_log_unavailable",
            "the decision log needs the store ([store] enabled = true)",
        )
    })
}

/// The answer to a failed read of the log: logged here, a plain 500 to the caller.
pub(super) fn read_failed(e: &crate::journal::LogReadError) -> ApiError {
    tracing::error!(error = %e, "decision log read failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage",
        "the decision log could not be read",
    )
}

/// `GET /v1/decisions`.
pub(super) async fn search(
    state: &AppState,
    actor: &Actor,
    query: &Query,
) -> Result<(StatusCode, Value)> {
    need(actor, READERS)?;
    let text = |k: &str| query.get(k).filter(|v| !v.is_empty()).map(str::to_string);
    let limit = match query.int("limit")? {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=i64::from(crate::journal::MAX_SEARCH)).contains(&n) => {
            u32::try_from(n).unwrap_or(DEFAULT_LIMIT)
        }
        Some(_) => return Err(bad_param("limit", "limit must be between 1 and 100")),
    };
    let before_id = match query.get("starting_after") {
        None => None,
        Some(id) => Some(parse_id(id).ok_or_else(|| {
            bad_param(
                "starting_after",
                format!("{id:?} is not a decision id (dec_…)"),
            )
        })?),
    };
    // `reason=rule:<name>`, as the webhook's metadata spells it, is the logged
    // reason `rule` decided by that rule.
    let (reason, mut rule) = match text("reason") {
        Some(r) => match r.strip_prefix("rule:") {
            Some(name) => (Some("rule".to_string()), Some(name.to_string())),
            None => (Some(r), None),
        },
        None => (None, None),
    };
    if let Some(r) = text("rule") {
        rule = Some(r);
    }
    let q = DecisionQuery {
        authorization: text("authorization"),
        card: text("card"),
        cardholder: text("cardholder"),
        reason,
        rule,
        since: query.int("since")?,
        before_id,
        limit,
    };
    let (rows, more) = log(state)?.search(&q).await.map_err(|e| read_failed(&e))?;
    let data: Vec<Value> = rows.iter().map(summary).collect();
    ok(json!({"object": "list", "url": "/v1/decisions", "has_more": more, "data": data}))
}

/// `GET /v1/decisions/{id}`.
pub(super) async fn show(state: &AppState, actor: &Actor, id: &str) -> Result<(StatusCode, Value)> {
    need(actor, READERS)?;
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "resource_missing",
            format!("no decision with id {id:?}"),
        )
    };
    let row_id = parse_id(id).ok_or_else(missing)?;
    let row = log(state)?
        .get(row_id)
        .await
        .map_err(|e| read_failed(&e))?
        .ok_or_else(missing)?;
    let live = state.rules().load().version().to_string();
    ok(explanation(&row, &live))
}

/// One row as a search result.
fn summary(d: &LoggedDecision) -> Value {
    json!({
        "object": "decision",
        "id": api_id(d.id),
        "authorization": d.authorization_id,
        "decided_at": d.decided_at,
        "card": d.card,
        "cardholder": d.cardholder,
        "amount": d.amount,
        "currency": d.currency,
        "merchant": {"name": d.merchant_name, "category": d.merchant_category,
            "category_code": d.merchant_mcc, "country": d.merchant_country},
        "approved": d.approved,
        "approved_amount": d.approved_amount,
        "reason": d.reason,
        "rule": d.rule,
        "shadow_rules": shadow(d),
        "ruleset": d.ruleset,
        "latency_us": d.latency_us,
    })
}

fn shadow(d: &LoggedDecision) -> Vec<String> {
    d.shadow_rules
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Everything the log kept about one decision, laid out as the steps `decide()`
/// took: status, the controls the payload carried (card, then cardholder; the
/// config's program controls and overrides are cardgate's own), the rules, and
/// what the ledger had seen.
fn explanation(d: &LoggedDecision, live_ruleset: &str) -> Value {
    let event: Value = serde_json::from_slice(&d.event_json).unwrap_or(Value::Null);
    let auth = &event["data"]["object"];
    let card = &auth["card"];
    let cardholder = &card["cardholder"];
    let controls = |v: &Value| {
        if v.is_object() { v.clone() } else { json!({}) }
    };
    let spend = spend_seen(d);
    let by_rule = d.reason == "rule" || d.reason == "review";
    let decisive = if by_rule { json!(d.rule) } else { Value::Null };
    let decided_by = if d.reason == "approved" && d.rule.is_none() {
        json!("no control or rule declined: approved")
    } else {
        json!({"reason": d.reason, "control_or_rule": d.rule})
    };
    let mut out = summary(d);
    out["event"] = json!(d.event_id);
    out["explanation"] = json!({
        "status": {"card": card["status"], "cardholder": cardholder["status"]},
        "controls": [
            {"level": "card", "spending_controls": controls(&card["spending_controls"])},
            {"level": "cardholder", "spending_controls": controls(&cardholder["spending_controls"])},
        ],
        "decided_by": decided_by,
        "rules": {
            "decisive": decisive,
            "shadow": shadow(d),
            "ruleset": d.ruleset,
            "ruleset_is_live": d.ruleset == live_ruleset,
        },
        "request": {
            "authorization_method": auth["authorization_method"],
            "pending_request": auth["pending_request"],
            "verification_data": auth["verification_data"],
            "wallet": auth["wallet"],
        },
        "spend": spend,
        "latency_us": d.latency_us,
    });
    out
}

/// The spend the decision saw: from its replay record (`journal::seen`) when it
/// has one, else the window totals older rows kept as JSON.
fn spend_seen(d: &LoggedDecision) -> Value {
    use crate::journal::seen::{SEEN_FORMAT, Seen, WINDOWS};
    let decoded = (d.format == SEEN_FORMAT && !d.seen.is_empty())
        .then(|| Seen::decode(&d.seen).ok())
        .flatten();
    let Some(seen) = decoded else {
        return serde_json::from_str(&d.spend_json).unwrap_or_else(|_| json!({}));
    };
    let windows = |totals: &[i64; 5]| {
        WINDOWS
            .iter()
            .zip(totals)
            .map(|(w, t)| (w.as_str().to_string(), json!(t)))
            .collect::<serde_json::Map<_, _>>()
    };
    json!({
        "currency": d.currency,
        "card": windows(&seen.card),
        "cardholder": windows(&seen.cardholder),
        "velocity": {"1h": seen.velocity.0, "24h": seen.velocity.1},
        "category_limits": seen.filtered,
        "recheck_cut": seen.recheck_cut,
        "allowance": seen.review_allowed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_refuse_garbage() {
        assert_eq!(parse_id(&api_id(42)), Some(42));
        for bad in ["42", "dec_", "dec_x", "dec_-1", "dec_0", "iauth_1"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn explanation_carries_controls_rules_spend_and_version() {
        let event = json!({"id": "evt_1", "data": {"object": {
            "id": "iauth_1", "authorization_method": "online",
            "pending_request": {"amount": 15000, "is_amount_controllable": true},
            "card": {"status": "active",
                "spending_controls": {"blocked_categories": ["betting_casino_gambling"]},
                "cardholder": {"status": "active", "spending_controls": {
                    "spending_limits": [{"amount": 40000, "interval": "daily"}]}}}}}});
        let d = LoggedDecision {
            id: 7,
            event_id: "evt_1".into(),
            authorization_id: "iauth_1".into(),
            card: "ic_1".into(),
            cardholder: "ich_1".into(),
            amount: 15000,
            currency: "usd".into(),
            merchant_category: "automated_fuel_dispensers".into(),
            merchant_mcc: "5542".into(),
            merchant_country: "US".into(),
            merchant_name: "VALLEY FUEL #3".into(),
            approved: true,
            approved_amount: 10000,
            reason: "rule".into(),
            rule: Some("cap-fuel".into()),
            ruleset: "v1".into(),
            latency_us: 35,
            decided_at: 1_800_000_000,
            event_json: serde_json::to_vec(&event).unwrap().into(),
            spend_json: r#"{"card":{"daily":2500}}"#.into(),
            shadow_rules: Some(r#"["big-foreign"]"#.into()),
            format: 0,
            seen: Vec::new(),
            blobs: Vec::new(),
        };
        let v = explanation(&d, "v2");
        assert_eq!(v["id"], "dec_7");
        let e = &v["explanation"];
        assert_eq!(
            e["controls"][0]["spending_controls"]["blocked_categories"][0],
            "betting_casino_gambling"
        );
        assert_eq!(
            e["controls"][1]["spending_controls"]["spending_limits"][0]["amount"],
            40000
        );
        assert_eq!(e["rules"]["decisive"], "cap-fuel");
        assert_eq!(e["rules"]["shadow"][0], "big-foreign");
        assert_eq!(e["rules"]["ruleset_is_live"], false);
        assert_eq!(e["spend"]["card"]["daily"], 2500);
        assert_eq!(e["request"]["pending_request"]["amount"], 15000);
        assert_eq!(e["latency_us"], 35);
    }
}
