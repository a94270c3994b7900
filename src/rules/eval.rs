//! cardgate's own evaluator for compiled rule conditions.
//!
//! The compiler (`compile.rs`) turns each CEL `when` into a typed tree: one enum
//! per CEL type, so evaluation never inspects a dynamic value tag, field accesses
//! are resolved to an accessor at load time (no lookup by name), lists are
//! pre-built sets and regexes are compiled once. Evaluation borrows strings from
//! the context or the rule and allocates nothing.
//!
//! Runtime errors (division by zero, overflow, a missing metadata key, an
//! out-of-range conversion) are values: a rule whose condition errors does not
//! match. `&&` and `||` absorb an error when the other side decides the result,
//! as CEL specifies (`false && error` and `error && false` are both `false`).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use regex::Regex;

use super::schema::Schema;

/// Why a condition could not be evaluated; the rule then does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeError {
    /// Integer division or remainder by zero.
    DivisionByZero,
    /// Integer overflow (int or uint arithmetic, negation of the minimum int).
    Overflow,
    /// `card.metadata.<key>` when the card has no such key.
    NoSuchKey,
    /// A numeric conversion out of range (`uint(-1)`, `int(1e30)`).
    Conversion,
    /// `<`, `<=`, `>`, `>=` with a NaN operand: unordered, an error in the `cel`
    /// interpreter (equality with NaN is simply false).
    Unordered,
}

impl RuntimeError {
    /// Bounded label for the error metric.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeError::DivisionByZero => "division_by_zero",
            RuntimeError::Overflow => "overflow",
            RuntimeError::NoSuchKey => "no_such_key",
            RuntimeError::Conversion => "conversion",
            RuntimeError::Unordered => "unordered",
        }
    }
}

type R<T> = Result<T, RuntimeError>;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    #[inline]
    fn apply<T: PartialOrd + ?Sized>(self, a: &T, b: &T) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
        }
    }
}

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// FNV-1a: list entries are short strings and small integers, for which it beats
/// SipHash several times; lists come from the rules file, not from attackers, and a
/// lookup key (a merchant field) can at worst collide into a longer probe.
#[derive(Default, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvSet<T> = HashSet<T, BuildHasherDefault<Fnv>>;

/// Below this many entries a linear scan beats hashing the probe.
const SMALL_SET: usize = 8;

/// A pre-built set of strings (`lists.<name>` or a literal list).
#[derive(Debug, Clone)]
pub(crate) enum StrSet {
    Small(Box<[Box<str>]>),
    Hashed(FnvSet<Box<str>>),
}

impl StrSet {
    pub fn new(items: impl IntoIterator<Item = String>) -> Self {
        let mut v: Vec<Box<str>> = items.into_iter().map(String::into_boxed_str).collect();
        v.sort();
        v.dedup();
        if v.len() <= SMALL_SET {
            StrSet::Small(v.into_boxed_slice())
        } else {
            StrSet::Hashed(v.into_iter().collect())
        }
    }

    #[inline]
    pub fn contains(&self, s: &str) -> bool {
        match self {
            StrSet::Small(v) => v.iter().any(|x| &**x == s),
            StrSet::Hashed(h) => h.contains(s),
        }
    }

    /// Distinct entries.
    pub fn len(&self) -> usize {
        match self {
            StrSet::Small(v) => v.len(),
            StrSet::Hashed(h) => h.len(),
        }
    }

    /// The entries, in no particular order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            StrSet::Small(v) => Box::new(v.iter().map(|x| &**x)),
            StrSet::Hashed(h) => Box::new(h.iter().map(|x| &**x)),
        }
    }
}

/// A pre-built set of integers.
#[derive(Debug, Clone)]
pub(crate) enum IntSet {
    Small(Box<[i64]>),
    Hashed(FnvSet<i64>),
}

impl IntSet {
    pub fn new(items: impl IntoIterator<Item = i64>) -> Self {
        let mut v: Vec<i64> = items.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        if v.len() <= SMALL_SET {
            IntSet::Small(v.into_boxed_slice())
        } else {
            IntSet::Hashed(v.into_iter().collect())
        }
    }

    #[inline]
    pub fn contains(&self, i: i64) -> bool {
        match self {
            IntSet::Small(v) => v.contains(&i),
            IntSet::Hashed(h) => h.contains(&i),
        }
    }
}

/// A string-valued expression.
#[derive(Debug, Clone)]
pub(crate) enum Str<S: Schema> {
    Const(Box<str>),
    Field(S::StrField),
    /// `card.metadata.<key>` / `card.metadata["key"]`.
    Meta(Box<str>),
    Cond(Box<Bool<S>>, Box<Str<S>>, Box<Str<S>>),
}

impl<S: Schema> Str<S> {
    #[inline]
    pub fn eval<'c>(&'c self, ctx: &'c S::Ctx<'_>) -> R<&'c str> {
        match self {
            Str::Const(s) => Ok(s),
            Str::Field(f) => Ok(S::str(ctx, *f)),
            Str::Meta(k) => S::meta(ctx)
                .iter()
                .find(|(key, _)| *key == &**k)
                .map(|(_, v)| *v)
                .ok_or(RuntimeError::NoSuchKey),
            Str::Cond(c, a, b) => {
                if c.eval(ctx)? {
                    a.eval(ctx)
                } else {
                    b.eval(ctx)
                }
            }
        }
    }
}

/// An int-valued expression (CEL `int`, 64-bit signed, overflow is an error).
#[derive(Debug, Clone)]
pub(crate) enum Int<S: Schema> {
    Const(i64),
    Field(S::IntField),
    Neg(Box<Int<S>>),
    Bin(Arith, Box<Int<S>>, Box<Int<S>>),
    Cond(Box<Bool<S>>, Box<Int<S>>, Box<Int<S>>),
    /// `size(string)`: Unicode code points, as CEL counts.
    SizeStr(Box<Str<S>>),
    /// `size(card.metadata)`.
    MetaLen,
    /// `size(line_items)`.
    ItemCount,
    FromUint(Box<Uint<S>>),
    FromDouble(Box<Double<S>>),
}

impl<S: Schema> Int<S> {
    pub fn eval(&self, ctx: &S::Ctx<'_>) -> R<i64> {
        match self {
            Int::Const(i) => Ok(*i),
            Int::Field(f) => Ok(S::int(ctx, *f)),
            Int::Neg(a) => a.eval(ctx)?.checked_neg().ok_or(RuntimeError::Overflow),
            Int::Bin(op, a, b) => {
                let (a, b) = (a.eval(ctx)?, b.eval(ctx)?);
                match op {
                    Arith::Add => a.checked_add(b).ok_or(RuntimeError::Overflow),
                    Arith::Sub => a.checked_sub(b).ok_or(RuntimeError::Overflow),
                    Arith::Mul => a.checked_mul(b).ok_or(RuntimeError::Overflow),
                    Arith::Div | Arith::Rem if b == 0 => Err(RuntimeError::DivisionByZero),
                    Arith::Div => a.checked_div(b).ok_or(RuntimeError::Overflow),
                    Arith::Rem => a.checked_rem(b).ok_or(RuntimeError::Overflow),
                }
            }
            Int::Cond(c, a, b) => {
                if c.eval(ctx)? {
                    a.eval(ctx)
                } else {
                    b.eval(ctx)
                }
            }
            Int::SizeStr(s) => Ok(len_i64(s.eval(ctx)?.chars().count())),
            Int::MetaLen => Ok(len_i64(S::meta(ctx).len())),
            Int::ItemCount => Ok(len_i64(S::items(ctx))),
            Int::FromUint(u) => i64::try_from(u.eval(ctx)?).map_err(|_| RuntimeError::Conversion),
            Int::FromDouble(d) => double_to_int(d.eval(ctx)?),
        }
    }
}

/// A length or count as CEL's `int`.
#[expect(
    clippy::cast_possible_wrap,
    reason = "a length or count is at most isize::MAX, which fits i64"
)]
#[inline]
fn len_i64(n: usize) -> i64 {
    n as i64
}

/// CEL `int(double)`: truncates toward zero; NaN and values outside the open range
/// (-2^63, 2^63) are errors. -2^63 itself is refused too, as cel-go and the `cel`
/// crate do (the bounds are exclusive on both sides).
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "the bounds round to ±2^63 on purpose (see above); the cast truncates, as CEL defines, a value checked in range"
)]
fn double_to_int(d: f64) -> R<i64> {
    if !(d > i64::MIN as f64 && d < i64::MAX as f64) {
        return Err(RuntimeError::Conversion);
    }
    Ok(d as i64)
}

/// CEL `uint(double)`: truncates; NaN, negative and too-large values are errors.
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the bound rounds to 2^64 on purpose (see below); the cast truncates, as CEL defines, a value checked in range"
)]
fn double_to_uint(d: f64) -> R<u64> {
    // `u64::MAX as f64` rounds up to 2^64, the first value out of range.
    if !(d >= 0.0 && d < u64::MAX as f64) {
        return Err(RuntimeError::Conversion);
    }
    Ok(d as u64)
}

/// A uint-valued expression.
#[derive(Debug, Clone)]
pub(crate) enum Uint<S: Schema> {
    Const(u64),
    Bin(Arith, Box<Uint<S>>, Box<Uint<S>>),
    Cond(Box<Bool<S>>, Box<Uint<S>>, Box<Uint<S>>),
    FromInt(Box<Int<S>>),
    FromDouble(Box<Double<S>>),
}

impl<S: Schema> Uint<S> {
    pub fn eval(&self, ctx: &S::Ctx<'_>) -> R<u64> {
        match self {
            Uint::Const(u) => Ok(*u),
            Uint::Bin(op, a, b) => {
                let (a, b) = (a.eval(ctx)?, b.eval(ctx)?);
                match op {
                    Arith::Add => a.checked_add(b).ok_or(RuntimeError::Overflow),
                    Arith::Sub => a.checked_sub(b).ok_or(RuntimeError::Overflow),
                    Arith::Mul => a.checked_mul(b).ok_or(RuntimeError::Overflow),
                    Arith::Div => a.checked_div(b).ok_or(RuntimeError::DivisionByZero),
                    Arith::Rem => a.checked_rem(b).ok_or(RuntimeError::DivisionByZero),
                }
            }
            Uint::Cond(c, a, b) => {
                if c.eval(ctx)? {
                    a.eval(ctx)
                } else {
                    b.eval(ctx)
                }
            }
            Uint::FromInt(i) => u64::try_from(i.eval(ctx)?).map_err(|_| RuntimeError::Conversion),
            Uint::FromDouble(d) => double_to_uint(d.eval(ctx)?),
        }
    }
}

/// A double-valued expression (IEEE 754: division by zero gives an infinity).
#[derive(Debug, Clone)]
pub(crate) enum Double<S: Schema> {
    Const(f64),
    Field(S::DoubleField),
    Neg(Box<Double<S>>),
    Bin(Arith, Box<Double<S>>, Box<Double<S>>),
    Cond(Box<Bool<S>>, Box<Double<S>>, Box<Double<S>>),
    FromInt(Box<Int<S>>),
    FromUint(Box<Uint<S>>),
}

impl<S: Schema> Double<S> {
    #[expect(
        clippy::cast_precision_loss,
        reason = "CEL's double(int) and double(uint) round to the nearest double by definition"
    )]
    pub fn eval(&self, ctx: &S::Ctx<'_>) -> R<f64> {
        match self {
            Double::Const(d) => Ok(*d),
            Double::Field(f) => Ok(S::double(ctx, *f)),
            Double::Neg(a) => Ok(-a.eval(ctx)?),
            Double::Bin(op, a, b) => {
                let (a, b) = (a.eval(ctx)?, b.eval(ctx)?);
                Ok(match op {
                    Arith::Add => a + b,
                    Arith::Sub => a - b,
                    Arith::Mul => a * b,
                    Arith::Div => a / b,
                    // The compiler rejects `%` on doubles, as CEL has no such overload.
                    Arith::Rem => a % b,
                })
            }
            Double::Cond(c, a, b) => {
                if c.eval(ctx)? {
                    a.eval(ctx)
                } else {
                    b.eval(ctx)
                }
            }
            Double::FromInt(i) => Ok(i.eval(ctx)? as f64),
            Double::FromUint(u) => Ok(u.eval(ctx)? as f64),
        }
    }
}

/// An exact decimal, as Stripe's decimal strings (`fuel.quantity_decimal`) are:
/// the value times 10^18 in an `i128`, so `"0.1" + "0.2" == "0.3"` would hold
/// and no comparison goes through a binary fraction. 18 fractional digits cover
/// Stripe's (at most 12); the integer part may have up to 20 digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Decimal(i128);

impl Decimal {
    const SCALE: u32 = 18;

    /// Parses `[-+]digits[.digits]`; `None` for anything else or out of range.
    pub fn parse(s: &str) -> Option<Self> {
        let (neg, digits) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if (int.is_empty() && frac.is_empty())
            || int.len() > 20
            || frac.len() > Self::SCALE as usize
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let mut v: i128 = 0;
        for b in int.bytes() {
            v = v * 10 + i128::from(b - b'0');
        }
        for i in 0..Self::SCALE as usize {
            let d = frac.as_bytes().get(i).map_or(0, |b| b - b'0');
            v = v * 10 + i128::from(d);
        }
        Some(Decimal(if neg { -v } else { v }))
    }

    /// An int literal.
    pub fn from_int(i: i64) -> Self {
        Decimal(i128::from(i) * 10i128.pow(Self::SCALE))
    }

    /// A double literal, read as the shortest decimal that round-trips to it
    /// (what was written: `75.1` is 75.1, not the binary fraction nearest it).
    pub fn from_double(d: f64) -> Option<Self> {
        if !d.is_finite() {
            return None;
        }
        Decimal::parse(&format!("{d}"))
    }
}

/// A decimal-valued expression: a decimal-string field or a constant.
#[derive(Debug, Clone)]
pub(crate) enum Dec<S: Schema> {
    Const(Decimal),
    /// A decimal string field; absent reads as 0, malformed is a
    /// [`RuntimeError::Conversion`].
    Field(S::StrField),
}

impl<S: Schema> Dec<S> {
    #[inline]
    pub fn eval(&self, ctx: &S::Ctx<'_>) -> R<Decimal> {
        match self {
            Dec::Const(d) => Ok(*d),
            Dec::Field(f) => match S::str(ctx, *f) {
                "" => Ok(Decimal(0)),
                s => Decimal::parse(s).ok_or(RuntimeError::Conversion),
            },
        }
    }
}

/// A bool-valued expression: what every `when` compiles to.
#[derive(Debug, Clone)]
pub(crate) enum Bool<S: Schema> {
    Const(bool),
    Field(S::BoolField),
    Not(Box<Bool<S>>),
    And(Box<Bool<S>>, Box<Bool<S>>),
    Or(Box<Bool<S>>, Box<Bool<S>>),
    Cond(Box<Bool<S>>, Box<Bool<S>>, Box<Bool<S>>),
    CmpBools(Cmp, Box<Bool<S>>, Box<Bool<S>>),
    CmpInt(Cmp, Box<Int<S>>, Box<Int<S>>),
    CmpUint(Cmp, Box<Uint<S>>, Box<Uint<S>>),
    CmpDouble(Cmp, Box<Double<S>>, Box<Double<S>>),
    CmpStr(Cmp, Box<Str<S>>, Box<Str<S>>),
    CmpDec(Cmp, Box<Dec<S>>, Box<Dec<S>>),
    /// `has(field)`: the payload carried it.
    Has(super::schema::Field<S>),
    StrIn(Box<Str<S>>, std::sync::Arc<StrSet>),
    IntIn(Box<Int<S>>, std::sync::Arc<IntSet>),
    StartsWith(Box<Str<S>>, Box<Str<S>>),
    EndsWith(Box<Str<S>>, Box<Str<S>>),
    Contains(Box<Str<S>>, Box<Str<S>>),
    Matches(Box<Str<S>>, Regex),
    /// `"key" in card.metadata` / `has(card.metadata.key)`.
    HasMeta(Box<Str<S>>),
    /// `items.exists(i, body)`: the body reads the current item.
    Exists(Box<Bool<S>>),
    /// `items.all(i, body)`.
    All(Box<Bool<S>>),
    /// `items.exists_one(i, body)`.
    ExistsOne(Box<Bool<S>>),
}

impl<S: Schema> Bool<S> {
    pub fn eval(&self, ctx: &S::Ctx<'_>) -> R<bool> {
        match self {
            Bool::Const(b) => Ok(*b),
            Bool::Field(f) => Ok(S::bool(ctx, *f)),
            Bool::Not(a) => Ok(!a.eval(ctx)?),
            Bool::And(a, b) => match a.eval(ctx) {
                Ok(false) => Ok(false),
                Ok(true) => b.eval(ctx),
                Err(e) => match b.eval(ctx) {
                    Ok(false) => Ok(false),
                    _ => Err(e),
                },
            },
            Bool::Or(a, b) => match a.eval(ctx) {
                Ok(true) => Ok(true),
                Ok(false) => b.eval(ctx),
                Err(e) => match b.eval(ctx) {
                    Ok(true) => Ok(true),
                    _ => Err(e),
                },
            },
            Bool::Cond(c, a, b) => {
                if c.eval(ctx)? {
                    a.eval(ctx)
                } else {
                    b.eval(ctx)
                }
            }
            Bool::CmpBools(op, a, b) => Ok(op.apply(&a.eval(ctx)?, &b.eval(ctx)?)),
            Bool::CmpInt(op, a, b) => Ok(op.apply(&a.eval(ctx)?, &b.eval(ctx)?)),
            Bool::CmpUint(op, a, b) => Ok(op.apply(&a.eval(ctx)?, &b.eval(ctx)?)),
            Bool::CmpDouble(op, a, b) => {
                let (a, b) = (a.eval(ctx)?, b.eval(ctx)?);
                if (a.is_nan() || b.is_nan()) && !matches!(op, Cmp::Eq | Cmp::Ne) {
                    return Err(RuntimeError::Unordered);
                }
                Ok(op.apply(&a, &b))
            }
            Bool::CmpStr(op, a, b) => Ok(op.apply(a.eval(ctx)?, b.eval(ctx)?)),
            Bool::CmpDec(op, a, b) => Ok(op.apply(&a.eval(ctx)?, &b.eval(ctx)?)),
            Bool::Has(f) => Ok(S::has(ctx, *f)),
            Bool::StrIn(s, set) => Ok(set.contains(s.eval(ctx)?)),
            Bool::IntIn(i, set) => Ok(set.contains(i.eval(ctx)?)),
            Bool::StartsWith(s, p) => Ok(s.eval(ctx)?.starts_with(p.eval(ctx)?)),
            Bool::EndsWith(s, p) => Ok(s.eval(ctx)?.ends_with(p.eval(ctx)?)),
            Bool::Contains(s, p) => Ok(s.eval(ctx)?.contains(p.eval(ctx)?)),
            Bool::Matches(s, re) => Ok(re.is_match(s.eval(ctx)?)),
            Bool::HasMeta(k) => {
                let k = k.eval(ctx)?;
                Ok(S::meta(ctx).iter().any(|(key, _)| *key == k))
            }
            // As CEL's macros expand: `exists` is true if any item is, even when
            // another errs; else an error if one erred. `all` mirrors it.
            // `exists_one` counts strictly: any error is the result.
            Bool::Exists(body) => {
                let mut err = None;
                for i in 0..S::items(ctx) {
                    S::set_item(ctx, i);
                    match body.eval(ctx) {
                        Ok(true) => return Ok(true),
                        Ok(false) => {}
                        Err(e) => err = Some(e),
                    }
                }
                err.map_or(Ok(false), Err)
            }
            Bool::All(body) => {
                let mut err = None;
                for i in 0..S::items(ctx) {
                    S::set_item(ctx, i);
                    match body.eval(ctx) {
                        Ok(false) => return Ok(false),
                        Ok(true) => {}
                        Err(e) => err = Some(e),
                    }
                }
                err.map_or(Ok(true), Err)
            }
            Bool::ExistsOne(body) => {
                let mut n = 0;
                for i in 0..S::items(ctx) {
                    S::set_item(ctx, i);
                    if body.eval(ctx)? {
                        n += 1;
                    }
                }
                Ok(n == 1)
            }
        }
    }
}

#[cfg(test)]
mod decimal_tests {
    use super::Decimal;

    #[test]
    fn decimals_compare_exactly() {
        let d = |s| Decimal::parse(s).unwrap();
        assert!(d("12.345") > d("12.344999999999999999"));
        assert_eq!(d("1.50"), d("1.5"));
        assert_eq!(d("-0.25"), Decimal::from_double(-0.25).unwrap());
        assert_eq!(Decimal::from_double(75.1), Some(d("75.1")));
        assert_eq!(Decimal::from_int(3), d("3"));
        assert_eq!(d(".5"), d("0.5"));
        for bad in ["", "-", ".", "1e3", "1.2.3", "abc", "1.0000000000000000001"] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
        assert_eq!(Decimal::from_double(f64::NAN), None);
        assert_eq!(Decimal::from_double(1e300), None);
    }
}
