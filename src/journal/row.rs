//! The decision-log row as the pipeline hands it to a journal: [`DecisionRow`].
//!
//! A row is built on the request thread for every decision and freed on the
//! writer's, so its shape is a cost on the hot path. Its fourteen text columns
//! live in one buffer ([`PackedText`]: one allocation, not one `String` each); the
//! event body is the request's own `Bytes`; the replay record is already compact
//! bytes ([`super::seen`]). Rows read back (API, backtest) are
//! [`LoggedDecision`](super::LoggedDecision)s, where owning each field is simpler
//! and nothing is hot.

use std::sync::Arc;

use bytes::Bytes;

use super::LoggedDecision;

/// A decision-log row on its way to storage: the columns of a
/// [`LoggedDecision`] less its id, with the text columns packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRow {
    /// The text columns.
    pub text: PackedText,
    /// Requested amount.
    pub amount: i64,
    /// Approved?
    pub approved: bool,
    /// Amount approved (0 when declined).
    pub approved_amount: i64,
    /// Decision latency in microseconds.
    pub latency_us: i64,
    /// Unix seconds.
    pub decided_at: i64,
    /// The verified event body, shared with the request (not copied).
    pub event_json: Bytes,
    /// How `seen` is encoded (see [`LoggedDecision::format`]).
    pub format: i64,
    /// What the decision saw beyond its event body.
    pub seen: Vec<u8>,
    /// Bodies `seen` names by hash (see [`LoggedDecision::blobs`]).
    pub blobs: Vec<(i64, Arc<[u8]>)>,
}

/// The text columns of a decision row, borrowed: what a row is built from and
/// what a store binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowText<'a> {
    /// The request event's id.
    pub event_id: &'a str,
    /// `iauth_…`
    pub authorization_id: &'a str,
    /// `ic_…`
    pub card: &'a str,
    /// `ich_…`
    pub cardholder: &'a str,
    /// The requested amount's currency.
    pub currency: &'a str,
    /// Merchant category name.
    pub merchant_category: &'a str,
    /// MCC.
    pub merchant_mcc: &'a str,
    /// Merchant country.
    pub merchant_country: &'a str,
    /// Merchant name.
    pub merchant_name: &'a str,
    /// Machine reason.
    pub reason: &'a str,
    /// Control or rule behind the reason.
    pub rule: Option<&'a str>,
    /// Rule set version.
    pub ruleset: &'a str,
    /// Legacy window totals as JSON (`{}` for rows with an exact replay record).
    pub spend_json: &'a str,
    /// Matched shadow rules as a JSON array of names.
    pub shadow_rules: Option<&'a str>,
}

/// How many text columns a row has.
const FIELDS: usize = 14;
/// The optional columns' places in [`RowText::fields`].
const RULE: usize = 10;
const SHADOW_RULES: usize = 13;

impl<'a> RowText<'a> {
    /// The columns in a fixed order (`None` only at [`RULE`] and [`SHADOW_RULES`]).
    fn fields(&self) -> [Option<&'a str>; FIELDS] {
        [
            Some(self.event_id),
            Some(self.authorization_id),
            Some(self.card),
            Some(self.cardholder),
            Some(self.currency),
            Some(self.merchant_category),
            Some(self.merchant_mcc),
            Some(self.merchant_country),
            Some(self.merchant_name),
            Some(self.reason),
            self.rule,
            Some(self.ruleset),
            Some(self.spend_json),
            self.shadow_rules,
        ]
    }
}

/// A row's text columns in one buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedText {
    buf: String,
    /// Where each column ends in `buf` (it starts where the one before ends).
    ends: [usize; FIELDS],
    /// Bit `i` set: column `i` is `None`.
    none: u16,
}

impl PackedText {
    /// Copies `text` into one buffer sized to it.
    pub fn new(text: &RowText<'_>) -> PackedText {
        let fields = text.fields();
        let len = fields.iter().flatten().map(|f| f.len()).sum();
        let mut buf = String::with_capacity(len);
        let mut ends = [0; FIELDS];
        let mut none = 0;
        for (i, field) in fields.iter().enumerate() {
            match field {
                Some(f) => buf.push_str(f),
                None => none |= 1 << i,
            }
            ends[i] = buf.len();
        }
        PackedText { buf, ends, none }
    }

    /// The columns, borrowed from the buffer.
    pub fn get(&self) -> RowText<'_> {
        let field = |i: usize| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.buf[start..self.ends[i]]
        };
        let optional = |i: usize| (self.none & (1 << i) == 0).then(|| field(i));
        RowText {
            event_id: field(0),
            authorization_id: field(1),
            card: field(2),
            cardholder: field(3),
            currency: field(4),
            merchant_category: field(5),
            merchant_mcc: field(6),
            merchant_country: field(7),
            merchant_name: field(8),
            reason: field(9),
            rule: optional(RULE),
            ruleset: field(11),
            spend_json: field(12),
            shadow_rules: optional(SHADOW_RULES),
        }
    }
}

impl LoggedDecision {
    /// The text columns, borrowed.
    pub fn text(&self) -> RowText<'_> {
        RowText {
            event_id: &self.event_id,
            authorization_id: &self.authorization_id,
            card: &self.card,
            cardholder: &self.cardholder,
            currency: &self.currency,
            merchant_category: &self.merchant_category,
            merchant_mcc: &self.merchant_mcc,
            merchant_country: &self.merchant_country,
            merchant_name: &self.merchant_name,
            reason: &self.reason,
            rule: self.rule.as_deref(),
            ruleset: &self.ruleset,
            spend_json: &self.spend_json,
            shadow_rules: self.shadow_rules.as_deref(),
        }
    }
}

/// A read row written again (tests, benches, imports): its id is dropped, as
/// writing ignores it.
impl From<LoggedDecision> for DecisionRow {
    fn from(d: LoggedDecision) -> DecisionRow {
        DecisionRow {
            text: PackedText::new(&d.text()),
            amount: d.amount,
            approved: d.approved,
            approved_amount: d.approved_amount,
            latency_us: d.latency_us,
            decided_at: d.decided_at,
            event_json: d.event_json,
            format: d.format,
            seen: d.seen,
            blobs: d.blobs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> RowText<'static> {
        RowText {
            event_id: "evt_1",
            authorization_id: "iauth_1",
            card: "ic_1",
            cardholder: "ich_1",
            currency: "usd",
            merchant_category: "bakeries",
            merchant_mcc: "5462",
            merchant_country: "US",
            merchant_name: "BÄCKEREI \"ZUM\" KORN",
            reason: "approved",
            rule: None,
            ruleset: "v1",
            spend_json: "{}",
            shadow_rules: Some(r#"["big"]"#),
        }
    }

    #[test]
    fn packed_text_gives_back_every_column_as_given() {
        let t = text();
        assert_eq!(PackedText::new(&t).get(), t);
        let other = RowText {
            rule: Some("card.spending_limits"),
            shadow_rules: None,
            merchant_name: "",
            ..t
        };
        assert_eq!(PackedText::new(&other).get(), other);
    }

    #[test]
    fn packed_text_keeps_an_empty_column_apart_from_a_missing_one() {
        let t = RowText {
            rule: Some(""),
            shadow_rules: None,
            ..text()
        };
        let packed = PackedText::new(&t);
        let got = packed.get();
        assert_eq!(got.rule, Some(""));
        assert_eq!(got.shadow_rules, None);
    }

    #[test]
    fn packed_text_is_one_buffer_of_exactly_its_columns() {
        let t = text();
        let p = PackedText::new(&t);
        let len: usize = t.fields().iter().flatten().map(|f| f.len()).sum();
        assert_eq!(p.buf.len(), len);
        assert_eq!(p.buf.capacity(), len);
    }
}
