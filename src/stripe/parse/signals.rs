//! Reading Stripe's signals (`decision::RiskSignals`): risk assessments, the fraud
//! challenge flag, fuel, fleet, network data and the token. Every one is
//! optional (an endpoint pinned to an older version never gets it) and every
//! enumerated value is kept as the string Stripe sent.
//!
//! Where Stripe renamed a field between versions the newer name wins and the
//! older is read when it is missing: `level` over `risk_level` (dahlia), `score`
//! over the preview's integer `fraud_score`, `quantity_decimal` over
//! `volume_decimal` (2024-06-20).

use super::{Lookup, Obj, ParseError, field, opt_bool, opt_f64, opt_i64, opt_obj, some_str};
use crate::decision::{RiskSignals, SignalInt as I, SignalStr as S};

const OBJ: &str = "data.object";
const RA: &str = "data.object.risk_assessment";
const FR: &str = "data.object.risk_assessment.fraud_risk";
const CT: &str = "data.object.risk_assessment.card_testing_risk";
const MDR: &str = "data.object.risk_assessment.merchant_dispute_risk";
const FUEL: &str = "data.object.fuel";
const FLEET: &str = "data.object.fleet";
const CPD: &str = "data.object.fleet.cardholder_prompt_data";
const RB: &str = "data.object.fleet.reported_breakdown";
const ND: &str = "data.object.network_data";

/// The signals of the authorization object `o`.
pub(super) fn read_signals<'v>(o: &impl Lookup<'v>) -> Result<RiskSignals<'v>, ParseError> {
    let mut s = RiskSignals {
        verified_by_fraud_challenge: match field(o, "verified_by_fraud_challenge") {
            None => None,
            Some(_) => Some(opt_bool(o, OBJ, "verified_by_fraud_challenge")?),
        },
        ..RiskSignals::default()
    };
    s.set_str(S::Token, some_str(o, OBJ, "token")?);
    s.set_str(
        S::FraudDisputabilityLikelihood,
        some_str(o, OBJ, "fraud_disputability_likelihood")?,
    );
    if let Some(ra) = opt_obj(o, OBJ, "risk_assessment")? {
        read_risk(&ra, &mut s)?;
    }
    if let Some(f) = opt_obj(o, OBJ, "fuel")? {
        s.set_str(S::FuelType, some_str(&f, FUEL, "type")?);
        s.set_str(S::FuelUnit, some_str(&f, FUEL, "unit")?);
        s.set_str(
            S::FuelIndustryProductCode,
            some_str(&f, FUEL, "industry_product_code")?,
        );
        s.set_str(
            S::FuelQuantityDecimal,
            match some_str(&f, FUEL, "quantity_decimal")? {
                Some(q) => Some(q),
                None => some_str(&f, FUEL, "volume_decimal")?,
            },
        );
        s.set_str(
            S::FuelUnitCostDecimal,
            some_str(&f, FUEL, "unit_cost_decimal")?,
        );
    }
    if let Some(f) = opt_obj(o, OBJ, "fleet")? {
        read_fleet(&f, &mut s)?;
    }
    if let Some(n) = opt_obj(o, OBJ, "network_data")? {
        s.set_str(
            S::NetworkAcquiringInstitutionId,
            some_str(&n, ND, "acquiring_institution_id")?,
        );
        s.set_str(
            S::NetworkSystemTraceAuditNumber,
            some_str(&n, ND, "system_trace_audit_number")?,
        );
        s.set_str(S::NetworkTransactionId, some_str(&n, ND, "transaction_id")?);
    }
    Ok(s)
}

/// `level`, or the pre-dahlia `risk_level`.
fn level<'v>(r: &Obj<'v>, path: &str) -> Result<Option<&'v str>, ParseError> {
    Ok(match some_str(r, path, "level")? {
        Some(l) => Some(l),
        None => some_str(r, path, "risk_level")?,
    })
}

fn read_risk<'v>(ra: &Obj<'v>, s: &mut RiskSignals<'v>) -> Result<(), ParseError> {
    if let Some(fr) = opt_obj(ra, RA, "fraud_risk")? {
        s.set_str(S::FraudRiskLevel, level(&fr, FR)?);
        s.fraud_risk_score = match opt_f64(&fr, FR, "score")? {
            Some(x) => Some(x),
            None => opt_f64(&fr, FR, "fraud_score")?,
        };
    }
    if let Some(ct) = opt_obj(ra, RA, "card_testing_risk")? {
        s.set_str(S::CardTestingRiskLevel, level(&ct, CT)?);
        s.set_int(
            I::InvalidAccountNumberDeclineRate,
            opt_i64(&ct, CT, "invalid_account_number_decline_rate_past_hour")?,
        );
        s.set_int(
            I::InvalidCredentialsDeclineRate,
            opt_i64(&ct, CT, "invalid_credentials_decline_rate_past_hour")?,
        );
    }
    if let Some(md) = opt_obj(ra, RA, "merchant_dispute_risk")? {
        s.set_str(S::MerchantDisputeRiskLevel, level(&md, MDR)?);
        s.set_int(I::DisputeRate, opt_i64(&md, MDR, "dispute_rate")?);
    }
    Ok(())
}

fn read_fleet<'v>(f: &Obj<'v>, s: &mut RiskSignals<'v>) -> Result<(), ParseError> {
    s.set_str(S::FleetPurchaseType, some_str(f, FLEET, "purchase_type")?);
    s.set_str(S::FleetServiceType, some_str(f, FLEET, "service_type")?);
    if let Some(c) = opt_obj(f, FLEET, "cardholder_prompt_data")? {
        s.set_str(S::FleetDriverId, some_str(&c, CPD, "driver_id")?);
        s.set_str(S::FleetVehicleNumber, some_str(&c, CPD, "vehicle_number")?);
        s.set_str(S::FleetUserId, some_str(&c, CPD, "user_id")?);
        s.set_str(S::FleetUnspecifiedId, some_str(&c, CPD, "unspecified_id")?);
        s.set_int(I::FleetOdometer, opt_i64(&c, CPD, "odometer")?);
    }
    if let Some(rb) = opt_obj(f, FLEET, "reported_breakdown")? {
        for (key, amount, sig) in [
            (
                "fuel",
                "gross_amount_decimal",
                S::FleetFuelGrossAmountDecimal,
            ),
            (
                "non_fuel",
                "gross_amount_decimal",
                S::FleetNonFuelGrossAmountDecimal,
            ),
            ("tax", "local_amount_decimal", S::FleetTaxLocalAmountDecimal),
            (
                "tax",
                "national_amount_decimal",
                S::FleetTaxNationalAmountDecimal,
            ),
        ] {
            // The path is formatted only when the breakdown is there (rare).
            if let Some(part) = opt_obj(&rb, RB, key)? {
                s.set_str(sig, some_str(&part, &format!("{RB}.{key}"), amount)?);
            }
        }
    }
    Ok(())
}
