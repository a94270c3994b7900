//! The signals Stripe added to the authorization after the fields `decide()`
//! itself judges (2024-06-20 → 2026-10-28.endive): risk assessments, the fraud
//! challenge flag, fuel and fleet data, network data and the network token.
//! `decide()` never reads them; rules do, by Stripe's own path names.
//!
//! Every value is optional, because an endpoint pinned to an older version never
//! receives it: `None` is "absent or null", which rules read as `""` / `0` /
//! `false` and `has(field)` reports. Enumerated values (risk levels, fuel types,
//! fleet purchase types) are kept as the strings Stripe sent, since Stripe adds
//! values without a version gate.

/// A string-valued signal, by what it is. Decimal amounts are strings here too
/// (Stripe sends `"12.345"`); the rules compiler reads them as exact decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SignalStr {
    /// `token`: the network token's `intok_…`, when the purchase used one.
    Token,
    /// `fraud_disputability_likelihood` (Advanced Fraud Tools).
    FraudDisputabilityLikelihood,
    /// `risk_assessment.fraud_risk.level` (`risk_level` in the preview).
    FraudRiskLevel,
    /// `risk_assessment.card_testing_risk.level` (`risk_level` before dahlia).
    CardTestingRiskLevel,
    /// `risk_assessment.merchant_dispute_risk.level` (`risk_level` before dahlia).
    MerchantDisputeRiskLevel,
    /// `fuel.type`.
    FuelType,
    /// `fuel.unit`.
    FuelUnit,
    /// `fuel.industry_product_code`.
    FuelIndustryProductCode,
    /// `fuel.quantity_decimal` (a decimal string).
    FuelQuantityDecimal,
    /// `fuel.unit_cost_decimal` (a decimal string).
    FuelUnitCostDecimal,
    /// `fleet.purchase_type`.
    FleetPurchaseType,
    /// `fleet.service_type`.
    FleetServiceType,
    /// `fleet.cardholder_prompt_data.driver_id`.
    FleetDriverId,
    /// `fleet.cardholder_prompt_data.vehicle_number`.
    FleetVehicleNumber,
    /// `fleet.cardholder_prompt_data.user_id`.
    FleetUserId,
    /// `fleet.cardholder_prompt_data.unspecified_id`.
    FleetUnspecifiedId,
    /// `fleet.reported_breakdown.fuel.gross_amount_decimal`.
    FleetFuelGrossAmountDecimal,
    /// `fleet.reported_breakdown.non_fuel.gross_amount_decimal`.
    FleetNonFuelGrossAmountDecimal,
    /// `fleet.reported_breakdown.tax.local_amount_decimal`.
    FleetTaxLocalAmountDecimal,
    /// `fleet.reported_breakdown.tax.national_amount_decimal`.
    FleetTaxNationalAmountDecimal,
    /// `network_data.acquiring_institution_id`.
    NetworkAcquiringInstitutionId,
    /// `network_data.system_trace_audit_number`.
    NetworkSystemTraceAuditNumber,
    /// `network_data.transaction_id`.
    NetworkTransactionId,
}

impl SignalStr {
    /// Every string signal, in declaration order (the index into [`RiskSignals`]).
    pub const ALL: [SignalStr; 23] = [
        SignalStr::Token,
        SignalStr::FraudDisputabilityLikelihood,
        SignalStr::FraudRiskLevel,
        SignalStr::CardTestingRiskLevel,
        SignalStr::MerchantDisputeRiskLevel,
        SignalStr::FuelType,
        SignalStr::FuelUnit,
        SignalStr::FuelIndustryProductCode,
        SignalStr::FuelQuantityDecimal,
        SignalStr::FuelUnitCostDecimal,
        SignalStr::FleetPurchaseType,
        SignalStr::FleetServiceType,
        SignalStr::FleetDriverId,
        SignalStr::FleetVehicleNumber,
        SignalStr::FleetUserId,
        SignalStr::FleetUnspecifiedId,
        SignalStr::FleetFuelGrossAmountDecimal,
        SignalStr::FleetNonFuelGrossAmountDecimal,
        SignalStr::FleetTaxLocalAmountDecimal,
        SignalStr::FleetTaxNationalAmountDecimal,
        SignalStr::NetworkAcquiringInstitutionId,
        SignalStr::NetworkSystemTraceAuditNumber,
        SignalStr::NetworkTransactionId,
    ];

    /// The rule path, which is Stripe's path in the authorization object.
    pub fn path(self) -> &'static str {
        match self {
            SignalStr::Token => "token",
            SignalStr::FraudDisputabilityLikelihood => "fraud_disputability_likelihood",
            SignalStr::FraudRiskLevel => "risk_assessment.fraud_risk.level",
            SignalStr::CardTestingRiskLevel => "risk_assessment.card_testing_risk.level",
            SignalStr::MerchantDisputeRiskLevel => "risk_assessment.merchant_dispute_risk.level",
            SignalStr::FuelType => "fuel.type",
            SignalStr::FuelUnit => "fuel.unit",
            SignalStr::FuelIndustryProductCode => "fuel.industry_product_code",
            SignalStr::FuelQuantityDecimal => "fuel.quantity_decimal",
            SignalStr::FuelUnitCostDecimal => "fuel.unit_cost_decimal",
            SignalStr::FleetPurchaseType => "fleet.purchase_type",
            SignalStr::FleetServiceType => "fleet.service_type",
            SignalStr::FleetDriverId => "fleet.cardholder_prompt_data.driver_id",
            SignalStr::FleetVehicleNumber => "fleet.cardholder_prompt_data.vehicle_number",
            SignalStr::FleetUserId => "fleet.cardholder_prompt_data.user_id",
            SignalStr::FleetUnspecifiedId => "fleet.cardholder_prompt_data.unspecified_id",
            SignalStr::FleetFuelGrossAmountDecimal => {
                "fleet.reported_breakdown.fuel.gross_amount_decimal"
            }
            SignalStr::FleetNonFuelGrossAmountDecimal => {
                "fleet.reported_breakdown.non_fuel.gross_amount_decimal"
            }
            SignalStr::FleetTaxLocalAmountDecimal => {
                "fleet.reported_breakdown.tax.local_amount_decimal"
            }
            SignalStr::FleetTaxNationalAmountDecimal => {
                "fleet.reported_breakdown.tax.national_amount_decimal"
            }
            SignalStr::NetworkAcquiringInstitutionId => "network_data.acquiring_institution_id",
            SignalStr::NetworkSystemTraceAuditNumber => "network_data.system_trace_audit_number",
            SignalStr::NetworkTransactionId => "network_data.transaction_id",
        }
    }

    /// True for the decimal strings, which rules compare as exact decimals.
    pub fn is_decimal(self) -> bool {
        matches!(
            self,
            SignalStr::FuelQuantityDecimal
                | SignalStr::FuelUnitCostDecimal
                | SignalStr::FleetFuelGrossAmountDecimal
                | SignalStr::FleetNonFuelGrossAmountDecimal
                | SignalStr::FleetTaxLocalAmountDecimal
                | SignalStr::FleetTaxNationalAmountDecimal
        )
    }
}

/// An integer-valued signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalInt {
    /// `risk_assessment.card_testing_risk.invalid_account_number_decline_rate_past_hour` (0–100).
    InvalidAccountNumberDeclineRate,
    /// `risk_assessment.card_testing_risk.invalid_credentials_decline_rate_past_hour` (0–100).
    InvalidCredentialsDeclineRate,
    /// `risk_assessment.merchant_dispute_risk.dispute_rate` (0–100).
    DisputeRate,
    /// `fleet.cardholder_prompt_data.odometer`.
    FleetOdometer,
}

impl SignalInt {
    /// Every integer signal, in declaration order.
    pub const ALL: [SignalInt; 4] = [
        SignalInt::InvalidAccountNumberDeclineRate,
        SignalInt::InvalidCredentialsDeclineRate,
        SignalInt::DisputeRate,
        SignalInt::FleetOdometer,
    ];

    /// The rule path (Stripe's).
    pub fn path(self) -> &'static str {
        match self {
            SignalInt::InvalidAccountNumberDeclineRate => {
                "risk_assessment.card_testing_risk.invalid_account_number_decline_rate_past_hour"
            }
            SignalInt::InvalidCredentialsDeclineRate => {
                "risk_assessment.card_testing_risk.invalid_credentials_decline_rate_past_hour"
            }
            SignalInt::DisputeRate => "risk_assessment.merchant_dispute_risk.dispute_rate",
            SignalInt::FleetOdometer => "fleet.cardholder_prompt_data.odometer",
        }
    }
}

/// The signals of one authorization; every value `None` when absent or null.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RiskSignals<'a> {
    /// Indexed by `SignalStr as usize`.
    pub strs: [Option<&'a str>; SignalStr::ALL.len()],
    /// Indexed by `SignalInt as usize`.
    pub ints: [Option<i64>; SignalInt::ALL.len()],
    /// `risk_assessment.fraud_risk.score`: a float from 2025-11-17.clover; the
    /// preview's integer `fraud_score` reads here too.
    pub fraud_risk_score: Option<f64>,
    /// `verified_by_fraud_challenge`: this is the retry after the cardholder
    /// answered an SMS challenge with YES.
    pub verified_by_fraud_challenge: Option<bool>,
}

impl<'a> RiskSignals<'a> {
    /// The string signal `s`, if present.
    #[inline]
    pub fn str(&self, s: SignalStr) -> Option<&'a str> {
        self.strs[s as usize]
    }

    /// Sets the string signal `s`.
    pub fn set_str(&mut self, s: SignalStr, v: Option<&'a str>) {
        self.strs[s as usize] = v;
    }

    /// The integer signal `i`, if present.
    #[inline]
    pub fn int(&self, i: SignalInt) -> Option<i64> {
        self.ints[i as usize]
    }

    /// Sets the integer signal `i`.
    pub fn set_int(&mut self, i: SignalInt, v: Option<i64>) {
        self.ints[i as usize] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_variant_at_its_index() {
        for (i, s) in SignalStr::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{s:?}");
        }
        for (i, s) in SignalInt::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{s:?}");
        }
        let mut paths: Vec<&str> = SignalStr::ALL.iter().map(|s| s.path()).collect();
        paths.extend(SignalInt::ALL.iter().map(|s| s.path()));
        let n = paths.len();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), n, "a path is named twice");
    }
}
