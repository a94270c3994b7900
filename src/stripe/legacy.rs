//! The deprecated approve/decline API call that carries a decision in legacy mode:
//! `POST /v1/issuing/authorizations/{id}/approve` (with `amount` when the request
//! was amount-controllable and the decision partial) or `/decline`, form-encoded
//! with the same `metadata` the direct response carries.

use crate::decision::{Decision, Reason, Source};

/// Stripe caps metadata values at 500 characters.
const MAX_METADATA_VALUE: usize = 500;

/// One approve/decline call: where to POST (relative to the API base) and the
/// form body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyCall {
    /// `/v1/issuing/authorizations/{id}/approve` or `…/decline`.
    pub path: String,
    /// `application/x-www-form-urlencoded` body.
    pub body: String,
}

/// The call that sends `decision` on authorization `id`. `amount` is only sent
/// for a partial approval of an amount-controllable request: Stripe rejects it
/// otherwise.
pub fn legacy_call(
    id: &str,
    decision: &Decision,
    ruleset: &str,
    is_amount_controllable: bool,
) -> LegacyCall {
    let mut form = form_urlencoded::Serializer::new(String::new());
    if decision.approved
        && is_amount_controllable
        && let Some(amount) = decision.amount
    {
        form.append_pair("amount", itoa::Buffer::new().format(amount));
    }
    let mut reason = decision.reason.as_str().to_string();
    if let (Reason::Rule, Some(Source::Rule(name))) = (decision.reason, &decision.source) {
        reason.push(':');
        reason.push_str(name);
    }
    form.append_pair("metadata[reason]", cut(&reason));
    if let Some(source) = &decision.source {
        let rule = match source {
            Source::Control(level, control) => format!("{}.{control}", level.as_str()),
            Source::Status(s) => (*s).to_string(),
            Source::Rule(name) => name.to_string(),
        };
        form.append_pair("metadata[rule]", cut(&rule));
    }
    form.append_pair("metadata[ruleset]", cut(ruleset));
    let verb = if decision.approved {
        "approve"
    } else {
        "decline"
    };
    // Ids are Stripe's (`iauth_` + base62) but come from a payload: keep the path
    // to characters that need no escaping, so a hostile id cannot reach another route.
    let id: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    LegacyCall {
        path: format!("/v1/issuing/authorizations/{id}/{verb}"),
        body: form.finish(),
    }
}

fn cut(s: &str) -> &str {
    match s.char_indices().nth(MAX_METADATA_VALUE) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Level;

    #[test]
    fn calls_carry_amount_only_for_controllable_partials() {
        let partial = Decision {
            approved: true,
            amount: Some(6000),
            reason: Reason::SpendingLimit,
            source: Some(Source::Control(Level::Card, "daily")),
        };
        let c = legacy_call("iauth_1", &partial, "abc", true);
        assert_eq!(c.path, "/v1/issuing/authorizations/iauth_1/approve");
        assert_eq!(
            c.body,
            "amount=6000&metadata%5Breason%5D=spending_limit&metadata%5Brule%5D=card.daily&metadata%5Bruleset%5D=abc"
        );
        assert!(
            !legacy_call("iauth_1", &partial, "abc", false)
                .body
                .contains("amount=")
        );
        let decline = Decision::decline(Reason::Rule, Source::Rule("no-gambling".into()));
        let c = legacy_call("iauth_1/../x?y", &decline, "abc", true);
        assert_eq!(c.path, "/v1/issuing/authorizations/iauth_1xy/decline");
        assert!(c.body.contains("metadata%5Breason%5D=rule%3Ano-gambling"));
    }
}
