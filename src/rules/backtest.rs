//! Backtest: replay recorded decisions through a candidate rule set and report
//! what would change.
//!
//! Each [`RecordedDecision`] carries the raw event, the clock and the spend the
//! live decision saw; the replay re-parses the event (`crate::stripe`), rebuilds
//! the [`Context`] with the candidate set and the recorded spend, and runs the same
//! pure `decide()`. Deterministic: same records and rules give the same report, in
//! record order (examples) and rule-name order (per-rule counts).
//!
//! Records come from the store's decision log ([`RecordedDecision::from_logged`],
//! what `cardgate backtest` reads by default) or from a JSONL file.
//!
//! The recorded spend is the per-window totals of the card and cardholder; a
//! spending limit restricted to some categories is replayed against those totals,
//! so such a limit can differ from what it saw live.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::RuleSet;
use crate::decision::{
    CategorySet, Context, Currency, Decision, Interval, ProgramControls, Reason, Scope, Source,
    SpendView, decide,
};
use crate::stripe;

/// Spend totals per window, as the ledger reported them to a live decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Windows {
    /// Current calendar day.
    pub daily: i64,
    /// Current week (from Sunday).
    pub weekly: i64,
    /// Current month.
    pub monthly: i64,
    /// Current year.
    pub yearly: i64,
    /// Since the card/cardholder existed.
    pub all_time: i64,
}

impl Windows {
    fn get(&self, interval: Interval) -> i64 {
        match interval {
            Interval::PerAuthorization => 0,
            Interval::Daily => self.daily,
            Interval::Weekly => self.weekly,
            Interval::Monthly => self.monthly,
            Interval::Yearly => self.yearly,
            Interval::AllTime => self.all_time,
        }
    }
}

/// What the card and cardholder had spent when the live decision was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpendSnapshot {
    /// The card's totals.
    pub card: Windows,
    /// The cardholder's totals (all cards).
    pub cardholder: Windows,
    /// Card authorizations in the last hour.
    pub velocity_1h: i64,
    /// Card authorizations in the last 24 hours.
    pub velocity_24h: i64,
}

impl SpendView for SpendSnapshot {
    fn spent(&self, scope: Scope, interval: Interval, _: Option<&CategorySet>, _: Currency) -> i64 {
        match scope {
            Scope::Card => self.card.get(interval),
            Scope::Cardholder => self.cardholder.get(interval),
        }
    }

    fn card_velocity(&self) -> (i64, i64) {
        (self.velocity_1h, self.velocity_24h)
    }
}

/// One decision as the decision log recorded it. In JSONL, `event_json` is the
/// event object itself (or a string holding it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedDecision {
    /// The webhook body, exactly as received.
    #[serde(with = "raw_json")]
    pub event_json: Vec<u8>,
    /// The clock the decision used, Unix seconds.
    pub now: i64,
    /// What was answered.
    pub approved: bool,
    /// The partial amount answered, if any.
    #[serde(default)]
    pub amount: Option<i64>,
    /// `metadata.reason` as answered (`approved`, `rule:<name>`, `spending_limit`…).
    pub reason: String,
    /// `metadata.rule` as answered.
    #[serde(default)]
    pub rule: Option<String>,
    /// Version of the rule set that decided.
    pub ruleset: String,
    /// Spend seen by the decision.
    #[serde(default)]
    pub spend: SpendSnapshot,
}

/// Keeps `event_json` readable in JSONL: embedded as JSON, not as a byte array.
mod raw_json {
    use super::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => v.serialize(s),
            Err(_) => String::from_utf8_lossy(bytes).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(s.into_bytes()),
            v => serde_json::to_vec(&v).map_err(serde::de::Error::custom),
        }
    }
}

impl RecordedDecision {
    /// A row of the store's decision log as a record to replay. A fallback answer
    /// (deadline, panic, ledger failure) was no decision of the rules and is
    /// refused with the reason, as is a row without its event body.
    pub fn from_logged(row: &crate::journal::LoggedDecision) -> Result<Self, String> {
        if row.reason.starts_with("fallback") {
            return Err(format!("fallback answer ({}), not a decision", row.reason));
        }
        if row.event_json.is_empty() {
            return Err("no event body recorded".into());
        }
        // The live response spells a rule decline `rule:<name>`; the log keeps the
        // reason and the name apart.
        let reason = match (&*row.reason, &row.rule) {
            ("rule", Some(name)) => format!("rule:{name}"),
            _ => row.reason.clone(),
        };
        let partial = row.approved && row.approved_amount != row.amount;
        Ok(RecordedDecision {
            event_json: row.event_json.clone(),
            now: row.decided_at,
            approved: row.approved,
            amount: partial.then_some(row.approved_amount),
            reason,
            rule: row.rule.clone(),
            ruleset: row.ruleset.clone(),
            spend: SpendSnapshot::from_log_json(&row.spend_json)
                .map_err(|e| format!("spend_json: {e}"))?,
        })
    }
}

impl SpendSnapshot {
    /// Reads the spend the ledger logged with a decision:
    /// `{"card":{"daily":…},"cardholder":{…},"velocity":{"1h":…,"24h":…}}`
    /// (`{}` when no ledger ran: nothing spent).
    pub fn from_log_json(text: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Velocity {
            #[serde(rename = "1h")]
            hour: i64,
            #[serde(rename = "24h")]
            day: i64,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Logged {
            card: Windows,
            cardholder: Windows,
            velocity: Velocity,
        }
        let l: Logged = serde_json::from_str(text)?;
        Ok(SpendSnapshot {
            card: l.card,
            cardholder: l.cardholder,
            velocity_1h: l.velocity.hour,
            velocity_24h: l.velocity.day,
        })
    }
}

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
    /// Label used in the report.
    pub fn as_str(self) -> &'static str {
        match self {
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

/// One changed decision, for the report's examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
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
}

/// What a candidate rule set would have changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Records replayed.
    pub replayed: usize,
    /// Records skipped: not an authorization request, or unreadable (index, why).
    pub skipped: Vec<(usize, String)>,
    /// Decisions that stay the same.
    pub unchanged: usize,
    /// Changes by kind.
    pub changes: Counts,
    /// Changes by the rule responsible: the candidate rule that now decides, else
    /// the recorded rule that no longer does; `-` when neither was a rule.
    pub by_rule: BTreeMap<String, Counts>,
    /// The first few changes of each kind, in record order.
    pub examples: Vec<Example>,
}

/// Skipped records listed by the report (the count is always complete).
pub const SKIPPED_SHOWN: usize = 10;

/// Examples kept per kind of change.
pub const EXAMPLES_PER_CHANGE: usize = 3;

/// Replays `records` through `candidate` under `program` controls.
pub fn backtest(
    candidate: &RuleSet,
    program: &ProgramControls,
    records: &[RecordedDecision],
) -> Report {
    let mut replay = Replay::new(candidate, program);
    for (index, rec) in records.iter().enumerate() {
        replay.push(index, rec);
    }
    replay.finish()
}

/// A backtest fed one record at a time, so a long log can report progress (and
/// need not be held whole by the caller). Same result as [`backtest`].
pub struct Replay<'a> {
    candidate: &'a RuleSet,
    program: &'a ProgramControls,
    report: Report,
    shown: BTreeMap<Change, usize>,
}

impl<'a> Replay<'a> {
    /// An empty replay.
    pub fn new(candidate: &'a RuleSet, program: &'a ProgramControls) -> Self {
        Replay {
            candidate,
            program,
            report: Report::default(),
            shown: BTreeMap::new(),
        }
    }

    /// Records seen so far, replayed or skipped.
    pub fn seen(&self) -> usize {
        self.report.replayed + self.report.skipped.len()
    }

    /// Counts record `index` as skipped, with why.
    pub fn skip(&mut self, index: usize, why: String) {
        self.report.skipped.push((index, why));
    }

    /// Replays record `index`.
    pub fn push(&mut self, index: usize, rec: &RecordedDecision) {
        let report = &mut self.report;
        let mut buf = rec.event_json.clone();
        let replayed = stripe::parse_document(&mut buf).and_then(|doc| {
            let event = stripe::Event::read(&doc)?;
            if event.event_type != stripe::AUTHORIZATION_REQUEST {
                return Ok(None);
            }
            let auth = event.authorization_request()?;
            let ctx = Context::new(&auth, self.program, self.candidate, &rec.spend, rec.now);
            Ok(Some((auth.id.to_string(), outcome(&decide(&ctx)))))
        });
        let (authorization, after) = match replayed {
            Ok(Some(x)) => x,
            Ok(None) => {
                report
                    .skipped
                    .push((index, "not an authorization request".into()));
                return;
            }
            Err(e) => {
                report.skipped.push((index, e.to_string()));
                return;
            }
        };
        report.replayed += 1;
        let before = Outcome {
            approved: rec.approved,
            amount: rec.amount.filter(|_| rec.approved),
            reason: rec.reason.clone(),
            rule: rec.rule.clone(),
        };
        let change = match (before.approved, after.approved) {
            (true, false) => Change::ApproveToDecline,
            (false, true) => Change::DeclineToApprove,
            (true, true) if before.amount != after.amount => Change::Amount,
            _ if before.reason != after.reason || before.rule != after.rule => Change::Reason,
            _ => {
                report.unchanged += 1;
                return;
            }
        };
        report.changes.add(change);
        let culprit = rule_of(&after)
            .or_else(|| rule_of(&before))
            .unwrap_or("-")
            .to_string();
        report.by_rule.entry(culprit).or_default().add(change);
        let n = self.shown.entry(change).or_default();
        if *n < EXAMPLES_PER_CHANGE {
            *n += 1;
            report.examples.push(Example {
                index,
                authorization,
                change,
                before,
                after,
            });
        }
    }

    /// The report.
    pub fn finish(self) -> Report {
        self.report
    }
}

/// The rule name behind an outcome, if a rule decided it.
fn rule_of(o: &Outcome) -> Option<&str> {
    let by_rule = o.reason.starts_with("rule:") || o.reason == "review";
    if by_rule { o.rule.as_deref() } else { None }
}

/// The answer as the response metadata spells it (see `stripe::encode_decision`).
fn outcome(d: &Decision) -> Outcome {
    let mut reason = d.reason.as_str().to_string();
    if let (Reason::Rule, Some(Source::Rule(name))) = (d.reason, &d.source) {
        reason.push(':');
        reason.push_str(name);
    }
    let rule = d.source.as_ref().map(|s| match s {
        Source::Control(level, control) => format!("{}.{control}", level.as_str()),
        Source::Status(s) => s.to_string(),
        Source::Rule(name) => name.to_string(),
    });
    Outcome {
        approved: d.approved,
        amount: d.amount.filter(|_| d.approved),
        reason,
        rule,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.changes;
        writeln!(
            f,
            "replayed {} decisions ({} skipped): {} unchanged, {} changed",
            self.replayed,
            self.skipped.len(),
            self.unchanged,
            c.total()
        )?;
        writeln!(f, "  approve→decline: {}", c.approve_to_decline)?;
        writeln!(f, "  decline→approve: {}", c.decline_to_approve)?;
        writeln!(f, "  amount changed:  {}", c.amount)?;
        writeln!(f, "  reason only:     {}", c.reason)?;
        if !self.by_rule.is_empty() {
            writeln!(f, "by rule:")?;
            for (rule, n) in &self.by_rule {
                writeln!(
                    f,
                    "  {rule}: {} approve→decline, {} decline→approve, {} amount, {} reason",
                    n.approve_to_decline, n.decline_to_approve, n.amount, n.reason
                )?;
            }
        }
        if !self.examples.is_empty() {
            writeln!(f, "examples:")?;
            for e in &self.examples {
                writeln!(
                    f,
                    "  #{} {} {}: {} → {}",
                    e.index,
                    e.authorization,
                    e.change.as_str(),
                    e.before,
                    e.after
                )?;
            }
        }
        for (i, why) in self.skipped.iter().take(SKIPPED_SHOWN) {
            writeln!(f, "skipped #{i}: {why}")?;
        }
        if self.skipped.len() > SKIPPED_SHOWN {
            writeln!(
                f,
                "… and {} more skipped",
                self.skipped.len() - SKIPPED_SHOWN
            )?;
        }
        Ok(())
    }
}
