//! The reference: the same rules run by the `cel` crate's own interpreter.
//!
//! Not used to decide anything, and compiled only into cardgate's unit tests: the
//! differential tests (`rules::tests`, `payments::tests`) check that cardgate's
//! compiled evaluator agrees with it on generated rules and contexts. The peer
//! bench against the same interpreter lives outside this crate, in
//! `benches/peers/` (its own copy of the authorization binding below), so that
//! neither a release build nor a bench build of cardgate links the interpreter.
//! Set up as fairly as the crate allows: one shared function environment, each
//! program compiled once; only the per-authorization variables are built per call
//! (the interpreter reads them by name).

use std::collections::HashMap;
use std::sync::Arc;

use cel::{Env, Program, Value};

use super::file::{LineIndex, parse};
use super::{Action, Matched, Verdict};
use crate::decision::{Context, Interval, Scope};

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
    /// Compiles a rules file that [`super::RuleSet::from_toml`] accepts. The error
    /// is a plain message: this is a test tool.
    pub fn from_toml(src: &str) -> Result<Self, String> {
        let lines = LineIndex::new(src);
        let raw = parse(src, &lines).map_err(|e| e.to_string())?;
        let env = Arc::new(Env::stdlib());
        let mut lists = HashMap::new();
        for (name, items) in &raw.lists {
            let vals: Vec<Value> = items
                .get_ref()
                .iter()
                .map(|v| match v.get_ref() {
                    toml::Value::String(s) => Ok(Value::from(s.as_str())),
                    toml::Value::Integer(i) => Ok(Value::Int(*i)),
                    other => Err(format!("list entry {other}")),
                })
                .collect::<Result<_, _>>()?;
            lists.insert(name.clone(), Value::List(Arc::new(vals)));
        }
        let mut decisive = Vec::new();
        let mut shadow = Vec::new();
        for r in &raw.rule {
            let r = r.get_ref();
            let program = env
                .compile(r.when.get_ref())
                .map_err(|e| format!("{}: {e}", r.name.get_ref()))?;
            let action = match r.action.get_ref().as_str() {
                "approve" => Action::Approve,
                "decline" => Action::Decline,
                "review" => Action::Review,
                "challenge" => {
                    Action::Challenge(match r.on_verified.as_ref().map(|o| o.get_ref().as_str()) {
                        Some("skip") => crate::decision::OnVerified::Skip,
                        _ => crate::decision::OnVerified::Approve,
                    })
                }
                "cap" => Action::Cap(r.amount.as_ref().map(|a| *a.get_ref()).unwrap_or(0)),
                other => return Err(format!("action {other}")),
            };
            let entry = (Arc::from(r.name.get_ref().as_str()), action, program);
            if r.mode.as_ref().is_some_and(|m| m.get_ref() == "shadow") {
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

    /// The interpreter's context for one authorization: every context field bound
    /// as a CEL variable.
    pub fn activation(&self, ctx: &Context<'_>) -> cel::Context<'static, 'static> {
        let mut c = cel::Context::with_env(self.env.clone());
        bind(&mut c, ctx, self.lists.clone());
        c
    }

    /// Evaluates like [`super::RuleSet::evaluate`]: first decisive match, every
    /// shadow match; an error or a non-bool result does not match.
    pub fn evaluate(&self, ctx: &Context<'_>) -> Verdict {
        let verified = ctx.auth.signals.verified_by_fraud_challenge == Some(true);
        self.verdict(&self.activation(ctx), verified)
    }

    /// The interpreter's context for one payment approval request.
    pub fn payment_activation(
        &self,
        ctx: &crate::payments::PaymentContext<'_>,
    ) -> cel::Context<'static, 'static> {
        let mut c = cel::Context::with_env(self.env.clone());
        bind_payment(&mut c, ctx, self.lists.clone());
        c
    }

    /// [`Interpreter::evaluate`] for payment rules.
    pub fn evaluate_payment(&self, ctx: &crate::payments::PaymentContext<'_>) -> Verdict {
        self.verdict(&self.payment_activation(ctx), false)
    }

    /// `verified`: the request is a verified fraud-challenge retry, which
    /// `challenge` rules with `on_verified = "skip"` pass over.
    fn verdict(&self, act: &cel::Context<'_, '_>, verified: bool) -> Verdict {
        let matches = |p: &Program| matches!(p.execute(act), Ok(Value::Bool(true)));
        let mut v = Verdict::default();
        for (name, action, p) in &self.decisive {
            if verified && *action == Action::Challenge(crate::decision::OnVerified::Skip) {
                continue;
            }
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

/// Binds the context of DESIGN.md ("Rules: CEL, compiled") as CEL variables.
pub fn bind(c: &mut cel::Context<'_, 'static>, ctx: &Context<'_>, lists: Value) {
    let a = ctx.auth;
    let s = |x: &str| Value::from(x);
    let metadata: HashMap<String, Value> = a
        .card
        .metadata
        .iter()
        .map(|(k, v)| (k.to_string(), s(v)))
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
    for (name, v) in vars.into_iter().chain(history(ctx)).chain(signals(ctx)) {
        c.add_variable_from_value(name, v);
    }
}

/// A map from entries keyed by their remaining path segments.
fn build(entries: Vec<(Vec<&'static str>, Value)>) -> Value {
    let mut leaves: Vec<(&str, Value)> = Vec::new();
    let mut groups: std::collections::BTreeMap<&str, Vec<(Vec<&'static str>, Value)>> =
        std::collections::BTreeMap::new();
    for (parts, v) in entries {
        if parts.len() == 1 {
            leaves.push((parts[0], v));
        } else {
            groups
                .entry(parts[0])
                .or_default()
                .push((parts[1..].to_vec(), v));
        }
    }
    for (k, g) in groups {
        leaves.push((k, build(g)));
    }
    map(leaves)
}

/// Stripe's signals (issue 17) as the compiled rules read them: absent reads as
/// `""` / `0` / `false`; decimal strings as doubles (the interpreter has no
/// decimal type, so the differential tests generate only decimals a double
/// holds exactly).
fn signals(ctx: &Context<'_>) -> Vec<(&'static str, Value)> {
    use crate::decision::{SignalInt, SignalStr};
    let sig = &ctx.auth.signals;
    let leaf = |path: &str| -> Value {
        if let Some(s) = SignalStr::ALL.iter().find(|s| s.path() == path) {
            let v = sig.str(*s).unwrap_or("");
            if s.is_decimal() {
                return Value::Float(v.parse().unwrap_or(0.0));
            }
            return Value::from(v);
        }
        if let Some(i) = SignalInt::ALL.iter().find(|i| i.path() == path) {
            return Value::Int(sig.int(*i).unwrap_or(0));
        }
        match path {
            "risk_assessment.fraud_risk.score" => Value::Float(sig.fraud_risk_score.unwrap_or(0.0)),
            other => panic!("no signal {other}"),
        }
    };
    // Nested maps from the dotted paths.
    let mut paths: Vec<&'static str> = SignalStr::ALL.iter().map(|s| s.path()).collect();
    paths.extend(SignalInt::ALL.iter().map(|i| i.path()));
    paths.push("risk_assessment.fraud_risk.score");
    let mut roots: Vec<(&'static str, Value)> = Vec::new();
    let mut tree: std::collections::BTreeMap<&'static str, Vec<(Vec<&'static str>, Value)>> =
        std::collections::BTreeMap::new();
    // `risk_level` is the pre-dahlia name of each `level`: both read the same.
    let aliases = [
        "risk_assessment.fraud_risk.risk_level",
        "risk_assessment.card_testing_risk.risk_level",
        "risk_assessment.merchant_dispute_risk.risk_level",
    ];
    for p in paths.into_iter().chain(aliases) {
        let parts: Vec<&'static str> = p.split('.').collect();
        let v = leaf(p.strip_suffix("risk_level").map_or(p, |_| match p {
            "risk_assessment.fraud_risk.risk_level" => "risk_assessment.fraud_risk.level",
            "risk_assessment.card_testing_risk.risk_level" => {
                "risk_assessment.card_testing_risk.level"
            }
            _ => "risk_assessment.merchant_dispute_risk.level",
        }));
        if parts.len() == 1 {
            roots.push((p, v));
        } else {
            tree.entry(parts[0])
                .or_default()
                .push((parts[1..].to_vec(), v));
        }
    }
    for (root, entries) in tree {
        roots.push((root, build(entries)));
    }
    let a = ctx.auth;
    roots.push(("card_presence", Value::from(a.card_presence)));
    roots.push((
        "verified_by_fraud_challenge",
        Value::Bool(sig.verified_by_fraud_challenge.unwrap_or(false)),
    ));
    roots
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

/// Binds the payment approval context (see `crate::payments`) as CEL variables.
pub fn bind_payment(
    c: &mut cel::Context<'_, 'static>,
    ctx: &crate::payments::PaymentContext<'_>,
    lists: Value,
) {
    let r = ctx.request();
    let s = |x: &str| Value::from(x);
    let items: Vec<Value> = r
        .line_items
        .iter()
        .map(|i| {
            map(vec![
                ("sku", s(&i.sku)),
                ("name", s(&i.name)),
                ("quantity", Value::Int(i.quantity)),
                ("amount", Value::Int(i.amount)),
            ])
        })
        .collect();
    let metadata: HashMap<String, Value> =
        r.metadata.iter().map(|(k, v)| (k.clone(), s(v))).collect();
    let vars = [
        ("amount", Value::Int(r.amount)),
        (
            "quantity",
            Value::Int(
                r.line_items
                    .iter()
                    .fold(0i64, |a, i| a.saturating_add(i.quantity)),
            ),
        ),
        ("currency", s(&r.currency.to_ascii_lowercase())),
        (
            "customer",
            map(vec![
                ("id", s(&r.customer.id)),
                ("country", s(&r.customer.country)),
                ("email", s(&r.customer.email)),
            ]),
        ),
        (
            "card",
            map(vec![
                ("country", s(&r.card.country)),
                ("brand", s(&r.card.brand)),
                ("funding", s(&r.card.funding)),
            ]),
        ),
        ("line_items", Value::List(Arc::new(items))),
        ("metadata", Value::from(metadata)),
        ("lists", lists),
    ];
    for (name, v) in vars {
        c.add_variable_from_value(name, v);
    }
}
