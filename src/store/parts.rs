//! The card object of a request's body, stored once per distinct content.
//!
//! A `issuing_authorization.request` body embeds the whole card (its cardholder,
//! spending controls, wallets): about half of its bytes, the same for every
//! request of a card until the card changes. The writer keeps each card's object
//! once in `decision_parts` and the row's `event_json` without it, with the
//! offset it was cut at (`card_at`) and the part's id (`card_part`); readers put
//! it back ([`join`]). Halving what a decision writes cut the WAL, the
//! checkpoints' copying and the file's growth by about as much (BENCHMARKS.md).
//!
//! Exactness does not depend on finding the right object: a row keeps the bytes
//! before `card_at`, the part is the bytes that stood there, byte for byte, and
//! the rest follows, so any cut gives the body back. Parsing decides only how
//! often a part is shared.

use std::collections::HashMap;

use bytes::Bytes;

use crate::stripe::{object_end, skip_space};

/// A card object shorter than this is left in its row: a part row and its id
/// would save little.
const MIN_PART: usize = 256;

/// What the cache may hold, in bytes of card objects (~2–3 KiB each): past it, it
/// starts over, and each card's next request stores its object once more.
const CACHE_BYTES: usize = 32 << 20;

/// The `"card"` key's searcher, built once: `memmem::find_iter` builds one per
/// call, ~250 instructions per row on the writer thread.
static CARD_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"card\""));

/// Where the card object starts in `body`: the `{` after the first `"card"` key
/// (a `"card"` followed by a colon and an object).
fn card_start(body: &[u8]) -> Option<usize> {
    for k in CARD_KEY.find_iter(body) {
        let mut i = skip_space(body, k + 6);
        if body.get(i) != Some(&b':') {
            continue;
        }
        i = skip_space(body, i + 1);
        if body.get(i) == Some(&b'{') {
            return Some(i);
        }
    }
    None
}

/// Where a body's card object lies, cut out of its row.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Cut {
    /// The object is the bytes `at..end`.
    pub(super) at: usize,
    pub(super) end: usize,
    /// The part already stored with exactly these bytes; `None`: not stored yet.
    pub(super) part: Option<i64>,
}

/// Each card's stored object, by card id.
#[derive(Debug, Default)]
pub(super) struct Parts {
    by_card: HashMap<Box<str>, (i64, Bytes)>,
    bytes: usize,
}

impl Parts {
    /// Where `body`, a request of `card`, is cut; `None`: it is stored whole.
    pub(super) fn split(&self, card: &str, body: &[u8]) -> Option<Cut> {
        let at = card_start(body)?;
        if let Some((part, stored)) = self.by_card.get(card)
            && body[at..].starts_with(stored)
        {
            return Some(Cut {
                at,
                end: at + stored.len(),
                part: Some(*part),
            });
        }
        let end = object_end(body, at).filter(|end| end - at >= MIN_PART)?;
        Some(Cut {
            at,
            end,
            part: None,
        })
    }

    /// Remembers `object`, committed as `part`, as `card`'s.
    pub(super) fn remember(&mut self, card: &str, part: i64, object: Bytes) {
        if self.bytes + object.len() > CACHE_BYTES {
            self.by_card.clear();
            self.bytes = 0;
        }
        self.bytes += object.len();
        if let Some((_, old)) = self.by_card.insert(card.into(), (part, object)) {
            self.bytes -= old.len();
        }
    }
}

/// The body a row stores as `rest` with `part` cut out at `at` (both `None`: a
/// body stored whole); `None` if `at` lies outside `rest` (a damaged row).
pub(crate) fn join(rest: Vec<u8>, at: Option<i64>, part: Option<Vec<u8>>) -> Option<Vec<u8>> {
    let (Some(at), Some(part)) = (at, part) else {
        return Some(rest);
    };
    let at = usize::try_from(at).ok().filter(|at| *at <= rest.len())?;
    let mut body = Vec::with_capacity(rest.len() + part.len());
    body.extend_from_slice(&rest[..at]);
    body.extend_from_slice(&part);
    body.extend_from_slice(&rest[at..]);
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(body: &str) -> Option<&str> {
        let at = card_start(body.as_bytes())?;
        Some(&body[at..object_end(body.as_bytes(), at)?])
    }

    #[test]
    fn the_card_object_is_found_past_strings_braces_and_escapes() {
        assert_eq!(card(r#"{"card":{"a":1}}"#), Some(r#"{"a":1}"#));
        assert_eq!(
            card("{\n  \"card\" : \n {\"a\": {}}\n}"),
            Some(r#"{"a": {}}"#)
        );
        // `"card"` as a value, and a `"card"` key whose value is no object, first.
        assert_eq!(
            card(r#"{"type":"card","x":{"card":"ic_1"},"card":{"b":2}}"#),
            Some(r#"{"b":2}"#)
        );
        // Braces and quotes inside strings, escaped quotes and backslashes.
        let inner = r#"{"n":"}{\"}","m":"\\","o":{"p":"{"},"q":"\\\""}"#;
        assert_eq!(card(&format!(r#"{{"card":{inner},"z":1}}"#)), Some(inner));
        // Unclosed objects and strings, no card at all.
        assert_eq!(card(r#"{"card":{"a":"}"#), None);
        assert_eq!(card(r#"{"card":{"a":{}"#), None);
        assert_eq!(card(r#"{"card":{"a":"\"#), None);
        assert_eq!(card(r#"{"cards":{}}"#), None);
        assert_eq!(card(""), None);
    }

    #[test]
    fn a_known_card_object_is_reused_only_while_its_bytes_are_the_same() {
        let object = format!(
            r#"{{"id":"ic_1","spending_controls":"{}"}}"#,
            "x".repeat(300)
        );
        let body = format!(r#"{{"id":"evt_1","card":{object},"amount":1}}"#);
        let at = body.find("{\"id\":\"ic_1\"").unwrap();
        let mut parts = Parts::default();
        let end = at + object.len();
        assert_eq!(
            parts.split("ic_1", body.as_bytes()),
            Some(Cut {
                at,
                end,
                part: None
            })
        );
        parts.remember("ic_1", 7, Bytes::from(object.clone()));
        assert_eq!(
            parts.split("ic_1", body.as_bytes()),
            Some(Cut {
                at,
                end,
                part: Some(7)
            })
        );
        // Another card, or this card changed: not the stored part.
        let new = |card, body: &str| parts.split(card, body.as_bytes()).map(|c| c.part);
        assert_eq!(new("ic_2", &body), Some(None));
        assert_eq!(new("ic_1", &body.replace("xxx", "xxy")), Some(None));
        // A small card object stays in its row.
        assert_eq!(parts.split("ic_3", br#"{"card":{"id":"ic_3"}}"#), None);
    }

    #[test]
    fn join_puts_the_part_back_where_it_was_cut() {
        let body = b"{\"card\":{\"a\":1},\"b\":2}".to_vec();
        let rest = b"{\"card\":,\"b\":2}".to_vec();
        assert_eq!(
            join(rest.clone(), Some(8), Some(b"{\"a\":1}".to_vec())),
            Some(body)
        );
        assert_eq!(join(rest.clone(), None, None), Some(rest.clone()));
        assert_eq!(join(rest.clone(), Some(99), Some(b"{}".to_vec())), None);
        assert_eq!(join(rest, Some(-1), Some(b"{}".to_vec())), None);
    }

    proptest::proptest! {
        #[test]
        fn any_split_of_any_body_joins_back_to_the_body(
            body in proptest::collection::vec(proptest::sample::select(
                b"{}\"\\:card ,x".to_vec()), 0..400),
            object in "[a-z\"\\\\{}: ]{0,300}",
        ) {
            let mut body = body;
            body.extend_from_slice(b"\"card\":{");
            body.extend_from_slice(object.as_bytes());
            body.extend_from_slice(b"}}");
            let parts = Parts::default();
            if let Some(Cut { at, end, .. }) = parts.split("ic", &body) {
                let mut rest = body[..at].to_vec();
                rest.extend_from_slice(&body[end..]);
                let joined = join(
                    rest,
                    Some(i64::try_from(at).unwrap()),
                    Some(body[at..end].to_vec()),
                );
                proptest::prop_assert_eq!(joined, Some(body));
            }
        }
    }
}
