//! The authorization pipeline: one `issuing_authorization.request` from signed
//! bytes to the answer, as a sequence of small named steps, without HTTP.
//!
//! ```text
//! verify    stripe::verify → Verified            (Rejected: bad signature)
//! parse     simd-json tape → Event → AuthRequest (Rejected: path of the bad field)
//! snapshot  the card's and cardholder's spend    (spend::snapshot)
//! look up   overrides; claims the allowance      (approvals::lookup)
//! decide    decision::decide_traced, bounded by the deadline, panics caught
//!           (faults wraps it when fault injection is configured)
//! settle    atomic re-check + reserve, durable as configured (spend::settle)
//! record    the decision-log row                 (record::row, inside settle)
//! hand back allowance kept or given back, reviews (approvals::after)
//! respond   stripe::encode_decision              (or the caller's `finish`)
//! ```
//!
//! Lifecycle events (`issuing_authorization.created`/`.updated`,
//! `issuing_transaction.created`) branch after parse into [`lifecycle`].
//!
//! Owns the order of the steps and what each step may cost: once a request event is
//! verified and parsed it always ends in a decision (the configured fallback on a
//! deadline, a caught panic or a ledger failure), never an error. `http/webhook.rs`
//! only reads the body and maps an [`Answer`] to a status; benches and tests call
//! [`Authorizer::process`] directly.

mod approvals;
mod faults;
mod lifecycle;
mod record;
mod spend;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;

pub use approvals::merchant_id;
pub use record::shadow_names;

use crate::approvals::Approvals;
use crate::clock::Clock;
use crate::config::{Config, Fallback, FaultInjection};
use crate::decision::{AuthRequest, Decision, FallbackCause, Matched, ProgramControls};
use crate::journal::Journal;
use crate::ledger::{Holds, Ledger};
use crate::metrics as m;
use crate::rules::RuleSet;
use crate::signals::SignalSource;
use crate::stripe::{self, Event, Secrets};

/// What the pipeline answers. `http/` turns it into a status and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A decision body for Stripe (`{"approved", "amount"?, "metadata"}`), and
    /// the `Stripe-Version` to answer in: the request event's `api_version`
    /// (the body's shape did not change from 2024-06-20 to 2026-10-28.endive, so
    /// one encoding serves every version), or `None` to answer in the
    /// configured version (an event without a usable `api_version`).
    Decision(Bytes, Option<Box<str>>),
    /// A non-request event was taken (`{"received":true}`), or a decision went out
    /// another way (legacy mode).
    Received,
    /// A lifecycle event that could not be recorded: answered 503 so Stripe
    /// delivers it again (never 200 for an event that was not stored).
    Unavailable {
        /// Why (logged; the body says only that the store is unavailable).
        message: String,
    },
    /// Refused before anything was parsed or recorded.
    Rejected {
        /// Machine code (`missing_signature`, `invalid_event`, …).
        code: &'static str,
        /// Human message.
        message: String,
        /// The JSON path of the field at fault, for parse errors.
        path: Option<String>,
    },
}

/// What the `finish` step of [`Authorizer::process_with`] sees: the decided request.
pub struct Finished<'a> {
    /// The request event's id.
    pub event_id: &'a str,
    /// The request.
    pub auth: &'a AuthRequest<'a>,
    /// The answer after settling (reserve and durability may have changed it).
    pub decision: &'a Decision,
    /// The rule-set version that decided.
    pub ruleset: &'a str,
    /// The request event's `api_version` (`""` when absent).
    pub api_version: &'a str,
}

/// The pipeline's inputs that do not change per request: secrets, policy, the live
/// rule set, and the services the steps call.
pub struct Authorizer {
    secrets: Secrets,
    tolerance_seconds: u64,
    deadline: std::time::Duration,
    fallback: Fallback,
    program: ProgramControls,
    /// `program` as the decision log keeps it: `(hash, body)`, encoded once.
    program_blob: (i64, Arc<[u8]>),
    faults: FaultInjection,
    /// The live rule set; swapped whole on reload, read with one atomic load.
    pub rules: ArcSwap<RuleSet>,
    /// Spend per card and cardholder (in memory, or a shared store deciding
    /// holds for replicas); `None` runs without past spend.
    pub holds: Option<Arc<dyn Holds>>,
    /// Durable facts and decision log; `None` keeps the ledger in memory only.
    pub journal: Option<Arc<dyn Journal>>,
    /// Overrides, allowances and review requests; `None` when the store is off.
    pub approvals: Option<Arc<Approvals>>,
    /// Behavioural signals; `None` reads [`crate::decision::Signals::NONE`].
    pub signals: Option<Arc<dyn SignalSource>>,
    clock: Clock,
}

impl Authorizer {
    /// A pipeline with no ledger, journal or approvals.
    pub fn new(config: &Config, rules: RuleSet, clock: Clock) -> Self {
        Authorizer {
            secrets: Secrets::new(&config.webhook_secrets),
            tolerance_seconds: config.tolerance_seconds,
            deadline: config.deadline,
            fallback: config.fallback,
            program: config.program.clone(),
            program_blob: {
                let body = crate::journal::seen::encode_program(&config.program);
                (crate::journal::seen::blob_hash(&body), Arc::from(body))
            },
            faults: config.fault_injection.clone(),
            rules: ArcSwap::from_pointee(rules),
            holds: None,
            journal: None,
            approvals: None,
            signals: None,
            clock,
        }
    }

    /// Adds the ledger (already rebuilt from the journal's store) and the journal.
    #[must_use]
    pub fn with_ledger(self, ledger: Arc<Ledger>, journal: Option<Arc<dyn Journal>>) -> Self {
        self.with_holds(ledger, journal)
    }

    /// Adds a holds backend (the in-memory ledger, or a shared store) and the
    /// journal.
    #[must_use]
    pub fn with_holds(mut self, holds: Arc<dyn Holds>, journal: Option<Arc<dyn Journal>>) -> Self {
        self.holds = Some(holds);
        self.journal = journal;
        self
    }

    /// Adds the approvals service (overrides, allowances, reviews).
    #[must_use]
    pub fn with_approvals(mut self, approvals: Arc<Approvals>) -> Self {
        self.approvals = Some(approvals);
        self
    }

    /// Adds the behavioural signals (already rebuilt from the store).
    #[must_use]
    pub fn with_signals(mut self, signals: Arc<dyn SignalSource>) -> Self {
        self.signals = Some(signals);
        self
    }

    /// How many webhook secrets are configured (for the start-up log line).
    pub fn secret_count(&self) -> usize {
        self.secrets.len()
    }

    /// The configured per-request deadline.
    pub fn deadline(&self) -> std::time::Duration {
        self.deadline
    }

    /// Unix seconds by the pipeline's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Runs the pipeline and answers with the encoded decision. `start` is when the
    /// request arrived; `deadline` bounds the decision.
    pub async fn process(
        &self,
        signature: Option<&[u8]>,
        body: Bytes,
        start: Instant,
        deadline: Instant,
    ) -> Answer {
        self.process_with(signature, body, start, deadline, respond)
            .await
    }

    /// [`process`](Self::process) with another last step: legacy mode hands the
    /// decision to an API call instead of the body.
    pub async fn process_with<F>(
        &self,
        signature: Option<&[u8]>,
        body: Bytes,
        start: Instant,
        deadline: Instant,
        finish: F,
    ) -> Answer
    where
        F: FnOnce(Finished<'_>) -> Answer + Send,
    {
        let mut clock = m::StageClock::start();

        // verify
        let verified = match self.verify(signature, &body) {
            Ok(v) => v,
            Err(rejected) => return rejected,
        };
        // simd-json parses a copy in place; the decision log keeps the bytes as
        // received.
        let raw = self.journal.as_ref().map(|_| body.clone());
        clock.lap(m::Stage::Verify);

        // parse (a card read before is not parsed again)
        let mut buf = verified.into_body();
        let card = stripe::known::cut(&mut buf, &stripe::known::CARDS);
        let doc = match stripe::known::parse(&mut buf, &card, &body) {
            Ok(d) => d,
            Err(e) => return parse_failed(&e),
        };
        let event = match Event::read_with(&doc, card.known()) {
            Ok(e) => e,
            Err(e) => return parse_failed(&e),
        };
        if event.event_type != stripe::AUTHORIZATION_REQUEST {
            m::count_event(event_label(event.event_type));
            return match lifecycle::apply(self, &event).await {
                Ok(()) => Answer::Received,
                Err(message) => Answer::Unavailable { message },
            };
        }
        let auth = match event.authorization_request() {
            Ok(a) => a,
            Err(e) => return parse_failed(&e),
        };
        m::count_card_object(if card.known().is_some() {
            m::CardObject::Known
        } else if card.learn(&auth, &stripe::known::CARDS) {
            m::CardObject::Learnt
        } else {
            m::CardObject::Parsed
        });
        clock.lap(m::Stage::Parse);

        // snapshot, look up, decide
        let rules = self.rules.load();
        let approved = approvals::lookup(self.approvals.as_ref(), &auth, deadline).await;
        let (past, decision, shadow, now) = self
            .snapshot_and_decide(&auth, &rules, &approved, deadline)
            .await;
        clock.lap(m::Stage::Decide);

        // settle (reserve, durability, decision log)
        let decision = spend::settle(
            self,
            spend::Decided {
                event_id: event.id,
                auth: &auth,
                decision,
                raw,
                past: &past,
                now,
                at: spend::at(self, &auth),
                card_override: approved.card_override(),
                cardholder_override: approved.cardholder_override(),
                review_allowed: approved.allowance.is_some(),
                ruleset: rules.version(),
                shadow: &shadow,
                start,
                deadline,
            },
        )
        .await;
        clock.lap(m::Stage::Reserve);
        approvals::after(self.approvals.as_ref(), &auth, &decision, approved);

        // respond
        m::count_authorization(decision.outcome(), decision.reason.as_str());
        let answer = finish(Finished {
            event_id: event.id,
            auth: &auth,
            decision: &decision,
            ruleset: rules.version(),
            api_version: event.api_version,
        });
        let elapsed = clock.lap(m::Stage::Respond).duration_since(start);
        m::record_webhook_duration(elapsed);
        tracing::debug!(
            authorization = auth.id,
            card = auth.card.id,
            amount = auth.amount,
            outcome = decision.outcome(),
            approved_amount = decision.amount,
            reason = decision.reason.as_str(),
            ruleset = rules.version(),
            shadow = shadow_names(&shadow).as_deref(),
            micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "decision"
        );
        answer
    }

    /// The verify step: the signature over the body as received, or the 400 to
    /// answer.
    fn verify(&self, signature: Option<&[u8]>, body: &[u8]) -> Result<stripe::Verified, Answer> {
        // The one copy of the body (out of hyper's shared read buffer, which
        // simd-json must not write to), with room for the parser's padding.
        let mut owned = Vec::with_capacity(body.len() + stripe::PADDING);
        owned.extend_from_slice(body);
        stripe::verify(
            signature,
            owned,
            &self.secrets,
            self.now(),
            self.tolerance_seconds,
        )
        .map_err(|e| {
            metrics::counter!(m::SIGNATURE_FAILURES, "code" => e.code()).increment(1);
            tracing::warn!(code = e.code(), "webhook signature rejected: {e}");
            Answer::Rejected {
                code: e.code(),
                message: e.to_string(),
                path: None,
            }
        })
    }

    /// The snapshot and decide steps: a spend snapshot that cannot be read in time
    /// answers the fallback (deciding without it would let interval limits pass
    /// unchecked).
    async fn snapshot_and_decide(
        &self,
        auth: &AuthRequest<'_>,
        rules: &RuleSet,
        approved: &approvals::Approved<'_>,
        deadline: Instant,
    ) -> (spend::Past, Decision, Vec<Matched>, i64) {
        match spend::snapshot(self, auth, deadline).await {
            Ok(past) => {
                let (decision, shadow, now) =
                    faults::decide(self, auth, rules, &past, approved, deadline).await;
                (past, decision, shadow, now)
            }
            Err(e) => {
                tracing::error!(authorization = auth.id, "no spend snapshot: {e}");
                let decision = self.fallback(FallbackCause::Ledger);
                (spend::Past::default(), decision, Vec::new(), self.now())
            }
        }
    }

    /// The configured fallback decision, counted and logged with its cause.
    pub(crate) fn fallback(&self, cause: FallbackCause) -> Decision {
        metrics::counter!(m::FALLBACKS, "cause" => cause.as_str()).increment(1);
        tracing::warn!(cause = cause.as_str(), "answering the fallback decision");
        Decision::fallback(self.fallback == Fallback::Approve, cause)
    }
}

/// The realtime last step: the decision as Stripe's response body.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the shape of every `finish` step, `FnOnce(Finished) -> Answer`"
)]
fn respond(f: Finished<'_>) -> Answer {
    Answer::Decision(
        Bytes::from(stripe::encode_decision(f.decision, f.ruleset)),
        answer_version(f.api_version),
    )
}

/// The version to answer in: the event's, when it looks like one of Stripe's
/// (`2024-06-20`, `2026-10-28.endive`: digits, letters, `-`, `.`, at most 40
/// bytes); else `None`, for the configured one. Stripe requires the answer's
/// `Stripe-Version` and reads the body in that version.
fn answer_version(v: &str) -> Option<Box<str>> {
    let plausible = !v.is_empty()
        && v.len() <= 40
        && v.as_bytes()[0].is_ascii_digit()
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    plausible.then(|| v.into())
}

fn parse_failed(e: &stripe::ParseError) -> Answer {
    metrics::counter!(m::PARSE_FAILURES).increment(1);
    tracing::warn!(path = %e.path, "webhook body rejected: {e}");
    Answer::Rejected {
        code: "invalid_event",
        message: e.to_string(),
        path: Some(e.path.clone()),
    }
}

/// Bounded label values for event types.
fn event_label(t: &str) -> &'static str {
    match t {
        "issuing_authorization.created" => "issuing_authorization.created",
        "issuing_authorization.updated" => "issuing_authorization.updated",
        "issuing_transaction.created" => "issuing_transaction.created",
        "issuing_transaction.updated" => "issuing_transaction.updated",
        _ => "other",
    }
}
