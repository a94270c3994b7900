//! Encoding cardgate's answer in the shape Stripe accepts for a real-time
//! authorization: `{"approved": bool, "amount"?: int, "send_fraud_challenges"?:
//! ["sms"], "metadata": {...}}`. Only a decline by a `challenge` rule carries
//! `send_fraud_challenges` (Stripe documents it with `approved: false` only). The JSON is
//! written by hand into one buffer: the shape is fixed and tiny, and this runs for
//! every authorization.

use crate::decision::{Decision, Reason, Source};

/// Stripe caps metadata values at 500 characters.
const MAX_METADATA_VALUE: usize = 500;

/// Writes the webhook response body for `decision` made under rule set `ruleset`.
pub fn encode_decision(decision: &Decision, ruleset: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"approved\":");
    out.extend_from_slice(if decision.approved { b"true" } else { b"false" });
    if let (true, Some(amount)) = (decision.approved, decision.amount) {
        out.extend_from_slice(b",\"amount\":");
        out.extend_from_slice(itoa::Buffer::new().format(amount).as_bytes());
    }
    if !decision.approved && decision.reason == Reason::Challenge {
        out.extend_from_slice(b",\"send_fraud_challenges\":[\"sms\"]");
    }
    out.extend_from_slice(b",\"metadata\":{\"reason\":\"");
    // Each metadata value is escaped straight into the body, its pieces sharing
    // one length budget: no string is built per answer.
    let mut budget = MAX_METADATA_VALUE;
    push_escaped(&mut out, decision.reason.as_str(), &mut budget);
    if let (Reason::Rule, Some(Source::Rule(name))) = (decision.reason, &decision.source) {
        push_escaped(&mut out, ":", &mut budget);
        push_escaped(&mut out, name, &mut budget);
    }
    out.push(b'"');
    if let Some(source) = &decision.source {
        out.extend_from_slice(b",\"rule\":\"");
        let mut budget = MAX_METADATA_VALUE;
        match source {
            Source::Control(level, control) => {
                push_escaped(&mut out, level.as_str(), &mut budget);
                push_escaped(&mut out, ".", &mut budget);
                push_escaped(&mut out, control, &mut budget);
            }
            Source::Status(s) => push_escaped(&mut out, s, &mut budget),
            Source::Rule(name) => push_escaped(&mut out, name, &mut budget),
        }
        out.push(b'"');
    }
    out.extend_from_slice(b",\"ruleset\":\"");
    let mut budget = MAX_METADATA_VALUE;
    push_escaped(&mut out, ruleset, &mut budget);
    out.extend_from_slice(b"\"}}");
    out
}

/// Writes `s` as JSON string content, at most `budget` more characters (Stripe's
/// metadata value limit, shared by the pieces of one value).
fn push_escaped(out: &mut Vec<u8>, s: &str, budget: &mut usize) {
    // The usual value (a reason, a control or rule name, the rule-set version) is
    // printable ASCII with nothing to escape, one character per byte, and within
    // the budget: copied whole instead of a character at a time.
    let plain = |b: &u8| (0x20..0x80).contains(b) && *b != b'"' && *b != b'\\';
    if s.len() <= *budget && s.as_bytes().iter().all(plain) {
        out.extend_from_slice(s.as_bytes());
        *budget -= s.len();
        return;
    }
    for c in s.chars() {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{FallbackCause, Level};
    use std::sync::Arc;

    fn json(d: &Decision) -> serde_json::Value {
        serde_json::from_slice(&encode_decision(d, "v1")).unwrap()
    }

    #[test]
    fn shapes() {
        assert_eq!(
            json(&Decision::approve()),
            serde_json::json!({"approved": true, "metadata": {"reason": "approved", "ruleset": "v1"}})
        );
        let partial = Decision {
            approved: true,
            amount: Some(6000),
            reason: Reason::SpendingLimit,
            source: Some(Source::Control(Level::Card, "per_authorization")),
        };
        assert_eq!(
            json(&partial),
            serde_json::json!({"approved": true, "amount": 6000, "metadata":
                {"reason": "spending_limit", "rule": "card.per_authorization", "ruleset": "v1"}})
        );
        let rule = Decision::decline(Reason::Rule, Source::Rule(Arc::from("no-\"gambling\"")));
        assert_eq!(
            json(&rule),
            serde_json::json!({"approved": false, "metadata":
                {"reason": "rule:no-\"gambling\"", "rule": "no-\"gambling\"", "ruleset": "v1"}})
        );
        assert_eq!(
            json(&Decision::fallback(false, FallbackCause::Deadline)),
            serde_json::json!({"approved": false, "metadata": {"reason": "fallback:deadline", "ruleset": "v1"}})
        );
    }

    #[test]
    fn only_a_challenge_decline_asks_for_a_fraud_challenge() {
        let challenge = Decision::decline(Reason::Challenge, Source::Rule(Arc::from("sca")));
        assert_eq!(
            json(&challenge),
            serde_json::json!({"approved": false, "send_fraud_challenges": ["sms"], "metadata":
                {"reason": "challenge", "rule": "sca", "ruleset": "v1"}})
        );
        // A verified retry the challenge rule lets through is a plain approval.
        let mut approved = challenge.clone();
        approved.approved = true;
        assert!(json(&approved).get("send_fraud_challenges").is_none());
        for d in [
            Decision::approve(),
            Decision::decline(Reason::Review, Source::Rule(Arc::from("r"))),
            Decision::decline(Reason::Rule, Source::Rule(Arc::from("r"))),
            Decision::fallback(false, FallbackCause::Deadline),
        ] {
            assert!(json(&d).get("send_fraud_challenges").is_none(), "{d:?}");
        }
    }

    #[test]
    fn long_values_are_cut_to_stripe_limit() {
        let long = "x".repeat(800);
        let d = Decision::decline(Reason::Rule, Source::Rule(Arc::from(long.as_str())));
        let v = json(&d);
        assert_eq!(v["metadata"]["rule"].as_str().unwrap().len(), 500);
    }
}
