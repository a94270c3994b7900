//! The series every webhook touches, resolved to handles once when the recorder is
//! installed. Through the `counter!`/`gauge!` macros each update builds a key from
//! its labels, hashes it and looks it up in the registry; a handle is one atomic
//! update. The label values are the tables [`FAMILIES`](super::FAMILIES) lists, so
//! names and labels are the ones the macros would give.
//!
//! Every function here still counts before `install` (benches, tests without a
//! recorder) and for a label its table lacks (a bug `tests/metrics_format.rs`
//! reports): through the registry, as the macros would.

use std::sync::OnceLock;

use super::{
    AUTHORIZATIONS, CARD_OBJECT_RESULTS, EVENT_TYPES, EVENTS, HTTP_RESPONSES, LEDGER_HOLDS,
    LIFECYCLE_EVENTS, LIFECYCLE_RESULTS, LIFECYCLE_TYPES, OUTCOMES, REASONS, REQUEST_CARD_OBJECTS,
    ROUTES, STATUSES,
};

struct Hot {
    /// `AUTHORIZATIONS` by `OUTCOMES` index × `REASONS.len()` + `REASONS` index.
    authorizations: Vec<metrics::Counter>,
    /// `HTTP_RESPONSES` by `ROUTES` × `STATUSES` index, each resolved at its first
    /// use: the family is not registered at zero (most combinations never occur),
    /// so a series must still appear only with its first response.
    http_responses: [[OnceLock<metrics::Counter>; STATUSES.len()]; ROUTES.len()],
    /// `REQUEST_CARD_OBJECTS` by [`CardObject`].
    card_objects: [metrics::Counter; 3],
    /// `LEDGER_HOLDS`, set by every reserve.
    ledger_holds: metrics::Gauge,
    /// `EVENTS` by `EVENT_TYPES` index: every lifecycle webhook (two or more per
    /// approved authorization) counts here.
    events: Vec<metrics::Counter>,
    /// `LIFECYCLE_EVENTS` by `LIFECYCLE_TYPES` index × `LIFECYCLE_RESULTS.len()` +
    /// `LIFECYCLE_RESULTS` index.
    lifecycle: Vec<metrics::Counter>,
}

static HOT: OnceLock<Hot> = OnceLock::new();

/// Resolves the handles; `install` calls it once the recorder is set.
pub(super) fn register() {
    HOT.get_or_init(|| Hot {
        authorizations: counters(AUTHORIZATIONS),
        http_responses: [const { [const { OnceLock::new() }; STATUSES.len()] }; ROUTES.len()],
        card_objects: CardObject::ALL
            .map(|c| metrics::counter!(REQUEST_CARD_OBJECTS, "result" => c.as_str())),
        ledger_holds: metrics::gauge!(LEDGER_HOLDS),
        events: counters(EVENTS),
        lifecycle: counters(LIFECYCLE_EVENTS),
    });
}

/// A handle for every label combination of `name`'s family, in the order
/// [`combinations`](super::combinations) gives them (the first label's values
/// outermost), which [`pair`] and the one-label look-ups index.
fn counters(name: &'static str) -> Vec<metrics::Counter> {
    super::family_of(name)
        .map(super::combinations)
        .unwrap_or_default()
        .into_iter()
        .map(|labels| metrics::counter!(name, labels))
        .collect()
}

fn index(values: &[&str], v: &str) -> Option<usize> {
    values.iter().position(|x| *x == v)
}

/// The handle at `table[i × inner.len() + j]`, where `a` is `outer[i]` and `b` is
/// `inner[j]`.
fn pair<'h>(
    table: &'h [metrics::Counter],
    (outer, a): (&[&str], &str),
    (inner, b): (&[&str], &str),
) -> Option<&'h metrics::Counter> {
    table.get(index(outer, a)? * inner.len() + index(inner, b)?)
}

/// Counts one decision in [`AUTHORIZATIONS`] (`outcome`, `reason`).
pub fn count_authorization(outcome: &'static str, reason: &'static str) {
    let hot = HOT
        .get()
        .and_then(|h| pair(&h.authorizations, (OUTCOMES, outcome), (REASONS, reason)));
    match hot {
        Some(c) => c.increment(1),
        None => {
            metrics::counter!(AUTHORIZATIONS, "outcome" => outcome, "reason" => reason)
                .increment(1);
        }
    }
}

/// Counts one non-request webhook event in [`EVENTS`] (`type`: one of
/// `EVENT_TYPES`).
pub fn count_event(event_type: &'static str) {
    let hot = HOT
        .get()
        .and_then(|h| h.events.get(index(EVENT_TYPES, event_type)?));
    match hot {
        Some(c) => c.increment(1),
        None => metrics::counter!(EVENTS, "type" => event_type).increment(1),
    }
}

/// Counts one lifecycle event in [`LIFECYCLE_EVENTS`] (`type`, `result`).
pub fn count_lifecycle(event_type: &'static str, result: &'static str) {
    let hot = HOT.get().and_then(|h| {
        pair(
            &h.lifecycle,
            (LIFECYCLE_TYPES, event_type),
            (LIFECYCLE_RESULTS, result),
        )
    });
    match hot {
        Some(c) => c.increment(1),
        None => {
            metrics::counter!(LIFECYCLE_EVENTS, "type" => event_type, "result" => result)
                .increment(1);
        }
    }
}

/// What became of a request's card object ([`REQUEST_CARD_OBJECTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardObject {
    /// Read before, not parsed again.
    Known,
    /// Parsed and remembered.
    Learnt,
    /// Parsed, not remembered.
    Parsed,
}

impl CardObject {
    const ALL: [CardObject; 3] = [CardObject::Known, CardObject::Learnt, CardObject::Parsed];

    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        CARD_OBJECT_RESULTS[self as usize]
    }
}

/// Counts one request's card object in [`REQUEST_CARD_OBJECTS`].
pub fn count_card_object(result: CardObject) {
    match HOT.get() {
        Some(h) => h.card_objects[result as usize].increment(1),
        None => metrics::counter!(REQUEST_CARD_OBJECTS, "result" => result.as_str()).increment(1),
    }
}

/// Sets [`LEDGER_HOLDS`] to `holds`.
#[expect(
    clippy::cast_precision_loss,
    reason = "a count of authorizations, far below 2^52, where f64 is exact"
)]
pub fn set_ledger_holds(holds: i64) {
    match HOT.get() {
        Some(h) => h.ledger_holds.set(holds as f64),
        None => metrics::gauge!(LEDGER_HOLDS).set(holds as f64),
    }
}

/// Counts one HTTP response in [`HTTP_RESPONSES`] (`route`, `status`).
pub fn count_http_response(route: &'static str, status: &'static str) {
    let hot = HOT.get().and_then(|h| {
        let cell = h
            .http_responses
            .get(index(ROUTES, route)?)?
            .get(index(STATUSES, status)?)?;
        Some(cell.get_or_init(
            || metrics::counter!(HTTP_RESPONSES, "route" => route, "status" => status),
        ))
    });
    match hot {
        Some(c) => c.increment(1),
        None => {
            metrics::counter!(HTTP_RESPONSES, "route" => route, "status" => status).increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// Lifecycle events (two or more per approved authorization) counted through
    /// the registry, a key built, hashed and looked up per event; now through
    /// handles, which must count the very series the registry would.
    #[test]
    fn lifecycle_events_count_through_handles_resolved_once() {
        let handle = super::super::install();
        let hot = HOT.get().expect("install resolves the handles");
        for t in LIFECYCLE_TYPES {
            for r in LIFECYCLE_RESULTS {
                assert!(
                    pair(&hot.lifecycle, (LIFECYCLE_TYPES, t), (LIFECYCLE_RESULTS, r)).is_some(),
                    "{t} {r}"
                );
            }
        }
        for t in EVENT_TYPES {
            assert!(
                index(EVENT_TYPES, t)
                    .and_then(|i| hot.events.get(i))
                    .is_some()
            );
        }
        let lifecycle = "cardgate_lifecycle_events_total{type=\"issuing_transaction.created\",result=\"duplicate\"}";
        let events = "cardgate_events_total{type=\"issuing_transaction.updated\"}";
        let text = super::super::render(&handle);
        let (l0, e0) = (value(&text, lifecycle), value(&text, events));
        count_lifecycle("issuing_transaction.created", "duplicate");
        count_lifecycle("issuing_transaction.created", "duplicate");
        count_event("issuing_transaction.updated");
        let text = super::super::render(&handle);
        assert_eq!(value(&text, lifecycle), l0 + 2);
        assert_eq!(value(&text, events), e0 + 1);
    }
}
