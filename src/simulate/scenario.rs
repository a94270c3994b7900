//! Scenario mode: N cardholders with cards spending over virtual days at a mix of
//! merchants, every approved authorization given a fate (capture, partial or
//! over-capture, reversal, expiry, increment), an oracle that knows the limits
//! and says what each answer should have been, and the run's summary.
//!
//! **Determinism.** Everything a run does follows from the scenario file and the
//! seed: each cardholder draws from its own generator (seeded from the run seed
//! and its index), its actions run in virtual-time order one after another, and
//! cardholders share no limit, so running several at once cannot change any
//! answer. Only latencies differ between runs; [`Summary::render`] keeps them in
//! their own section. The generator is a SplitMix64 written here (not a crate)
//! so that a seed means the same run with every version of the dependencies.
//!
//! The oracle mirrors cardgate's documented rules (card then cardholder
//! controls: categories, countries, limits by UTC window of the authorization's
//! creation; partial approval when amount-controllable; spend = what is held plus
//! what was captured) and is updated with what actually happened, so one
//! disagreement does not cascade into the next.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

use super::model::{
    Merchant, NewAuthorization, NewCard, NewCardholder, SimError, SpendingControls,
};
use crate::decision::Interval;
use crate::ledger::window_start;

// === the scenario file ===

/// A scenario file (TOML), validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Default seed (the command line's `--seed` wins).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Virtual days of spending.
    pub days: u32,
    /// First virtual day, `YYYY-MM-DD` (UTC).
    #[serde(default = "default_start")]
    pub start: String,
    /// How many cardholders.
    pub cardholders: u32,
    /// Cards per cardholder.
    #[serde(default = "one")]
    pub cards_per_cardholder: u32,
    /// Purchases per card per day, drawn uniformly from `[min, max]`.
    pub purchases_per_card_per_day: [u32; 2],
    /// Cardholders run at once.
    #[serde(default = "four")]
    pub concurrency: u32,
    /// Controls on every card.
    #[serde(default)]
    pub card_controls: SpendingControls,
    /// Controls on every cardholder.
    #[serde(default)]
    pub cardholder_controls: SpendingControls,
    /// What happens to approved authorizations.
    #[serde(default)]
    pub fates: Fates,
    /// Where the cards are used.
    #[serde(rename = "merchant")]
    pub merchants: Vec<MerchantMix>,
}

fn default_seed() -> u64 {
    1
}
fn default_start() -> String {
    "2026-01-04".into()
}
fn one() -> u32 {
    1
}
fn four() -> u32 {
    4
}

/// Probabilities of each fate of an approved authorization; what is left over
/// stays pending (uncaptured) to the end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fates {
    /// Captured in full, within a day.
    pub capture: f64,
    /// Captured for less (the rest released).
    pub partial_capture: f64,
    /// Captured for more (tips).
    pub over_capture: f64,
    /// Reversed in full by the merchant within the hour.
    pub reverse: f64,
    /// Partly reversed, then captured.
    pub partial_reverse: f64,
    /// Never captured: expired after seven days.
    pub expire: f64,
    /// Incremented (hotel, rental), then captured.
    pub increment: f64,
}

impl Default for Fates {
    fn default() -> Self {
        Fates {
            capture: 0.6,
            partial_capture: 0.08,
            over_capture: 0.05,
            reverse: 0.08,
            partial_reverse: 0.04,
            expire: 0.05,
            increment: 0.05,
        }
    }
}

/// One merchant in the mix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantMix {
    /// Merchant name.
    pub name: String,
    /// Stripe category name.
    pub category: String,
    /// MCC (default: the category's, from Stripe's table).
    pub category_code: Option<String>,
    /// ISO alpha-2 country.
    #[serde(default = "us")]
    pub country: String,
    /// City.
    #[serde(default = "sf")]
    pub city: String,
    /// Amounts drawn from `[min, max]`, minor units, skewed towards small ones.
    pub amount: [i64; 2],
    /// Relative weight in the mix.
    #[serde(default = "weight")]
    pub weight: u32,
    /// Probability that a request here is amount-controllable.
    #[serde(default)]
    pub controllable: f64,
}

fn us() -> String {
    "US".into()
}
fn sf() -> String {
    "San Francisco".into()
}
fn weight() -> u32 {
    1
}

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Unreadable file.
    #[error("cannot read scenario {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML or unknown keys.
    #[error("scenario {path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// Values that make no sense, every one listed.
    #[error("scenario {path} has {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid {
        /// The file.
        path: String,
        /// One line per problem.
        problems: Vec<String>,
    },
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates scenario text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Scenario, ScenarioError> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Syntax {
            path: name.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut problems = Vec::new();
        if s.days == 0 || s.days > 3660 {
            problems.push("days must be between 1 and 3660".to_string());
        }
        if s.cardholders == 0 || s.cardholders > 100_000 {
            problems.push("cardholders must be between 1 and 100000".to_string());
        }
        if s.cards_per_cardholder == 0 || s.cards_per_cardholder > 100 {
            problems.push("cards_per_cardholder must be between 1 and 100".to_string());
        }
        let [lo, hi] = s.purchases_per_card_per_day;
        if lo > hi || hi > 1000 {
            problems
                .push("purchases_per_card_per_day must be [min, max] with min ≤ max ≤ 1000".into());
        }
        if s.concurrency == 0 {
            problems.push("concurrency must be at least 1".into());
        }
        if parse_date(&s.start).is_none() {
            problems.push(format!("start {:?} is not a YYYY-MM-DD date", s.start));
        }
        let f = &s.fates;
        let all = [
            f.capture,
            f.partial_capture,
            f.over_capture,
            f.reverse,
            f.partial_reverse,
            f.expire,
            f.increment,
        ];
        if all.iter().any(|p| !(0.0..=1.0).contains(p)) || all.iter().sum::<f64>() > 1.0 + 1e-9 {
            problems.push("fates must each be in [0, 1] and sum to at most 1".into());
        }
        if s.merchants.is_empty() {
            problems.push("at least one [[merchant]] is needed".into());
        }
        for (i, m) in s.merchants.iter_mut().enumerate() {
            let at = format!("merchant[{i}] ({})", m.name);
            let by_name = crate::decision::category_by_name(&m.category);
            match (by_name, &m.category_code) {
                (None, _) => {
                    problems.push(format!("{at}: unknown Stripe category {:?}", m.category))
                }
                (Some(id), None) => {
                    let mcc = crate::decision::categories::CATEGORIES[usize::from(id)].mcc;
                    if mcc.is_empty() {
                        problems.push(format!(
                            "{at}: category {} has no MCC; give category_code",
                            m.category
                        ));
                    }
                    m.category_code = Some(mcc.to_string());
                }
                (Some(_), Some(code)) => {
                    if code.len() != 4 || !code.bytes().all(|b| b.is_ascii_digit()) {
                        problems.push(format!("{at}: category_code {code:?} is not four digits"));
                    }
                }
            }
            let [a, b] = m.amount;
            if a <= 0 || a > b || b > super::model::MAX_AUTHORIZATION_AMOUNT {
                problems.push(format!(
                    "{at}: amount must be [min, max] with 0 < min ≤ max ≤ {}",
                    super::model::MAX_AUTHORIZATION_AMOUNT
                ));
            }
            if m.weight == 0 {
                problems.push(format!("{at}: weight must be at least 1"));
            }
            if !(0.0..=1.0).contains(&m.controllable) {
                problems.push(format!("{at}: controllable is a probability in [0, 1]"));
            }
            if m.country.len() != 2 {
                problems.push(format!("{at}: country must be ISO alpha-2"));
            }
        }
        for (who, c) in [
            ("card_controls", &s.card_controls),
            ("cardholder_controls", &s.cardholder_controls),
        ] {
            for (i, l) in c.spending_limits.iter().enumerate() {
                if Interval::parse(&l.interval).is_none() {
                    problems.push(format!(
                        "{who}.spending_limits[{i}].interval {:?} is not a Stripe interval",
                        l.interval
                    ));
                }
                if l.amount < 0 {
                    problems.push(format!(
                        "{who}.spending_limits[{i}].amount must not be negative"
                    ));
                }
            }
            if c.allowed_categories.is_some() && c.blocked_categories.is_some() {
                problems.push(format!(
                    "{who}: allowed_categories cannot be set with blocked_categories"
                ));
            }
        }
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(ScenarioError::Invalid {
                path: name.to_string(),
                problems,
            })
        }
    }

    /// How many purchases a run with `seed` makes (known up front for progress).
    pub fn purchases(&self, seed: u64) -> u64 {
        (0..self.cardholders)
            .map(|i| plan(self, seed, i).len() as u64)
            .sum()
    }
}

/// Unix seconds of `YYYY-MM-DD` 00:00 UTC.
fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if it.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || !(1970..=9999).contains(&y)
    {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400)
}

// === randomness ===

/// SplitMix64: tiny, fast, and fixed forever (see the module docs).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `p` (decided on integers: 2⁻³² resolution).
    fn chance(&mut self, p: f64) -> bool {
        let threshold = (p.clamp(0.0, 1.0) * 4_294_967_296.0) as u64;
        (self.next() >> 32) < threshold
    }

    /// In `[lo, hi]`, skewed towards `lo` (square of a uniform): many small
    /// purchases, a few large ones. Integer-only, so the same on every machine.
    fn skewed(&mut self, lo: i64, hi: i64) -> i64 {
        let u = (self.next() >> 44) as i128; // 20 bits
        let span = (hi - lo) as i128;
        lo + ((span * u * u) >> 40) as i64
    }
}

// === the plan ===

/// What happens to an approved authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Capture,
    PartialCapture,
    OverCapture,
    Reverse,
    PartialReverse,
    Expire,
    Increment,
    Pending,
}

#[derive(Debug, Clone)]
struct Purchase {
    at: i64,
    card: usize,
    merchant: usize,
    amount: i64,
    controllable: bool,
    fate: Fate,
    /// Per-mille for partial amounts (capture, reversal, tip, increment size).
    share: i64,
    /// Seconds after the purchase when the fate's first step runs.
    delay: i64,
}

fn pick_fate(f: &Fates, rng: &mut Rng) -> Fate {
    let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    for (p, fate) in [
        (f.capture, Fate::Capture),
        (f.partial_capture, Fate::PartialCapture),
        (f.over_capture, Fate::OverCapture),
        (f.reverse, Fate::Reverse),
        (f.partial_reverse, Fate::PartialReverse),
        (f.expire, Fate::Expire),
        (f.increment, Fate::Increment),
    ] {
        acc += p;
        if u < acc {
            return fate;
        }
    }
    Fate::Pending
}

/// Cardholder `index`'s purchases, in time order.
fn plan(s: &Scenario, seed: u64, index: u32) -> Vec<Purchase> {
    let mut rng = Rng::new(seed, u64::from(index) + 1);
    let start = parse_date(&s.start).unwrap_or(0);
    let total_weight: u64 = s.merchants.iter().map(|m| u64::from(m.weight)).sum();
    let mut out = Vec::new();
    for day in 0..i64::from(s.days) {
        for card in 0..s.cards_per_cardholder as usize {
            let [lo, hi] = s.purchases_per_card_per_day;
            let n = rng.range(u64::from(lo), u64::from(hi));
            for _ in 0..n {
                let mut w = rng.range(0, total_weight.saturating_sub(1));
                let merchant = s
                    .merchants
                    .iter()
                    .position(|m| {
                        if w < u64::from(m.weight) {
                            true
                        } else {
                            w -= u64::from(m.weight);
                            false
                        }
                    })
                    .unwrap_or(0);
                let m = &s.merchants[merchant];
                out.push(Purchase {
                    at: start + day * 86_400 + rng.range(0, 86_399) as i64,
                    card,
                    merchant,
                    amount: rng.skewed(m.amount[0], m.amount[1]),
                    controllable: rng.chance(m.controllable),
                    fate: pick_fate(&s.fates, &mut rng),
                    share: rng.range(200, 900) as i64,
                    delay: rng.range(60, 20 * 3600) as i64,
                });
            }
        }
    }
    // Stable: equal times keep their generation order.
    out.sort_by_key(|p| p.at);
    out
}

// === the driver: how the runner reaches the emulator ===

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

/// The emulator operations a scenario uses; `http::emulator::Simulator` is the
/// real one (this module knows no HTTP).
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

// === the oracle ===

#[derive(Debug, Clone)]
struct OracleAuth {
    card: usize,
    created: i64,
    category: String,
    authorized: i64,
    captured: i64,
    /// Still holding what is not captured.
    pending: bool,
}

impl OracleAuth {
    /// What counts toward limits, as cardgate's ledger counts it.
    fn spend(&self) -> i64 {
        if self.pending {
            (self.authorized - self.captured).max(0) + self.captured
        } else {
            self.captured
        }
    }
}

/// What the oracle expects of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Approve(i64),
    Decline,
}

/// The expected outcome of every request of one cardholder, from the limits.
#[derive(Debug, Default)]
struct Oracle {
    auths: HashMap<String, OracleAuth>,
}

impl Oracle {
    fn spent(
        &self,
        card: Option<usize>,
        interval: Interval,
        at: i64,
        categories: Option<&Vec<String>>,
    ) -> i64 {
        let window = window_start(interval, at);
        self.auths
            .values()
            .filter(|a| card.is_none_or(|c| a.card == c))
            .filter(|a| window_start(interval, a.created) == window)
            .filter(|a| categories.is_none_or(|c| c.is_empty() || c.contains(&a.category)))
            .map(OracleAuth::spend)
            .sum()
    }

    #[allow(clippy::too_many_arguments)]
    fn expect(
        &self,
        s: &Scenario,
        card: usize,
        merchant: &MerchantMix,
        amount: i64,
        controllable: bool,
        created: i64,
    ) -> Expected {
        let mut grant = amount;
        for (controls, scope) in [
            (&s.card_controls, Some(card)),
            (&s.cardholder_controls, None),
        ] {
            let cat = &merchant.category;
            if controls
                .blocked_categories
                .as_ref()
                .is_some_and(|b| b.contains(cat))
            {
                return Expected::Decline;
            }
            if controls
                .allowed_categories
                .as_ref()
                .is_some_and(|a| !a.is_empty() && !a.contains(cat))
            {
                return Expected::Decline;
            }
            let country = &merchant.country;
            if controls
                .blocked_merchant_countries
                .as_ref()
                .is_some_and(|b| b.contains(country))
            {
                return Expected::Decline;
            }
            if controls
                .allowed_merchant_countries
                .as_ref()
                .is_some_and(|a| !a.is_empty() && !a.contains(country))
            {
                return Expected::Decline;
            }
            for l in &controls.spending_limits {
                if l.categories
                    .as_ref()
                    .is_some_and(|c| !c.is_empty() && !c.contains(cat))
                {
                    continue;
                }
                let Some(interval) = Interval::parse(&l.interval) else {
                    continue;
                };
                let spent = match interval {
                    Interval::PerAuthorization => 0,
                    i => self.spent(scope, i, created, l.categories.as_ref()),
                };
                let room = l.amount - spent;
                if grant > room {
                    if controllable && room > 0 {
                        grant = room;
                    } else {
                        return Expected::Decline;
                    }
                }
            }
        }
        Expected::Approve(grant)
    }
}

// === the summary ===

/// What a run did, and how it went.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Seed used.
    pub seed: u64,
    /// Authorizations created.
    pub authorizations: u64,
    /// Increment requests.
    pub increments: u64,
    /// Requests approved in full.
    pub approved: u64,
    /// Requests approved for less.
    pub partial: u64,
    /// Requests declined.
    pub declined: u64,
    /// Requests by `request_history.reason`.
    pub by_reason: BTreeMap<String, u64>,
    /// Requests by cardgate's `metadata.reason`.
    pub by_cardgate_reason: BTreeMap<String, u64>,
    /// Captures by kind (`full`, `partial`, `over`, `late`).
    pub captures: BTreeMap<&'static str, u64>,
    /// Full reversals.
    pub reversals: u64,
    /// Partial reversals.
    pub partial_reversals: u64,
    /// Expiries.
    pub expiries: u64,
    /// Sum of approved amounts.
    pub approved_amount: i64,
    /// Sum of captured amounts.
    pub captured_amount: i64,
    /// Lifecycle events cardgate did not accept.
    pub undelivered: u64,
    /// Emulator calls that failed (should be none).
    pub errors: Vec<String>,
    /// Requests whose answer differs from the oracle's.
    pub disagreements: u64,
    /// The first few disagreements, described.
    pub disagreement_samples: Vec<String>,
    /// Request webhook round trips.
    pub latencies: Vec<Duration>,
}

const SAMPLES: usize = 10;

impl Summary {
    fn merge(&mut self, o: Summary) {
        self.authorizations += o.authorizations;
        self.increments += o.increments;
        self.approved += o.approved;
        self.partial += o.partial;
        self.declined += o.declined;
        for (k, v) in o.by_reason {
            *self.by_reason.entry(k).or_default() += v;
        }
        for (k, v) in o.by_cardgate_reason {
            *self.by_cardgate_reason.entry(k).or_default() += v;
        }
        for (k, v) in o.captures {
            *self.captures.entry(k).or_default() += v;
        }
        self.reversals += o.reversals;
        self.partial_reversals += o.partial_reversals;
        self.expiries += o.expiries;
        self.approved_amount += o.approved_amount;
        self.captured_amount += o.captured_amount;
        self.undelivered += o.undelivered;
        self.errors.extend(o.errors);
        self.disagreements += o.disagreements;
        for d in o.disagreement_samples {
            if self.disagreement_samples.len() < SAMPLES {
                self.disagreement_samples.push(d);
            }
        }
        self.latencies.extend(o.latencies);
    }

    /// Latency at quantile `q` (nearest rank), if any request was sent.
    pub fn latency(&self, q: f64) -> Option<Duration> {
        let mut l = self.latencies.clone();
        if l.is_empty() {
            return None;
        }
        l.sort();
        let rank = ((q * l.len() as f64).ceil() as usize).clamp(1, l.len());
        Some(l[rank - 1])
    }

    /// The report: everything that follows from the seed, then the latencies.
    pub fn render(&self) -> String {
        let mut out = self.render_outcomes();
        out.push_str("latency (request webhook round trip):");
        match (
            self.latency(0.5),
            self.latency(0.9),
            self.latency(0.99),
            self.latency(1.0),
        ) {
            (Some(p50), Some(p90), Some(p99), Some(max)) => out.push_str(&format!(
                " p50 {} p90 {} p99 {} max {}\n",
                ms(p50),
                ms(p90),
                ms(p99),
                ms(max)
            )),
            _ => out.push_str(" none sent\n"),
        }
        out
    }

    /// The part of the report that the seed alone decides.
    pub fn render_outcomes(&self) -> String {
        let mut out = String::new();
        let requests = self.approved + self.partial + self.declined;
        out.push_str(&format!(
            "seed {}: {} authorizations, {} increments, {} requests\n",
            self.seed, self.authorizations, self.increments, requests
        ));
        out.push_str(&format!(
            "decisions: approved {}  partial {}  declined {}\n",
            self.approved, self.partial, self.declined
        ));
        out.push_str("by request_history.reason:\n");
        for (k, v) in &self.by_reason {
            out.push_str(&format!("  {k:<28} {v}\n"));
        }
        out.push_str("by cardgate metadata.reason:\n");
        for (k, v) in &self.by_cardgate_reason {
            out.push_str(&format!("  {k:<28} {v}\n"));
        }
        let captures: Vec<String> = self
            .captures
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.push_str(&format!(
            "lifecycle: captures [{}]  reversals {}  partial reversals {}  expiries {}\n",
            captures.join(", "),
            self.reversals,
            self.partial_reversals,
            self.expiries
        ));
        out.push_str(&format!(
            "amounts: approved {}  captured {}\n",
            self.approved_amount, self.captured_amount
        ));
        out.push_str(&format!(
            "delivery: {} lifecycle events not accepted, {} emulator errors\n",
            self.undelivered,
            self.errors.len()
        ));
        for e in self.errors.iter().take(SAMPLES) {
            out.push_str(&format!("  error: {e}\n"));
        }
        out.push_str(&format!("oracle: {} disagreements\n", self.disagreements));
        for d in &self.disagreement_samples {
            out.push_str(&format!("  {d}\n"));
        }
        out
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}

// === the runner ===

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
    } else {
        Expected::Decline
    };
    if actual != expected {
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

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/scenario.toml");

    #[test]
    fn the_bundled_scenario_is_valid_and_plans_deterministically() {
        let s = Scenario::parse(EXAMPLE, "config/scenario.toml").unwrap();
        let a: Vec<_> = plan(&s, 7, 0)
            .iter()
            .map(|p| (p.at, p.amount, p.merchant))
            .collect();
        let b: Vec<_> = plan(&s, 7, 0)
            .iter()
            .map(|p| (p.at, p.amount, p.merchant))
            .collect();
        assert_eq!(a, b);
        let c: Vec<_> = plan(&s, 8, 0)
            .iter()
            .map(|p| (p.at, p.amount, p.merchant))
            .collect();
        assert_ne!(a, c);
        assert!(s.purchases(7) > 0);
        for p in plan(&s, 7, 3) {
            let m = &s.merchants[p.merchant];
            assert!((m.amount[0]..=m.amount[1]).contains(&p.amount));
        }
    }

    #[test]
    fn bad_scenarios_list_every_problem() {
        let err = Scenario::parse(
            r#"
days = 0
cardholders = 1
purchases_per_card_per_day = [3, 1]
start = "2026-13-01"
[fates]
capture = 0.9
reverse = 0.9
[[merchant]]
name = "X"
category = "not_a_category"
amount = [5, 1]
"#,
            "s.toml",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "days",
            "purchases_per_card_per_day",
            "start",
            "fates",
            "not_a_category",
            "amount",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert!(
            Scenario::parse("days = 1\nbogus = 2\n", "s")
                .unwrap_err()
                .to_string()
                .contains("bogus")
        );
    }

    #[test]
    fn dates_and_randomness_are_fixed() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-01-04"), Some(1_767_484_800));
        assert_eq!(parse_date("2026-02-30x"), None);
        // SplitMix64's published first output for seed 0 after one step.
        let mut r = Rng(0);
        assert_eq!(r.next(), 0xE220_A839_7B1D_CDAF);
        let mut r = Rng::new(1, 1);
        for _ in 0..1000 {
            let v = r.skewed(100, 200);
            assert!((100..=200).contains(&v));
            assert!(r.range(3, 5) >= 3);
        }
    }

    #[test]
    fn summary_percentiles_and_sections() {
        let mut s = Summary {
            seed: 3,
            latencies: (1..=100).map(Duration::from_millis).collect(),
            ..Summary::default()
        };
        assert_eq!(s.latency(0.5), Some(Duration::from_millis(50)));
        assert_eq!(s.latency(0.99), Some(Duration::from_millis(99)));
        assert_eq!(s.latency(1.0), Some(Duration::from_millis(100)));
        let text = s.render();
        assert!(
            text.contains("p50 50.00ms p90 90.00ms p99 99.00ms max 100.00ms"),
            "{text}"
        );
        assert!(!s.render_outcomes().contains("latency"));
        s.latencies.clear();
        assert!(s.render().contains("none sent"));
    }

    fn mix(category: &str) -> MerchantMix {
        MerchantMix {
            name: "M".into(),
            category: category.into(),
            category_code: None,
            country: "US".into(),
            city: "X".into(),
            amount: [1, 10],
            weight: 1,
            controllable: 0.0,
        }
    }

    #[test]
    fn the_oracle_applies_limits_like_cardgate() {
        let mut s = Scenario::parse(EXAMPLE, "x").unwrap();
        s.card_controls = SpendingControls {
            blocked_categories: Some(vec!["bakeries".into()]),
            spending_limits: vec![
                super::super::SpendingLimit {
                    amount: 1000,
                    interval: "daily".into(),
                    categories: None,
                },
                super::super::SpendingLimit {
                    amount: 600,
                    interval: "per_authorization".into(),
                    categories: None,
                },
            ],
            ..SpendingControls::default()
        };
        s.cardholder_controls = SpendingControls::default();
        let mut o = Oracle::default();
        let day = 1_767_484_800;
        let m = mix("grocery_stores_supermarkets");
        assert_eq!(
            o.expect(&s, 0, &mix("bakeries"), 10, false, day),
            Expected::Decline
        );
        assert_eq!(o.expect(&s, 0, &m, 700, false, day), Expected::Decline);
        assert_eq!(o.expect(&s, 0, &m, 700, true, day), Expected::Approve(600));
        o.auths.insert(
            "a".into(),
            OracleAuth {
                card: 0,
                created: day,
                category: m.category.clone(),
                authorized: 600,
                captured: 0,
                pending: true,
            },
        );
        assert_eq!(
            o.expect(&s, 0, &m, 500, true, day + 10),
            Expected::Approve(400)
        );
        assert_eq!(o.expect(&s, 0, &m, 500, false, day + 10), Expected::Decline);
        // Another card, and the next day, have their own room.
        assert_eq!(
            o.expect(&s, 1, &m, 500, false, day + 10),
            Expected::Approve(500)
        );
        assert_eq!(
            o.expect(&s, 0, &m, 500, false, day + 86_400),
            Expected::Approve(500)
        );
        // A partial capture frees the rest; an over-capture uses more.
        let a = o.auths.get_mut("a").unwrap();
        a.captured = 200;
        a.pending = false;
        assert_eq!(
            o.expect(&s, 0, &m, 600, false, day + 20),
            Expected::Approve(600)
        );
        o.auths.get_mut("a").unwrap().captured = 900;
        assert_eq!(o.expect(&s, 0, &m, 200, false, day + 20), Expected::Decline);
    }
}
