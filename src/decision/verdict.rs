//! What the rules said about one authorization, and the seam through which
//! `decide()` asks them.
//!
//! The types live here, not in `rules/`, so the decision core is a leaf: `rules`
//! compiles CEL into something that implements [`Rules`], and `decide()` calls it
//! without knowing how rules are written, compiled or reloaded.

use std::sync::Arc;

use super::Context;

/// Evaluates a rule set against one context; `rules::RuleSet` is the implementation.
pub trait Rules {
    /// The first decisive match and every shadow match, in rule order.
    fn evaluate(&self, ctx: &Context<'_>) -> Verdict;
}

/// No rules: every authorization that passes the controls is approved.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRules;

impl Rules for NoRules {
    fn evaluate(&self, _: &Context<'_>) -> Verdict {
        Verdict::default()
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Approve (with whatever amount controls left); stops rule evaluation.
    Approve,
    /// Decline with reason `rule:<name>`.
    Decline,
    /// Approve at most this amount: partial when controllable, else decline.
    Cap(i64),
    /// Decline now and open a human review.
    Review,
    /// Decline and ask Stripe to text the cardholder (`send_fraud_challenges:
    /// ["sms"]`); a verified retry is treated as `on_verified` says.
    Challenge(OnVerified),
}

/// What a `challenge` rule does with the retry the cardholder verified
/// (`verified_by_fraud_challenge: true`): it never challenges it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnVerified {
    /// The rule approves the verified retry (the default: Stripe recommends
    /// not applying one's own risk rules to it; spending controls and limits,
    /// checked before rules, still apply).
    #[default]
    Approve,
    /// The rule is skipped for the verified retry: later rules judge it.
    Skip,
}

impl OnVerified {
    /// As written in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnVerified::Approve => "approve",
            OnVerified::Skip => "skip",
        }
    }
}

impl Action {
    /// The action as written in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Decline => "decline",
            Action::Cap(_) => "cap",
            Action::Review => "review",
            Action::Challenge(_) => "challenge",
        }
    }
}

/// A rule that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The rule's name.
    pub name: Arc<str>,
    /// Its action.
    pub action: Action,
}

/// The result of evaluating a rule set against one context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The first matching decisive (non-shadow) rule.
    pub decisive: Option<Matched>,
    /// Every matching shadow rule, in file order. Empty (and unallocated) unless
    /// a shadow rule matched; the decision log records them.
    pub shadow: Vec<Matched>,
}
