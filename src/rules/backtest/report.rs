//! The backtest's report: counts, per-rule table, every change (or its first
//! examples), as a human table or as the JSON object of the contract
//! (`{"replayed", "unchanged", "changed", "changes", "rules"}`).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Value, json};

use super::super::RuleSet;

/// An answer, as compared by the backtest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Approved?
    pub approved: bool,
    /// Partial amount.
    pub amount: Option<i64>,
    /// Reason string as in the response metadata.
    pub reason: String,
    /// Rule or control behind it.
    pub rule: Option<String>,
}

impl Outcome {
    fn json(&self) -> Value {
        json!({
            "approved": self.approved,
            "amount": self.amount,
            "reason": self.reason,
            "rule": self.rule,
        })
    }

    /// The rule name behind the outcome, if a rule decided it.
    fn by_rule(&self) -> Option<&str> {
        let by_rule = self.reason.starts_with("rule:") || self.reason == "review";
        if by_rule { self.rule.as_deref() } else { None }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.approved, self.amount) {
            (false, _) => write!(f, "decline")?,
            (true, None) => write!(f, "approve")?,
            (true, Some(a)) => write!(f, "approve {a}")?,
        }
        write!(f, " ({})", self.reason)
    }
}

/// How one decision changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// The same answer.
    None,
    /// Was approved (fully or partially), now declined.
    ApproveToDecline,
    /// Was declined, now approved.
    DeclineToApprove,
    /// Still approved, different amount.
    Amount,
    /// Same answer, different reason (another rule or control decided).
    Reason,
}

impl Change {
    /// How `after` differs from `before`.
    pub fn between(before: &Outcome, after: &Outcome) -> Change {
        match (before.approved, after.approved) {
            (true, false) => Change::ApproveToDecline,
            (false, true) => Change::DeclineToApprove,
            (true, true) if before.amount != after.amount => Change::Amount,
            _ if before.reason != after.reason || before.rule != after.rule => Change::Reason,
            _ => Change::None,
        }
    }

    /// Label used in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::None => "unchanged",
            Change::ApproveToDecline => "approve→decline",
            Change::DeclineToApprove => "decline→approve",
            Change::Amount => "amount",
            Change::Reason => "reason only",
        }
    }
}

/// Counts per kind of change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Approved → declined.
    pub approve_to_decline: usize,
    /// Declined → approved.
    pub decline_to_approve: usize,
    /// Approved amount changed.
    pub amount: usize,
    /// Only the reason changed.
    pub reason: usize,
}

impl Counts {
    fn add(&mut self, c: Change) {
        match c {
            Change::None => {}
            Change::ApproveToDecline => self.approve_to_decline += 1,
            Change::DeclineToApprove => self.decline_to_approve += 1,
            Change::Amount => self.amount += 1,
            Change::Reason => self.reason += 1,
        }
    }

    /// All changes.
    pub fn total(&self) -> usize {
        self.approve_to_decline + self.decline_to_approve + self.amount + self.reason
    }
}

/// One replayed decision that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Index of the record in the input.
    pub index: usize,
    /// `iauth_…`
    pub authorization: String,
    /// What changed.
    pub change: Change,
    /// As recorded.
    pub before: Outcome,
    /// With the candidate.
    pub after: Outcome,
    /// Changed only because an earlier change moved this card's spend.
    pub knock_on: bool,
    /// Replayed from a record without what exact replay needs.
    pub approximate: bool,
    /// |held with the candidate − held as recorded|, minor units.
    pub amount_affected: i64,
}

/// One row of the per-rule table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Replayed decisions where the candidate's rule matched (decisive or shadow).
    pub matches: usize,
    /// Changes it is responsible for.
    pub counts: Counts,
    /// Sum of `amount_affected` over those changes.
    pub amount_affected: i64,
    /// Their first authorizations.
    pub examples: Vec<String>,
}

/// What a candidate rule set would have changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Records replayed.
    pub replayed: usize,
    /// Of those, replayed approximately (recorded before exact replay, or a
    /// filtered spend the record lacked).
    pub approximate: usize,
    /// Records skipped: fallback answers, non-requests, unreadable rows.
    pub skipped: usize,
    /// The first few skipped (index, why).
    pub skipped_examples: Vec<(usize, String)>,
    /// Decisions that stay the same.
    pub unchanged: usize,
    /// Changes by kind.
    pub changes: Counts,
    /// Of those, knock-on changes by kind.
    pub knock_on: Counts,
    /// Per rule (or control, or `-`): the candidate's rules all appear, matched
    /// or not; a change goes to the candidate rule that now decides, else the
    /// recorded rule that no longer does, else the control that decided.
    pub rules: BTreeMap<String, RuleStats>,
    /// Every change in record order when kept whole (JSON), else the first
    /// [`CHANGES_SHOWN`] of each kind.
    pub changed: Vec<Changed>,
    pub(super) keep_all: bool,
    shown: BTreeMap<Change, usize>,
}

/// Skipped records listed by the report (the count is always complete).
pub const SKIPPED_SHOWN: usize = 10;

/// Examples kept per rule.
pub const EXAMPLES_PER_RULE: usize = 3;

/// Changes the text report lists per kind (JSON lists them all).
pub const CHANGES_SHOWN: usize = 20;

impl Report {
    pub(super) fn init_rules(&mut self, candidate: &RuleSet) {
        for r in candidate.rules() {
            self.rules.entry(r.name.to_string()).or_default();
        }
    }

    pub(super) fn skip(&mut self, index: usize, why: String) {
        self.skipped += 1;
        if self.skipped_examples.len() < SKIPPED_SHOWN {
            self.skipped_examples.push((index, why));
        }
    }

    pub(super) fn count_matches(&mut self, names: impl Iterator<Item = String>) {
        for n in names {
            self.rules.entry(n).or_default().matches += 1;
        }
    }

    pub(super) fn add(&mut self, c: Changed) {
        self.replayed += 1;
        self.approximate += usize::from(c.approximate);
        if c.change == Change::None {
            self.unchanged += 1;
            return;
        }
        self.changes.add(c.change);
        if c.knock_on {
            self.knock_on.add(c.change);
        }
        let culprit = c
            .after
            .by_rule()
            .or_else(|| c.before.by_rule())
            .or(c
                .after
                .rule
                .as_deref()
                .filter(|_| !c.after.approved || c.after.amount.is_some()))
            .or(c.before.rule.as_deref())
            .unwrap_or("-")
            .to_string();
        let stats = self.rules.entry(culprit).or_default();
        stats.counts.add(c.change);
        stats.amount_affected = stats.amount_affected.saturating_add(c.amount_affected);
        if stats.examples.len() < EXAMPLES_PER_RULE {
            stats.examples.push(c.authorization.clone());
        }
        let n = self.shown.entry(c.change).or_default();
        if self.keep_all || *n < CHANGES_SHOWN {
            *n += 1;
            self.changed.push(c);
        }
    }

    /// The contract's JSON object: `replayed`, `unchanged`, `changed`, `changes[]`
    /// (`authorization`, `before`, `after`, `knock_on`), `rules[]`; plus
    /// `approximate` and `skipped` counts, so an approximate replay is never
    /// passed off as exact.
    pub fn to_json(&self) -> Value {
        let changes: Vec<Value> = self
            .changed
            .iter()
            .map(|c| {
                let mut v = json!({
                    "authorization": c.authorization,
                    "before": c.before.json(),
                    "after": c.after.json(),
                    "knock_on": c.knock_on,
                });
                if c.approximate {
                    v["approximate"] = true.into();
                }
                v
            })
            .collect();
        let rules: Vec<Value> = self
            .rules
            .iter()
            .map(|(name, s)| {
                json!({
                    "rule": name,
                    "matches": s.matches,
                    "approve_to_decline": s.counts.approve_to_decline,
                    "decline_to_approve": s.counts.decline_to_approve,
                    "amount_changed": s.counts.amount,
                    "reason_changed": s.counts.reason,
                    "amount_affected": s.amount_affected,
                    "examples": s.examples,
                })
            })
            .collect();
        json!({
            "replayed": self.replayed,
            "unchanged": self.unchanged,
            "changed": self.changes.total(),
            "approximate": self.approximate,
            "skipped": self.skipped,
            "changes": changes,
            "rules": rules,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.changes;
        let k = &self.knock_on;
        writeln!(
            f,
            "replayed {} decisions ({} skipped, {} approximate): {} unchanged, {} changed ({} direct, {} knock-on)",
            self.replayed,
            self.skipped,
            self.approximate,
            self.unchanged,
            c.total(),
            c.total() - k.total(),
            k.total()
        )?;
        writeln!(
            f,
            "  approve→decline: {} ({} knock-on)",
            c.approve_to_decline, k.approve_to_decline
        )?;
        writeln!(
            f,
            "  decline→approve: {} ({} knock-on)",
            c.decline_to_approve, k.decline_to_approve
        )?;
        writeln!(f, "  amount changed:  {} ({} knock-on)", c.amount, k.amount)?;
        writeln!(f, "  reason only:     {} ({} knock-on)", c.reason, k.reason)?;
        if self.approximate > 0 {
            writeln!(
                f,
                "  approximate: {} decisions were recorded without what exact replay needs \
                 (before this version, or a JSONL log); their results may differ from what \
                 they saw live",
                self.approximate
            )?;
        }
        let width = self
            .rules
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "{:<width$}  {:>7}  {:>15}  {:>15}  {:>6}  {:>15}  examples",
            "rule", "matches", "approve→decline", "decline→approve", "amount", "amount affected"
        )?;
        for (rule, s) in &self.rules {
            writeln!(
                f,
                "{rule:<width$}  {:>7}  {:>15}  {:>15}  {:>6}  {:>15}  {}",
                s.matches,
                s.counts.approve_to_decline,
                s.counts.decline_to_approve,
                s.counts.amount,
                s.amount_affected,
                s.examples.join(" ")
            )?;
        }
        if !self.changed.is_empty() {
            let listed = self.changed.len();
            if listed < c.total() {
                writeln!(
                    f,
                    "changes (first {CHANGES_SHOWN} of each kind; --format json lists all {}):",
                    c.total()
                )?;
            } else {
                writeln!(f, "changes:")?;
            }
            for e in &self.changed {
                writeln!(
                    f,
                    "  #{} {} {}{}: {} → {}{}",
                    e.index,
                    e.authorization,
                    e.change.as_str(),
                    if e.knock_on { " (knock-on)" } else { "" },
                    e.before,
                    e.after,
                    if e.approximate { " [approximate]" } else { "" },
                )?;
            }
        }
        for (i, why) in &self.skipped_examples {
            writeln!(f, "skipped #{i}: {why}")?;
        }
        if self.skipped > self.skipped_examples.len() {
            writeln!(
                f,
                "… and {} more skipped",
                self.skipped - self.skipped_examples.len()
            )?;
        }
        Ok(())
    }
}
