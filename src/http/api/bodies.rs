//! The admin API's JSON request bodies that have no type of their own in
//! `approvals` (those that do, `RuleInput`, `RuleUpdate`, `OverrideSpec`, are read
//! straight into it), and [`fuzz_decode`], which runs every body decoder of the
//! `/v1/` router over one input for `fuzz/fuzz_targets/admin_json.rs`.

use serde::Deserialize;
use serde_json::Value;

use super::parse_json;
use crate::approvals::{Action, AllowanceSpec, OverrideSpec, RuleInput, RuleUpdate};

/// `POST /v1/api_keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    pub role: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Seconds from creation.
    #[serde(default)]
    pub expires_in: Option<i64>,
}

impl NewKey {
    pub(super) fn into_action(self) -> Action {
        Action::CreateApiKey {
            role: self.role,
            name: self.name,
            pending: None,
            expires_at: self.expires_at,
            expires_in: self.expires_in,
        }
    }
}

/// `POST /v1/approval_requests/{id}/{submit,approve,deny}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Reason {
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/lists/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListValues {
    pub values: Vec<Value>,
}

/// `POST /v1/authorization_allowances`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAllowance {
    pub card: String,
    pub merchant: String,
    pub amount: i64,
    pub currency: String,
}

impl NewAllowance {
    pub(super) fn into_spec(self) -> AllowanceSpec {
        AllowanceSpec {
            card: self.card,
            merchant: self.merchant,
            amount: self.amount,
            currency: self.currency,
            authorization: None,
            rule: None,
            details: None,
        }
    }
}

/// How many body kinds [`fuzz_decode`] tells apart.
#[doc(hidden)]
pub const FUZZ_BODIES: u8 = 7;

/// The rules file list updates are applied to: the shipped example, so a list
/// update is exercised against real lists and rules.
const SAMPLE_RULES: &str = include_str!("../../../config/rules.toml");

/// Fuzzing entry point (`fuzz/fuzz_targets/admin_json.rs`): decodes `body` as the
/// body of route `kind % FUZZ_BODIES`, exactly as the router does, then runs the
/// checks the service applies before touching storage (`Action::validate`, the
/// override's controls, a list update on a real rules file). An `Err` carries the
/// answer's status and message. Not an API.
#[doc(hidden)]
pub fn fuzz_decode(kind: u8, body: &[u8]) -> Result<(), (u16, String)> {
    let refused = |e: super::ApiError| (e.status.as_u16(), e.message);
    let action = match kind % FUZZ_BODIES {
        0 => parse_json::<NewKey>(body).map_err(refused)?.into_action(),
        1 => {
            let _: Reason = parse_json(body).map_err(refused)?;
            return Ok(());
        }
        2 => {
            let b: ListValues = parse_json(body).map_err(refused)?;
            let action = Action::UpdateList {
                name: "high_risk_countries".into(),
                values: b.values,
            };
            action.validate().map_err(|e| (400, e))?;
            let Action::UpdateList { name, values } = &action else {
                return Ok(());
            };
            let source = crate::approvals::action::replace_list(SAMPLE_RULES, name, values)
                .map_err(|e| (422, e))?;
            // The service rebuilds the live set from the edited file.
            return crate::rules::RuleSet::from_toml_unmetered(&source)
                .map(drop)
                .map_err(|e| (422, e.to_string()));
        }
        3 => {
            let b: NewAllowance = parse_json(body).map_err(refused)?;
            Action::AuthorizationAllowance(b.into_spec())
        }
        4 => Action::CreateApprovalRule(parse_json::<RuleInput>(body).map_err(refused)?),
        5 => Action::UpdateApprovalRule {
            id: "apr_1".into(),
            changes: parse_json::<RuleUpdate>(body).map_err(refused)?,
        },
        _ => {
            let o: OverrideSpec = parse_json(body).map_err(refused)?;
            // `controls()` is what the decision path reads; validate() calls it
            // too, but an empty override is valid and skips nothing here.
            let _ = o.controls();
            Action::SetControlOverride(o)
        }
    };
    action.validate().map_err(|e| (400, e))
}
