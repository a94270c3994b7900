//! Approval rules: which action they cover, when they apply (conditions combined
//! with `and`/`or`), what they do (`require_approval` or `block`) and who may
//! review. Pure: evaluation reads only the facts of one attempted action.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::action::ActionKind;
use super::keys::Role;

/// What a matching rule does to the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// The action waits for another person's approval.
    RequireApproval,
    /// The action is refused outright.
    Block,
}

/// How conditions combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Combinator {
    /// Every condition must hold.
    #[default]
    And,
    /// One condition is enough.
    Or,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    /// Equal.
    #[serde(rename = "==")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
    /// Greater than (numbers only).
    #[serde(rename = ">")]
    Gt,
    /// Greater or equal (numbers only).
    #[serde(rename = ">=")]
    Ge,
    /// Less than (numbers only).
    #[serde(rename = "<")]
    Lt,
    /// Less or equal (numbers only).
    #[serde(rename = "<=")]
    Le,
}

/// Fields a condition may test. Which ones an action provides is
/// [`ActionKind::fields`]; a condition on a field the action lacks never holds.
pub const FIELDS: &[&str] = &["amount", "role", "key", "scope", "list", "key_role"];

/// `field operator value`, e.g. `amount > 100000`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// One of [`FIELDS`].
    pub field: String,
    /// The comparison.
    pub operator: Operator,
    /// A number or a string.
    pub value: Value,
}

impl Condition {
    /// Checks the condition's shape: known field, scalar value, ordering only on numbers.
    pub fn validate(&self) -> Result<(), String> {
        if !FIELDS.contains(&self.field.as_str()) {
            return Err(format!(
                "condition field {:?} is not one of {}",
                self.field,
                FIELDS.join(", ")
            ));
        }
        match (&self.value, self.operator) {
            (Value::Number(n), _) if n.as_i64().is_some() => Ok(()),
            (Value::String(_), Operator::Eq | Operator::Ne) => Ok(()),
            (Value::String(_), _) => Err(format!(
                "condition on {:?}: ordering operators need an integer value",
                self.field
            )),
            _ => Err(format!(
                "condition on {:?}: value must be an integer or a string",
                self.field
            )),
        }
    }

    /// Whether the condition holds for `facts`.
    pub fn holds(&self, facts: &Facts) -> bool {
        let Some(actual) = facts.get(&self.field) else {
            return false;
        };
        match (actual, &self.value) {
            (Fact::Int(a), Value::Number(n)) => match n.as_i64() {
                Some(b) => match self.operator {
                    Operator::Eq => *a == b,
                    Operator::Ne => *a != b,
                    Operator::Gt => *a > b,
                    Operator::Ge => *a >= b,
                    Operator::Lt => *a < b,
                    Operator::Le => *a <= b,
                },
                None => false,
            },
            (Fact::Str(a), Value::String(b)) => match self.operator {
                Operator::Eq => a == b,
                Operator::Ne => a != b,
                _ => false,
            },
            _ => false,
        }
    }
}

/// One fact about an attempted action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// An integer (amounts are in minor units).
    Int(i64),
    /// A string.
    Str(String),
}

/// The facts of one attempted action, by field name.
#[derive(Debug, Clone, Default)]
pub struct Facts(pub Vec<(&'static str, Fact)>);

impl Facts {
    fn get(&self, field: &str) -> Option<&Fact> {
        self.0.iter().find(|(k, _)| *k == field).map(|(_, v)| v)
    }
}

/// Who may review requests opened by a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Reviewers {
    /// Any key with one of these roles (only `admin` and `reviewer` can approve).
    #[serde(default)]
    pub roles: Vec<String>,
    /// These key ids.
    #[serde(default)]
    pub keys: Vec<String>,
}

impl Reviewers {
    /// Whether the key `key_id` with `role` is one of them.
    pub fn allows(&self, key_id: &str, role: Role) -> bool {
        self.roles.iter().any(|r| r == role.as_str()) || self.keys.iter().any(|k| k == key_id)
    }

    /// What requests not opened by a rule use (authorization reviews): reviewers
    /// and admins.
    pub fn default_set() -> Self {
        Reviewers {
            roles: vec!["admin".into(), "reviewer".into()],
            keys: Vec::new(),
        }
    }

    /// Checks roles exist and can review.
    pub fn validate(&self) -> Result<(), String> {
        if self.roles.is_empty() && self.keys.is_empty() {
            return Err("reviewers must name at least one role or key".into());
        }
        for r in &self.roles {
            match Role::parse(r) {
                Some(Role::Admin | Role::Reviewer) => {}
                Some(_) => {
                    return Err(format!(
                        "reviewers.roles: {r:?} cannot approve requests (only admin and reviewer can)"
                    ));
                }
                None => return Err(format!("reviewers.roles: {r:?} is not a role")),
            }
        }
        Ok(())
    }
}

/// A stored approval rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRule {
    /// `aprule_…`
    pub id: String,
    /// The action it covers.
    pub action: ActionKind,
    /// Optional name.
    pub name: Option<String>,
    /// Conditions; none means "always".
    pub conditions: Vec<Condition>,
    /// How conditions combine.
    pub combinator: Combinator,
    /// What a match does.
    pub control: Control,
    /// Who may review.
    pub reviewers: Reviewers,
    /// Whether the rule is in force.
    pub active: bool,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds.
    pub updated: i64,
}

impl ApprovalRule {
    /// Whether the rule applies to an action with these facts.
    pub fn matches(&self, facts: &Facts) -> bool {
        if self.conditions.is_empty() {
            return true;
        }
        match self.combinator {
            Combinator::And => self.conditions.iter().all(|c| c.holds(facts)),
            Combinator::Or => self.conditions.iter().any(|c| c.holds(facts)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(field: &str, op: Operator, value: Value) -> Condition {
        Condition {
            field: field.into(),
            operator: op,
            value,
        }
    }

    fn rule(conditions: Vec<Condition>, combinator: Combinator) -> ApprovalRule {
        ApprovalRule {
            id: "aprule_x".into(),
            action: ActionKind::SetControlOverride,
            name: None,
            conditions,
            combinator,
            control: Control::RequireApproval,
            reviewers: Reviewers::default_set(),
            active: true,
            created: 0,
            updated: 0,
        }
    }

    #[test]
    fn amount_threshold_and_role() {
        let facts = Facts(vec![
            ("amount", Fact::Int(150_000)),
            ("role", Fact::Str("agent".into())),
        ]);
        let big = cond("amount", Operator::Gt, json!(100_000));
        let agent = cond("role", Operator::Eq, json!("agent"));
        let admin = cond("role", Operator::Eq, json!("admin"));
        assert!(rule(vec![big.clone(), agent.clone()], Combinator::And).matches(&facts));
        assert!(!rule(vec![big.clone(), admin.clone()], Combinator::And).matches(&facts));
        assert!(rule(vec![big.clone(), admin.clone()], Combinator::Or).matches(&facts));
        assert!(rule(vec![], Combinator::And).matches(&facts));
        let small = Facts(vec![("amount", Fact::Int(100_000))]);
        assert!(!rule(vec![big], Combinator::And).matches(&small));
    }

    #[test]
    fn missing_field_or_mismatched_type_never_holds() {
        let facts = Facts(vec![("role", Fact::Str("agent".into()))]);
        assert!(!cond("amount", Operator::Lt, json!(5)).holds(&facts));
        assert!(!cond("role", Operator::Eq, json!(5)).holds(&facts));
        // `!=` on a missing field is still false: absence is not evidence.
        assert!(!cond("amount", Operator::Ne, json!(5)).holds(&facts));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(
            cond("colour", Operator::Eq, json!("red"))
                .validate()
                .is_err()
        );
        assert!(cond("role", Operator::Gt, json!("a")).validate().is_err());
        assert!(cond("amount", Operator::Gt, json!(1.5)).validate().is_err());
        assert!(cond("amount", Operator::Gt, json!(10)).validate().is_ok());
        assert!(Reviewers::default().validate().is_err());
        assert!(
            Reviewers {
                roles: vec!["analyst".into()],
                keys: vec![]
            }
            .validate()
            .is_err()
        );
    }
}
