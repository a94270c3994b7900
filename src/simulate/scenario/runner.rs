//! The runner: each cardholder's steps in virtual-time order through a [`Driver`],
//! several cardholders at once, every answer checked against the oracle.

use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::oracle::{Expected, Oracle, OracleAuth};
use super::plan::{Fate, plan};
use super::summary::{SAMPLES, Summary};
use super::{Scenario, parse_date};
use crate::simulate::model::{Merchant, NewAuthorization, NewCard, NewCardholder, SimError};

/// What an authorization request came to, as the runner needs it.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// `iauth_…`
    pub id: String,
    /// Whether the latest request was approved.
    pub approved: bool,
    /// What the latest request was granted (0 when declined).
    pub granted: i64,
    /// `request_history[-1].reason`.
    pub reason: String,
    /// cardgate's `metadata.reason`, if it answered with a decision.
    pub cardgate_reason: Option<String>,
    /// Round trip of the request webhook.
    pub latency: Option<Duration>,
    /// Lifecycle events not delivered.
    pub undelivered: usize,
}

/// The emulator operations a scenario uses; [`crate::simulate::Simulator`] is the
/// real one, and tests may drive the runner with a stand-in.
pub trait Driver: Send + Sync + 'static {
    /// Creates a cardholder; returns its id.
    fn create_cardholder(&self, new: NewCardholder, now: i64) -> Result<String, SimError>;
    /// Creates a card; returns its id.
    fn create_card(&self, new: NewCard, now: i64) -> Result<String, SimError>;
    /// Creates an authorization and runs its real-time request.
    fn authorize(
        &self,
        new: NewAuthorization,
        now: i64,
    ) -> impl Future<Output = Result<Authorized, SimError>> + Send;
    /// Increments an authorization.
    fn increment(
        &self,
        id: &str,
        amount: i64,
        controllable: bool,
        now: i64,
    ) -> impl Future<Output = Result<Authorized, SimError>> + Send;
    /// Captures; returns undelivered event count.
    fn capture(
        &self,
        id: &str,
        amount: Option<i64>,
        close: bool,
        now: i64,
    ) -> impl Future<Output = Result<usize, SimError>> + Send;
    /// Reverses; returns undelivered event count.
    fn reverse(
        &self,
        id: &str,
        amount: Option<i64>,
        now: i64,
    ) -> impl Future<Output = Result<usize, SimError>> + Send;
    /// Expires; returns undelivered event count.
    fn expire(&self, id: &str, now: i64) -> impl Future<Output = Result<usize, SimError>> + Send;
}

/// Runs `scenario` with `seed` through `driver`. `progress` counts finished
/// purchases (with their fates) for a progress display.
pub async fn run<D: Driver>(
    scenario: Arc<Scenario>,
    seed: u64,
    driver: Arc<D>,
    progress: Arc<AtomicU64>,
) -> Summary {
    let slots = Arc::new(tokio::sync::Semaphore::new(scenario.concurrency as usize));
    let mut tasks = Vec::new();
    for index in 0..scenario.cardholders {
        let (s, d, p, slots) = (
            scenario.clone(),
            driver.clone(),
            progress.clone(),
            slots.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = slots.acquire_owned().await;
            cardholder(&s, seed, index, &*d, &p).await
        }));
    }
    let mut summary = Summary {
        seed,
        ..Summary::default()
    };
    // Merged in cardholder order, so samples and errors read the same every run.
    for t in tasks {
        match t.await {
            Ok(s) => summary.merge(s),
            Err(e) => summary.errors.push(format!("cardholder task failed: {e}")),
        }
    }
    summary
}

/// A step due at a virtual time; `seq` keeps equal times in scheduling order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: std::cmp::Reverse<(i64, u64)>,
    step: Step,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Purchase(usize),
    Capture {
        auth: String,
        share: Option<i64>,
        kind: &'static str,
    },
    Reverse {
        auth: String,
        share: Option<i64>,
    },
    Expire {
        auth: String,
    },
    Increment {
        auth: String,
        amount: i64,
        controllable: bool,
        then: i64,
    },
}

#[expect(
    clippy::too_many_lines,
    reason = "one cardholder's purchases in time order, each fate's steps inline; the oracle follows the same order"
)]
async fn cardholder<D: Driver>(
    s: &Scenario,
    seed: u64,
    index: u32,
    driver: &D,
    progress: &AtomicU64,
) -> Summary {
    let mut sum = Summary::default();
    let purchases = plan(s, seed, index);
    let start = parse_date(&s.start).unwrap_or(0);
    let holder = match driver.create_cardholder(
        NewCardholder {
            name: Some(format!("Cardholder {index}")),
            spending_controls: s.cardholder_controls.clone(),
            ..NewCardholder::default()
        },
        start,
    ) {
        Ok(h) => h,
        Err(e) => {
            sum.errors.push(format!("cardholder {index}: {e}"));
            progress.fetch_add(purchases.len() as u64, Ordering::Relaxed);
            return sum;
        }
    };
    let mut cards = Vec::new();
    for _ in 0..s.cards_per_cardholder {
        match driver.create_card(
            NewCard {
                cardholder: holder.clone(),
                spending_controls: s.card_controls.clone(),
                ..NewCard::default()
            },
            start,
        ) {
            Ok(c) => cards.push(c),
            Err(e) => {
                sum.errors.push(format!("cardholder {index}: card: {e}"));
                progress.fetch_add(purchases.len() as u64, Ordering::Relaxed);
                return sum;
            }
        }
    }
    let mut oracle = Oracle::default();
    let mut queue = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |queue: &mut BinaryHeap<Due>, at: i64, step: Step| {
        seq += 1;
        queue.push(Due {
            at: std::cmp::Reverse((at, seq)),
            step,
        });
    };
    for (i, p) in purchases.iter().enumerate() {
        push(&mut queue, p.at, Step::Purchase(i));
    }
    while let Some(Due {
        at: std::cmp::Reverse((now, _)),
        step,
    }) = queue.pop()
    {
        match step {
            Step::Purchase(i) => {
                let p = &purchases[i];
                let m = &s.merchants[p.merchant];
                let expected = oracle.expect(s, p.card, m, p.amount, p.controllable, now);
                let new = NewAuthorization {
                    card: cards[p.card].clone(),
                    amount: p.amount,
                    merchant_currency: None,
                    merchant_amount: None,
                    merchant: Merchant {
                        category: m.category.clone(),
                        category_code: m.category_code.clone().unwrap_or_default(),
                        name: m.name.clone(),
                        city: m.city.clone(),
                        country: m.country.clone(),
                        postal_code: None,
                        state: None,
                        network_id: format!("{:0>10}", p.merchant + 1),
                    },
                    authorization_method: if p.controllable { "chip" } else { "online" }.into(),
                    is_amount_controllable: p.controllable,
                    wallet: None,
                    network_risk_score: Some(10 + (p.amount % 40)),
                };
                let result = driver.authorize(new, now).await;
                progress.fetch_add(1, Ordering::Relaxed);
                let a = match result {
                    Ok(a) => a,
                    Err(e) => {
                        sum.errors.push(format!("authorize at {now}: {e}"));
                        continue;
                    }
                };
                sum.authorizations += 1;
                record(
                    &mut sum,
                    &a,
                    p.amount,
                    expected,
                    &format!("purchase {} of {} at {}", p.amount, m.name, now),
                );
                oracle.auths.insert(
                    a.id.clone(),
                    OracleAuth {
                        card: p.card,
                        created: now,
                        category: m.category.clone(),
                        authorized: a.granted,
                        captured: 0,
                        pending: a.approved,
                    },
                );
                if !a.approved {
                    continue;
                }
                let auth = a.id.clone();
                let share = Some(p.share);
                match p.fate {
                    Fate::Capture => push(
                        &mut queue,
                        now + p.delay,
                        Step::Capture {
                            auth,
                            share: None,
                            kind: "full",
                        },
                    ),
                    Fate::PartialCapture => push(
                        &mut queue,
                        now + p.delay,
                        Step::Capture {
                            auth,
                            share,
                            kind: "partial",
                        },
                    ),
                    Fate::OverCapture => push(
                        &mut queue,
                        now + p.delay,
                        Step::Capture {
                            auth,
                            share: Some(1000 + p.share / 4),
                            kind: "over",
                        },
                    ),
                    Fate::Reverse => push(
                        &mut queue,
                        now + p.delay / 20 + 1,
                        Step::Reverse { auth, share: None },
                    ),
                    Fate::PartialReverse => {
                        push(
                            &mut queue,
                            now + p.delay / 20 + 1,
                            Step::Reverse {
                                auth: auth.clone(),
                                share,
                            },
                        );
                        push(
                            &mut queue,
                            now + p.delay,
                            Step::Capture {
                                auth,
                                share: None,
                                kind: "full",
                            },
                        );
                    }
                    Fate::Expire => push(&mut queue, now + 7 * 86_400, Step::Expire { auth }),
                    Fate::Increment => push(
                        &mut queue,
                        now + p.delay / 2 + 1,
                        Step::Increment {
                            auth,
                            amount: (a.granted * p.share / 1000).max(1),
                            controllable: p.controllable,
                            then: now + p.delay,
                        },
                    ),
                    Fate::Pending => {}
                }
            }
            Step::Capture { auth, share, kind } => {
                let Some(o) = oracle.auths.get(&auth).cloned() else {
                    continue;
                };
                let held = if o.pending {
                    (o.authorized - o.captured).max(0)
                } else {
                    0
                };
                let amount = match share {
                    None => held,
                    Some(per_mille) => (held * per_mille / 1000).max(1),
                };
                if amount <= 0 {
                    continue;
                }
                match driver.capture(&auth, Some(amount), true, now).await {
                    Ok(undelivered) => {
                        sum.undelivered += undelivered as u64;
                        *sum.captures.entry(kind).or_default() += 1;
                        sum.captured_amount += amount;
                        if let Some(o) = oracle.auths.get_mut(&auth) {
                            o.captured += amount;
                            o.pending = false;
                        }
                    }
                    Err(e) => sum.errors.push(format!("capture {auth}: {e}")),
                }
            }
            Step::Reverse { auth, share } => {
                let Some(o) = oracle.auths.get(&auth).cloned() else {
                    continue;
                };
                let held = (o.authorized - o.captured).max(0);
                let amount = share.map(|per_mille| (held * per_mille / 1000).max(1).min(held));
                match driver.reverse(&auth, amount, now).await {
                    Ok(undelivered) => {
                        sum.undelivered += undelivered as u64;
                        let reversed = amount.unwrap_or(held);
                        if amount.is_some() && reversed < held {
                            sum.partial_reversals += 1;
                        } else {
                            sum.reversals += 1;
                        }
                        if let Some(o) = oracle.auths.get_mut(&auth) {
                            o.authorized -= reversed;
                            if o.authorized == 0 {
                                o.pending = false;
                            }
                        }
                    }
                    Err(e) => sum.errors.push(format!("reverse {auth}: {e}")),
                }
            }
            Step::Expire { auth } => match driver.expire(&auth, now).await {
                Ok(undelivered) => {
                    sum.undelivered += undelivered as u64;
                    sum.expiries += 1;
                    if let Some(o) = oracle.auths.get_mut(&auth) {
                        o.pending = false;
                    }
                }
                Err(e) => sum.errors.push(format!("expire {auth}: {e}")),
            },
            Step::Increment {
                auth,
                amount,
                controllable,
                then,
            } => {
                let Some(o) = oracle.auths.get(&auth).cloned() else {
                    continue;
                };
                let m = s
                    .merchants
                    .iter()
                    .find(|m| m.category == o.category)
                    .cloned();
                let expected = match &m {
                    Some(m) => oracle.expect(s, o.card, m, amount, controllable, o.created),
                    None => Expected::Decline,
                };
                match driver.increment(&auth, amount, controllable, now).await {
                    Ok(a) => {
                        sum.increments += 1;
                        record(
                            &mut sum,
                            &a,
                            amount,
                            expected,
                            &format!(
                                "increment {amount} at {now} of an authorization made at {}",
                                o.created
                            ),
                        );
                        if let Some(o) = oracle.auths.get_mut(&auth) {
                            o.authorized += a.granted;
                        }
                        push(
                            &mut queue,
                            then,
                            Step::Capture {
                                auth,
                                share: None,
                                kind: "full",
                            },
                        );
                    }
                    Err(e) => sum.errors.push(format!("increment {auth}: {e}")),
                }
            }
        }
    }
    sum
}

fn record(sum: &mut Summary, a: &Authorized, requested: i64, expected: Expected, what: &str) {
    *sum.by_reason.entry(a.reason.clone()).or_default() += 1;
    if let Some(r) = &a.cardgate_reason {
        *sum.by_cardgate_reason.entry(r.clone()).or_default() += 1;
    }
    if let Some(l) = a.latency {
        sum.latencies.push(l);
    }
    sum.undelivered += a.undelivered as u64;
    match (a.approved, a.granted < requested) {
        (false, _) => sum.declined += 1,
        (true, true) => sum.partial += 1,
        (true, false) => sum.approved += 1,
    }
    sum.approved_amount += a.granted;
    let actual = if a.approved {
        Expected::Approve(a.granted)
    } else if a.cardgate_reason.as_deref() == Some("challenge") {
        Expected::Challenge
    } else {
        Expected::Decline
    };
    if !expected.admits(actual) {
        sum.disagreements += 1;
        if sum.disagreement_samples.len() < SAMPLES {
            sum.disagreement_samples.push(format!(
                "{what}: expected {expected:?}, got {actual:?} ({}{})",
                a.reason,
                a.cardgate_reason
                    .as_deref()
                    .map(|r| format!(", cardgate {r}"))
                    .unwrap_or_default()
            ));
        }
    }
}
