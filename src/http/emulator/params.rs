//! The emulator API's parameters: a Stripe form body (`a[b][0]=v`) or a JSON body
//! read into one JSON object, then into the typed inputs of the emulator's
//! operations. Every refusal names the parameter, as Stripe's do.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::simulate::{
    ApiDecision, Merchant, NewAuthorization, NewCard, NewCardholder, SimError, SpendingControls,
    SpendingLimit,
};

/// A refused parameter (400).
pub(super) fn bad(code: &'static str, param: &str, message: impl Into<String>) -> SimError {
    SimError::param(code, param, message)
}

/// Form (`a[b][0]=v`) or JSON body → one JSON object. Form values stay strings;
/// the typed readers below accept both.
pub(super) fn parse_params(body: &[u8], is_json: bool) -> Result<Value, SimError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    if is_json {
        return match serde_json::from_slice::<Value>(body) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(SimError::state(
                "parameter_invalid",
                "the JSON body must be an object",
            )),
        };
    }
    let mut root = Value::Object(serde_json::Map::new());
    for (key, value) in form_urlencoded::parse(body) {
        let mut parts = Vec::new();
        let (head, mut rest) = match key.find('[') {
            Some(i) => (&key[..i], &key[i..]),
            None => (&key[..], ""),
        };
        parts.push(head.to_string());
        while let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Err(bad("parameter_invalid", &key, "unbalanced [ in key"));
            };
            parts.push(r[..end].to_string());
            rest = &r[end + 1..];
        }
        if !rest.is_empty() || parts.len() > 6 {
            return Err(bad("parameter_invalid", &key, "malformed key"));
        }
        let mut cur = &mut root;
        for (i, part) in parts.iter().enumerate() {
            let Some(obj) = cur.as_object_mut() else {
                return Err(bad("parameter_invalid", &key, "conflicting keys"));
            };
            // `a[]=x` appends: give it the next index.
            let part = if part.is_empty() {
                obj.len().to_string()
            } else {
                part.clone()
            };
            if i + 1 == parts.len() {
                obj.insert(part, Value::String(value.to_string()));
                break;
            }
            cur = obj
                .entry(part)
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
        }
    }
    // Only nested `a[0]=…` become arrays: the body itself stays an object even
    // when its keys are 0..n (`0=x`, `[]=x`), which every reader expects.
    Ok(match root {
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect()),
        other => other,
    })
}

/// Fuzzing entry point (`fuzz/fuzz_targets/emulator_params.rs`): reads `body` as
/// the emulator does and runs every typed reader over the result, so a body no
/// reader can panic on is a body no emulator route can panic on. Not an API.
#[doc(hidden)]
pub fn fuzz_decode(body: &[u8], is_json: bool) -> Result<Value, SimError> {
    let p = parse_params(body, is_json)?;
    // Each reader sees the same object: one refusing it must not stop the others
    // from being exercised.
    let _ = new_cardholder(&p);
    let _ = new_card(&p);
    let _ = new_authorization(&p);
    let _ = api_decision(&p, true);
    let _ = api_decision(&p, false);
    Ok(p)
}

/// Objects whose keys are exactly 0..n become arrays (Stripe's `a[0][b]` form).
fn arrays(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let n = map.len();
            let indexed = n > 0 && (0..n).all(|i| map.contains_key(&i.to_string()));
            if indexed {
                let mut map = map;
                Value::Array(
                    (0..n)
                        .map(|i| arrays(map.remove(&i.to_string()).unwrap_or(Value::Null)))
                        .collect(),
                )
            } else {
                Value::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect())
            }
        }
        other => other,
    }
}

fn field<'a>(p: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(p, |v, k| match (v, k.parse::<usize>()) {
            (Value::Array(a), Ok(i)) => a.get(i),
            _ => v.get(k),
        })
        .filter(|v| !v.is_null())
}

fn param_name(path: &str) -> String {
    let mut parts = path.split('.');
    let mut out = parts.next().unwrap_or_default().to_string();
    for p in parts {
        out.push('[');
        out.push_str(p);
        out.push(']');
    }
    out
}

pub(super) fn int_param(p: &Value, path: &str) -> Result<Option<i64>, SimError> {
    match field(p, path) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            bad(
                "parameter_invalid_integer",
                &param_name(path),
                "not an integer",
            )
        }),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
            bad(
                "parameter_invalid_integer",
                &param_name(path),
                format!("Invalid integer: {s}"),
            )
        }),
        Some(_) => Err(bad(
            "parameter_invalid_integer",
            &param_name(path),
            "not an integer",
        )),
    }
}

pub(super) fn bool_param(p: &Value, path: &str) -> Result<Option<bool>, SimError> {
    match field(p, path) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err(bad(
            "parameter_invalid_boolean",
            &param_name(path),
            "Invalid boolean: use true or false",
        )),
    }
}

pub(super) fn str_param(p: &Value, path: &str) -> Option<String> {
    match field(p, path)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(p: &Value, path: &str) -> Result<Option<Vec<String>>, SimError> {
    match field(p, path) {
        None => Ok(None),
        // Stripe's form encoding unsets a list with an empty value.
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(bad("parameter_invalid", &param_name(path), "not a string")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad(
            "parameter_invalid",
            &param_name(path),
            "expected a list",
        )),
    }
}

fn metadata(p: &Value, path: &str) -> Result<BTreeMap<String, String>, SimError> {
    match field(p, path) {
        None => Ok(BTreeMap::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => {
            if m.len() > 50 {
                return Err(bad(
                    "parameter_invalid",
                    path,
                    "metadata has more than 50 keys",
                ));
            }
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => String::new(),
                    _ => {
                        return Err(bad(
                            "parameter_invalid",
                            &format!("{path}[{k}]"),
                            "metadata values are strings",
                        ));
                    }
                };
                if k.chars().count() > 40 || v.chars().count() > 500 {
                    return Err(bad(
                        "parameter_invalid",
                        &format!("{path}[{k}]"),
                        "metadata keys are at most 40 characters, values 500",
                    ));
                }
                out.insert(k.clone(), v);
            }
            Ok(out)
        }
        Some(_) => Err(bad("parameter_invalid", path, "metadata must be an object")),
    }
}

fn controls(p: &Value, path: &str) -> Result<SpendingControls, SimError> {
    let at = |k: &str| format!("{path}.{k}");
    let mut limits = Vec::new();
    if let Some(list) = field(p, &at("spending_limits")) {
        let Some(list) = list.as_array() else {
            return Err(bad(
                "parameter_invalid",
                &param_name(&at("spending_limits")),
                "expected a list",
            ));
        };
        for (i, l) in list.iter().enumerate() {
            let base = format!("{path}.spending_limits.{i}");
            let amount = int_param(p, &format!("{base}.amount"))?.ok_or_else(|| {
                bad(
                    "parameter_missing",
                    &param_name(&format!("{base}.amount")),
                    "missing amount",
                )
            })?;
            let interval = l
                .get("interval")
                .and_then(|v| v.as_str())
                .ok_or_else(|| {
                    bad(
                        "parameter_missing",
                        &param_name(&format!("{base}.interval")),
                        "missing interval",
                    )
                })?
                .to_string();
            limits.push(SpendingLimit {
                amount,
                interval,
                categories: strings(p, &format!("{base}.categories"))?,
            });
        }
    }
    Ok(SpendingControls {
        allowed_categories: strings(p, &at("allowed_categories"))?,
        blocked_categories: strings(p, &at("blocked_categories"))?,
        allowed_merchant_countries: strings(p, &at("allowed_merchant_countries"))?,
        blocked_merchant_countries: strings(p, &at("blocked_merchant_countries"))?,
        spending_limits: limits,
        spending_limits_currency: str_param(p, &at("spending_limits_currency")),
    })
}

pub(super) fn new_cardholder(p: &Value) -> Result<NewCardholder, SimError> {
    Ok(NewCardholder {
        name: str_param(p, "name"),
        email: str_param(p, "email"),
        status: str_param(p, "status"),
        spending_controls: controls(p, "spending_controls")?,
        metadata: metadata(p, "metadata")?,
    })
}

pub(super) fn new_card(p: &Value) -> Result<NewCard, SimError> {
    Ok(NewCard {
        cardholder: str_param(p, "cardholder").ok_or_else(|| {
            bad(
                "parameter_missing",
                "cardholder",
                "Missing required param: cardholder.",
            )
        })?,
        currency: str_param(p, "currency"),
        status: str_param(p, "status"),
        card_type: str_param(p, "type"),
        spending_controls: controls(p, "spending_controls")?,
        metadata: metadata(p, "metadata")?,
    })
}

pub(super) fn new_authorization(p: &Value) -> Result<NewAuthorization, SimError> {
    let card = str_param(p, "card")
        .ok_or_else(|| bad("parameter_missing", "card", "Missing required param: card."))?;
    let amount = int_param(p, "amount")?
        .or(int_param(p, "merchant_amount")?)
        .ok_or_else(|| {
            bad(
                "parameter_missing",
                "amount",
                "Missing required param: amount (or merchant_amount).",
            )
        })?;
    let d = Merchant::default();
    let m = |k: &str| str_param(p, &format!("merchant_data.{k}"));
    let category_code = match (m("category_code"), m("category")) {
        (Some(code), _) => code,
        (None, Some(name)) => crate::decision::category_by_name(&name)
            .map(|c| crate::decision::categories::CATEGORIES[usize::from(c)].mcc)
            .filter(|mcc| !mcc.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                bad(
                    "parameter_invalid",
                    "merchant_data[category]",
                    format!("unknown merchant category {name:?}"),
                )
            })?,
        (None, None) => d.category_code.clone(),
    };
    let category = match m("category") {
        Some(c) => c,
        None => crate::decision::category_by_mcc(&category_code)
            .map(|c| {
                crate::decision::categories::CATEGORIES[usize::from(c)]
                    .name
                    .to_string()
            })
            .unwrap_or_else(|| d.category.clone()),
    };
    Ok(NewAuthorization {
        card,
        amount,
        merchant_currency: str_param(p, "merchant_currency"),
        merchant_amount: int_param(p, "merchant_amount")?,
        merchant: Merchant {
            category,
            category_code,
            name: m("name").unwrap_or(d.name),
            city: m("city").unwrap_or(d.city),
            country: m("country").unwrap_or(d.country),
            postal_code: m("postal_code").or(d.postal_code),
            state: m("state").or(d.state),
            network_id: m("network_id").unwrap_or(d.network_id),
        },
        authorization_method: str_param(p, "authorization_method").unwrap_or("online".into()),
        is_amount_controllable: bool_param(p, "is_amount_controllable")?.unwrap_or(false),
        wallet: str_param(p, "wallet"),
        network_risk_score: None,
    })
}

pub(super) fn api_decision(p: &Value, approved: bool) -> Result<ApiDecision, SimError> {
    let amount = if approved {
        int_param(p, "amount")?
    } else {
        None
    };
    if let Some(a) = amount
        && a <= 0
    {
        return Err(bad(
            "parameter_invalid_integer",
            "amount",
            "amount must be positive (use decline to decline)",
        ));
    }
    Ok(ApiDecision {
        approved,
        amount,
        metadata: metadata(p, "metadata")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_become_nested_json() {
        let v = parse_params(
            b"card=ic_1&amount=500&merchant_data[category]=bakeries&\
              spending_controls[spending_limits][0][amount]=100&\
              spending_controls[spending_limits][0][interval]=daily&\
              spending_controls[blocked_categories][]=bakeries&metadata[k]=v%20w",
            false,
        )
        .unwrap();
        assert_eq!(v["merchant_data"]["category"], "bakeries");
        assert_eq!(
            v["spending_controls"]["spending_limits"][0]["amount"],
            "100"
        );
        assert_eq!(v["spending_controls"]["blocked_categories"][0], "bakeries");
        assert_eq!(v["metadata"]["k"], "v w");
        let c = controls(&v, "spending_controls").unwrap();
        assert_eq!(c.spending_limits[0].amount, 100);
        assert!(parse_params(b"a[b=1", false).is_err());
        assert!(parse_params(b"a=1&a[b]=2", false).is_err());
        assert!(int_param(&json!({"amount": "12x"}), "amount").is_err());
    }

    /// Issue 15 (fuzzing, `fuzz/fuzz_targets/emulator_params.rs`, input `[]`): a
    /// form body whose top-level keys were 0..n became a JSON array, not the
    /// object every reader expects.
    #[test]
    fn form_keys_like_indexes_turned_the_body_into_an_array() {
        for body in [&b"[]"[..], b"0=x", b"[]=x&[]=y", b"0[a]=1"] {
            let v = parse_params(body, false).unwrap();
            assert!(v.is_object(), "{:?} → {v}", String::from_utf8_lossy(body));
        }
        assert_eq!(
            parse_params(b"0=x&1=y", false).unwrap(),
            json!({"0": "x", "1": "y"})
        );
        // Nested indexes still make arrays.
        assert_eq!(
            parse_params(b"a[0]=x&a[1]=y", false).unwrap(),
            json!({"a": ["x", "y"]})
        );
    }
}
