//! `Stripe-Signature` verification and signing, exactly as Stripe signs:
//! HMAC-SHA256 keyed with the whole `whsec_…` string (UTF-8, no decoding) over
//! `"{t}.{raw body}"`, lowercase hex in one or more `v1=` items. Other schemes (`v0`)
//! are ignored. Any configured secret matching any `v1` passes (secret rotation).
//! Then `|now - t|` must be within the tolerance: stricter than stripe-python (which
//! accepts any future `t`), because a real authorization request is never old or early.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// At most this many `v1` items are considered; Stripe sends one per active secret.
/// Bounds the work an attacker can make us do per request.
const MAX_SIGNATURES: usize = 8;

/// Why a signature was rejected. None of these carries a secret or a MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `Stripe-Signature` header.
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    /// The header is not `key=value` items separated by commas, or not text.
    #[error("malformed Stripe-Signature header")]
    Malformed,
    /// No `t=`, or several, or not a number.
    #[error("Stripe-Signature header needs exactly one numeric t= timestamp")]
    BadTimestamp,
    /// No well-formed `v1=` signature (a `v0` alone does not count).
    #[error("no v1 signature in Stripe-Signature header")]
    NoSignature,
    /// No `v1` matched any configured secret.
    #[error("no signature matches the payload")]
    Mismatch,
    /// The timestamp is further than the tolerance from now.
    #[error("timestamp is {age} s from now, outside the {tolerance} s tolerance")]
    OutsideTolerance {
        /// `now - t` in seconds (negative: in the future).
        age: i64,
        /// The configured tolerance.
        tolerance: u64,
    },
}

impl VerifyError {
    /// Short stable code for metric labels and JSON errors.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader => "signature_missing",
            VerifyError::Malformed => "signature_malformed",
            VerifyError::BadTimestamp => "signature_timestamp_invalid",
            VerifyError::NoSignature => "signature_missing_v1",
            VerifyError::Mismatch => "signature_mismatch",
            VerifyError::OutsideTolerance { .. } => "signature_expired",
        }
    }
}

/// The endpoint secrets, pre-keyed. Keying HMAC hashes the key pads once here, so a
/// request only clones a ready state per secret.
#[derive(Clone)]
pub struct Secrets {
    keyed: Vec<HmacSha256>,
}

impl std::fmt::Debug for Secrets {
    // Never print secret material, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} configured)", self.keyed.len())
    }
}

impl Secrets {
    /// Keys one HMAC per secret. Secrets are used verbatim, `whsec_` prefix included.
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Self {
        let keyed = secrets
            .iter()
            .filter_map(|s| HmacSha256::new_from_slice(s.as_ref().as_bytes()).ok())
            .collect();
        Secrets { keyed }
    }

    /// How many secrets are configured.
    pub fn len(&self) -> usize {
        self.keyed.len()
    }

    /// True when none are configured (every request then fails verification).
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty()
    }
}

/// A request body whose signature was verified. Only [`verify`] constructs it, so
/// nothing unverified can reach the parser.
#[derive(Debug)]
pub struct Verified {
    body: Vec<u8>,
    timestamp: i64,
}

impl Verified {
    /// The verified bytes, for parsing in place.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The signed `t=` value.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
}

struct Header<'h> {
    t: &'h [u8],
    timestamp: i64,
    v1: [[u8; 32]; MAX_SIGNATURES],
    n: usize,
}

fn parse_header(header: &[u8]) -> Result<Header<'_>, VerifyError> {
    let mut t = None;
    let mut h = Header {
        t: b"",
        timestamp: 0,
        v1: [[0; 32]; MAX_SIGNATURES],
        n: 0,
    };
    for item in header.split(|b| *b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() {
            continue;
        }
        let eq = item
            .iter()
            .position(|b| *b == b'=')
            .ok_or(VerifyError::Malformed)?;
        let (key, value) = (&item[..eq], &item[eq + 1..]);
        match key {
            b"t" => {
                let digits =
                    !value.is_empty() && value.len() <= 12 && value.iter().all(u8::is_ascii_digit);
                if t.is_some() || !digits {
                    return Err(VerifyError::BadTimestamp);
                }
                t = Some(value);
            }
            b"v1" if h.n < MAX_SIGNATURES => {
                // Entries that are not 64 hex digits are skipped, as stripe-go does.
                if let Some(sig) = hex32(value) {
                    h.v1[h.n] = sig;
                    h.n += 1;
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(VerifyError::BadTimestamp)?;
    h.timestamp = t.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
    h.t = t;
    if h.n == 0 {
        return Err(VerifyError::NoSignature);
    }
    Ok(h)
}

/// The value of each hex digit (either case), 0xFF for any other byte.
const HEX_DIGITS: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut i: u8 = 0;
    while i < 10 {
        t[(b'0' + i) as usize] = i;
        i += 1;
    }
    let mut i: u8 = 0;
    while i < 6 {
        t[(b'a' + i) as usize] = 10 + i;
        t[(b'A' + i) as usize] = 10 + i;
        i += 1;
    }
    t
};

/// `value` as 32 bytes if it is exactly 64 hex digits (either case, as the `hex`
/// crate reads them). A table look-up per digit: this runs for every `v1` item of
/// every webhook, where the crate's per-digit matching cost about 900 instructions.
fn hex32(value: &[u8]) -> Option<[u8; 32]> {
    if value.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(value.chunks_exact(2)) {
        let (hi, lo) = (
            HEX_DIGITS[usize::from(pair[0])],
            HEX_DIGITS[usize::from(pair[1])],
        );
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0F);
    }
    // Valid digits are below 16; 0xFF marks anything else.
    (bad < 16).then_some(out)
}

/// Verifies `header` over `body`; `now` is Unix seconds, `tolerance` seconds
/// (0 disables the time check, for replaying recorded events only).
pub fn verify(
    header: Option<&[u8]>,
    body: Vec<u8>,
    secrets: &Secrets,
    now: i64,
    tolerance: u64,
) -> Result<Verified, VerifyError> {
    let h = parse_header(header.ok_or(VerifyError::MissingHeader)?)?;
    let mut matched = subtle::Choice::from(0);
    for keyed in &secrets.keyed {
        let mut mac = keyed.clone();
        mac.update(h.t);
        mac.update(b".");
        mac.update(&body);
        let expected = mac.finalize().into_bytes();
        for sig in &h.v1[..h.n] {
            matched |= expected.as_slice().ct_eq(sig);
        }
    }
    if !bool::from(matched) {
        return Err(VerifyError::Mismatch);
    }
    let age = now.saturating_sub(h.timestamp);
    if tolerance > 0 && age.unsigned_abs() > tolerance {
        return Err(VerifyError::OutsideTolerance { age, tolerance });
    }
    Ok(Verified {
        body,
        timestamp: h.timestamp,
    })
}

/// The hex `v1` signature of `body` at `timestamp` under `secret`.
#[expect(
    clippy::expect_used,
    clippy::missing_panics_doc,
    reason = "HMAC takes keys of any length (longer ones are hashed), so keying cannot fail"
)]
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A whole `Stripe-Signature` value with one `v1` per secret, as Stripe sends
/// during a secret roll.
pub fn sign_header<S: AsRef<str>>(secrets: &[S], timestamp: i64, body: &[u8]) -> String {
    let mut out = format!("t={timestamp}");
    for s in secrets {
        out.push_str(",v1=");
        out.push_str(&signature(s.as_ref(), timestamp, body));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;
    const V1_HEADER: &str =
        "t=1700000000,v1=d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990";

    fn check(header: &str, body: &[u8], secrets: &[&str], now: i64) -> Result<i64, VerifyError> {
        verify(
            Some(header.as_bytes()),
            body.to_vec(),
            &Secrets::new(secrets),
            now,
            300,
        )
        .map(|v| v.timestamp())
    }

    #[test]
    fn vector_1() {
        assert_eq!(
            signature("whsec_test_secret", 1_700_000_000, V1_BODY),
            "d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990"
        );
        let ok = |now| check(V1_HEADER, V1_BODY, &["whsec_test_secret"], now);
        assert_eq!(ok(1_700_000_300), Ok(1_700_000_000));
        assert!(matches!(
            ok(1_700_000_301),
            Err(VerifyError::OutsideTolerance { age: 301, .. })
        ));
        assert!(matches!(
            ok(1_699_999_699),
            Err(VerifyError::OutsideTolerance { age: -301, .. })
        ));
        // Prefix wrongly stripped, trailing newline, wrong scheme.
        assert_eq!(
            check(V1_HEADER, V1_BODY, &["test_secret"], 1_700_000_000),
            Err(VerifyError::Mismatch)
        );
        let mut nl = V1_BODY.to_vec();
        nl.push(b'\n');
        assert_eq!(
            check(V1_HEADER, &nl, &["whsec_test_secret"], 1_700_000_000),
            Err(VerifyError::Mismatch)
        );
        let v0 = V1_HEADER.replace("v1=", "v0=");
        assert_eq!(
            check(&v0, V1_BODY, &["whsec_test_secret"], 1_700_000_000),
            Err(VerifyError::NoSignature)
        );
    }

    #[test]
    fn vector_2_secret_roll() {
        let body = hex::decode("7b0a2020226964223a20226576745f31526f6c6c696e67222c0a2020226f626a656374223a20226576656e74222c0a20202264617461223a207b226f626a656374223a207b226d65726368616e745f64617461223a207b226e616d65223a2022436166c3a9204dc3bc6e6368656e227d7d7d0a7d").unwrap();
        let header = "t=1735689600,v1=4e11a537f03a13f0e3f683dcbc44976b2b6f093207db6e40764dfb4da9d8eb8c,v1=f9ea9d1f000ca4c3bf3f871623042ec90a91821a9f3a15b34cedfdf735c292bd,v0=7c39b87b5c47609a3fc322e86f26d3c71095c3aaae23aeadd652eaa79f447989";
        let new = "whsec_NewSecretForRollingTest0002";
        let old = "whsec_OldSecretForRollingTest0001";
        let now = 1_735_689_600;
        assert!(check(header, &body, &[new], now).is_ok());
        assert!(check(header, &body, &[old], now).is_ok());
        assert!(check(header, &body, &[old, new], now).is_ok());
        assert_eq!(
            check(header, &body, &["whsec_SomeOtherSecret"], now),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            sign_header(&[new, old], 1_735_689_600, &body),
            header.rsplit_once(",v0=").unwrap().0
        );
    }

    #[test]
    fn malformed_headers() {
        let s = ["whsec_test_secret"];
        let now = 1_700_000_000;
        assert_eq!(
            verify(None, V1_BODY.to_vec(), &Secrets::new(&s), now, 300).unwrap_err(),
            VerifyError::MissingHeader
        );
        for (h, e) in [
            ("", VerifyError::BadTimestamp),
            ("garbage", VerifyError::Malformed),
            ("v1=abc", VerifyError::BadTimestamp),
            ("t=abc,v1=00", VerifyError::BadTimestamp),
            ("t=1,t=2,v1=00", VerifyError::BadTimestamp),
            ("t=1700000000", VerifyError::NoSignature),
            ("t=1700000000,v1=zz", VerifyError::NoSignature),
            ("t=1700000000,v1=", VerifyError::NoSignature),
        ] {
            assert_eq!(check(h, V1_BODY, &s, now), Err(e), "header {h:?}");
        }
        // Whitespace after commas is tolerated (stripe-ruby, stripe-dotnet).
        let spaced = V1_HEADER.replace(',', ", ");
        assert!(check(&spaced, V1_BODY, &s, now).is_ok());
    }

    #[test]
    fn hex32_reads_64_digits_of_either_case_as_the_hex_crate_does() {
        let lower = "d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990";
        let mut want = [0u8; 32];
        hex::decode_to_slice(lower, &mut want).unwrap();
        assert_eq!(hex32(lower.as_bytes()), Some(want));
        assert_eq!(hex32(lower.to_uppercase().as_bytes()), Some(want));
        for bad in ["g", "G", " ", "/", ":", "@", "`", "\u{e9}"] {
            let mut v = lower.to_string();
            v.replace_range(62.., bad);
            let v = if v.len() == 64 {
                v
            } else {
                format!("{}0", &v[..63])
            };
            assert_eq!(hex32(v.as_bytes()), None, "{v:?}");
        }
        assert_eq!(hex32(&lower.as_bytes()[..62]), None);
        assert_eq!(hex32(format!("{lower}00").as_bytes()), None);
    }
}
