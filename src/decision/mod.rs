//! The pure decision core: `decide(&Context) -> Decision`.
//!
//! Owns the order in which an authorization is judged and the machine reasons of
//! every decline. It does no I/O, spawns nothing, reads no clock (`now` is in the
//! [`Context`]) and knows neither HTTP nor JSON, so it is tested without a server
//! and replayed by the backtest exactly as it ran live.
//!
//! Order (first decline wins):
//! 1. card status, then cardholder status;
//! 2. the card's `spending_controls`, then the cardholder's, then cardgate's program
//!    controls (categories by name and MCC, merchant countries, card presence,
//!    program MCC blocks, spending limits);
//!    then the card's and cardholder's control overrides set through the admin API;
//! 3. rules, in file order: the first decisive match wins (a `review` match
//!    declines unless an approved allowance covers this exact retry; a
//!    `challenge` match declines asking for an SMS fraud challenge, unless this
//!    is the verified retry);
//! 4. default approve.
//!
//! A limit (or a `cap` rule) below the requested amount declines, unless
//! `is_amount_controllable` is set: then the smaller amount is approved (partial
//! approval), provided it is positive and still covers any cash-back.

pub mod categories;
mod context;
mod controls;
mod outcome;
mod signals;
mod verdict;

pub use context::{
    AuthRequest, Card, CardStatus, Cardholder, CardholderStatus, Context, Merchant, NoSpend, Scope,
    Signals, SpendView, Verification,
};
pub use controls::{
    CategoryId, CategorySet, Controls, CountrySet, Currency, CurrencyMismatch, Interval, MccRange,
    MerchantCategory, Presence, PresenceSet, ProgramControls, SpendingLimit, category_by_mcc,
    category_by_name,
};
pub use outcome::{Decision, FallbackCause, Level, Reason, Source};
pub use signals::{RiskSignals, SignalInt, SignalStr};
pub use verdict::{Action, Matched, NoRules, OnVerified, Rules, Verdict};

/// Judges one authorization request. Pure: the same context gives the same decision.
pub fn decide(ctx: &Context<'_>) -> Decision {
    decide_traced(ctx).0
}

/// [`decide`], also returning what the rules said: the decisive match and every
/// shadow match, for the decision log and `rules test`. The verdict is empty when
/// a status or spending control decided before the rules were reached.
pub fn decide_traced(ctx: &Context<'_>) -> (Decision, Verdict) {
    let mut verdict = Verdict::default();
    let decision = decide_inner(ctx, &mut verdict);
    (decision, verdict)
}

fn decide_inner(ctx: &Context<'_>, verdict: &mut Verdict) -> Decision {
    let auth = ctx.auth;
    match auth.card.status {
        CardStatus::Active => {}
        CardStatus::Canceled => {
            return Decision::decline(Reason::CardCanceled, Source::Status("card.status"));
        }
        CardStatus::Inactive | CardStatus::Other => {
            return Decision::decline(Reason::CardInactive, Source::Status("card.status"));
        }
    }
    match auth.cardholder.status {
        CardholderStatus::Active => {}
        CardholderStatus::Blocked => {
            return Decision::decline(
                Reason::CardholderBlocked,
                Source::Status("cardholder.status"),
            );
        }
        CardholderStatus::Inactive | CardholderStatus::Other => {
            return Decision::decline(
                Reason::CardholderInactive,
                Source::Status("cardholder.status"),
            );
        }
    }

    let mut grant = Grant::new(auth);
    let levels = [
        (Level::Card, &auth.card.controls, Scope::Card),
        (
            Level::Cardholder,
            &auth.cardholder.controls,
            Scope::Cardholder,
        ),
        (Level::Program, &ctx.program.controls, Scope::Card),
    ];
    for (level, controls, scope) in levels {
        if let Err(d) = check_controls(ctx, level, controls, scope, &mut grant) {
            return d;
        }
        if level == Level::Program
            && ctx
                .program
                .blocked_mccs
                .iter()
                .any(|r| r.contains(auth.merchant.category_code))
        {
            return Decision::decline(
                Reason::MccBlocked,
                Source::Control(Level::Program, "blocked_mccs"),
            );
        }
    }

    let overrides = [
        (Level::CardOverride, ctx.card_override, Scope::Card),
        (
            Level::CardholderOverride,
            ctx.cardholder_override,
            Scope::Cardholder,
        ),
    ];
    for (level, controls, scope) in overrides {
        if let Some(controls) = controls
            && let Err(d) = check_controls(ctx, level, controls, scope, &mut grant)
        {
            return d;
        }
    }

    *verdict = ctx.rules.evaluate(ctx);
    match verdict.decisive.clone() {
        Some(m) => apply_rule(ctx, m, grant),
        None => grant.finish(),
    }
}

/// What the decisive rule `m` makes of the grant that passed every control.
fn apply_rule(ctx: &Context<'_>, m: Matched, mut grant: Grant<'_>) -> Decision {
    let auth = ctx.auth;
    match m.action {
        Action::Approve => {
            let mut d = grant.finish();
            if d.source.is_none() {
                d.source = Some(Source::Rule(m.name));
            }
            return d;
        }
        Action::Decline => return Decision::decline(Reason::Rule, Source::Rule(m.name)),
        // An approved allowance for exactly this retry lets the review rule pass.
        Action::Review if ctx.review_allowed => {
            let mut d = grant.finish();
            if d.source.is_none() {
                d.source = Some(Source::Rule(m.name));
            }
            return d;
        }
        Action::Review => return Decision::decline(Reason::Review, Source::Rule(m.name)),
        // A verified retry is never challenged again; `Skip` rules never
        // reach here for one (the rule set passes over them).
        Action::Challenge(_) if auth.signals.verified_by_fraud_challenge == Some(true) => {
            let mut d = grant.finish();
            if d.source.is_none() {
                d.source = Some(Source::Rule(m.name));
            }
            return d;
        }
        Action::Challenge(_) => {
            return Decision::decline(Reason::Challenge, Source::Rule(m.name));
        }
        Action::Cap(cap) => {
            if let Err(()) = grant.limit_to(cap) {
                return Decision::decline(Reason::Rule, Source::Rule(m.name));
            }
            if grant.amount == cap && cap < auth.amount {
                grant.partial = Some((Reason::Rule, Source::Rule(m.name)));
            }
        }
    }
    grant.finish()
}

/// One interval limit that guards an authorization, with who it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct IntervalLimit<'c> {
    /// Card, cardholder or program controls.
    pub level: Level,
    /// Whose spend the limit counts.
    pub scope: Scope,
    /// The limit itself.
    pub limit: &'c SpendingLimit,
}

/// The accumulating (non-`per_authorization`) limits that guard `auth`, in the
/// order `decide()` checks them, with the same scopes (program limits count per
/// card). Limits in another currency are left out: `decide()` has already declined
/// or, by policy, ignored them. The ledger re-checks exactly these when it reserves,
/// so the snapshot check in `decide()` and the atomic re-check cannot disagree on
/// which limits exist.
pub fn interval_limits<'c>(
    auth: &'c AuthRequest<'c>,
    program: &'c ProgramControls,
    category: &MerchantCategory<'_>,
) -> Vec<IntervalLimit<'c>> {
    let levels = [
        (Level::Card, &auth.card.controls, Scope::Card),
        (
            Level::Cardholder,
            &auth.cardholder.controls,
            Scope::Cardholder,
        ),
        (Level::Program, &program.controls, Scope::Card),
    ];
    let mut out = Vec::new();
    for (level, controls, scope) in levels {
        if controls.spending_limits_currency.unwrap_or(auth.currency) != auth.currency {
            continue;
        }
        for limit in &controls.spending_limits {
            if limit.interval != Interval::PerAuthorization && limit.applies_to(category) {
                out.push(IntervalLimit {
                    level,
                    scope,
                    limit,
                });
            }
        }
    }
    out
}

/// The amount still on offer while controls and rules narrow it down.
struct Grant<'a> {
    auth: &'a AuthRequest<'a>,
    amount: i64,
    /// What last reduced the amount below the request, for the partial's reason.
    partial: Option<(Reason, Source)>,
}

impl<'a> Grant<'a> {
    fn new(auth: &'a AuthRequest<'a>) -> Self {
        Grant {
            auth,
            amount: auth.amount,
            partial: None,
        }
    }

    /// Narrows the grant to at most `room`. Err when that cannot be a valid partial
    /// approval: amount not controllable, no room left, or cash-back not covered.
    fn limit_to(&mut self, room: i64) -> Result<(), ()> {
        if self.amount <= room {
            return Ok(());
        }
        let a = self.auth;
        if a.is_amount_controllable && room > 0 && room >= a.cashback_amount {
            self.amount = room;
            Ok(())
        } else {
            Err(())
        }
    }

    fn finish(self) -> Decision {
        match self.partial {
            Some((reason, source)) if self.amount < self.auth.amount => Decision {
                approved: true,
                amount: Some(self.amount),
                reason,
                source: Some(source),
            },
            _ => Decision::approve(),
        }
    }
}

fn check_controls(
    ctx: &Context<'_>,
    level: Level,
    c: &Controls,
    scope: Scope,
    grant: &mut Grant<'_>,
) -> Result<(), Decision> {
    let auth = ctx.auth;
    let cat = &ctx.category;
    let decline = |reason, control| Err(Decision::decline(reason, Source::Control(level, control)));

    if let Some(set) = c.blocked_categories.as_ref().filter(|s| !s.is_empty())
        && set.matches(cat)
    {
        return decline(Reason::CategoryBlocked, "blocked_categories");
    }
    if let Some(set) = c.allowed_categories.as_ref().filter(|s| !s.is_empty())
        && !set.matches(cat)
    {
        return decline(Reason::CategoryNotAllowed, "allowed_categories");
    }
    let country = auth.merchant.country;
    if let Some(set) = c
        .blocked_merchant_countries
        .as_ref()
        .filter(|s| !s.is_empty())
        && set.contains(country)
    {
        return decline(Reason::CountryBlocked, "blocked_merchant_countries");
    }
    if let Some(set) = c
        .allowed_merchant_countries
        .as_ref()
        .filter(|s| !s.is_empty())
        && !set.contains(country)
    {
        return decline(Reason::CountryNotAllowed, "allowed_merchant_countries");
    }
    if let Some(set) = c.blocked_card_presences.as_ref().filter(|s| !s.is_empty())
        && set.contains(auth.card_presence)
    {
        return decline(Reason::CardPresenceBlocked, "blocked_card_presences");
    }
    if let Some(set) = c.allowed_card_presences.as_ref().filter(|s| !s.is_empty())
        && !set.contains(auth.card_presence)
    {
        return decline(Reason::CardPresenceNotAllowed, "allowed_card_presences");
    }

    for limit in c.spending_limits.iter().filter(|l| l.applies_to(cat)) {
        let currency = c.spending_limits_currency.unwrap_or(auth.currency);
        if currency != auth.currency {
            match ctx.program.currency_mismatch {
                CurrencyMismatch::Decline => {
                    return decline(Reason::CurrencyMismatch, limit.interval.as_str());
                }
                CurrencyMismatch::Ignore => continue,
            }
        }
        let spent = match limit.interval {
            Interval::PerAuthorization => 0,
            interval => ctx
                .spend
                .spent(scope, interval, limit.categories.as_ref(), currency),
        };
        let room = limit.amount.saturating_sub(spent);
        if grant.amount > room {
            if grant.limit_to(room).is_err() {
                return decline(Reason::SpendingLimit, limit.interval.as_str());
            }
            grant.partial = Some((
                Reason::SpendingLimit,
                Source::Control(level, limit.interval.as_str()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
