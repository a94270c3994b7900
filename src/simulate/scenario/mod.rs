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
//!
//! Files: this one (the scenario file), `plan.rs` (the seeded generator and the
//! plan of purchases and fates), `oracle.rs` (what each answer should be),
//! `summary.rs` (the report), `runner.rs` (the [`Driver`] and the run itself).

mod oracle;
mod plan;
mod runner;
mod summary;

use std::path::Path;

use serde::Deserialize;

use super::model::SpendingControls;
use crate::decision::Interval;

pub use runner::{Authorized, Driver, run};
pub use summary::Summary;

use plan::plan;

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
    #[expect(
        clippy::too_many_lines,
        reason = "one check per field, so that every problem lands in the same report"
    )]
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
                    problems.push(format!("{at}: unknown Stripe category {:?}", m.category));
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const EXAMPLE: &str = include_str!("../../../config/scenario.toml");

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
    fn dates_are_fixed() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-01-04"), Some(1_767_484_800));
        assert_eq!(parse_date("2026-02-30x"), None);
    }
}
