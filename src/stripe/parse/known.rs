//! Cards the parser has read before: a request's card object, when its bytes are
//! those of a card already read, is not parsed again.
//!
//! An `issuing_authorization.request` embeds the whole card (its cardholder,
//! spending controls, wallets): about half of the body, the same bytes in every
//! request of that card until the card changes. Before parsing, [`cut`] finds
//! where `data.object.card`'s value starts ([`scan::card_value_at`], a token
//! scan of the bytes before it) and compares what stands there with the card
//! last read in its slot (named by the object's first bytes and its id). On a
//! match the object is replaced by `null` in the parser's copy of the body, and
//! the request takes the card and cardholder read from those bytes before
//! ([`KnownCard`]). Otherwise the body is parsed whole, and a card seen for the
//! second time is remembered once its request reads without error
//! ([`Cut::learn`]).
//!
//! Why that is exact: a known card's bytes are one complete JSON object (they were
//! the value of `data.object.card` in a body simd-json accepted), so the same
//! bytes at the same place are that value again, and the body with `null` in
//! their place is valid JSON exactly when the whole body is; simd-json still
//! checks every other byte. What the parser reads from a card depends on its
//! bytes alone. A card whose reading counted an unknown enum value is not
//! remembered, so every request of it still counts it. The body the decision log
//! keeps is the one received, untouched.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use dashmap::DashMap;

use super::ParseError;
use crate::decision::{
    AuthRequest, Card, CardStatus, Cardholder, CardholderStatus, Controls, Currency,
};
use crate::stripe::scan;

/// What the cache may hold, in bytes of card objects (~2–3 KiB each): past it,
/// it starts over.
const CACHE_BYTES: usize = 16 << 20;

/// How many of a card object's first bytes name its slot: enough to hold its
/// `id` in Stripe's compact and pretty layouts.
const KEY_BYTES: usize = 64;

/// How far into a card object its id is looked for, and how many bytes of it
/// name the slot.
const ID_WITHIN: usize = 4096;
const ID_BYTES: usize = 40;

/// A card object read before, and what the parser read from it.
#[derive(Debug)]
pub struct KnownCard {
    /// The object's bytes, as they stood in the body.
    bytes: Box<[u8]>,
    id: Box<str>,
    card_type: Box<str>,
    status: CardStatus,
    currency: Option<Currency>,
    metadata: Vec<(Box<str>, Box<str>)>,
    controls: Controls,
    holder_id: Box<str>,
    holder_kind: Box<str>,
    holder_status: CardholderStatus,
    holder_controls: Controls,
}

impl KnownCard {
    fn new(bytes: Box<[u8]>, card: &Card<'_>, holder: &Cardholder<'_>) -> Self {
        KnownCard {
            bytes,
            id: card.id.into(),
            card_type: card.card_type.into(),
            status: card.status,
            currency: card.currency,
            metadata: card
                .metadata
                .iter()
                .map(|&(k, v)| (k.into(), v.into()))
                .collect(),
            controls: card.controls.clone(),
            holder_id: holder.id.into(),
            holder_kind: holder.kind.into(),
            holder_status: holder.status,
            holder_controls: holder.controls.clone(),
        }
    }

    /// The card, as the parser read it from these bytes.
    pub(crate) fn card(&self) -> Card<'_> {
        Card {
            id: &self.id,
            card_type: &self.card_type,
            status: self.status,
            currency: self.currency,
            metadata: self.metadata.iter().map(|(k, v)| (&**k, &**v)).collect(),
            controls: self.controls.clone(),
        }
    }

    /// The card's cardholder, as the parser read it from these bytes.
    pub(crate) fn cardholder(&self) -> Cardholder<'_> {
        Cardholder {
            id: &self.holder_id,
            kind: &self.holder_kind,
            status: self.holder_status,
            controls: self.holder_controls.clone(),
        }
    }

    /// The card's id and its cardholder's.
    pub(crate) fn ids(&self) -> (&str, &str) {
        (&self.id, &self.holder_id)
    }
}

/// How many card slots [`KnownCards`] remembers having seen once (a power of
/// two).
const SEEN_SLOTS: usize = 1 << 14;

/// Known cards by a hash of their first [`KEY_BYTES`] bytes, one per slot (a
/// card that changed replaces its older self).
///
/// A card is learnt the second time its slot is seen, not the first: learning
/// costs more than the parse it saves once (finding the object's end, copying
/// it), so a card that makes one purchase and no other costs only the scan
/// for its start.
pub struct KnownCards {
    cards: DashMap<u64, Arc<KnownCard>, foldhash::fast::FixedState>,
    bytes: AtomicUsize,
    /// The slot last seen at each index (a slot's low bits), known or not.
    seen: Box<[AtomicU64]>,
}

impl Default for KnownCards {
    fn default() -> Self {
        KnownCards {
            cards: DashMap::default(),
            bytes: AtomicUsize::new(0),
            seen: (0..SEEN_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The cache the webhook uses.
pub static CARDS: LazyLock<KnownCards> = LazyLock::new(KnownCards::default);

/// The searcher for a card id's start, built once (`memmem::find` builds one per
/// call: a few hundred instructions per request).
static CARD_ID: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\"ic_"));

impl KnownCards {
    /// The slot of the card object starting at `card`: its first [`KEY_BYTES`]
    /// bytes and the [`ID_BYTES`] from its first `"ic_`, so cards whose objects
    /// begin alike (keys in another order than Stripe's, which puts `id` first)
    /// still fall in different slots.
    fn slot(card: &[u8]) -> u64 {
        let head = &card[..card.len().min(KEY_BYTES)];
        let near = &card[..card.len().min(ID_WITHIN)];
        let id = CARD_ID
            .find(near)
            .map_or(&[][..], |i| &card[i..card.len().min(i + ID_BYTES)]);
        foldhash::fast::FixedState::default().hash_one((head, id))
    }

    fn insert(&self, slot: u64, card: KnownCard) {
        let size = card.bytes.len();
        if self.bytes.fetch_add(size, Ordering::Relaxed) + size > CACHE_BYTES {
            self.cards.clear();
            self.bytes.store(size, Ordering::Relaxed);
        }
        if let Some(old) = self.cards.insert(slot, Arc::new(card)) {
            self.bytes.fetch_sub(old.bytes.len(), Ordering::Relaxed);
        }
    }

    /// How many cards are known.
    pub fn len(&self) -> usize {
        self.cards.len()
    }

    /// Whether no card is known.
    pub fn is_empty(&self) -> bool {
        self.cards.is_empty()
    }
}

/// What [`cut`] did to a body.
#[derive(Debug)]
pub enum Cut {
    /// Parsed whole, not remembered: the body has no card object at
    /// `data.object.card`, or its card was not seen before.
    Whole,
    /// The card object was a known card's bytes and is `null` in the parser's
    /// copy.
    Known(Arc<KnownCard>),
    /// A card object seen once before but not known: parsed whole, remembered by
    /// [`Cut::learn`].
    New {
        /// Its slot in the cache.
        slot: u64,
        /// Its bytes.
        bytes: Box<[u8]>,
        /// The thread's count of unknown enum values before the body was read.
        unknown_before: u64,
    },
}

/// Finds `data.object.card` in the verified body `buf` (its spare capacity kept
/// for the parser's padding) and, when it is a card in `cards`, replaces it
/// with `null`.
pub fn cut(buf: &mut Vec<u8>, cards: &KnownCards) -> Cut {
    let Some(at) = scan::card_value_at(buf) else {
        return Cut::Whole;
    };
    let slot = KnownCards::slot(&buf[at..]);
    let known = cards
        .cards
        .get(&slot)
        .filter(|k| buf[at..].starts_with(&k.bytes))
        .map(|k| Arc::clone(&k));
    if let Some(k) = known {
        buf.splice(at..at + k.bytes.len(), *b"null");
        return Cut::Known(k);
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "only the slot's low bits pick its index"
    )]
    let seen = &cards.seen[slot as usize & (SEEN_SLOTS - 1)];
    if seen.swap(slot, Ordering::Relaxed) != slot {
        return Cut::Whole;
    }
    match scan::object_end(buf, at) {
        Some(end) => Cut::New {
            slot,
            bytes: buf[at..end].into(),
            unknown_before: super::unknown_enums_counted(),
        },
        None => Cut::Whole,
    }
}

/// Parses `buf` after [`cut`] (as [`parse_padded`](super::parse_padded) does).
/// `original` is the body as received: when the cut one is not JSON, the error
/// is the one the whole body gives, so the position it names counts from the
/// bytes Stripe sent.
pub fn parse<'b>(
    buf: &'b mut Vec<u8>,
    cut: &Cut,
    original: &[u8],
) -> Result<super::Document<'b>, ParseError> {
    super::parse_padded(buf).map_err(|e| match cut {
        Cut::Known(_) => super::parse_document(&mut original.to_vec())
            .err()
            .unwrap_or(e),
        _ => e,
    })
}

impl Cut {
    /// The known card standing in for `data.object.card`, if any.
    pub fn known(&self) -> Option<&KnownCard> {
        match self {
            Cut::Known(k) => Some(k),
            _ => None,
        }
    }

    /// Remembers a new card once its request was read without error: `auth`
    /// must be the request read from the body this cut was made of, on this
    /// thread. Whether it did.
    pub fn learn(&self, auth: &AuthRequest<'_>, cards: &KnownCards) -> bool {
        let Cut::New {
            slot,
            bytes,
            unknown_before,
        } = self
        else {
            return false;
        };
        if super::unknown_enums_counted() != *unknown_before {
            return false;
        }
        let card = KnownCard::new(bytes.clone(), &auth.card, &auth.cardholder);
        cards.insert(*slot, card);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::lifecycle_fact;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    const REQUESTS: [&str; 8] = [
        "events/issuing_authorization.request.json",
        "events/issuing_authorization.request.partial.json",
        "events/issuing_authorization.request.spending_controls.json",
        "versions/2024-06-20.issuing_authorization.request.json",
        "versions/2025-03-31.basil.issuing_authorization.request.json",
        "versions/2025-11-17.clover.issuing_authorization.request.json",
        "versions/2026-04-22.dahlia.issuing_authorization.request.json",
        "versions/2026-10-28.endive.issuing_authorization.request.json",
    ];

    /// The request read the way the webhook reads it (cut, parse, read, learn),
    /// as its `Debug` text or the error's; and whether a known card stood in.
    fn read_cut(body: &[u8], cards: &KnownCards) -> (Result<String, String>, bool) {
        let mut buf = Vec::with_capacity(body.len() + super::super::PADDING);
        buf.extend_from_slice(body);
        let cut = cut(&mut buf, cards);
        let known = cut.known().is_some();
        let read = (|| {
            let doc = parse(&mut buf, &cut, body).map_err(|e| e.to_string())?;
            let ev =
                super::super::Event::read_with(&doc, cut.known()).map_err(|e| e.to_string())?;
            let a = ev.authorization_request().map_err(|e| e.to_string())?;
            cut.learn(&a, cards);
            Ok(format!("{a:?}"))
        })();
        (read, known)
    }

    /// The request read from the whole body, as [`read_cut`] gives it.
    fn read_whole(body: &[u8]) -> Result<String, String> {
        let mut buf = body.to_vec();
        let doc = super::super::parse_document(&mut buf).map_err(|e| e.to_string())?;
        let ev = super::super::Event::read(&doc).map_err(|e| e.to_string())?;
        let a = ev.authorization_request().map_err(|e| e.to_string())?;
        Ok(format!("{a:?}"))
    }

    /// Reads `body` until its card is known.
    fn learn(body: &[u8], cards: &KnownCards) {
        for _ in 0..2 {
            assert!(!read_cut(body, cards).1);
        }
        assert!(read_cut(body, cards).1);
    }

    fn compact(body: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(body).unwrap()).unwrap()
    }

    #[test]
    fn a_known_card_reads_as_the_whole_body_does() {
        for name in REQUESTS {
            for (body, is_compact) in [(fixture(name), false), (compact(&fixture(name)), true)] {
                let cards = KnownCards::default();
                let whole = read_whole(&body);
                assert!(whole.is_ok(), "{name}: {whole:?}");
                // Seen once, then learnt, then known.
                assert_eq!(read_cut(&body, &cards), (whole.clone(), false), "{name}");
                assert!(cards.is_empty());
                assert_eq!(read_cut(&body, &cards), (whole.clone(), false), "{name}");
                assert_eq!(cards.len(), 1);
                assert_eq!(read_cut(&body, &cards), (whole, true), "{name}");
                // Another request of the same card (written compact).
                let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                v["data"]["object"]["pending_request"]["amount"] = 777.into();
                v["data"]["object"]["id"] = "iauth_other".into();
                let other = serde_json::to_vec(&v).unwrap();
                let (read, known) = read_cut(&other, &cards);
                assert_eq!((read, known), (read_whole(&other), is_compact), "{name}");
                assert!(read_whole(&other).unwrap().contains("amount: 777"));
            }
        }
    }

    #[test]
    fn a_card_that_changed_is_read_again() {
        let cards = KnownCards::default();
        let body = compact(&fixture(REQUESTS[0]));
        learn(&body, &cards);
        assert!(read_cut(&body, &cards).1);
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["data"]["object"]["card"]["spending_controls"]["blocked_categories"] =
            serde_json::json!(["bakeries"]);
        let changed = serde_json::to_vec(&v).unwrap();
        // Its slot was seen (by the card before the change): learnt at once.
        let (read, known) = read_cut(&changed, &cards);
        assert!(!known);
        assert_eq!(read, read_whole(&changed));
        assert!(read.unwrap().contains("blocked_categories: Some"));
        // The changed card replaced the old one in its slot.
        assert_eq!(cards.len(), 1);
        assert!(read_cut(&changed, &cards).1);
        assert!(!read_cut(&body, &cards).1);
    }

    #[test]
    fn cards_whose_objects_begin_alike_are_known_apart() {
        let cards = KnownCards::default();
        let mut v: serde_json::Value = serde_json::from_slice(&fixture(REQUESTS[0])).unwrap();
        let bodies: Vec<Vec<u8>> = ["ic_A", "ic_B"]
            .iter()
            .map(|id| {
                // The id last: the objects' first bytes are the same.
                let card = v["data"]["object"]["card"].as_object_mut().unwrap();
                card.remove("id");
                card.insert("id".into(), (*id).into());
                serde_json::to_vec(&v).unwrap()
            })
            .collect();
        let heads: Vec<&[u8]> = bodies
            .iter()
            .map(|b| {
                let at = scan::card_value_at(b).unwrap();
                &b[at..at + KEY_BYTES]
            })
            .collect();
        assert_eq!(heads[0], heads[1]);
        for body in &bodies {
            learn(body, &cards);
        }
        for body in &bodies {
            let (read, known) = read_cut(body, &cards);
            assert!(known);
            assert_eq!(read, read_whole(body));
        }
        assert_eq!(cards.len(), 2);
    }

    #[test]
    fn a_card_whose_reading_counted_an_unknown_enum_is_not_remembered() {
        let cards = KnownCards::default();
        let mut v: serde_json::Value = serde_json::from_slice(&fixture(REQUESTS[0])).unwrap();
        v["data"]["object"]["card"]["spending_controls"]["allowed_card_presences"] =
            serde_json::json!(["hologram"]);
        let body = serde_json::to_vec(&v).unwrap();
        for _ in 0..3 {
            let before = super::super::unknown_enums_counted();
            let (read, known) = read_cut(&body, &cards);
            assert!(read.is_ok() && !known);
            assert_eq!(super::super::unknown_enums_counted(), before + 1);
        }
        assert!(cards.is_empty());
    }

    #[test]
    fn a_lifecycle_event_with_a_known_card_gives_the_same_fact() {
        let cards = KnownCards::default();
        let request: serde_json::Value = serde_json::from_slice(&fixture(REQUESTS[0])).unwrap();
        let card = &request["data"]["object"]["card"];
        learn(&serde_json::to_vec(&request).unwrap(), &cards);
        for name in [
            "events/issuing_authorization.created.json",
            "events/issuing_authorization.updated.closed.json",
        ] {
            let mut v: serde_json::Value = serde_json::from_slice(&fixture(name)).unwrap();
            v["data"]["object"]["card"] = card.clone();
            let body = serde_json::to_vec(&v).unwrap();
            let mut whole = body.clone();
            let doc = super::super::parse_document(&mut whole).unwrap();
            let want = lifecycle_fact(&super::super::Event::read(&doc).unwrap()).unwrap();
            let mut buf = body.clone();
            let cut = cut(&mut buf, &cards);
            assert!(cut.known().is_some(), "{name}");
            let doc = parse(&mut buf, &cut, &body).unwrap();
            let ev = super::super::Event::read_with(&doc, cut.known()).unwrap();
            assert_eq!(lifecycle_fact(&ev).unwrap(), want, "{name}");
            assert!(want.is_some());
        }
    }

    #[test]
    fn a_body_refused_whole_is_refused_the_same_with_its_card_known() {
        let cards = KnownCards::default();
        let body = compact(&fixture(REQUESTS[0]));
        learn(&body, &cards);
        let text = String::from_utf8(body).unwrap();
        let card = {
            let at = scan::card_value_at(text.as_bytes()).unwrap();
            text[at..scan::object_end(text.as_bytes(), at).unwrap()].to_string()
        };
        let object = "\"data\":{\"object\":{";
        for bad in [
            // Not JSON after the card: the error's position counts from the
            // body as sent.
            text.replacen("\"merchant_data\"", "\"merchant_data\" x", 1),
            format!("{text} ]"),
            // The card twice.
            text.replacen(object, &format!("{object}\"card\":{card},"), 1),
            // A field the request needs, missing.
            text.replacen("\"pending_request\"", "\"pending_requests\"", 1),
        ] {
            let whole = read_whole(bad.as_bytes());
            assert!(whole.is_err(), "{bad}");
            assert_eq!(read_cut(bad.as_bytes(), &cards), (whole, true), "{bad}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

        /// Any edit of a body (a byte changed, inserted or removed anywhere) reads
        /// the same, or fails the same, whether or not its card is known.
        #[test]
        fn any_edit_reads_the_same_with_the_card_known_or_not(
            which in 0..REQUESTS.len(),
            pretty in proptest::prelude::any::<bool>(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            kind in 0..3u8,
            byte in proptest::sample::select(b"{}[]\",:\\ 0a-.ulnt\xc3".to_vec()),
        ) {
            let cards = KnownCards::default();
            let body = if pretty { fixture(REQUESTS[which]) } else { compact(&fixture(REQUESTS[which])) };
            learn(&body, &cards);
            let mut edited = body.clone();
            let i = at.index(edited.len());
            match kind {
                0 => edited[i] = byte,
                1 => edited.insert(i, byte),
                _ => { edited.remove(i); }
            }
            let whole = read_whole(&edited);
            proptest::prop_assert_eq!(read_cut(&edited, &cards).0, whole);
        }
    }
}
