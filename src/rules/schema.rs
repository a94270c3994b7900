//! Context schemas: what a rule set's expressions can read.
//!
//! The compiler (`compile.rs`) and evaluator (`eval.rs`) are generic over a
//! [`Schema`]: it names the fields (resolved once at load, by path), their types,
//! and how to read each one from the evaluation context. Monomorphized per
//! schema, so the authorization path pays nothing for the payment schema's
//! existence. [`Auth`] is the authorization context of DESIGN.md ("Rules: CEL,
//! compiled"); the payment approval context lives in `crate::payments`.

use std::fmt::Debug;

use crate::decision::{Context, Interval, Scope, SignalInt, SignalStr};

/// A field a path resolves to, by type.
pub(crate) enum Field<S: Schema> {
    Str(S::StrField),
    Int(S::IntField),
    Bool(S::BoolField),
    Double(S::DoubleField),
    /// A decimal string (`"12.345"`), compared as an exact decimal.
    Decimal(S::StrField),
}

#[expect(
    clippy::expl_impl_clone_on_copy,
    reason = "derive would demand `S: Copy`; the fields are Copy whatever S is"
)]
impl<S: Schema> Clone for Field<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S: Schema> Copy for Field<S> {}
impl<S: Schema> Debug for Field<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Str(x) => write!(f, "Str({x:?})"),
            Field::Int(x) => write!(f, "Int({x:?})"),
            Field::Bool(x) => write!(f, "Bool({x:?})"),
            Field::Double(x) => write!(f, "Double({x:?})"),
            Field::Decimal(x) => write!(f, "Decimal({x:?})"),
        }
    }
}

/// A schema without double fields (its `DoubleField`): no value exists.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NoField {}

/// One kind of context rules are written against.
pub(crate) trait Schema: Debug + Clone + Send + Sync + Sized + 'static {
    /// What evaluation reads.
    type Ctx<'a>;
    /// String fields; ordered so the rule index picks fields deterministically.
    type StrField: Debug + Clone + Copy + PartialEq + Eq + Ord + Send + Sync + 'static;
    /// Int fields.
    type IntField: Debug + Clone + Copy + Send + Sync + 'static;
    /// Bool fields.
    type BoolField: Debug + Clone + Copy + Send + Sync + 'static;
    /// Double fields ([`NoField`] when the context has none).
    type DoubleField: Debug + Clone + Copy + Send + Sync + 'static;

    /// Actions a rule of this schema may take.
    const ACTIONS: &'static [&'static str];
    /// Counter of rule matches (labels `rule`, `mode`).
    const MATCHES_METRIC: &'static str;
    /// Counter of run-time errors (labels `rule`, `error`).
    const ERRORS_METRIC: &'static str;
    /// Path of the string → string map (`card.metadata`), if the context has one.
    const META: Option<&'static str>;
    /// Path of the list of items macros iterate (`line_items`), if any.
    const ITEMS: Option<&'static str>;

    /// The field at a dotted path (`merchant.country`), if there is one.
    fn resolve(path: &str) -> Option<Field<Self>>;
    /// A field of the current item (`sku` in `line_items.exists(i, i.sku == …)`).
    fn resolve_item(_field: &str) -> Option<Field<Self>> {
        None
    }
    /// True for a path that names an object (selecting it whole is an error
    /// with a hint, not an unknown field).
    fn is_object(path: &str) -> bool;

    fn str<'c>(ctx: &'c Self::Ctx<'_>, f: Self::StrField) -> &'c str;
    fn int(ctx: &Self::Ctx<'_>, f: Self::IntField) -> i64;
    fn bool(ctx: &Self::Ctx<'_>, f: Self::BoolField) -> bool;
    fn double(ctx: &Self::Ctx<'_>, f: Self::DoubleField) -> f64 {
        let _ = (ctx, f);
        0.0
    }
    /// The request is the retry a cardholder verified through a fraud
    /// challenge: `challenge` rules with `on_verified = "skip"` pass over it.
    fn challenge_verified(ctx: &Self::Ctx<'_>) -> bool {
        let _ = ctx;
        false
    }
    /// `has(path)`: whether the payload carried the field (not absent, not
    /// null). Fields every payload has are always present.
    fn has(ctx: &Self::Ctx<'_>, f: Field<Self>) -> bool {
        let _ = (ctx, f);
        true
    }
    /// The string map's entries (empty when the context has none).
    fn meta<'c>(ctx: &'c Self::Ctx<'_>) -> &'c [(&'c str, &'c str)];
    /// Number of items.
    fn items(_ctx: &Self::Ctx<'_>) -> usize {
        0
    }
    /// Makes item `i` the one item fields read. Macros never nest (the compiler
    /// refuses it), so one cursor is enough.
    fn set_item(_ctx: &Self::Ctx<'_>, _i: usize) {}
}

/// The authorization context of an `issuing_authorization.request`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Auth;

/// Bool fields of the authorization context.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AuthBool {
    IsAmountControllable,
    VerifiedByFraudChallenge,
    /// `history.card.new_merchant` (a behavioural signal).
    NewMerchant,
}

/// Double fields of the authorization context.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AuthDouble {
    /// `risk_assessment.fraud_risk.score`.
    FraudRiskScore,
}

impl Schema for Auth {
    type Ctx<'a> = Context<'a>;
    type StrField = StrField;
    type IntField = IntField;
    type BoolField = AuthBool;
    type DoubleField = AuthDouble;
    const ACTIONS: &'static [&'static str] = &["approve", "decline", "cap", "review", "challenge"];
    const MATCHES_METRIC: &'static str = crate::metrics::RULE_MATCHES;
    const ERRORS_METRIC: &'static str = crate::metrics::RULE_ERRORS;
    const META: Option<&'static str> = Some("card.metadata");
    const ITEMS: Option<&'static str> = None;

    fn resolve(path: &str) -> Option<Field<Self>> {
        use Field::{Int as I, Str as S};
        use IntField as IF;
        use StrField as SF;
        Some(match path {
            "amount" => I(IF::Amount),
            "merchant_amount" => I(IF::MerchantAmount),
            "network_risk_score" => I(IF::NetworkRiskScore),
            "currency" => S(SF::Currency),
            "merchant_currency" => S(SF::MerchantCurrency),
            "merchant.category" => S(SF::MerchantCategory),
            "merchant.category_code" => S(SF::MerchantCategoryCode),
            "merchant.country" => S(SF::MerchantCountry),
            "merchant.city" => S(SF::MerchantCity),
            "merchant.name" => S(SF::MerchantName),
            "merchant.network_id" => S(SF::MerchantNetworkId),
            "merchant.postal_code" => S(SF::MerchantPostalCode),
            "card.id" => S(SF::CardId),
            "card.type" => S(SF::CardType),
            "card.status" => S(SF::CardStatus),
            "cardholder.id" => S(SF::CardholderId),
            "cardholder.type" => S(SF::CardholderType),
            "cardholder.status" => S(SF::CardholderStatus),
            "authorization_method" => S(SF::AuthorizationMethod),
            "is_amount_controllable" => Field::Bool(AuthBool::IsAmountControllable),
            "wallet" => S(SF::Wallet),
            "verification.cvc_check" => S(SF::CvcCheck),
            "verification.expiry_check" => S(SF::ExpiryCheck),
            "verification.address_postal_code_check" => S(SF::AddressPostalCodeCheck),
            "verification.three_d_secure" => S(SF::ThreeDSecure),
            "velocity.card.count_1h" => I(IF::VelocityHour),
            "velocity.card.count_24h" => I(IF::VelocityDay),
            "now.hour" => I(IF::NowHour),
            "now.weekday" => I(IF::NowWeekday),
            // Behavioural signals (issue 16, `crate::signals`).
            "velocity.cardholder.count_1h" => I(IF::Behaviour(Behaviour::CardholderCount1h)),
            "velocity.cardholder.count_24h" => I(IF::Behaviour(Behaviour::CardholderCount24h)),
            "velocity.card.amount_24h" => I(IF::Behaviour(Behaviour::CardAmount24h)),
            "velocity.card.declines_1h" => I(IF::Behaviour(Behaviour::CardDeclines1h)),
            "velocity.card.declines_24h" => I(IF::Behaviour(Behaviour::CardDeclines24h)),
            "velocity.card.distinct_merchants_1h" => {
                I(IF::Behaviour(Behaviour::DistinctMerchants1h))
            }
            "history.card.first_seen" => I(IF::Behaviour(Behaviour::FirstSeen)),
            "history.card.new_merchant" => Field::Bool(AuthBool::NewMerchant),
            "history.card.amount_avg_30d" => I(IF::Behaviour(Behaviour::AmountAvg30d)),
            "history.card.amount_max_30d" => I(IF::Behaviour(Behaviour::AmountMax30d)),
            "history.card.last_country" => S(SF::LastCountry),
            "history.card.seconds_since_last" => I(IF::Behaviour(Behaviour::SecondsSinceLast)),
            // --- issue 17: Stripe's signals, 2024-06-20 → 2026-10-28.endive ---
            "card_presence" => S(SF::CardPresence),
            "verified_by_fraud_challenge" => Field::Bool(AuthBool::VerifiedByFraudChallenge),
            "risk_assessment.fraud_risk.score" => Field::Double(AuthDouble::FraudRiskScore),
            // Stripe renamed `risk_level` to `level` (dahlia); rules may use either.
            "risk_assessment.fraud_risk.risk_level" => S(SF::Signal(SignalStr::FraudRiskLevel)),
            "risk_assessment.card_testing_risk.risk_level" => {
                S(SF::Signal(SignalStr::CardTestingRiskLevel))
            }
            "risk_assessment.merchant_dispute_risk.risk_level" => {
                S(SF::Signal(SignalStr::MerchantDisputeRiskLevel))
            }
            p if let Some(sig) = SignalStr::ALL.iter().find(|x| x.path() == p) => {
                if sig.is_decimal() {
                    Field::Decimal(SF::Signal(*sig))
                } else {
                    S(SF::Signal(*sig))
                }
            }
            p if let Some(sig) = SignalInt::ALL.iter().find(|x| x.path() == p) => {
                I(IF::Signal(*sig))
            }
            // --- end issue 17 ---
            _ => {
                let (scope, window) = path
                    .strip_prefix("spend.card.")
                    .map(|w| (Scope::Card, w))
                    .or_else(|| {
                        path.strip_prefix("spend.cardholder.")
                            .map(|w| (Scope::Cardholder, w))
                    })?;
                let interval = Interval::parse(window)?;
                if interval == Interval::PerAuthorization {
                    return None;
                }
                I(IF::Spend(scope, interval))
            }
        })
    }

    fn is_object(path: &str) -> bool {
        matches!(
            path,
            "merchant"
                | "card"
                | "cardholder"
                | "verification"
                | "spend"
                | "spend.card"
                | "spend.cardholder"
                | "velocity"
                | "velocity.card"
                | "now"
                | "velocity.cardholder"
                | "history"
                | "history.card"
                // issue 17
                | "risk_assessment"
                | "risk_assessment.fraud_risk"
                | "risk_assessment.card_testing_risk"
                | "risk_assessment.merchant_dispute_risk"
                | "fuel"
                | "fleet"
                | "fleet.cardholder_prompt_data"
                | "fleet.reported_breakdown"
                | "fleet.reported_breakdown.fuel"
                | "fleet.reported_breakdown.non_fuel"
                | "fleet.reported_breakdown.tax"
                | "network_data"
        )
    }

    #[inline]
    fn str<'c>(ctx: &'c Context<'_>, f: StrField) -> &'c str {
        f.get(ctx)
    }
    #[inline]
    fn int(ctx: &Context<'_>, f: IntField) -> i64 {
        f.get(ctx)
    }
    #[inline]
    fn bool(ctx: &Context<'_>, f: AuthBool) -> bool {
        match f {
            AuthBool::IsAmountControllable => ctx.auth.is_amount_controllable,
            AuthBool::VerifiedByFraudChallenge => ctx
                .auth
                .signals
                .verified_by_fraud_challenge
                .unwrap_or(false),
            AuthBool::NewMerchant => ctx.spend.signals().new_merchant,
        }
    }
    #[inline]
    fn double(ctx: &Context<'_>, f: AuthDouble) -> f64 {
        match f {
            AuthDouble::FraudRiskScore => ctx.auth.signals.fraud_risk_score.unwrap_or(0.0),
        }
    }
    #[inline]
    fn challenge_verified(ctx: &Context<'_>) -> bool {
        ctx.auth.signals.verified_by_fraud_challenge == Some(true)
    }
    fn has(ctx: &Context<'_>, f: Field<Self>) -> bool {
        let a = ctx.auth;
        match f {
            Field::Str(StrField::Signal(s)) | Field::Decimal(StrField::Signal(s)) => {
                a.signals.str(s).is_some()
            }
            Field::Str(StrField::CardPresence) => !a.card_presence.is_empty(),
            Field::Str(StrField::Wallet) => !a.wallet.is_empty(),
            Field::Int(IntField::Signal(i)) => a.signals.int(i).is_some(),
            Field::Int(IntField::NetworkRiskScore) => a.network_risk_score.is_some(),
            Field::Double(AuthDouble::FraudRiskScore) => a.signals.fraud_risk_score.is_some(),
            Field::Bool(AuthBool::VerifiedByFraudChallenge) => {
                a.signals.verified_by_fraud_challenge.is_some()
            }
            _ => true,
        }
    }
    #[inline]
    fn meta<'c>(ctx: &'c Context<'_>) -> &'c [(&'c str, &'c str)] {
        &ctx.auth.card.metadata
    }
}

/// String fields of the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum StrField {
    Currency,
    MerchantCurrency,
    MerchantCategory,
    MerchantCategoryCode,
    MerchantCountry,
    MerchantCity,
    MerchantName,
    MerchantNetworkId,
    MerchantPostalCode,
    CardId,
    CardType,
    CardStatus,
    CardholderId,
    CardholderType,
    CardholderStatus,
    AuthorizationMethod,
    Wallet,
    CvcCheck,
    ExpiryCheck,
    AddressPostalCodeCheck,
    ThreeDSecure,
    LastCountry,
    CardPresence,
    Signal(SignalStr),
}

impl StrField {
    #[inline]
    fn get<'c>(self, ctx: &'c Context<'_>) -> &'c str {
        let a = ctx.auth;
        match self {
            StrField::Currency => a.currency.as_str(),
            StrField::MerchantCurrency => a.merchant_currency.as_str(),
            StrField::MerchantCategory => a.merchant.category,
            StrField::MerchantCategoryCode => a.merchant.category_code,
            StrField::MerchantCountry => a.merchant.country,
            StrField::MerchantCity => a.merchant.city,
            StrField::MerchantName => a.merchant.name,
            StrField::MerchantNetworkId => a.merchant.network_id,
            StrField::MerchantPostalCode => a.merchant.postal_code,
            StrField::CardId => a.card.id,
            StrField::CardType => a.card.card_type,
            StrField::CardStatus => a.card.status.as_str(),
            StrField::CardholderId => a.cardholder.id,
            StrField::CardholderType => a.cardholder.kind,
            StrField::CardholderStatus => a.cardholder.status.as_str(),
            StrField::AuthorizationMethod => a.authorization_method,
            StrField::Wallet => a.wallet,
            StrField::CvcCheck => a.verification.cvc_check,
            StrField::ExpiryCheck => a.verification.expiry_check,
            StrField::AddressPostalCodeCheck => a.verification.address_postal_code_check,
            StrField::ThreeDSecure => a.verification.three_d_secure,
            StrField::LastCountry => ctx.spend.signals().last_country(),
            StrField::CardPresence => a.card_presence,
            StrField::Signal(s) => a.signals.str(s).unwrap_or(""),
        }
    }
}

/// Integer fields of the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntField {
    Amount,
    MerchantAmount,
    /// 0 when Stripe sent none.
    NetworkRiskScore,
    Spend(Scope, Interval),
    VelocityHour,
    VelocityDay,
    NowHour,
    NowWeekday,
    Signal(SignalInt),
    /// A behavioural signal (`decision::Signals`, issue 16).
    Behaviour(Behaviour),
}

/// The integer behavioural signals (`decision::Signals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    CardholderCount1h,
    CardholderCount24h,
    CardAmount24h,
    CardDeclines1h,
    CardDeclines24h,
    DistinctMerchants1h,
    FirstSeen,
    AmountAvg30d,
    AmountMax30d,
    SecondsSinceLast,
}

impl Behaviour {
    #[inline]
    fn get(self, s: &crate::decision::Signals) -> i64 {
        match self {
            Behaviour::CardholderCount1h => s.cardholder_count_1h,
            Behaviour::CardholderCount24h => s.cardholder_count_24h,
            Behaviour::CardAmount24h => s.card_amount_24h,
            Behaviour::CardDeclines1h => s.card_declines_1h,
            Behaviour::CardDeclines24h => s.card_declines_24h,
            Behaviour::DistinctMerchants1h => s.card_distinct_merchants_1h,
            Behaviour::FirstSeen => s.first_seen,
            Behaviour::AmountAvg30d => s.amount_avg_30d,
            Behaviour::AmountMax30d => s.amount_max_30d,
            Behaviour::SecondsSinceLast => s.seconds_since_last,
        }
    }
}

impl IntField {
    #[inline]
    fn get(self, ctx: &Context<'_>) -> i64 {
        let a = ctx.auth;
        match self {
            IntField::Amount => a.amount,
            IntField::MerchantAmount => a.merchant_amount,
            IntField::NetworkRiskScore => a.network_risk_score.unwrap_or(0),
            // Read only when a rule asks: most rules never touch spend.
            IntField::Spend(scope, interval) => ctx.spend.spent(scope, interval, None, a.currency),
            IntField::VelocityHour => ctx.spend.card_velocity().0,
            IntField::VelocityDay => ctx.spend.card_velocity().1,
            IntField::NowHour => ctx.now.rem_euclid(86_400) / 3_600,
            // 1970-01-01 was a Thursday (4); 0 = Sunday.
            IntField::NowWeekday => (ctx.now.div_euclid(86_400) + 4).rem_euclid(7),
            IntField::Behaviour(s) => s.get(ctx.spend.signals()),
            IntField::Signal(s) => a.signals.int(s).unwrap_or(0),
        }
    }
}
