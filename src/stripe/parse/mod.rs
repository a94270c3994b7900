//! Parsing a verified webhook body with simd-json into borrowed, typed views: the
//! event envelope and, for `issuing_authorization.request`, the decision core's
//! [`AuthRequest`]. Only fields decisions use are read; unknown fields are ignored.
//! A missing required field or a wrong type is an error naming the JSON path.
//!
//! A key that occurs twice in an object the parser reads fields from is an error
//! too, named by its path: JSON leaves duplicates undefined, simd-json's lookup
//! finds the first, and most parsers (Stripe's among them) keep the last, so
//! whichever cardgate chose it could decide on a value other readers of the same
//! bytes do not see. Refusing the body is the one choice nobody can read
//! differently. Objects the parser never opens are not checked: they cannot
//! change a decision.
//!
//! Each object a request decision reads is visited once: one pass over its keys
//! checks them for repeats and keeps the value of every key the reader wants
//! ([`Keys`], a table built at compile time, and [`Fields`]), where a lookup per
//! field scanned the object's keys again each time (`data.object` has about 30).
//!
//! The body is parsed to simd-json's *tape* (a flat array of nodes, strings borrowed
//! from the buffer), not to a DOM: the DOM allocates a hash map per object and a
//! vector per array for the whole ~5 KiB event, most of which no decision reads,
//! and cost more than the rest of the handler together (see BENCHMARKS.md). The
//! parser's scratch buffers and the tape's allocation are reused per thread.

use std::cell::RefCell;

use simd_json::prelude::*;
use simd_json::{Buffers, Tape};

#[cfg(test)]
use access::key_hash;
pub(crate) use access::{
    Fields, Keys, Lookup, field, opt_array, opt_bool, opt_f64, opt_i64, opt_obj, opt_str,
    req_currency, req_i64, req_str, some_str, unique_keys,
};
use access::{opt_fields, opt_strings, req_fields, req_obj_fields};
use known::KnownCard;

use crate::decision::{
    AuthRequest, Card, CardStatus, Cardholder, CardholderStatus, CategorySet, Controls, CountrySet,
    Interval, Merchant, Presence, PresenceSet, SpendingLimit, Verification,
};

/// A JSON object on the tape.
pub(crate) type Obj<'v> = simd_json::tape::Object<'v, 'v>;
/// A JSON value on the tape.
pub(crate) type Val<'v> = simd_json::tape::Value<'v, 'v>;

/// Why a body could not be read as a Stripe event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ParseError {
    /// JSON path of the offending field, e.g. `data.object.pending_request.amount`;
    /// `$` for the document itself.
    pub path: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The body is not JSON (message from the parser).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A required field is absent or null.
    #[error("required field is missing")]
    Missing,
    /// The field has another JSON type.
    #[error("expected {0}")]
    WrongType(&'static str),
    /// The field has the right type but a value we cannot accept.
    #[error("invalid value: {0}")]
    Invalid(&'static str),
    /// The key occurs more than once in its object.
    #[error("duplicate key")]
    DuplicateKey,
}

fn err(path: &str, key: &str, problem: Problem) -> ParseError {
    let path = if path.is_empty() {
        key.to_string()
    } else if key.is_empty() {
        path.to_string()
    } else {
        format!("{path}.{key}")
    };
    ParseError { path, problem }
}

/// Tapes longer than this many nodes are not kept for reuse, so one unusually large
/// body does not pin its memory in every worker thread (a Stripe event is a few
/// hundred nodes).
const KEEP_TAPE_NODES: usize = 16 * 1024;
/// Likewise for the parser's buffers, by the body length they were last used for.
const KEEP_BUFFERS_FOR: usize = 64 * 1024;

/// Per-thread parser state reused across requests: simd-json's scratch buffers
/// (padded input copy, structural indexes, string buffer, stack) and the allocation
/// of the last dropped tape. Without it each request allocates and frees all of them.
#[derive(Default)]
struct Scratch {
    buffers: Option<Buffers>,
    tape: Option<Tape<'static>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A parsed JSON document borrowing from the request buffer.
pub struct Document<'a>(Tape<'a>);

impl Drop for Document<'_> {
    fn drop(&mut self) {
        if self.0.0.capacity() > KEEP_TAPE_NODES {
            return;
        }
        // `reset` empties the tape, so it no longer borrows the request buffer.
        let tape = std::mem::replace(&mut self.0, Tape(Vec::new())).reset();
        // `try_with`: during thread teardown the slot may be gone; then just free.
        let _ = SCRATCH.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                s.tape = Some(tape);
            }
        });
    }
}

/// Parses `buf` in place (simd-json unescapes strings inside the buffer, so strings
/// are borrowed, not copied).
pub fn parse_document(buf: &mut [u8]) -> Result<Document<'_>, ParseError> {
    let len = buf.len();
    parse_with_scratch(len, move |buffers, tape| {
        simd_json::fill_tape(buf, buffers, tape)
    })
}

/// Spare capacity a body needs for [`parse_padded`] to parse it without copying it.
pub const PADDING: usize = simd_json::INPUT_PADDING;

/// [`parse_document`] for a body the caller owns: appends [`PADDING`] bytes to
/// `buf` and parses it where it lies. simd-json's vector loads read past the
/// document's end, so [`parse_document`] first copies every body into a padded
/// buffer of its own; a body received into a `Vec` with this much spare capacity
/// (the webhook's) needs no second copy. Strings are still unescaped in place and
/// borrowed; the bytes before the padding are the document.
pub fn parse_padded(buf: &mut Vec<u8>) -> Result<Document<'_>, ParseError> {
    let len = buf.len();
    buf.resize(len + PADDING, b' ');
    parse_with_scratch(len, move |buffers, tape| {
        simd_json::fill_tape_padded(buf, len, buffers, tape)
    })
}

/// Runs `fill` with this thread's reused buffers and tape; `len` is the body's
/// length (large bodies' buffers are not kept).
fn parse_with_scratch<'a>(
    len: usize,
    fill: impl FnOnce(&mut Buffers, &mut Tape<'a>) -> simd_json::Result<()>,
) -> Result<Document<'a>, ParseError> {
    let (buffers, tape) = SCRATCH
        .try_with(|s| {
            s.try_borrow_mut()
                .map(|mut s| (s.buffers.take(), s.tape.take()))
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let mut buffers = buffers.unwrap_or_else(|| Buffers::new(len));
    let mut tape = tape.map_or_else(|| Tape(Vec::new()), Tape::reset);
    let parsed = fill(&mut buffers, &mut tape);
    if len <= KEEP_BUFFERS_FOR {
        let _ = SCRATCH.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                s.buffers = Some(buffers);
            }
        });
    }
    match parsed {
        Ok(()) => Ok(Document(tape)),
        Err(e) => Err(ParseError {
            path: "$".into(),
            problem: Problem::InvalidJson(e.to_string()),
        }),
    }
}

/// The event envelope.
pub struct Event<'v> {
    /// `evt_…`
    pub id: &'v str,
    /// e.g. `issuing_authorization.request`.
    pub event_type: &'v str,
    /// Unix seconds.
    pub created: i64,
    /// `api_version`: the version the object was rendered in, which the answer
    /// must be written in (`""` when absent).
    pub api_version: &'v str,
    /// `data.object`.
    object: Obj<'v>,
    /// The fields of `data.object` a request decision reads, found in the pass that
    /// checked its keys.
    fields: Fields<'v, AUTH_KEYS>,
    /// The card read before that stands for `data.object.card`, which the parser's
    /// copy of the body holds as `null` ([`known`]).
    known: Option<&'v KnownCard>,
}

impl std::fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("created", &self.created)
            .field("api_version", &self.api_version)
            .finish_non_exhaustive()
    }
}

impl<'v> Event<'v> {
    /// Reads the envelope: `id`, `type`, `created` and `data.object` must be present.
    pub fn read(doc: &'v Document<'_>) -> Result<Self, ParseError> {
        Self::read_with(doc, None)
    }

    /// [`read`](Self::read) for a body whose card object [`known::cut`] replaced:
    /// `known` is the card it stood for.
    pub fn read_with(
        doc: &'v Document<'_>,
        known: Option<&'v KnownCard>,
    ) -> Result<Self, ParseError> {
        let root = doc.0.as_value().as_object().ok_or_else(|| ParseError {
            path: "$".into(),
            problem: Problem::WrongType("object"),
        })?;
        let root_fields = Fields::scan(&root, "", "", &ROOT)?;
        let root = &root_fields;
        let data = req_fields(root, "", "data", &DATA)?;
        let id = req_str(root, "", "id")?;
        let event_type = req_str(root, "", "type")?;
        let created = opt_i64(root, "", "created")?.unwrap_or(0);
        let api_version = opt_str(root, "", "api_version")?;
        let (object, fields) = req_obj_fields(&data, "data", "object", &AUTH)?;
        Ok(Event {
            id,
            event_type,
            created,
            api_version,
            object,
            fields,
            known,
        })
    }

    /// The card read before that stands for `data.object.card`, if the body's
    /// was cut out.
    pub(crate) fn known_card(&self) -> Option<&'v KnownCard> {
        self.known
    }

    /// `data.object`, for lifecycle readers.
    pub(crate) fn object(&self) -> &Obj<'v> {
        &self.object
    }

    /// Reads `data.object` as a pending authorization request.
    pub fn authorization_request(&self) -> Result<AuthRequest<'v>, ParseError> {
        read_request(&self.fields, self.known)
    }
}

// The keys read from each object of a request event, dispatched in one pass over
// the object (`Fields::scan`). A key missing here reads as absent (and fails a
// debug assertion), so each list is the keys its reader below asks for.
const ROOT: Keys<5> = Keys::new(["id", "type", "created", "api_version", "data"]);
const DATA: Keys<1> = Keys::new(["object"]);
/// How many keys of `data.object` a request decision reads.
const AUTH_KEYS: usize = 16;
const AUTH: Keys<AUTH_KEYS> = Keys::new([
    "id",
    "created",
    "pending_request",
    "merchant_data",
    "card",
    "verification_data",
    "authorization_method",
    "card_presence",
    "wallet",
    // signals.rs
    "verified_by_fraud_challenge",
    "token",
    "fraud_disputability_likelihood",
    "risk_assessment",
    "fuel",
    "fleet",
    "network_data",
]);
const PENDING: Keys<7> = Keys::new([
    "currency",
    "amount",
    "amount_details",
    "merchant_amount",
    "merchant_currency",
    "is_amount_controllable",
    "network_risk_score",
]);
const MERCHANT: Keys<8> = Keys::new([
    "category",
    "category_code",
    "country",
    "city",
    "name",
    "network_id",
    "postal_code",
    "state",
]);
const CARD_KEYS: Keys<7> = Keys::new([
    "id",
    "type",
    "status",
    "currency",
    "metadata",
    "spending_controls",
    "cardholder",
]);
const CARDHOLDER: Keys<4> = Keys::new(["id", "type", "status", "spending_controls"]);
const CONTROLS: Keys<8> = Keys::new([
    "allowed_categories",
    "blocked_categories",
    "allowed_merchant_countries",
    "blocked_merchant_countries",
    "allowed_card_presences",
    "blocked_card_presences",
    "spending_limits",
    "spending_limits_currency",
]);
const LIMIT: Keys<3> = Keys::new(["amount", "interval", "categories"]);
const VERIFICATION: Keys<4> = Keys::new([
    "cvc_check",
    "expiry_check",
    "address_postal_code_check",
    "three_d_secure",
]);

const OBJ: &str = "data.object";
const PR: &str = "data.object.pending_request";
const MD: &str = "data.object.merchant_data";
const CARD: &str = "data.object.card";
const CH: &str = "data.object.card.cardholder";
const CARD_SC: &str = "data.object.card.spending_controls";
const CH_SC: &str = "data.object.card.cardholder.spending_controls";

fn read_request<'v>(
    o: &Fields<'v, AUTH_KEYS>,
    known: Option<&'v KnownCard>,
) -> Result<AuthRequest<'v>, ParseError> {
    let pr = &req_fields(o, OBJ, "pending_request", &PENDING)?;
    let currency = req_currency(pr, PR, "currency")?;
    let amount = req_i64(pr, PR, "amount")?;
    if amount < 0 {
        return Err(err(PR, "amount", Problem::Invalid("negative amount")));
    }
    let cashback_amount = match opt_obj(pr, PR, "amount_details")? {
        Some(d) => opt_i64(
            &d,
            "data.object.pending_request.amount_details",
            "cashback_amount",
        )?
        .unwrap_or(0),
        None => 0,
    };
    let md = &req_fields(o, OBJ, "merchant_data", &MERCHANT)?;
    // A known card stands in only for the `null` the cut left: a card present in
    // the tape is always read from it.
    let (card, cardholder) = match known.filter(|_| field(o, "card").is_none()) {
        Some(k) => (k.card(), k.cardholder()),
        None => read_card(o)?,
    };
    let verification = match opt_fields(o, OBJ, "verification_data", &VERIFICATION)? {
        Some(v) => read_verification(&v)?,
        None => Verification::default(),
    };
    Ok(AuthRequest {
        id: req_str(o, OBJ, "id")?,
        created: opt_i64(o, OBJ, "created")?.unwrap_or(0),
        amount,
        currency,
        merchant_amount: opt_i64(pr, PR, "merchant_amount")?.unwrap_or(amount),
        merchant_currency: match opt_str(pr, PR, "merchant_currency")? {
            "" => currency,
            _ => req_currency(pr, PR, "merchant_currency")?,
        },
        is_amount_controllable: opt_bool(pr, PR, "is_amount_controllable")?,
        network_risk_score: opt_i64(pr, PR, "network_risk_score")?,
        cashback_amount,
        authorization_method: opt_str(o, OBJ, "authorization_method")?,
        card_presence: match opt_str(o, OBJ, "card_presence")? {
            s if s.is_empty() || Presence::parse(s).is_some() => s,
            s => {
                unknown_enum("card_presence", s);
                s
            }
        },
        wallet: opt_str(o, OBJ, "wallet")?,
        merchant: Merchant {
            category: req_str(md, MD, "category")?,
            category_code: req_str(md, MD, "category_code")?,
            country: opt_str(md, MD, "country")?,
            city: opt_str(md, MD, "city")?,
            name: opt_str(md, MD, "name")?,
            network_id: opt_str(md, MD, "network_id")?,
            postal_code: opt_str(md, MD, "postal_code")?,
            state: opt_str(md, MD, "state")?,
        },
        card,
        cardholder,
        verification,
        signals: signals::read_signals(o)?,
    })
}

/// `data.object.card` and its cardholder, from the tape.
fn read_card<'v>(o: &Fields<'v, AUTH_KEYS>) -> Result<(Card<'v>, Cardholder<'v>), ParseError> {
    let card = &req_fields(o, OBJ, "card", &CARD_KEYS)?;
    let ch = &req_fields(card, CARD, "cardholder", &CARDHOLDER)?;
    Ok((
        Card {
            id: req_str(card, CARD, "id")?,
            card_type: opt_str(card, CARD, "type")?,
            status: CardStatus::parse(req_str(card, CARD, "status")?),
            currency: match opt_str(card, CARD, "currency")? {
                "" => None,
                _ => Some(req_currency(card, CARD, "currency")?),
            },
            metadata: read_metadata(card, CARD)?,
            controls: read_controls(card, CARD_SC)?,
        },
        Cardholder {
            id: req_str(ch, CH, "id")?,
            kind: opt_str(ch, CH, "type")?,
            status: CardholderStatus::parse(req_str(ch, CH, "status")?),
            controls: read_controls(ch, CH_SC)?,
        },
    ))
}

fn read_verification<'v>(v: &Fields<'v, 4>) -> Result<Verification<'v>, ParseError> {
    const P: &str = "data.object.verification_data";
    Ok(Verification {
        cvc_check: opt_str(v, P, "cvc_check")?,
        expiry_check: opt_str(v, P, "expiry_check")?,
        address_postal_code_check: opt_str(v, P, "address_postal_code_check")?,
        three_d_secure: match opt_obj(v, P, "three_d_secure")? {
            Some(t) => opt_str(&t, "data.object.verification_data.three_d_secure", "result")?,
            None => "",
        },
    })
}

fn read_metadata<'v>(
    o: &impl Lookup<'v>,
    path: &str,
) -> Result<Vec<(&'v str, &'v str)>, ParseError> {
    let Some(m) = opt_obj(o, path, "metadata")? else {
        return Ok(Vec::new());
    };
    m.iter()
        .map(|(k, v)| {
            v.into_string()
                .map(|s| (k, s))
                .ok_or_else(|| err(&format!("{path}.metadata"), k, Problem::WrongType("string")))
        })
        .collect()
}

/// Reads `spending_controls` of the card or cardholder `o`; `p` is its JSON path
/// (a constant, so the happy path formats no path strings).
fn read_controls<'v>(o: &impl Lookup<'v>, p: &str) -> Result<Controls, ParseError> {
    let (path, key) = p.rsplit_once('.').unwrap_or(("", p));
    let Some(sc) = opt_fields(o, path, key, &CONTROLS)? else {
        return Ok(Controls::default());
    };
    let sc = &sc;
    let categories = |key| -> Result<Option<CategorySet>, ParseError> {
        opt_strings(sc, p, key, |s, set: &mut CategorySet| {
            set.insert_name(s);
            Ok(())
        })
    };
    let countries = |key| -> Result<Option<CountrySet>, ParseError> {
        opt_strings(sc, p, key, |s, set: &mut CountrySet| {
            if set.insert(s) {
                Ok(())
            } else {
                Err(Problem::Invalid("not an ISO 3166-1 alpha-2 country code"))
            }
        })
    };
    let presences = |key: &'static str| -> Result<Option<PresenceSet>, ParseError> {
        opt_strings(sc, p, key, |s, set: &mut PresenceSet| {
            if !set.insert_str(s) {
                unknown_enum(key, s);
            }
            Ok(())
        })
    };
    let mut spending_limits = Vec::new();
    if let Some(limits) = opt_array(sc, p, "spending_limits")? {
        for (i, l) in limits.iter().enumerate() {
            // Fields are read with an empty path and the limit's path is prefixed
            // only to an error, so a valid limit costs no formatting.
            let at = |e: ParseError| ParseError {
                path: format!(
                    "{p}.spending_limits[{i}]{}{}",
                    if e.path.is_empty() { "" } else { "." },
                    e.path
                ),
                problem: e.problem,
            };
            let l = l
                .as_object()
                .ok_or_else(|| at(err("", "", Problem::WrongType("object"))))?;
            let l = Fields::scan(&l, "", "", &LIMIT).map_err(at)?;
            let raw = req_str(&l, "", "interval").map_err(at)?;
            let (interval, known) = Interval::parse_open(raw);
            if !known {
                unknown_enum("spending_limits.interval", raw);
            }
            spending_limits.push(SpendingLimit {
                amount: req_i64(&l, "", "amount").map_err(at)?,
                interval,
                categories: opt_strings(&l, "", "categories", |s, set: &mut CategorySet| {
                    set.insert_name(s);
                    Ok(())
                })
                .map_err(at)?
                .filter(|s| !s.is_empty()),
            });
        }
    }
    Ok(Controls {
        allowed_categories: categories("allowed_categories")?,
        blocked_categories: categories("blocked_categories")?,
        allowed_merchant_countries: countries("allowed_merchant_countries")?,
        blocked_merchant_countries: countries("blocked_merchant_countries")?,
        allowed_card_presences: presences("allowed_card_presences")?,
        blocked_card_presences: presences("blocked_card_presences")?,
        spending_limits,
        spending_limits_currency: match opt_str(sc, p, "spending_limits_currency")? {
            "" => None,
            _ => Some(req_currency(sc, p, "spending_limits_currency")?),
        },
    })
}

/// Counts and logs an enum value Stripe added after this code was written. The
/// value is kept (never a 400: Stripe would answer every such purchase with its
/// fallback); `field` is one of the bounded labels of
/// `cardgate_unknown_enum_values_total`, the value goes only to the log.
fn unknown_enum(field: &'static str, value: &str) {
    UNKNOWN_ENUMS.with(|n| n.set(n.get() + 1));
    metrics::counter!(crate::metrics::UNKNOWN_ENUM_VALUES, "field" => field).increment(1);
    tracing::warn!(field, value, "unknown enum value kept as sent");
}

thread_local! {
    /// How many unknown enum values this thread's parser has counted.
    static UNKNOWN_ENUMS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many unknown enum values this thread's parser has counted so far: a
/// request whose reading counted one is not remembered by [`known`].
fn unknown_enums_counted() -> u64 {
    UNKNOWN_ENUMS.with(std::cell::Cell::get)
}

mod access;
pub mod known;
mod signals;
#[cfg(test)]
mod tests;
