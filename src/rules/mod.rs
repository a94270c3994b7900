//! Rules: an ordered, immutable set of named rules evaluated after spending controls.
//!
//! This is the seam `decision::decide` calls through. The CEL compiler, hot swap,
//! shadow mode and backtest (issue 5) build on it; until then a rule set is empty and
//! only carries the version that goes into every decision's metadata.

use std::sync::Arc;

use crate::decision::Context;

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
}

/// The rule that decided, if any.
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
}

/// An immutable, versioned rule set.
#[derive(Debug, Clone)]
pub struct RuleSet {
    version: Arc<str>,
}

impl RuleSet {
    /// The empty rule set: every authorization that passes controls is approved.
    pub fn empty() -> Self {
        RuleSet {
            version: Arc::from("empty"),
        }
    }

    /// Content-hash version, reported in every decision.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Evaluates the rules in order against `ctx`.
    pub fn evaluate(&self, _ctx: &Context<'_>) -> Verdict {
        Verdict::default()
    }
}
