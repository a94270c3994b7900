//! Lifecycle events → ledger facts: `issuing_authorization.created` / `.updated`
//! (the authorization's state) and `issuing_transaction.created` (captures and
//! refunds). Only the fields the ledger needs are read; the Stripe field names
//! stay here, the ledger sees [`Fact`]s.

use simd_json::prelude::*;

use super::parse::{
    Event, Obj, ParseError, Problem, Val, field, opt_array, opt_bool, opt_obj, opt_str,
    req_currency, req_i64, req_str, unique_keys,
};
use crate::ledger::{AuthMeta, AuthStatus, Fact};

/// Event type: an authorization was decided (by us or by Stripe alone).
pub const AUTHORIZATION_CREATED: &str = "issuing_authorization.created";
/// Event type: an authorization changed (capture, reversal, expiry, increment).
pub const AUTHORIZATION_UPDATED: &str = "issuing_authorization.updated";
/// Event type: a capture or refund.
pub const TRANSACTION_CREATED: &str = "issuing_transaction.created";

const OBJ: &str = "data.object";

fn invalid(key: &str, why: &'static str) -> ParseError {
    ParseError {
        path: format!("{OBJ}.{key}"),
        problem: Problem::Invalid(why),
    }
}

/// The ledger fact an event carries, or `None` for event types the ledger ignores.
pub fn lifecycle_fact(event: &Event<'_>) -> Result<Option<Fact>, ParseError> {
    let o = event.object();
    match event.event_type {
        AUTHORIZATION_CREATED | AUTHORIZATION_UPDATED => authorization(event, o).map(Some),
        TRANSACTION_CREATED => transaction(event, o).map(Some),
        _ => Ok(None),
    }
}

/// What authorizations and transactions share: the object's own `id`, `created`
/// and `currency`, its card and cardholder, and the merchant category. For a
/// transaction `id` is the transaction's (`ipi_…`).
fn common<'v>(event: &Event<'v>, o: &Obj<'v>) -> Result<AuthMeta, ParseError> {
    let (card, cardholder) = card_and_holder(event, o)?;
    let (category, mcc) = merchant(o)?;
    Ok(AuthMeta {
        id: req_str(o, OBJ, "id")?.to_string(),
        card,
        cardholder,
        created: req_i64(o, OBJ, "created")?,
        currency: req_currency(o, OBJ, "currency")?.as_str().to_string(),
        category,
        mcc,
    })
}

/// An id that Stripe sends either bare (`"ic_…"`) or expanded (`{"id": "ic_…", …}`);
/// `None` for any other shape.
fn id_or_object<'v>(v: Val<'v>, path: &str) -> Option<Result<&'v str, ParseError>> {
    match v.into_string() {
        Some(s) => Some(Ok(s)),
        None => v
            .as_object()
            .map(|o| unique_keys(&o, path, "").and_then(|()| req_str(&o, path, "id"))),
    }
}

/// `card` is embedded in authorizations and an id in transactions; accept both.
/// An embedded card cut out before parsing (`parse::known`) is the card it was.
fn card_and_holder<'v>(event: &Event<'v>, o: &Obj<'v>) -> Result<(String, String), ParseError> {
    let path = format!("{OBJ}.card");
    let (card, embedded_holder) = match (field(o, "card"), event.known_card()) {
        (None, Some(known)) => known.ids(),
        (card, _) => embedded_card(card.ok_or_else(|| invalid("card", "missing card"))?, &path)?,
    };
    let holder = match opt_str(o, OBJ, "cardholder")? {
        "" => embedded_holder,
        s => s,
    };
    if holder.is_empty() {
        return Err(invalid("cardholder", "missing cardholder"));
    }
    Ok((card.to_string(), holder.to_string()))
}

/// The ids of the card `card` (at `path`) and of the cardholder it embeds (`""`
/// when it does not).
fn embedded_card<'v>(card: Val<'v>, path: &str) -> Result<(&'v str, &'v str), ParseError> {
    Ok(match card.as_object() {
        None => match card.into_string() {
            Some(s) => (s, ""),
            None => return Err(invalid("card", "not a card")),
        },
        Some(c) => {
            unique_keys(&c, OBJ, "card")?;
            let holder = match field(&c, "cardholder") {
                Some(h) => id_or_object(h, &format!("{path}.cardholder")).unwrap_or(Ok(""))?,
                None => "",
            };
            (req_str(&c, path, "id")?, holder)
        }
    })
}

fn merchant(o: &Obj<'_>) -> Result<(String, String), ParseError> {
    let path = format!("{OBJ}.merchant_data");
    Ok(match opt_obj(o, OBJ, "merchant_data")? {
        Some(md) => (
            opt_str(&md, &path, "category")?.to_string(),
            opt_str(&md, &path, "category_code")?.to_string(),
        ),
        None => (String::new(), String::new()),
    })
}

fn authorization(event: &Event<'_>, o: &Obj<'_>) -> Result<Fact, ParseError> {
    let auth = common(event, o)?;
    let status = match req_str(o, OBJ, "status")? {
        "pending" => AuthStatus::Pending,
        "closed" => AuthStatus::Closed,
        "reversed" => AuthStatus::Reversed,
        "expired" => AuthStatus::Expired,
        _ => return Err(invalid("status", "unknown authorization status")),
    };
    let approved_requests = match opt_array(o, OBJ, "request_history")? {
        Some(h) => u32::try_from(
            h.iter()
                .filter(|r| {
                    r.as_object()
                        .and_then(|r| r.get("approved"))
                        .and_then(|a| a.as_bool())
                        == Some(true)
                })
                .count(),
        )
        .unwrap_or(u32::MAX),
        None => 0,
    };
    Ok(Fact::Authorization {
        event_id: event.id.to_string(),
        event_created: event.created,
        auth,
        approved: opt_bool(o, OBJ, "approved")?,
        status,
        amount: req_i64(o, OBJ, "amount")?,
        approved_requests,
    })
}

/// How the outcome of an `issuing_authorization.created` came about, when it was
/// not from cardgate's answer: the last `request_history` entry's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandIn {
    /// `network_fallback` (basil on), `webhook_timeout`, `webhook_error`, or
    /// `card_active` (the network answered for an unavailable Stripe before basil).
    pub reason: &'static str,
    /// What the network or Stripe decided.
    pub approved: bool,
}

/// The reasons a `.created` outcome was decided without cardgate's answer; see
/// `shared/reference/stripe-api-versions.md` §5. Stripe's own declines
/// (`spending_controls`, `suspected_fraud`, …) are not stand-ins: cardgate was
/// not asked, but nothing was held either.
pub const STAND_IN_REASONS: [&str; 4] = [
    "network_fallback",
    "webhook_timeout",
    "webhook_error",
    "card_active",
];

/// For an `issuing_authorization.created`, whether its outcome was decided
/// without cardgate's answer (a stand-in); `None` for other events and for
/// outcomes Stripe took from the webhook (`webhook_approved`/`_declined`).
pub fn stand_in(event: &Event<'_>) -> Option<StandIn> {
    if event.event_type != AUTHORIZATION_CREATED {
        return None;
    }
    let o = event.object();
    let last = opt_array(o, OBJ, "request_history").ok()??.iter().last()?;
    let last = last.as_object()?;
    let reason = last.get("reason")?.into_string()?;
    let reason = STAND_IN_REASONS.into_iter().find(|r| *r == reason)?;
    Some(StandIn {
        reason,
        approved: opt_bool(o, OBJ, "approved").ok()?,
    })
}

fn transaction(event: &Event<'_>, o: &Obj<'_>) -> Result<Fact, ParseError> {
    let AuthMeta {
        id,
        card,
        cardholder,
        created,
        currency,
        category,
        mcc,
    } = common(event, o)?;
    let authorization = match field(o, "authorization") {
        None => None,
        Some(v) => Some(
            id_or_object(v, &format!("{OBJ}.authorization"))
                .ok_or_else(|| invalid("authorization", "not an authorization"))??
                .to_string(),
        ),
    };
    // Capture or refund: the ledger goes by the amount's sign (Stripe's: negative
    // debits the balance), which also covers refund reversals.
    Ok(Fact::Transaction {
        event_id: event.id.to_string(),
        txn_id: id,
        authorization,
        card,
        cardholder,
        created,
        currency,
        category,
        mcc,
        amount: req_i64(o, OBJ, "amount")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::parse_document;

    fn fact(file: &str) -> Fact {
        let path = format!(
            "{}/tests/fixtures/events/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut buf = std::fs::read(path).unwrap();
        let doc = parse_document(&mut buf).unwrap();
        let ev = Event::read(&doc).unwrap();
        lifecycle_fact(&ev).unwrap().unwrap()
    }

    #[test]
    fn fixtures_become_facts() {
        let created = fact("issuing_authorization.created.json");
        let Fact::Authorization {
            auth,
            status,
            amount,
            approved,
            approved_requests,
            ..
        } = &created
        else {
            panic!("{created:?}")
        };
        assert_eq!(auth.id, "iauth_1SfbND25Lk8vT3cGdL09jQ7n");
        assert_eq!(auth.card, "ic_1SbsKNr3Lk8vT3cGAOiDXANR");
        assert_eq!(auth.cardholder, "ich_1S5p1NVELk8vT3cGCwBOYUft");
        assert_eq!(auth.created, 1_795_003_020);
        assert_eq!(auth.mcc, "5734");
        assert_eq!(
            (*status, *amount, *approved, *approved_requests),
            (AuthStatus::Pending, 4250, true, 1)
        );
        let closed = fact("issuing_authorization.updated.closed.json");
        assert!(matches!(
            closed,
            Fact::Authorization {
                status: AuthStatus::Closed,
                ..
            }
        ));
        let txn = fact("issuing_transaction.created.json");
        let Fact::Transaction {
            authorization,
            card,
            cardholder,
            amount,
            ..
        } = &txn
        else {
            panic!("{txn:?}")
        };
        assert_eq!(
            authorization.as_deref(),
            Some("iauth_1SfbND25Lk8vT3cGdL09jQ7n")
        );
        assert_eq!(card, "ic_1SbsKNr3Lk8vT3cGAOiDXANR");
        assert_eq!(cardholder, "ich_1S5p1NVELk8vT3cGCwBOYUft");
        assert_eq!(*amount, -4250);
        let declined = fact("issuing_authorization.created.declined_spending_controls.json");
        assert!(matches!(
            declined,
            Fact::Authorization {
                approved: false,
                ..
            }
        ));
    }

    #[test]
    fn stand_ins_are_recognized_by_their_last_request_reason() {
        let read = |reason: &str, approved: bool, kind: &str| {
            let mut v: serde_json::Value = serde_json::from_slice(
                &std::fs::read(format!(
                    "{}/tests/fixtures/events/issuing_authorization.created.json",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap(),
            )
            .unwrap();
            v["type"] = kind.into();
            v["data"]["object"]["approved"] = approved.into();
            v["data"]["object"]["request_history"][0]["reason"] = reason.into();
            let mut buf = serde_json::to_vec(&v).unwrap();
            let doc = parse_document(&mut buf).unwrap();
            stand_in(&Event::read(&doc).unwrap())
        };
        assert_eq!(read("webhook_approved", true, AUTHORIZATION_CREATED), None);
        assert_eq!(
            read("spending_controls", false, AUTHORIZATION_CREATED),
            None
        );
        assert_eq!(
            read("network_fallback", true, AUTHORIZATION_CREATED),
            Some(StandIn {
                reason: "network_fallback",
                approved: true
            })
        );
        assert_eq!(
            read("webhook_timeout", false, AUTHORIZATION_CREATED),
            Some(StandIn {
                reason: "webhook_timeout",
                approved: false
            })
        );
        assert_eq!(read("network_fallback", true, AUTHORIZATION_UPDATED), None);
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut buf = br#"{"id":"evt_1","type":"issuing_authorization.updated","created":1,
            "data":{"object":{"id":"iauth_1","card":{"id":"ic_1","cardholder":{"id":"ich_1"}},
            "created":1,"currency":"usd","amount":5,"status":"exploded"}}}"#
            .to_vec();
        let doc = parse_document(&mut buf).unwrap();
        let ev = Event::read(&doc).unwrap();
        assert_eq!(lifecycle_fact(&ev).unwrap_err().path, "data.object.status");
        let mut buf = br#"{"id":"evt_1","type":"issuing_transaction.created","created":1,
            "data":{"object":{"id":"ipi_1","card":"ic_1","cardholder":"ich_1",
            "created":1,"currency":"usd","amount":18446744073709551615}}}"#
            .to_vec();
        let doc = parse_document(&mut buf).unwrap();
        let ev = Event::read(&doc).unwrap();
        assert_eq!(lifecycle_fact(&ev).unwrap_err().path, "data.object.amount");
    }
}
