//! Issue 15 #8: a signed body that repeats a key in an object the parser reads is
//! refused with 400 `invalid_event` naming the key's path — never decided on the
//! first occurrence (what cardgate used to read) while Stripe and most other
//! parsers read the last. Against the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

mod common;

use common::{Server, base_config};
use serde_json::{Value, json};

/// The reference request with the key at `path` (slash-separated) written twice
/// in its object, the second time with `value`. `serde_json` cannot build
/// duplicate keys, so a stand-in key is renamed in the text.
fn with_twin(path: &str, value: Value) -> Vec<u8> {
    const STAND_IN: &str = "__cardgate_twin__";
    let mut e = common::request();
    let (parent, key) = path.rsplit_once('/').unwrap_or(("", path));
    let obj = if parent.is_empty() {
        &mut e
    } else {
        e.pointer_mut(&format!("/{parent}")).unwrap()
    };
    let obj = obj.as_object_mut().unwrap();
    assert!(obj.contains_key(key), "no {path}");
    obj.insert(STAND_IN.into(), value);
    serde_json::to_string(&e)
        .unwrap()
        .replace(&format!("\"{STAND_IN}\""), &format!("\"{key}\""))
        .into_bytes()
}

#[tokio::test]
async fn a_duplicated_key_the_decision_reads_is_a_400_naming_its_path() {
    let server = Server::start(&base_config(), &[]);
    server.ready().await;

    // The reference request is approved; with a second, larger amount before the
    // real one it must not be decided at all.
    let r = common::post_signed(
        &server,
        &serde_json::to_vec(&common::request()).unwrap(),
        &[common::SECRET],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["approved"], true);

    let amount = common::request()["data"]["object"]["pending_request"]["amount"].clone();
    // `"amount":` first occurs in data.object; the pending request's comes after.
    let text = serde_json::to_string(&common::request()).unwrap();
    let pr = text.find("\"pending_request\":{").unwrap() + "\"pending_request\":{".len();
    let body = format!("{}\"amount\":99999999,{}", &text[..pr], &text[pr..]);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["data"]["object"]["pending_request"]["amount"],
        amount,
        "serde_json keeps the last occurrence"
    );

    let cases = [
        (body.into_bytes(), "data.object.pending_request.amount"),
        (with_twin("id", json!("evt_twin")), "id"),
        (
            with_twin("data/object/card/metadata/cost_center", json!("finance")),
            "data.object.card.metadata.cost_center",
        ),
        (
            with_twin("data/object/merchant_data/category_code", json!("6011")),
            "data.object.merchant_data.category_code",
        ),
    ];
    for (body, path) in cases {
        let r = common::post_signed(&server, &body, &[common::SECRET]).await;
        assert_eq!(
            r.status,
            400,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = &r.json()["error"];
        assert_eq!(e["code"], "invalid_event", "{e}");
        assert_eq!(e["path"], json!(path), "{e}");
        assert_eq!(e["message"], json!(format!("{path}: duplicate key")), "{e}");
    }

    // Every key of an object the parser reads counts, read or not.
    let r = common::post_signed(
        &server,
        &with_twin("livemode", json!(true)),
        &[common::SECRET],
    )
    .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["path"], "livemode");
    // An object it never opens is not its business (`network_data` is opened
    // since the rules read it, issue 17).
    let r = common::post_signed(
        &server,
        &with_twin("data/object/card/wallets/apple_pay/eligible", json!(false)),
        &[common::SECRET],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["approved"], true);
}
