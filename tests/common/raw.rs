//! Blocking HTTP/1.1 over a plain `TcpStream`, for tests that kill servers
//! mid-request (`kill -9`, a stopped database) and must see a dropped
//! connection as a value, not a client error; and the authorization payloads
//! those tests send. Shared by `ledger_http.rs` and `postgres_replicas.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::{Value, json};

/// The fixture events' card.
pub const CARD: &str = "ic_1SbsKNr3Lk8vT3cGAOiDXANR";

/// Unix seconds, for signatures and `created`.
pub fn now() -> i64 {
    cardgate::clock::Clock::system().now()
}

/// Status and JSON body of a whole `Connection: close` response.
pub fn parse_response(out: &[u8]) -> Option<(u16, Value)> {
    let text = std::str::from_utf8(out).ok()?;
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// `GET path`; `(0, Null)` when nothing answers.
pub fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, Value::Null);
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_response(&out).unwrap_or((0, Value::Null))
}

/// The whole `POST /webhooks/stripe` request for `body`, signed with `secret`.
pub fn signed(secret: &str, body: &[u8]) -> Vec<u8> {
    let sig = cardgate::stripe::sign_header(&[secret.to_string()], now(), body);
    let mut raw = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Stripe-Signature: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// Sends `event` signed with `secret`; `None` when the connection failed (the
/// server was killed).
pub fn post(addr: SocketAddr, secret: &str, event: &Value) -> Option<(u16, Value)> {
    let raw = signed(secret, &serde_json::to_vec(event).unwrap());
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(&raw).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    parse_response(&out)
}

/// An event from `tests/fixtures/events/`.
pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// An authorization request on the fixture card with a card-level daily limit.
pub fn auth_request(id: &str, amount: i64, daily_limit: i64, controllable: bool) -> Value {
    let mut e = fixture("issuing_authorization.request.json");
    e["id"] = json!(format!("evt_{id}"));
    let o = &mut e["data"]["object"];
    o["id"] = json!(id);
    o["created"] = json!(now());
    o["pending_request"]["amount"] = json!(amount);
    o["pending_request"]["merchant_amount"] = json!(amount);
    o["pending_request"]["is_amount_controllable"] = json!(controllable);
    o["card"]["spending_controls"]["spending_limits"] =
        json!([{"amount": daily_limit, "interval": "daily", "categories": null}]);
    o["card"]["spending_controls"]["spending_limits_currency"] = json!("usd");
    e
}

/// What a decision approved of `requested` (0 when declined).
pub fn approved_amount(resp: &Value, requested: i64) -> i64 {
    match resp["approved"].as_bool() {
        Some(true) => resp["amount"].as_i64().unwrap_or(requested),
        _ => 0,
    }
}

/// The card's daily total in `cardgate ledger show` output.
pub fn card_daily_total(show: &str) -> i64 {
    show.lines()
        .find(|l| l.trim_start().starts_with("daily"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("card=")))
        .map_or(0, |v| v.parse().unwrap())
}
