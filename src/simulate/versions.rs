//! The emulator's authorization events shaped as a given Stripe API version, from
//! 2024-06-20 to 2026-10-28.endive: the emulator builds the newest shape and this
//! takes away what the version did not have yet and renames what it named
//! otherwise (`shared/reference/stripe-api-versions.md` §2, held to the example
//! events of `tests/fixtures/versions/` by a test).
//!
//! An endpoint pinned to an older version would still receive properties added
//! later when Stripe backports them; the emulator sends each version's shape at
//! its release, the strictest reading, so cardgate is tested against the least.

use serde_json::{Map, Value};

/// The earliest version the emulator can shape.
pub const EARLIEST: &str = "2024-06-20";

/// Whether `v` looks like a Stripe API version the emulator can shape:
/// `YYYY-MM-DD`, optionally `.name`, not before [`EARLIEST`].
pub fn supported(v: &str) -> bool {
    let (date, name) = v.split_once('.').unwrap_or((v, ""));
    let b = date.as_bytes();
    let date_ok = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    date_ok && name.bytes().all(|c| c.is_ascii_lowercase()) && date >= EARLIEST
}

/// Reshapes `event` (an emulator event in the newest shape) as version `v`:
/// only `issuing.authorization` objects change.
pub fn shape(v: &str, event: &mut Value) {
    let date = v.get(..10).unwrap_or(v);
    let Some(o) = event
        .pointer_mut("/data/object")
        .and_then(Value::as_object_mut)
        .filter(|o| o.get("object").and_then(Value::as_str) == Some("issuing.authorization"))
    else {
        return;
    };
    let before = |since: &str| date < since;
    if before("2026-04-22") {
        o.remove("card_presence");
        if let Some(card) = o.get_mut("card").and_then(Value::as_object_mut) {
            without_presences(card);
            if let Some(ch) = card.get_mut("cardholder").and_then(Value::as_object_mut) {
                without_presences(ch);
            }
        }
    }
    if before("2026-03-25") {
        if let Some(card) = o.get_mut("card").and_then(Value::as_object_mut) {
            card.remove("lifecycle_controls");
        }
        // dahlia renamed `risk_level` to `level` in these two (not in fraud_risk).
        if let Some(ra) = o.get_mut("risk_assessment").and_then(Value::as_object_mut) {
            for part in ["card_testing_risk", "merchant_dispute_risk"] {
                if let Some(p) = ra.get_mut(part).and_then(Value::as_object_mut)
                    && let Some(level) = p.remove("level")
                {
                    p.insert("risk_level".into(), level);
                }
            }
        }
    }
    if before("2025-11-17") {
        o.remove("risk_assessment");
        o.remove("fraud_disputability_likelihood");
        if let Some(card) = o.get_mut("card").and_then(Value::as_object_mut) {
            card.remove("latest_fraud_warning");
        }
    }
    if before("2025-09-30")
        && let Some(card) = o.get_mut("card").and_then(Value::as_object_mut)
    {
        card.remove("second_line");
    }
    if before("2024-12-18")
        && let Some(md) = o.get_mut("merchant_data").and_then(Value::as_object_mut)
    {
        md.remove("tax_id");
    }
    if before("2024-11-20") {
        o.remove("verified_by_fraud_challenge");
        o.remove("fraud_challenges");
    }
}

fn without_presences(o: &mut Map<String, Value>) {
    if let Some(sc) = o
        .get_mut("spending_controls")
        .and_then(Value::as_object_mut)
    {
        sc.remove("allowed_card_presences");
        sc.remove("blocked_card_presences");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_versions() {
        for v in [
            "2024-06-20",
            "2025-03-31.basil",
            "2026-10-28.endive",
            "2027-01-01.fig",
        ] {
            assert!(supported(v), "{v}");
        }
        for v in [
            "2024-04-10",
            "2025-3-31.basil",
            "2025-03-31.Basil",
            "latest",
            "",
        ] {
            assert!(!supported(v), "{v}");
        }
    }
}
