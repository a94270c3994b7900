//! The oracle: from the scenario's controls and what each authorization actually
//! came to, the answer cardgate should give to the next request.

use std::collections::HashMap;

use super::{MerchantMix, Scenario};
use crate::decision::Interval;
use crate::ledger::window_start;

#[derive(Debug, Clone)]
pub(super) struct OracleAuth {
    pub(super) card: usize,
    pub(super) created: i64,
    pub(super) category: String,
    pub(super) authorized: i64,
    pub(super) captured: i64,
    /// Still holding what is not captured.
    pub(super) pending: bool,
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

/// What the oracle expects of one request (or what it got).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expected {
    Approve(i64),
    Decline,
    /// A decline asking for an SMS fraud challenge (cardgate's `challenge`
    /// rule action). The oracle judges limits, not rules: a challenge agrees
    /// with any expectation (it is a decline that holds nothing, and when the
    /// limits would have approved, a rule asked the cardholder first).
    Challenge,
}

impl Expected {
    /// Whether `actual` is what `self` (the oracle's expectation) allows.
    pub(super) fn admits(self, actual: Expected) -> bool {
        actual == self || actual == Expected::Challenge
    }
}

#[cfg(test)]
mod expected_tests {
    use super::Expected::{Approve, Challenge, Decline};

    #[test]
    fn a_challenge_agrees_with_any_expectation_and_nothing_else_changes() {
        assert!(Approve(5).admits(Challenge) && Decline.admits(Challenge));
        assert!(Approve(5).admits(Approve(5)) && Decline.admits(Decline));
        assert!(!Approve(5).admits(Decline) && !Decline.admits(Approve(5)));
        assert!(!Approve(5).admits(Approve(4)));
    }
}

/// The expected outcome of every request of one cardholder, from the limits.
#[derive(Debug, Default)]
pub(super) struct Oracle {
    pub(super) auths: HashMap<String, OracleAuth>,
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

    pub(super) fn expect(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::model::{SpendingControls, SpendingLimit};

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
        let mut s = Scenario::parse(super::super::tests::EXAMPLE, "x").unwrap();
        s.card_controls = SpendingControls {
            blocked_categories: Some(vec!["bakeries".into()]),
            spending_limits: vec![
                SpendingLimit {
                    amount: 1000,
                    interval: "daily".into(),
                    categories: None,
                },
                SpendingLimit {
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
