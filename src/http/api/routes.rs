//! The admin API's route table: every `(method, path, query parameters)` the
//! `/v1/` router accepts, and the query string it checks against it.
//!
//! *Why a table:* the router looks every request up here before dispatching it,
//! so a route or query parameter missing from the table cannot be served, and the
//! OpenAPI test (`tests/edge_openapi.rs`) checks `openapi.json` against this same
//! table: the document cannot silently fall behind the router.

use super::{ActionKind, Page, Result, bad, bad_param};

/// One route of the `/v1/` API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `POST` or `DELETE`.
    pub method: &'static str,
    /// The path as `openapi.json` writes it: `{name}` matches any one segment.
    pub path: &'static str,
    /// Every query parameter the route accepts; any other is refused (400).
    pub query: &'static [&'static str],
}

const fn route(method: &'static str, path: &'static str, query: &'static [&'static str]) -> Route {
    Route {
        method,
        path,
        query,
    }
}

/// Every route under `/v1/`. `POST /v1/payment_approvals` is answered by
/// `http::payments` and `GET /v1/openapi.json` before authentication, but they are
/// part of the API and of its document all the same.
pub const ROUTES: &[Route] = &[
    route("GET", "/v1/openapi.json", &[]),
    route("POST", "/v1/payment_approvals", &[]),
    route("GET", "/v1/api_keys", &[]),
    route("POST", "/v1/api_keys", &[]),
    route("POST", "/v1/api_keys/{id}/revoke", &[]),
    route("GET", "/v1/approval_rules", &["action", "active"]),
    route("POST", "/v1/approval_rules", &[]),
    route("GET", "/v1/approval_rules/{id}", &[]),
    route("POST", "/v1/approval_rules/{id}", &[]),
    route("DELETE", "/v1/approval_rules/{id}", &[]),
    route("POST", "/v1/approval_rules/{id}/activate", &[]),
    route("POST", "/v1/approval_rules/{id}/deactivate", &[]),
    route(
        "GET",
        "/v1/approval_requests",
        &["status", "action", "limit", "starting_after"],
    ),
    route("GET", "/v1/approval_requests/{id}", &[]),
    route("POST", "/v1/approval_requests/{id}/submit", &[]),
    route("POST", "/v1/approval_requests/{id}/approve", &[]),
    route("POST", "/v1/approval_requests/{id}/deny", &[]),
    route("POST", "/v1/approval_requests/{id}/cancel", &[]),
    route(
        "GET",
        "/v1/security_history",
        &[
            "type",
            "actor",
            "object",
            "since",
            "until",
            "limit",
            "starting_after",
        ],
    ),
    route("GET", "/v1/events", &["type", "limit", "starting_after"]),
    route("POST", "/v1/rulesets", &[]),
    route("GET", "/v1/rulesets/current", &[]),
    route("POST", "/v1/lists/{name}", &[]),
    route("GET", "/v1/control_overrides", &[]),
    route("POST", "/v1/control_overrides", &[]),
    route("GET", "/v1/authorization_allowances", &[]),
    route("POST", "/v1/authorization_allowances", &[]),
    // The decisions explorer and the review page (issue 18).
    route(
        "GET",
        "/v1/decisions",
        &[
            "authorization",
            "card",
            "cardholder",
            "reason",
            "rule",
            "since",
            "limit",
            "starting_after",
        ],
    ),
    route("GET", "/v1/decisions/{id}", &[]),
    route("GET", "/v1/approval_requests/{id}/review", &["days"]),
];

/// What the table says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// This route.
    Found(&'static Route),
    /// The path exists, with other methods (405).
    OtherMethod,
    /// No such path (404).
    Unknown,
}

impl Route {
    /// Whether the path segments after `/v1/` match this route's path.
    fn matches(&self, segs: &[&str]) -> bool {
        let pattern = self.path.trim_start_matches("/v1/").split('/');
        pattern.clone().count() == segs.len()
            && pattern
                .zip(segs)
                .all(|(p, s)| p == *s || (p.starts_with('{') && p.ends_with('}')))
    }
}

/// Looks `method` and the path segments after `/v1/` up in [`ROUTES`].
pub(super) fn find(method: &str, segs: &[&str]) -> Lookup {
    let mut path_known = false;
    for r in ROUTES.iter().filter(|r| r.matches(segs)) {
        if r.method == method {
            return Lookup::Found(r);
        }
        path_known = true;
    }
    if path_known {
        Lookup::OtherMethod
    } else {
        Lookup::Unknown
    }
}

/// Decoded query parameters.
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(q: &str) -> Result<Query> {
        let mut out = Vec::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.push((decode(k)?, decode(v)?));
        }
        Ok(Query(out))
    }

    pub(super) fn only(&self, allowed: &[&str]) -> Result<()> {
        for (k, _) in &self.0 {
            if !allowed.contains(&k.as_str()) {
                return Err(bad_param(k, format!("unknown query parameter {k:?}")));
            }
        }
        Ok(())
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn int(&self, key: &str) -> Result<Option<i64>> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| bad_param(key, format!("{key} must be an integer")))
            })
            .transpose()
    }

    pub(super) fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(bad_param(key, format!("{key} must be true or false"))),
        }
    }

    pub(super) fn action(&self) -> Result<Option<ActionKind>> {
        self.get("action")
            .map(|a| {
                ActionKind::parse(a)
                    .ok_or_else(|| bad_param("action", format!("unknown action {a:?}")))
            })
            .transpose()
    }

    pub(super) fn page(&self) -> Result<Page> {
        let limit = match self.int("limit")? {
            None => None,
            Some(n) if (1..=100).contains(&n) => u32::try_from(n).ok(),
            Some(_) => return Err(bad_param("limit", "limit must be between 1 and 100")),
        };
        Ok(Page {
            limit,
            starting_after: self.get("starting_after").map(str::to_string),
        })
    }
}

fn decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("invalid_query", "malformed %-escape in the query"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad("invalid_query", "query is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_matches_placeholders_and_tells_404_from_405() {
        let r = |m, p: &str| {
            let segs: Vec<&str> = p.split('/').collect();
            find(m, &segs)
        };
        assert!(matches!(r("GET", "approval_rules/apr_1"),
            Lookup::Found(x) if x.path == "/v1/approval_rules/{id}"));
        assert!(matches!(r("GET", "rulesets/current"),
            Lookup::Found(x) if x.path == "/v1/rulesets/current"));
        assert!(matches!(r("POST", "approval_requests/ar_1/approve"),
            Lookup::Found(x) if x.method == "POST"));
        assert_eq!(r("PUT", "approval_rules/apr_1"), Lookup::OtherMethod);
        assert_eq!(r("GET", "rulesets"), Lookup::OtherMethod);
        assert_eq!(r("GET", "approval_rules/apr_1/explode"), Lookup::Unknown);
        assert_eq!(r("GET", "nothing"), Lookup::Unknown);
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    (a.method, a.path) != (b.method, b.path),
                    "{} {} twice",
                    a.method,
                    a.path
                );
            }
        }
    }
}
