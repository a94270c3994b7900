//! Backtest: replay recorded decisions through a candidate rule set and report
//! what would change.
//!
//! **Exact replay.** A decision-log row of format `journal::seen::SEEN_FORMAT`
//! carries, beside the raw event, what the live decision saw that the event does not
//! (`journal::seen`: the clock, spend per window and under every category-filtered
//! limit, velocity, the behavioural signals, overrides and allowance, the program
//! controls then in force, the re-check's cut). The replay re-parses the event,
//! rebuilds the [`Context`] from those values and runs the same pure `decide()`,
//! so the unchanged rule set reproduces every answer: approved, amount, reason,
//! rule. Why recorded rather than re-derived from the ledger facts: see
//! `journal::seen`.
//!
//! **Knock-on.** When the candidate changes an answer, the hold it would have made
//! differs from the recorded one; every later decision of the same card and
//! cardholder sees that difference in its spend windows (under the limits its
//! category falls in) and in the answer-dependent signals (`amount_24h`,
//! `declines_*`). A change that happens only because of such an earlier change is
//! reported as knock-on, the others as direct. Not followed: what Stripe did with
//! the original hold later (a capture for another amount, a reversal) — the delta
//! is the hold at decision time.
//!
//! **Approximate rows.** Rows written before exact replay (format 0) and JSONL
//! records are replayed from their unfiltered window totals under the current
//! program controls, without overrides; they are counted as approximate and every
//! change they show is flagged, never passed off as exact.
//!
//! Deterministic and streaming: records are pushed one at a time in log order; the
//! replay keeps the deltas of changed decisions and the report, nothing else.

mod report;
mod view;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use report::{Change, Changed, Counts, Outcome, Report, RuleStats};

use super::RuleSet;
use crate::decision::{
    Context, Controls, Decision, ProgramControls, Reason, Source, decide_traced,
};
use crate::journal::LoggedDecision;
use crate::journal::seen::{self, SEEN_FORMAT, Seen};
use crate::stripe;
use view::{Base, Delta, View};

/// Spend totals per window, as rows written before exact replay logged them.
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
    fn in_order(&self) -> [i64; 5] {
        [
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
            self.all_time,
        ]
    }
}

/// What the card and cardholder had spent, as rows written before exact replay
/// logged it (unfiltered totals only).
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

impl SpendSnapshot {
    /// Reads the legacy `spend_json`:
    /// `{"card":{"daily":…},"cardholder":{…},"velocity":{"1h":…,"24h":…}}`
    /// (`{}`: nothing spent).
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

/// One decision as a JSONL file records it (approximate: window totals only). In
/// JSONL, `event_json` is the event object itself (or a string holding it).
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

/// Replays `records` (JSONL form) through `candidate` under `program` controls.
pub fn backtest(
    candidate: &RuleSet,
    program: &ProgramControls,
    records: &[RecordedDecision],
) -> Report {
    let mut replay = Replay::new(candidate, program, HashMap::new());
    for (index, rec) in records.iter().enumerate() {
        replay.push(index, rec);
    }
    replay.finish()
}

/// What the replay knows of one record besides its event.
enum Recorded {
    Exact(Box<Seen>),
    Approximate { now: i64, spend: SpendSnapshot },
}

/// One record, whatever its source.
struct Item<'r> {
    index: usize,
    event_json: &'r [u8],
    before: Outcome,
    /// What the recorded answer held (0 when declined).
    held: i64,
    recorded: Recorded,
}

/// A backtest fed one record at a time, in log order: a long log streams through
/// it with progress, and only the deltas of changed decisions are kept.
pub struct Replay<'a> {
    candidate: &'a RuleSet,
    /// For approximate rows: the controls of the current config.
    program: &'a ProgramControls,
    /// Bodies the log names by hash, and what they decoded to.
    blobs: HashMap<i64, Vec<u8>>,
    programs: HashMap<i64, Option<Arc<ProgramControls>>>,
    overrides: HashMap<i64, Option<Arc<Controls>>>,
    /// Cardholder → the holds the candidate moved so far.
    deltas: HashMap<Box<str>, Vec<Delta>>,
    only_card: Option<String>,
    report: Report,
}

impl<'a> Replay<'a> {
    /// An empty replay. `program` applies to approximate rows; exact rows use the
    /// controls recorded with them, found in `blobs`
    /// (`store::read_decision_blobs`).
    pub fn new(
        candidate: &'a RuleSet,
        program: &'a ProgramControls,
        blobs: HashMap<i64, Vec<u8>>,
    ) -> Self {
        let mut report = Report::default();
        report.init_rules(candidate);
        Replay {
            candidate,
            program,
            blobs,
            programs: HashMap::new(),
            overrides: HashMap::new(),
            deltas: HashMap::new(),
            only_card: None,
            report,
        }
    }

    /// Reports only `card`'s decisions. Push its cardholder's other cards too:
    /// their changes move this card's cardholder-wide spend.
    #[must_use]
    pub fn only_card(mut self, card: Option<String>) -> Self {
        self.only_card = card;
        self
    }

    /// Keeps every change for the report (JSON output), not only the examples.
    #[must_use]
    pub fn keep_all_changes(mut self, all: bool) -> Self {
        self.report.keep_all = all;
        self
    }

    /// Records seen so far and counted: replayed or skipped.
    pub fn seen(&self) -> usize {
        self.report.replayed + self.report.skipped
    }

    /// Counts record `index` as skipped, with why.
    pub fn skip(&mut self, index: usize, why: String) {
        self.report.skip(index, why);
    }

    /// Replays a JSONL record (approximate).
    pub fn push(&mut self, index: usize, rec: &RecordedDecision) {
        let before = Outcome {
            approved: rec.approved,
            amount: rec.amount.filter(|_| rec.approved),
            reason: rec.reason.clone(),
            rule: rec.rule.clone(),
        };
        self.replay(
            Item {
                index,
                event_json: &rec.event_json,
                before,
                // Unknown: the JSONL form has no requested amount; no knock-on.
                held: -1,
                recorded: Recorded::Approximate {
                    now: rec.now,
                    spend: rec.spend,
                },
            },
            None,
        );
    }

    /// Replays one decision-log row: exactly when it carries its replay record,
    /// approximately when it was written before those existed. A fallback answer
    /// (deadline, panic, ledger failure) was no decision of the rules and is
    /// skipped with the reason, as is a row without its event body.
    pub fn push_logged(&mut self, index: usize, row: &LoggedDecision) {
        let card = Some(row.card.as_str());
        if row.reason.starts_with("fallback") {
            let why = format!(
                "row {}: fallback answer ({}), not a decision",
                row.id, row.reason
            );
            return self.skip_for(card, index, why);
        }
        if row.event_json.is_empty() {
            return self.skip_for(
                card,
                index,
                format!("row {}: no event body recorded", row.id),
            );
        }
        // The live response spells a rule decline `rule:<name>`; the log keeps the
        // reason and the name apart.
        let reason = match (&*row.reason, &row.rule) {
            ("rule", Some(name)) => format!("rule:{name}"),
            _ => row.reason.clone(),
        };
        let partial = row.approved && row.approved_amount != row.amount;
        let before = Outcome {
            approved: row.approved,
            amount: partial.then_some(row.approved_amount),
            reason,
            rule: row.rule.clone(),
        };
        let recorded = if row.format == SEEN_FORMAT {
            match Seen::decode(&row.seen) {
                Ok(s) => Recorded::Exact(Box::new(s)),
                Err(e) => return self.skip_for(card, index, format!("row {}: {e}", row.id)),
            }
        } else {
            match SpendSnapshot::from_log_json(&row.spend_json) {
                Ok(spend) => Recorded::Approximate {
                    now: row.decided_at,
                    spend,
                },
                Err(e) => {
                    return self.skip_for(card, index, format!("row {}: spend_json: {e}", row.id));
                }
            }
        };
        let item = Item {
            index,
            event_json: &row.event_json[..],
            before,
            held: if row.approved { row.approved_amount } else { 0 },
            recorded,
        };
        self.replay(item, card);
    }

    /// [`Replay::skip`], unless `--card` leaves the row's card out of the report.
    fn skip_for(&mut self, card: Option<&str>, index: usize, why: String) {
        if !self.filtered_out(card) {
            self.skip(index, why);
        }
    }

    fn filtered_out(&self, card: Option<&str>) -> bool {
        card.is_some_and(|c| self.only_card.as_ref().is_some_and(|o| o != c))
    }

    fn program_of(&mut self, hash: i64) -> Option<Arc<ProgramControls>> {
        let blobs = &self.blobs;
        self.programs
            .entry(hash)
            .or_insert_with(|| {
                let body = blobs.get(&hash)?;
                seen::decode_program(body).ok().map(Arc::new)
            })
            .clone()
    }

    fn override_of(&mut self, hash: Option<i64>) -> Result<Option<Arc<Controls>>, ()> {
        let Some(hash) = hash else { return Ok(None) };
        let blobs = &self.blobs;
        self.overrides
            .entry(hash)
            .or_insert_with(|| {
                let body = blobs.get(&hash)?;
                seen::decode_controls(body).ok().map(Arc::new)
            })
            .clone()
            .map(Some)
            .ok_or(())
    }

    /// The program controls and overrides a record was decided under: the
    /// recorded ones for an exact record (`None` when the log lacks a body it
    /// names), the current config's for an approximate one.
    #[expect(
        clippy::type_complexity,
        reason = "three controls, named at the one call"
    )]
    fn controls_of(
        &mut self,
        recorded: &Recorded,
    ) -> Option<(
        Arc<ProgramControls>,
        Option<Arc<Controls>>,
        Option<Arc<Controls>>,
    )> {
        match recorded {
            Recorded::Exact(s) => {
                let p = self.program_of(s.program)?;
                let co = self.override_of(s.card_override).ok()?;
                let cho = self.override_of(s.cardholder_override).ok()?;
                Some((p, co, cho))
            }
            Recorded::Approximate { .. } => Some((Arc::new(self.program.clone()), None, None)),
        }
    }

    fn replay(&mut self, item: Item<'_>, card: Option<&str>) {
        let index = item.index;
        // The controls an exact row names must be there, or the row is not exact.
        let Some((program, card_override, cardholder_override)) = self.controls_of(&item.recorded)
        else {
            let why = "controls recorded by hash are missing from the log".into();
            return self.skip_for(card, index, why);
        };
        let mut buf = item.event_json.to_vec();
        let doc = match stripe::parse_document(&mut buf) {
            Ok(d) => d,
            Err(e) => return self.skip_for(card, index, e.to_string()),
        };
        let event = match stripe::Event::read(&doc) {
            Ok(e) => e,
            Err(e) => return self.skip_for(card, index, e.to_string()),
        };
        if event.event_type != stripe::AUTHORIZATION_REQUEST {
            return self.skip_for(card, index, "not an authorization request".into());
        }
        let auth = match event.authorization_request() {
            Ok(a) => a,
            Err(e) => return self.skip_for(card, index, e.to_string()),
        };
        let (now, mut base, mut approximate, recheck_cut) = base_of(&item.recorded);
        if let Recorded::Exact(s) = &item.recorded {
            let mut values = s.filtered.iter();
            seen::for_each_filtered_limit(
                &auth,
                &program,
                card_override.as_deref(),
                cardholder_override.as_deref(),
                |scope, interval, cats| match values.next() {
                    Some(v) => base.filtered.push((scope, interval, cats, *v)),
                    None => approximate = true,
                },
            );
            approximate |= values.next().is_some();
        }
        let review_allowed = matches!(&item.recorded, Recorded::Exact(s) if s.review_allowed);
        // The ledger's window time, as `authorize::spend` takes it.
        let at = match &item.recorded {
            Recorded::Exact(s) => s.at,
            Recorded::Approximate { .. } if auth.created > 0 => auth.created,
            Recorded::Approximate { .. } => now,
        };
        let deltas = self
            .deltas
            .get(auth.cardholder.id)
            .map_or(&[][..], |d| &d[..]);
        let run = |deltas: &[Delta]| {
            let view = View::new(base.clone(), deltas, auth.card.id, at);
            let ctx = Context::new(&auth, &program, self.candidate, &view, now).with_approvals(
                card_override.as_deref(),
                cardholder_override.as_deref(),
                review_allowed,
            );
            let (d, verdict) = decide_traced(&ctx);
            (d, verdict, view.missed.get())
        };
        let (decision, verdict, missed) = run(deltas);
        approximate |= missed;
        let after = cut(outcome(&decision), recheck_cut, &item.before);
        let changed = after != item.before;
        let knock_on = changed && !deltas.is_empty() && {
            let (direct, _, _) = run(&[]);
            cut(outcome(&direct), recheck_cut, &item.before) == item.before
        };

        // What the candidate holds instead moves the spend of later decisions.
        let held_after = if after.approved {
            after.amount.unwrap_or(auth.amount)
        } else {
            0
        };
        if changed && item.held >= 0 && held_after != item.held {
            let delta = Delta {
                card: auth.card.id.into(),
                at,
                currency: auth.currency,
                category: auth.merchant.category.into(),
                mcc: auth.merchant.category_code.into(),
                amount: held_after - item.held,
                declines: i64::from(!after.approved) - i64::from(item.before.approved),
            };
            let cardholder = auth.cardholder.id.into();
            self.deltas.entry(cardholder).or_default().push(delta);
        }
        if self.filtered_out(card) {
            return;
        }
        let matched = verdict.decisive.iter().chain(&verdict.shadow);
        self.report
            .count_matches(matched.map(|m| m.name.to_string()));
        let held_before = item.held.max(0);
        self.report.add(Changed {
            index,
            authorization: auth.id.to_string(),
            change: Change::between(&item.before, &after),
            before: item.before,
            after,
            knock_on,
            approximate,
            amount_affected: (held_after - held_before).abs(),
        });
    }

    /// The report.
    pub fn finish(self) -> Report {
        self.report
    }
}

/// The clock, the recorded past (filtered values still to be matched with their
/// limits), whether it is approximate, and whether the re-check cut the answer.
fn base_of(recorded: &Recorded) -> (i64, Base<'static>, bool, bool) {
    match recorded {
        Recorded::Exact(s) => (
            s.now,
            Base {
                card: s.card,
                cardholder: s.cardholder,
                velocity: s.velocity,
                filtered: Vec::with_capacity(s.filtered.len()),
                signals: s.signals,
            },
            false,
            s.recheck_cut,
        ),
        Recorded::Approximate { now, spend } => (
            *now,
            Base {
                card: spend.card.in_order(),
                cardholder: spend.cardholder.in_order(),
                velocity: (spend.velocity_1h, spend.velocity_24h),
                ..Base::default()
            },
            true,
            false,
        ),
    }
}

/// The reserve's re-check cut the recorded answer: the same room applies to the
/// candidate's, so an approval of more than was finally held is cut the same way.
fn cut(after: Outcome, recheck_cut: bool, before: &Outcome) -> Outcome {
    if !recheck_cut || !after.approved {
        return after;
    }
    let over = match (before.approved, before.amount, after.amount) {
        (false, ..) | (true, Some(_), None) => true,
        (true, Some(room), Some(a)) => a > room,
        (true, None, _) => false,
    };
    if over { before.clone() } else { after }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn o(approved: bool, amount: Option<i64>, reason: &str) -> Outcome {
        Outcome {
            approved,
            amount,
            reason: reason.into(),
            rule: None,
        }
    }

    #[test]
    fn a_recheck_cut_applies_to_the_candidate_only_where_it_wants_more_than_the_room() {
        let cut_to_3000 = o(true, Some(3000), "spending_limit");
        let full = o(true, None, "approved");
        assert_eq!(cut(full.clone(), true, &cut_to_3000), cut_to_3000);
        assert_eq!(
            cut(o(true, Some(4000), "rule:cap"), true, &cut_to_3000),
            cut_to_3000
        );
        let small = o(true, Some(2000), "rule:cap");
        assert_eq!(
            cut(small.clone(), true, &cut_to_3000),
            small,
            "fits the room"
        );
        let declined = o(false, None, "rule:x");
        assert_eq!(cut(declined.clone(), true, &cut_to_3000), declined);
        let refused = o(false, None, "spending_limit");
        assert_eq!(cut(full.clone(), true, &refused), refused, "no room at all");
        assert_eq!(cut(full.clone(), false, &refused), full, "no cut recorded");
    }
}
