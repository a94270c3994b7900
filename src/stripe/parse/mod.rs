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

use crate::decision::{
    AuthRequest, Card, CardStatus, Cardholder, CardholderStatus, CategorySet, Controls, CountrySet,
    Currency, Interval, Merchant, Presence, PresenceSet, SpendingLimit, Verification,
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
    let (buffers, tape) = SCRATCH
        .try_with(|s| {
            s.try_borrow_mut()
                .map(|mut s| (s.buffers.take(), s.tape.take()))
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let mut buffers = buffers.unwrap_or_else(|| Buffers::new(buf.len()));
    let mut tape = tape.map_or_else(|| Tape(Vec::new()), Tape::reset);
    let len = buf.len();
    let parsed = simd_json::fill_tape(buf, &mut buffers, &mut tape);
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
        })
    }

    /// `data.object`, for lifecycle readers.
    pub(crate) fn object(&self) -> &Obj<'v> {
        &self.object
    }

    /// Reads `data.object` as a pending authorization request.
    pub fn authorization_request(&self) -> Result<AuthRequest<'v>, ParseError> {
        read_request(&self.fields)
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

fn read_request<'v>(o: &Fields<'v, AUTH_KEYS>) -> Result<AuthRequest<'v>, ParseError> {
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
    let card = &req_fields(o, OBJ, "card", &CARD_KEYS)?;
    let ch = &req_fields(card, CARD, "cardholder", &CARDHOLDER)?;
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
        card: Card {
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
        cardholder: Cardholder {
            id: req_str(ch, CH, "id")?,
            kind: opt_str(ch, CH, "type")?,
            status: CardholderStatus::parse(req_str(ch, CH, "status")?),
            controls: read_controls(ch, CH_SC)?,
        },
        verification,
        signals: signals::read_signals(o)?,
    })
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
    metrics::counter!(crate::metrics::UNKNOWN_ENUM_VALUES, "field" => field).increment(1);
    tracing::warn!(field, value, "unknown enum value kept as sent");
}

// === field helpers: absent and null are the same to Stripe ===

/// An object whose fields can be read by key: a tape object (a linear scan of its
/// keys per read, for the lifecycle events and the rare signal objects) or the
/// [`Fields`] of one dispatched in a single pass (the request's objects).
pub(crate) trait Lookup<'v> {
    /// The value at `key`, if present and not null.
    fn field(&self, key: &str) -> Option<Val<'v>>;
}

impl<'v> Lookup<'v> for Obj<'v> {
    fn field(&self, key: &str) -> Option<Val<'v>> {
        self.get(key).filter(|v| !v.is_null())
    }
}

/// A present, non-null field.
pub(crate) fn field<'v>(o: &impl Lookup<'v>, key: &str) -> Option<Val<'v>> {
    o.field(key)
}

/// The keys a reader takes from one object, and a 256-slot open-addressing table
/// from [`key_hash`] to their index, built at compile time: finding a key's slot is
/// one table load and, on a hit, one comparison.
pub(crate) struct Keys<const N: usize> {
    names: [&'static str; N],
    /// `1 +` the index in `names` of the key hashed here (linear probing), 0 empty.
    table: [u8; 256],
}

impl<const N: usize> Keys<N> {
    /// The table for `names` (distinct, fewer than 256).
    pub(crate) const fn new(names: [&'static str; N]) -> Self {
        assert!(N < 256, "a key table holds fewer than 256 keys");
        let mut table = [0u8; 256];
        let mut i = 0;
        while i < N {
            let mut h = key_hash(names[i].as_bytes());
            while table[h] != 0 {
                h = (h + 1) & 255;
            }
            #[expect(
                clippy::cast_possible_truncation,
                reason = "i < N < 256, asserted above"
            )]
            {
                table[h] = (i + 1) as u8;
            }
            i += 1;
        }
        Keys { names, table }
    }

    /// The index of `k` (whose [`key_hash`] is `h`), if it is one of the keys.
    fn slot(&self, k: &str, mut h: usize) -> Option<usize> {
        loop {
            let i = usize::from(self.table[h]).checked_sub(1)?;
            if self.names[i] == k {
                return Some(i);
            }
            h = (h + 1) & 255;
        }
    }
}

/// The values of an object's keys in a [`Keys`] set, found in one pass over the
/// object ([`Fields::scan`]) instead of one scan of its keys per field read.
pub(crate) struct Fields<'v, const N: usize> {
    keys: &'static Keys<N>,
    vals: [Option<Val<'v>>; N],
}

impl<'v, const N: usize> Fields<'v, N> {
    /// Reads `o`, the object at `key` of the object at `path`, in one pass: refuses
    /// it if a key occurs twice (as [`unique_keys`]), and keeps the non-null value
    /// of every key in `keys`.
    pub(crate) fn scan(
        o: &Obj<'v>,
        path: &str,
        key: &str,
        keys: &'static Keys<N>,
    ) -> Result<Self, ParseError> {
        let mut vals = [None; N];
        each_unique_key(o, path, key, |k, h, v| {
            if let Some(i) = keys.slot(k, h)
                && !v.is_null()
            {
                vals[i] = Some(v);
            }
        })?;
        Ok(Fields { keys, vals })
    }
}

impl<'v, const N: usize> Lookup<'v> for Fields<'v, N> {
    fn field(&self, key: &str) -> Option<Val<'v>> {
        let i = self.keys.slot(key, key_hash(key.as_bytes()));
        debug_assert!(i.is_some(), "`{key}` is not in the object's key table");
        self.vals[i?]
    }
}

/// Refuses `o`, the object at `key` of the object at `path`, if a key occurs twice
/// in it; the error names the repeated key's path. Every object the parser reads
/// fields from passes here (or through [`Fields::scan`]) once, when it is opened,
/// so the field reads after it can stop at the first match.
pub(crate) fn unique_keys(o: &Obj<'_>, path: &str, key: &str) -> Result<(), ParseError> {
    each_unique_key(o, path, key, |_, _, _| {})
}

/// Calls `each(key, key_hash(key), value)` for every entry of `o`, and refuses `o`
/// if a key occurs twice.
///
/// One pass over the keys with a 256-bit filter of a hash of each (length, first,
/// middle and last byte: no loop over the key): a key whose bit is clear is new,
/// and only a set bit (a repeat, or two keys sharing a bit) costs a look back over
/// the keys before it. Nothing is allocated unless the body is refused.
fn each_unique_key<'v>(
    o: &Obj<'v>,
    path: &str,
    key: &str,
    mut each: impl FnMut(&'v str, usize, Val<'v>),
) -> Result<(), ParseError> {
    let mut seen = [0u64; 4];
    for (i, (k, v)) in o.iter().enumerate() {
        let h = key_hash(k.as_bytes());
        let (word, bit) = (h >> 6, 1u64 << (h & 63));
        if seen[word] & bit != 0 && o.keys().take(i).any(|earlier| earlier == k) {
            return Err(err(
                &err(path, key, Problem::DuplicateKey).path,
                k,
                Problem::DuplicateKey,
            ));
        }
        seen[word] |= bit;
        each(k, h, v);
    }
    Ok(())
}

/// A hash of `k` in `0..256` from its length and three of its bytes.
const fn key_hash(k: &[u8]) -> usize {
    let n = k.len();
    if n == 0 {
        return 0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "only the low byte of the length feeds the hash"
    )]
    let len = n as u8;
    let x = u32::from_le_bytes([len, k[0], k[n / 2], k[n - 1]]);
    // Fibonacci hashing: the top byte of the product mixes all four inputs.
    (x.wrapping_mul(0x9E37_79B9) >> 24) as usize
}

/// A required string field.
pub(crate) fn req_str<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<&'v str, ParseError> {
    match field(o, key) {
        None => Err(err(path, key, Problem::Missing)),
        Some(v) => v
            .into_string()
            .ok_or_else(|| err(path, key, Problem::WrongType("string"))),
    }
}

/// An optional string field; absent or null is `""`.
pub(crate) fn opt_str<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<&'v str, ParseError> {
    match field(o, key) {
        None => Ok(""),
        Some(v) => v
            .into_string()
            .ok_or_else(|| err(path, key, Problem::WrongType("string"))),
    }
}

/// An optional string field that keeps "absent or null" apart from `""`.
pub(crate) fn some_str<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<Option<&'v str>, ParseError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .ok_or_else(|| err(path, key, Problem::WrongType("string"))),
    }
}

/// An optional number (integer or float), as a double.
pub(crate) fn opt_f64<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<Option<f64>, ParseError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .cast_f64()
            .map(Some)
            .ok_or_else(|| err(path, key, Problem::WrongType("number"))),
    }
}

/// A required integer field.
pub(crate) fn req_i64<'v>(o: &impl Lookup<'v>, path: &str, key: &str) -> Result<i64, ParseError> {
    opt_i64(o, path, key)?.ok_or_else(|| err(path, key, Problem::Missing))
}

/// An optional integer field.
pub(crate) fn opt_i64<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<Option<i64>, ParseError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| err(path, key, Problem::WrongType("integer"))),
    }
}

/// An optional boolean field; absent or null is `false`.
pub(crate) fn opt_bool<'v>(o: &impl Lookup<'v>, path: &str, key: &str) -> Result<bool, ParseError> {
    match field(o, key) {
        None => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| err(path, key, Problem::WrongType("boolean"))),
    }
}

/// An optional object field.
pub(crate) fn opt_obj<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<Option<Obj<'v>>, ParseError> {
    let Some(v) = field(o, key) else {
        return Ok(None);
    };
    let obj = v
        .as_object()
        .ok_or_else(|| err(path, key, Problem::WrongType("object")))?;
    unique_keys(&obj, path, key)?;
    Ok(Some(obj))
}

/// A required object field, read in one pass ([`Fields::scan`]).
fn req_fields<'v, const N: usize>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
    keys: &'static Keys<N>,
) -> Result<Fields<'v, N>, ParseError> {
    opt_fields(o, path, key, keys)?.ok_or_else(|| err(path, key, Problem::Missing))
}

/// An optional object field, read in one pass ([`Fields::scan`]).
fn opt_fields<'v, const N: usize>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
    keys: &'static Keys<N>,
) -> Result<Option<Fields<'v, N>>, ParseError> {
    let Some(v) = field(o, key) else {
        return Ok(None);
    };
    let obj = v
        .as_object()
        .ok_or_else(|| err(path, key, Problem::WrongType("object")))?;
    Fields::scan(&obj, path, key, keys).map(Some)
}

/// A required object field, as a tape object and read in one pass.
fn req_obj_fields<'v, const N: usize>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
    keys: &'static Keys<N>,
) -> Result<(Obj<'v>, Fields<'v, N>), ParseError> {
    let obj = field(o, key)
        .ok_or_else(|| err(path, key, Problem::Missing))?
        .as_object()
        .ok_or_else(|| err(path, key, Problem::WrongType("object")))?;
    let fields = Fields::scan(&obj, path, key, keys)?;
    Ok((obj, fields))
}

/// An optional array field.
pub(crate) fn opt_array<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<Option<simd_json::tape::Array<'v, 'v>>, ParseError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_array()
            .map(Some)
            .ok_or_else(|| err(path, key, Problem::WrongType("array"))),
    }
}

fn opt_strings<'v, T: Default>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
    mut add: impl FnMut(&str, &mut T) -> Result<(), Problem>,
) -> Result<Option<T>, ParseError> {
    let Some(items) = opt_array(o, path, key)? else {
        return Ok(None);
    };
    let mut set = T::default();
    for (i, item) in items.iter().enumerate() {
        let at = || format!("{key}[{i}]");
        let s = item
            .as_str()
            .ok_or_else(|| err(path, &at(), Problem::WrongType("string")))?;
        add(s, &mut set).map_err(|p| err(path, &at(), p))?;
    }
    Ok(Some(set))
}

/// A required three-letter currency code.
pub(crate) fn req_currency<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<Currency, ParseError> {
    let s = req_str(o, path, key)?;
    Currency::parse(s)
        .ok_or_else(|| err(path, key, Problem::Invalid("not a 3-letter currency code")))
}

mod signals;
#[cfg(test)]
mod tests;
