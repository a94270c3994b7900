//! The `cel` crate's own interpreter run on a cardgate rules file, for the peer
//! comparison bench (`benches/rules.rs` in this crate).
//!
//! A copy of the main crate's test-only `rules::reference` adapter, reduced to
//! authorization contexts: that module is compiled only for cardgate's unit tests
//! (the differential tests), so a crate outside it cannot link it. The two must
//! bind the same variables; the bench checks that this one picks the same rule as
//! cardgate before anything is timed, so a drift shows up as a failed assertion.
//!
//! Set up as fairly as the `cel` crate allows: one shared function environment,
//! each program compiled once; only the per-authorization variables are built per
//! call (the interpreter reads them by name).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cardgate::decision::{Context, Interval, Scope};
use cardgate::rules::{Action, Matched, Verdict};
use cel::{Env, Program, Value};
use serde::Deserialize;

/// The rules file as written. Lenient where cardgate is strict (unknown keys,
/// names): callers pass text that `RuleSet::from_toml` already accepted.
#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    lists: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
struct RawRule {
    name: String,
    when: String,
    action: String,
    amount: Option<i64>,
    mode: Option<String>,
}

/// A rules file compiled for the `cel` interpreter.
pub struct Interpreter {
    env: Arc<Env>,
    lists: Value,
    decisive: Vec<(Arc<str>, Action, Program)>,
    shadow: Vec<(Arc<str>, Action, Program)>,
}

impl std::fmt::Debug for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interpreter")
            .field("rules", &(self.decisive.len() + self.shadow.len()))
            .finish_non_exhaustive()
    }
}

impl Interpreter {
    /// Compiles a rules file that `cardgate::rules::RuleSet::from_toml` accepts.
    ///
    /// # Errors
    /// A plain message naming what the interpreter could not take: this is a
    /// bench tool, not a validator.
    pub fn from_toml(src: &str) -> Result<Self, String> {
        let raw: RawFile = toml::from_str(src).map_err(|e| e.to_string())?;
        let env = Arc::new(Env::stdlib());
        let mut lists = HashMap::new();
        for (name, items) in raw.lists {
            let vals: Vec<Value> = items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(Value::from(s)),
                    toml::Value::Integer(i) => Ok(Value::Int(i)),
                    other => Err(format!("list entry {other}")),
                })
                .collect::<Result<_, _>>()?;
            lists.insert(name, Value::List(Arc::new(vals)));
        }
        let mut decisive = Vec::new();
        let mut shadow = Vec::new();
        for r in raw.rule {
            let program = env
                .compile(&r.when)
                .map_err(|e| format!("{}: {e}", r.name))?;
            let action = match r.action.as_str() {
                "approve" => Action::Approve,
                "decline" => Action::Decline,
                "review" => Action::Review,
                "cap" => Action::Cap(r.amount.unwrap_or(0)),
                other => return Err(format!("action {other}")),
            };
            let entry = (Arc::from(r.name.as_str()), action, program);
            if r.mode.as_deref() == Some("shadow") {
                shadow.push(entry);
            } else {
                decisive.push(entry);
            }
        }
        Ok(Interpreter {
            env,
            lists: Value::from(lists),
            decisive,
            shadow,
        })
    }

    /// Evaluates like `RuleSet::evaluate`: first decisive match, every shadow
    /// match; an error or a non-bool result does not match.
    #[must_use]
    pub fn evaluate(&self, ctx: &Context<'_>) -> Verdict {
        let mut act = cel::Context::with_env(self.env.clone());
        bind(&mut act, ctx, self.lists.clone());
        let matches = |p: &Program| matches!(p.execute(&act), Ok(Value::Bool(true)));
        let mut v = Verdict::default();
        for (name, action, p) in &self.decisive {
            if matches(p) {
                v.decisive = Some(Matched {
                    name: name.clone(),
                    action: *action,
                });
                break;
            }
        }
        for (name, action, p) in &self.shadow {
            if matches(p) {
                v.shadow.push(Matched {
                    name: name.clone(),
                    action: *action,
                });
            }
        }
        v
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let m: HashMap<String, Value> = entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Value::from(m)
}

/// Binds the context of DESIGN.md ("Rules: CEL, compiled") as CEL variables; the
/// interpreter's per-authorization cost is mostly this, and it is timed on purpose
/// (a service using the interpreter would pay it on every request).
fn bind(c: &mut cel::Context<'_, 'static>, ctx: &Context<'_>, lists: Value) {
    let a = ctx.auth;
    let s = |x: &str| Value::from(x);
    let metadata: HashMap<String, Value> = a
        .card
        .metadata
        .iter()
        .map(|(k, v)| ((*k).to_string(), s(v)))
        .collect();
    let vars = [
        ("amount", Value::Int(a.amount)),
        ("currency", s(a.currency.as_str())),
        ("merchant_amount", Value::Int(a.merchant_amount)),
        ("merchant_currency", s(a.merchant_currency.as_str())),
        (
            "merchant",
            map(vec![
                ("category", s(a.merchant.category)),
                ("category_code", s(a.merchant.category_code)),
                ("country", s(a.merchant.country)),
                ("city", s(a.merchant.city)),
                ("name", s(a.merchant.name)),
                ("network_id", s(a.merchant.network_id)),
                ("postal_code", s(a.merchant.postal_code)),
            ]),
        ),
        (
            "card",
            map(vec![
                ("id", s(a.card.id)),
                ("type", s(a.card.card_type)),
                ("status", s(a.card.status.as_str())),
                ("metadata", Value::from(metadata)),
            ]),
        ),
        (
            "cardholder",
            map(vec![
                ("id", s(a.cardholder.id)),
                ("type", s(a.cardholder.kind)),
                ("status", s(a.cardholder.status.as_str())),
            ]),
        ),
        ("authorization_method", s(a.authorization_method)),
        (
            "is_amount_controllable",
            Value::Bool(a.is_amount_controllable),
        ),
        ("wallet", s(a.wallet)),
        (
            "network_risk_score",
            Value::Int(a.network_risk_score.unwrap_or(0)),
        ),
        (
            "verification",
            map(vec![
                ("cvc_check", s(a.verification.cvc_check)),
                ("expiry_check", s(a.verification.expiry_check)),
                (
                    "address_postal_code_check",
                    s(a.verification.address_postal_code_check),
                ),
                ("three_d_secure", s(a.verification.three_d_secure)),
            ]),
        ),
        ("lists", lists),
    ];
    for (name, v) in vars.into_iter().chain(history(ctx)) {
        c.add_variable_from_value(name, v);
    }
}

/// The variables read from past spend and the clock rather than the request.
fn history(ctx: &Context<'_>) -> [(&'static str, Value); 3] {
    let spend = |scope| {
        map([
            ("daily", Interval::Daily),
            ("weekly", Interval::Weekly),
            ("monthly", Interval::Monthly),
            ("yearly", Interval::Yearly),
            ("all_time", Interval::AllTime),
        ]
        .into_iter()
        .map(|(k, i)| {
            (
                k,
                Value::Int(ctx.spend.spent(scope, i, None, ctx.auth.currency)),
            )
        })
        .collect())
    };
    let (v1h, v24h) = ctx.spend.card_velocity();
    [
        (
            "spend",
            map(vec![
                ("card", spend(Scope::Card)),
                ("cardholder", spend(Scope::Cardholder)),
            ]),
        ),
        (
            "velocity",
            map(vec![(
                "card",
                map(vec![
                    ("count_1h", Value::Int(v1h)),
                    ("count_24h", Value::Int(v24h)),
                ]),
            )]),
        ),
        (
            "now",
            map(vec![
                ("hour", Value::Int(ctx.now.rem_euclid(86_400) / 3_600)),
                (
                    "weekday",
                    Value::Int((ctx.now.div_euclid(86_400) + 4).rem_euclid(7)),
                ),
            ]),
        ),
    ]
}
