//! Sensitive actions: what can be asked for, with its parameters, the facts
//! approval-rule conditions see, and validation that needs no stored state.
//! An [`Action`] is stored whole inside its approval request (JSON), so approving
//! runs exactly what was asked, not what the parameters would mean later.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::Role;
use super::policy::{Combinator, Condition, Control, Fact, Facts, Reviewers};
use crate::decision::{Controls, CountrySet, Interval, SpendingLimit};

/// The kinds of sensitive action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Replace the live rule set.
    PublishRuleset,
    /// Replace one `[lists]` entry of the live rule set.
    UpdateList,
    /// Set (or clear) a card's or cardholder's control override.
    SetControlOverride,
    /// Let one retried authorization pass a `review` rule.
    AuthorizationAllowance,
    /// Create an API key.
    CreateApiKey,
    /// Revoke an API key.
    RevokeApiKey,
    /// Create an approval rule.
    CreateApprovalRule,
    /// Change an approval rule.
    UpdateApprovalRule,
    /// Activate an approval rule.
    ActivateApprovalRule,
    /// Deactivate an approval rule.
    DeactivateApprovalRule,
    /// Delete an approval rule.
    DeleteApprovalRule,
}

impl ActionKind {
    /// Every kind.
    pub const ALL: [ActionKind; 11] = [
        ActionKind::PublishRuleset,
        ActionKind::UpdateList,
        ActionKind::SetControlOverride,
        ActionKind::AuthorizationAllowance,
        ActionKind::CreateApiKey,
        ActionKind::RevokeApiKey,
        ActionKind::CreateApprovalRule,
        ActionKind::UpdateApprovalRule,
        ActionKind::ActivateApprovalRule,
        ActionKind::DeactivateApprovalRule,
        ActionKind::DeleteApprovalRule,
    ];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::PublishRuleset => "publish_ruleset",
            ActionKind::UpdateList => "update_list",
            ActionKind::SetControlOverride => "set_control_override",
            ActionKind::AuthorizationAllowance => "authorization_allowance",
            ActionKind::CreateApiKey => "create_api_key",
            ActionKind::RevokeApiKey => "revoke_api_key",
            ActionKind::CreateApprovalRule => "create_approval_rule",
            ActionKind::UpdateApprovalRule => "update_approval_rule",
            ActionKind::ActivateApprovalRule => "activate_approval_rule",
            ActionKind::DeactivateApprovalRule => "deactivate_approval_rule",
            ActionKind::DeleteApprovalRule => "delete_approval_rule",
        }
    }

    /// Parses a kind name.
    pub fn parse(s: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Which controls an override attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One card, `ic_…`.
    Card,
    /// One cardholder, `ich_…`.
    Cardholder,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Card => "card",
            Scope::Cardholder => "cardholder",
        }
    }
}

/// A per-authorization limit in an override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideLimit {
    /// Minor units.
    pub amount: i64,
    /// Only `per_authorization`: interval limits are re-checked atomically by the
    /// ledger from the payload's and program's controls, and an override the
    /// ledger does not know would be checked against a stale snapshot only.
    pub interval: String,
}

/// A card or cardholder control override: an extra spending-controls layer the
/// decision path checks after the program's controls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideSpec {
    /// Card or cardholder.
    pub scope: Scope,
    /// `ic_…` or `ich_…`.
    pub id: String,
    /// Per-authorization limits.
    #[serde(default)]
    pub spending_limits: Vec<OverrideLimit>,
    /// Stripe category names to decline.
    #[serde(default)]
    pub blocked_categories: Vec<String>,
    /// Alpha-2 merchant countries to decline.
    #[serde(default)]
    pub blocked_merchant_countries: Vec<String>,
}

impl OverrideSpec {
    /// Whether the override sets nothing (setting it clears any override).
    pub fn is_empty(&self) -> bool {
        self.spending_limits.is_empty()
            && self.blocked_categories.is_empty()
            && self.blocked_merchant_countries.is_empty()
    }

    /// The controls the decision path applies; errors name the bad value.
    pub fn controls(&self) -> Result<Controls, String> {
        let mut c = Controls::default();
        for (i, l) in self.spending_limits.iter().enumerate() {
            if Interval::parse(&l.interval) != Some(Interval::PerAuthorization) {
                return Err(format!(
                    "spending_limits[{i}].interval {:?}: overrides take per_authorization limits only",
                    l.interval
                ));
            }
            if l.amount < 0 {
                return Err(format!("spending_limits[{i}].amount must not be negative"));
            }
            c.spending_limits.push(SpendingLimit {
                amount: l.amount,
                interval: Interval::PerAuthorization,
                categories: None,
            });
        }
        if !self.blocked_categories.is_empty() {
            let mut set = crate::decision::CategorySet::default();
            for name in &self.blocked_categories {
                if !set.insert_name(name) {
                    return Err(format!(
                        "blocked_categories: {name:?} is not a Stripe merchant category"
                    ));
                }
            }
            c.blocked_categories = Some(set);
        }
        if !self.blocked_merchant_countries.is_empty() {
            let mut set = CountrySet::default();
            for cc in &self.blocked_merchant_countries {
                if !set.insert(cc) {
                    return Err(format!(
                        "blocked_merchant_countries: {cc:?} is not an alpha-2 country code"
                    ));
                }
            }
            c.blocked_merchant_countries = Some(set);
        }
        Ok(c)
    }

    /// The largest per-authorization limit (what `amount` conditions test).
    pub fn max_amount(&self) -> Option<i64> {
        self.spending_limits.iter().map(|l| l.amount).max()
    }
}

/// A one-time pass for a retried authorization through a `review` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowanceSpec {
    /// `ic_…`
    pub card: String,
    /// The merchant as cardgate identifies it: network id, else name.
    pub merchant: String,
    /// Minor units; the retry must ask for exactly this.
    pub amount: i64,
    /// Lowercase ISO currency.
    pub currency: String,
    /// The declined authorization this allowance answers, when opened by a review.
    #[serde(default)]
    pub authorization: Option<String>,
    /// The review rule that declined it, when opened by a review.
    #[serde(default)]
    pub rule: Option<String>,
    /// Merchant details for the reviewer (name, country, category).
    #[serde(default)]
    pub details: Option<Value>,
}

/// The body of a new approval rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    /// The action it covers.
    pub action: String,
    /// Optional name.
    #[serde(default)]
    pub name: Option<String>,
    /// Conditions (none: always applies).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// `and` (default) or `or`.
    #[serde(default)]
    pub combinator: Combinator,
    /// `require_approval` or `block`.
    pub control: Control,
    /// Reviewers; default admins and reviewers.
    #[serde(default)]
    pub reviewers: Option<Reviewers>,
    /// Saved active (default: inactive, like "Save changes").
    #[serde(default)]
    pub active: bool,
}

/// Changes to an approval rule; absent fields stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleUpdate {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New conditions.
    #[serde(default)]
    pub conditions: Option<Vec<Condition>>,
    /// New combinator.
    #[serde(default)]
    pub combinator: Option<Combinator>,
    /// New control.
    #[serde(default)]
    pub control: Option<Control>,
    /// New reviewers.
    #[serde(default)]
    pub reviewers: Option<Reviewers>,
}

/// One sensitive action with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", content = "params", rename_all = "snake_case")]
pub enum Action {
    /// Replace the live rule set with `source` (TOML + CEL).
    PublishRuleset {
        /// The rules file.
        source: String,
    },
    /// Replace list `name` with `values`.
    UpdateList {
        /// The list.
        name: String,
        /// Its new entries (strings or integers).
        values: Vec<Value>,
    },
    /// Set a control override.
    SetControlOverride(OverrideSpec),
    /// Grant an authorization allowance.
    AuthorizationAllowance(AllowanceSpec),
    /// Create an API key.
    CreateApiKey {
        /// Its role.
        role: String,
        /// Optional label.
        name: Option<String>,
        /// The key's id and hash, generated when the action is asked for so the
        /// secret can be shown to the requester then, and never stored.
        #[serde(default)]
        pending: Option<(String, String)>,
        /// Unix seconds the key expires at. Absent from requests stored before
        /// keys could expire, and then never written (their JSON is unchanged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<i64>,
        /// Or its lifetime in seconds, counted from its creation (for a gated
        /// creation: from the approval that creates it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_in: Option<i64>,
    },
    /// Revoke an API key.
    RevokeApiKey {
        /// `key_…`
        id: String,
    },
    /// Create an approval rule.
    CreateApprovalRule(RuleInput),
    /// Change an approval rule.
    UpdateApprovalRule {
        /// `aprule_…`
        id: String,
        /// What changes.
        changes: RuleUpdate,
    },
    /// Activate an approval rule.
    ActivateApprovalRule {
        /// `aprule_…`
        id: String,
    },
    /// Deactivate an approval rule.
    DeactivateApprovalRule {
        /// `aprule_…`
        id: String,
    },
    /// Delete an approval rule.
    DeleteApprovalRule {
        /// `aprule_…`
        id: String,
    },
}

/// Longest free-text field (names, reasons, ids) accepted anywhere.
pub const MAX_TEXT: usize = 1000;

fn text(field: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_TEXT {
        return Err(format!("{field} is over {MAX_TEXT} bytes"));
    }
    Ok(())
}

fn id(field: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    text(field, s)
}

impl Action {
    /// The kind.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::PublishRuleset { .. } => ActionKind::PublishRuleset,
            Action::UpdateList { .. } => ActionKind::UpdateList,
            Action::SetControlOverride(_) => ActionKind::SetControlOverride,
            Action::AuthorizationAllowance(_) => ActionKind::AuthorizationAllowance,
            Action::CreateApiKey { .. } => ActionKind::CreateApiKey,
            Action::RevokeApiKey { .. } => ActionKind::RevokeApiKey,
            Action::CreateApprovalRule(_) => ActionKind::CreateApprovalRule,
            Action::UpdateApprovalRule { .. } => ActionKind::UpdateApprovalRule,
            Action::ActivateApprovalRule { .. } => ActionKind::ActivateApprovalRule,
            Action::DeactivateApprovalRule { .. } => ActionKind::DeactivateApprovalRule,
            Action::DeleteApprovalRule { .. } => ActionKind::DeleteApprovalRule,
        }
    }

    /// Checks parameters that need no stored state (a rule set's compilation is
    /// checked by the service). The message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Action::PublishRuleset { .. } => Ok(()),
            Action::UpdateList { name, values } => {
                id("name", name)?;
                if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(format!(
                        "name {name:?}: list names are letters, digits and _"
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    match v {
                        Value::String(s) => text(&format!("values[{i}]"), s)?,
                        Value::Number(n) if n.as_i64().is_some() => {}
                        _ => return Err(format!("values[{i}] must be a string or an integer")),
                    }
                }
                Ok(())
            }
            Action::SetControlOverride(o) => {
                id("id", &o.id)?;
                o.controls().map(|_| ())
            }
            Action::AuthorizationAllowance(a) => {
                id("card", &a.card)?;
                id("merchant", &a.merchant)?;
                if a.amount <= 0 {
                    return Err("amount must be positive".into());
                }
                if crate::decision::Currency::parse(&a.currency).is_none() {
                    return Err(format!("currency {:?} is not a 3-letter code", a.currency));
                }
                Ok(())
            }
            Action::CreateApiKey {
                role,
                name,
                expires_at,
                expires_in,
                ..
            } => {
                if Role::parse(role).is_none() {
                    return Err(format!(
                        "role {role:?} is not one of admin, reviewer, analyst, agent"
                    ));
                }
                super::KeyExpiry::from_fields(*expires_at, *expires_in)?;
                name.as_deref().map_or(Ok(()), |n| text("name", n))
            }
            Action::RevokeApiKey { id: k }
            | Action::ActivateApprovalRule { id: k }
            | Action::DeactivateApprovalRule { id: k }
            | Action::DeleteApprovalRule { id: k } => id("id", k),
            Action::CreateApprovalRule(r) => {
                if ActionKind::parse(&r.action).is_none() {
                    return Err(format!(
                        "action {:?} is not one of {}",
                        r.action,
                        ActionKind::ALL.map(ActionKind::as_str).join(", ")
                    ));
                }
                rule_parts(r.name.as_deref(), Some(&r.conditions), r.reviewers.as_ref())
            }
            Action::UpdateApprovalRule { id: k, changes } => {
                id("id", k)?;
                rule_parts(
                    changes.name.as_deref(),
                    changes.conditions.as_ref(),
                    changes.reviewers.as_ref(),
                )
            }
        }
    }

    /// The facts approval-rule conditions see: the requester's role and key,
    /// plus what the action itself offers.
    pub fn facts(&self, role: Role, key: &str) -> Facts {
        let mut f = vec![
            ("role", Fact::Str(role.as_str().into())),
            ("key", Fact::Str(key.into())),
        ];
        match self {
            Action::UpdateList { name, .. } => f.push(("list", Fact::Str(name.clone()))),
            Action::SetControlOverride(o) => {
                f.push(("scope", Fact::Str(o.scope.as_str().into())));
                if let Some(a) = o.max_amount() {
                    f.push(("amount", Fact::Int(a)));
                }
            }
            Action::AuthorizationAllowance(a) => f.push(("amount", Fact::Int(a.amount))),
            Action::CreateApiKey { role, .. } => f.push(("key_role", Fact::Str(role.clone()))),
            _ => {}
        }
        Facts(f)
    }
}

fn rule_parts(
    name: Option<&str>,
    conditions: Option<&Vec<Condition>>,
    reviewers: Option<&Reviewers>,
) -> Result<(), String> {
    if let Some(n) = name {
        text("name", n)?;
    }
    for (i, c) in conditions.into_iter().flatten().enumerate() {
        c.validate().map_err(|e| format!("conditions[{i}]: {e}"))?;
    }
    if let Some(r) = reviewers {
        r.validate()?;
        for k in &r.keys {
            text("reviewers.keys", k)?;
        }
    }
    Ok(())
}

/// The rule set source with list `name` replaced by `values`; other lists and rules
/// are kept (comments and layout are not: the file is re-serialized).
pub fn replace_list(source: &str, name: &str, values: &[Value]) -> Result<String, String> {
    let mut doc: toml::Table =
        toml::from_str(source).map_err(|e| format!("live rule set is not TOML: {e}"))?;
    let lists = doc
        .entry("lists")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(lists) = lists else {
        return Err("live rule set's `lists` is not a table".into());
    };
    let items = values
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(toml::Value::String(s.clone())),
            Value::Number(n) => n
                .as_i64()
                .map(toml::Value::Integer)
                .ok_or_else(|| "list values must be strings or integers".to_string()),
            _ => Err("list values must be strings or integers".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    lists.insert(name.to_string(), toml::Value::Array(items));
    toml::to_string(&doc).map_err(|e| format!("cannot write the rule set: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_round_trip_through_json() {
        let a = Action::SetControlOverride(OverrideSpec {
            scope: Scope::Card,
            id: "ic_1".into(),
            spending_limits: vec![OverrideLimit {
                amount: 5000,
                interval: "per_authorization".into(),
            }],
            blocked_categories: vec![],
            blocked_merchant_countries: vec!["KP".into()],
        });
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["action"], "set_control_override");
        assert_eq!(serde_json::from_value::<Action>(v).unwrap(), a);
        assert!(a.validate().is_ok());
    }

    #[test]
    fn override_rejects_interval_limits_and_unknown_values() {
        let mut o = OverrideSpec {
            scope: Scope::Cardholder,
            id: "ich_1".into(),
            spending_limits: vec![OverrideLimit {
                amount: 1,
                interval: "daily".into(),
            }],
            blocked_categories: vec![],
            blocked_merchant_countries: vec![],
        };
        assert!(o.controls().unwrap_err().contains("per_authorization"));
        o.spending_limits.clear();
        o.blocked_categories = vec!["not_a_category".into()];
        assert!(o.controls().unwrap_err().contains("not_a_category"));
    }

    #[test]
    fn replace_list_keeps_rules_and_other_lists() {
        let src = "[lists]\nrisky = [\"KP\"]\nother = [1]\n\n[[rule]]\nname = \"r\"\nwhen = 'merchant.country in lists.risky'\naction = \"decline\"\n";
        let out = replace_list(src, "risky", &[json!("IR"), json!("KP")]).unwrap();
        let set = crate::rules::RuleSet::from_toml_unmetered(&out).unwrap();
        assert_eq!(set.len(), 1);
        assert!(out.contains("IR") && out.contains("other"));
        assert!(replace_list("not toml [", "x", &[]).is_err());
    }

    #[test]
    fn facts_expose_amounts_and_roles() {
        let a = Action::AuthorizationAllowance(AllowanceSpec {
            card: "ic_1".into(),
            merchant: "m".into(),
            amount: 120_000,
            currency: "usd".into(),
            authorization: None,
            rule: None,
            details: None,
        });
        let f = a.facts(Role::Agent, "key_1");
        assert!(f.0.contains(&("amount", Fact::Int(120_000))));
        assert!(f.0.contains(&("role", Fact::Str("agent".into()))));
    }
}
