//! The authenticated admin API under `/v1/`: JSON in and out,
//! `Authorization: Bearer <key>`, a role check on every endpoint, and the
//! approvals service behind it (`crate::approvals`). This file maps HTTP to that
//! service, its typed answers to JSON (each object's API form, `approvals::tagged`)
//! and its errors to status codes; it holds no state of its own.
//!
//! Errors are `{"error":{"code","type","message"[,"param"]}}`: 400 bad input
//! (unknown fields are named in `param`), 401 no/unknown/revoked/expired key, 403 wrong
//! role, `approval_required` or `action_blocked`, 404, 409 forbidden transition,
//! 413 body too large, 422 rule set that does not compile. Never a 5xx for bad input.

mod bodies;
mod decisions;
mod review;
mod routes;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::respond::json_bytes;
use super::{AppState, Body};
use crate::approvals::{
    Action, ActionKind, Actor, ApiObject, Approvals, AuthError, Error, EventRecord, HistoryFilter,
    LiveRules, OverrideSpec, Page, RequestFilter, Role, RuleInput, RuleUpdate, Status, tagged,
};
use crate::rules::RuleSet;
#[doc(hidden)]
pub use bodies::{FUZZ_BODIES, fuzz_decode};
use routes::{Lookup, Query};
pub use routes::{ROUTES, Route};

/// Largest JSON body on the admin API.
pub const JSON_LIMIT: usize = 64 * 1024;
/// How long an admin request body may take to arrive: without a bound, a client
/// that sends headers and then trickles (or never sends) its body would hold one of
/// the server's connection slots, which the webhook shares.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The OpenAPI 3 document describing this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// An error answer.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    kind: &'static str,
    message: String,
    extra: Option<(&'static str, Value)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let kind = match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        };
        ApiError {
            status,
            code,
            kind,
            message: message.into(),
            extra: None,
        }
    }

    fn into_response(self) -> Response<Body> {
        let mut err = json!({"code": self.code, "type": self.kind, "message": self.message});
        if let Some((k, v)) = self.extra {
            err[k] = v;
        }
        json_bytes(self.status, Bytes::from(json!({"error": err}).to_string()))
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::ApprovalRequired {
                request,
                pending_key,
            } => {
                let mut body = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "approval_required",
                    format!(
                        "this action requires approval; submit it with POST /v1/approval_requests/{}/submit and a reason",
                        request.id
                    ),
                );
                body.kind = "invalid_request_error";
                // The short form; the requester reads the rest by id.
                let mut short = json!({
                    "id": request.id,
                    "object": "approval_request",
                    "action": request.action.kind().as_str(),
                    "status": request.status.as_str(),
                    "expires_at": request.expires_at,
                });
                if let Some(k) = pending_key {
                    short["pending_api_key"] = json!({"id": k.id, "secret": k.secret,
                        "note": "usable only once the approval request succeeds"});
                }
                body.extra = Some(("approval_request", short));
                body
            }
            Error::Blocked { action, rule } => {
                let mut body = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "action_blocked",
                    format!("{} is blocked by approval rule {rule}", action.as_str()),
                );
                body.kind = "invalid_request_error";
                body
            }
            Error::NotFound { what, id } => ApiError::new(
                StatusCode::NOT_FOUND,
                "resource_missing",
                format!("no {what} with id {id:?}"),
            ),
            Error::Conflict { code, message } => ApiError::new(StatusCode::CONFLICT, code, message),
            Error::Forbidden { code, message } => {
                ApiError::new(StatusCode::FORBIDDEN, code, message)
            }
            Error::Invalid { message } => bad("parameter_invalid", message),
            Error::InvalidRules(e) => {
                let errors: Vec<_> = e
                    .errors
                    .iter()
                    .map(|e| json!({"rule": e.rule, "line": e.line, "col": e.col, "message": e.kind.to_string()}))
                    .collect();
                let mut body = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_rules",
                    e.to_string(),
                );
                body.extra = Some(("errors", Value::Array(errors)));
                body
            }
            Error::Storage(m) => {
                tracing::error!(error = %m, "approvals storage failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage",
                    "the approvals database failed; nothing was changed",
                )
            }
        }
    }
}

type Result<T> = std::result::Result<T, ApiError>;

/// The live rule set an approved publish installs into is the server's.
impl LiveRules for AppState {
    fn live(&self) -> &arc_swap::ArcSwap<RuleSet> {
        self.rules()
    }
    fn published(&self) -> Option<&crate::rules::published::Rulesets> {
        self.rulesets.as_deref()
    }
}

/// An object's API form.
fn shown<T: ApiObject>(value: &T) -> Value {
    serde_json::to_value(tagged(value)).unwrap_or_default()
}

fn all_shown<T: ApiObject>(values: &[T]) -> Vec<Value> {
    values.iter().map(shown).collect()
}

/// A stored event as delivered, with the state of its deliveries.
fn event_shown(e: &EventRecord) -> Value {
    let mut v: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
    v["delivery"] = json!({
        "delivered": e.delivered,
        "pending": e.pending,
        "failed": e.failed,
    });
    v
}

/// Handles every `/v1/` request.
pub async fn handle(state: &Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    match dispatch(state, req).await {
        Ok((status, body)) => json_bytes(status, Bytes::from(body.to_string())),
        Err(e) => e.into_response(),
    }
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "route arms answer `ok(..)` beside `Err(..)`"
)]
fn ok(v: Value) -> Result<(StatusCode, Value)> {
    Ok((StatusCode::OK, v))
}

fn list(data: &[Value], more: bool, url: &str) -> Value {
    json!({"object": "list", "url": url, "has_more": more, "data": data})
}

#[expect(
    clippy::too_many_lines,
    reason = "the admin route table: one arm per (method, path)"
)]
async fn dispatch(state: &Arc<AppState>, req: Request<Incoming>) -> Result<(StatusCode, Value)> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/v1/openapi.json" {
        if method != Method::GET {
            return Err(not_allowed(&method, &path));
        }
        let doc: Value = serde_json::from_str(OPENAPI).unwrap_or(Value::Null);
        return ok(doc);
    }
    let Some(approvals) = state.approvals().cloned() else {
        return Err(no_store());
    };
    let actor = authenticate(&approvals, req.headers()).await?;
    if actor.role == Role::Payments {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "role payments may only call POST /v1/payment_approvals",
        ));
    }
    let query = Query::parse(req.uri().query().unwrap_or(""))?;
    let segs: Vec<&str> = path
        .trim_start_matches("/v1/")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let segs: Vec<String> = segs.into_iter().map(String::from).collect();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = &method;
    // The table decides what exists and which query parameters it takes; the
    // match below only says what each route does.
    match routes::find(m.as_str(), &seg) {
        Lookup::Found(route) => query.only(route.query)?,
        Lookup::OtherMethod => return Err(not_allowed(m, &path)),
        Lookup::Unknown => return Err(no_route(&path)),
    }
    let st = state.clone();
    let a = approvals.clone();

    match (m, seg.as_slice()) {
        // --- keys ---
        (&Method::GET, ["api_keys"]) => {
            need(&actor, &[Role::Admin])?;
            let keys = a.list_keys().await?;
            ok(list(&all_shown(&keys), false, "/v1/api_keys"))
        }
        (&Method::POST, ["api_keys"]) => {
            need(&actor, &[Role::Admin])?;
            let b: bodies::NewKey = json_body(req).await?;
            perform(st, actor, b.into_action()).await
        }
        (&Method::POST, ["api_keys", id, "revoke"]) => {
            need(&actor, &[Role::Admin])?;
            empty_body(req).await?;
            perform(st, actor, Action::RevokeApiKey { id: id.to_string() }).await
        }
        // --- approval rules ---
        (&Method::GET, ["approval_rules"]) => {
            let action = query.action()?;
            let active = query.bool("active")?;
            let rules = a.list_rules(action, active).await?;
            ok(list(&all_shown(&rules), false, "/v1/approval_rules"))
        }
        (&Method::POST, ["approval_rules"]) => {
            need(&actor, &[Role::Admin])?;
            let b: RuleInput = json_body(req).await?;
            perform(st, actor, Action::CreateApprovalRule(b)).await
        }
        (&Method::GET, ["approval_rules", id]) => ok(shown(&a.get_rule(id).await?)),
        (&Method::POST, ["approval_rules", id]) => {
            need(&actor, &[Role::Admin])?;
            let changes: RuleUpdate = json_body(req).await?;
            perform(
                st,
                actor,
                Action::UpdateApprovalRule {
                    id: id.to_string(),
                    changes,
                },
            )
            .await
        }
        (&Method::DELETE, ["approval_rules", id]) => {
            need(&actor, &[Role::Admin])?;
            perform(st, actor, Action::DeleteApprovalRule { id: id.to_string() }).await
        }
        (&Method::POST, ["approval_rules", id, verb @ ("activate" | "deactivate")]) => {
            need(&actor, &[Role::Admin])?;
            empty_body(req).await?;
            let id = id.to_string();
            let action = if *verb == "activate" {
                Action::ActivateApprovalRule { id }
            } else {
                Action::DeactivateApprovalRule { id }
            };
            perform(st, actor, action).await
        }
        // --- approval requests ---
        (&Method::GET, ["approval_requests"]) => {
            let status = match query.get("status") {
                None => None,
                Some(s) => Some(Status::parse(s).ok_or_else(|| {
                    bad_param(
                        "status",
                        format!(
                            "status {s:?} is not one of {}",
                            Status::ALL.map(Status::as_str).join(", ")
                        ),
                    )
                })?),
            };
            let filter = RequestFilter {
                status,
                action: query.action()?,
            };
            let page = query.page()?;
            let (data, more) = a.list_requests(filter, &page).await?;
            ok(list(&all_shown(&data), more, "/v1/approval_requests"))
        }
        (&Method::GET, ["approval_requests", id]) => ok(shown(&a.get_request(id).await?)),
        (
            &Method::POST,
            [
                "approval_requests",
                id,
                verb @ ("submit" | "approve" | "deny" | "cancel"),
            ],
        ) => {
            if matches!(*verb, "approve" | "deny") {
                need(&actor, &[Role::Admin, Role::Reviewer])?;
            }
            let b: bodies::Reason = if *verb == "cancel" {
                empty_body(req).await?;
                bodies::Reason::default()
            } else {
                optional_json_body(req).await?
            };
            if let Some(r) = &b.reason
                && r.len() > crate::approvals::action::MAX_TEXT
            {
                return Err(bad_param("reason", "reason is over 1000 bytes"));
            }
            let reason = b.reason.as_deref();
            let out = match *verb {
                "submit" => a.submit(&actor, id, reason).await?,
                "approve" => {
                    let rules: Arc<dyn LiveRules> = st;
                    a.approve(&actor, id, reason, &rules).await?
                }
                "deny" => a.deny(&actor, id, reason).await?,
                _ => a.cancel(&actor, id).await?,
            };
            ok(shown(&out))
        }
        // --- history and events ---
        (&Method::GET, ["security_history"]) => {
            let f = HistoryFilter {
                kind: query.get("type").map(str::to_string),
                actor: query.get("actor").map(str::to_string),
                object: query.get("object").map(str::to_string),
                since: query.int("since")?,
                until: query.int("until")?,
            };
            let page = query.page()?;
            let (data, more) = a.history(&f, &page).await?;
            ok(list(&all_shown(&data), more, "/v1/security_history"))
        }
        (&Method::GET, ["events"]) => {
            let page = query.page()?;
            let (data, more) = a.events(query.get("type"), &page).await?;
            ok(list(
                &data.iter().map(event_shown).collect::<Vec<_>>(),
                more,
                "/v1/events",
            ))
        }
        // --- sensitive actions on the decision path ---
        (&Method::POST, ["rulesets"]) => {
            need(&actor, &[Role::Admin, Role::Agent])?;
            let source = text_body(req).await?;
            perform(st, actor, Action::PublishRuleset { source }).await
        }
        (&Method::GET, ["rulesets", "current"]) => {
            let set = state.rules().load();
            ok(
                json!({"object": "ruleset", "version": set.version(), "rules": set.len(),
                "source": set.source()}),
            )
        }
        (&Method::POST, ["lists", name]) => {
            need(&actor, &[Role::Admin, Role::Agent])?;
            let b: bodies::ListValues = json_body(req).await?;
            perform(
                st,
                actor,
                Action::UpdateList {
                    name: name.to_string(),
                    values: b.values,
                },
            )
            .await
        }
        (&Method::GET, ["control_overrides"]) => {
            let data = a.list_overrides().await?;
            ok(list(&all_shown(&data), false, "/v1/control_overrides"))
        }
        (&Method::POST, ["control_overrides"]) => {
            need(&actor, &[Role::Admin, Role::Agent])?;
            let b: OverrideSpec = json_body(req).await?;
            perform(st, actor, Action::SetControlOverride(b)).await
        }
        (&Method::GET, ["authorization_allowances"]) => {
            let data = a.list_allowances().await?;
            ok(list(
                &all_shown(&data),
                false,
                "/v1/authorization_allowances",
            ))
        }
        (&Method::POST, ["authorization_allowances"]) => {
            need(&actor, &[Role::Admin, Role::Agent])?;
            let b: bodies::NewAllowance = json_body(req).await?;
            perform(st, actor, Action::AuthorizationAllowance(b.into_spec())).await
        }
        // --- the decision log: explorer and review (read-only) ---
        (&Method::GET, ["decisions"]) => decisions::search(state, &actor, &query).await,
        (&Method::GET, ["decisions", id]) => decisions::show(state, &actor, id).await,
        (&Method::GET, ["approval_requests", id, "review"]) => {
            review::review(state, &actor, &a, id, &query).await
        }
        _ => Err(no_route(&path)),
    }
}

fn no_route(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {path}"),
    )
}

fn not_allowed(m: &Method, path: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{m} is not allowed on {path}"),
    )
}

fn bad_param(param: &str, message: impl Into<String>) -> ApiError {
    let mut e = bad("parameter_invalid", message);
    e.extra = Some(("param", json!(param)));
    e
}

async fn perform(st: Arc<AppState>, actor: Actor, action: Action) -> Result<(StatusCode, Value)> {
    let Some(a) = st.approvals().cloned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "approvals_unavailable",
            "no store",
        ));
    };
    let rules: Arc<dyn LiveRules> = st;
    let out = a.perform(&actor, action, &rules).await?;
    ok(serde_json::to_value(&out).unwrap_or_default())
}

/// Authenticates a call the `/v1/` dispatch does not see (`POST
/// /v1/payment_approvals`) and checks its role is one of `roles`; the error is the
/// answer to send, in the admin API's shape (401, 403, or 503 without a store).
pub(super) async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    roles: &[Role],
) -> std::result::Result<Actor, Response<Body>> {
    let Some(approvals) = state.approvals() else {
        return Err(no_store().into_response());
    };
    let actor = authenticate(approvals, headers)
        .await
        .map_err(ApiError::into_response)?;
    need(&actor, roles).map_err(ApiError::into_response)?;
    Ok(actor)
}

fn no_store() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "approvals_unavailable",
        "the admin API needs the store ([store] enabled = true)",
    )
}

async fn authenticate(a: &Arc<Approvals>, headers: &HeaderMap) -> Result<Actor> {
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(h) = header else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "send Authorization: Bearer <API key>",
        ));
    };
    let secret = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .unwrap_or("")
        .trim();
    match a.authenticate(secret).await {
        Ok(actor) => Ok(actor),
        Err(AuthError::Revoked) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "api_key_revoked",
            "this API key was revoked",
        )),
        Err(AuthError::Expired) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "api_key_expired",
            "this API key has expired",
        )),
        Err(AuthError::Unknown) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "unknown API key",
        )),
        Err(AuthError::Storage) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            "the key store could not be read",
        )),
    }
}

fn need(actor: &Actor, roles: &[Role]) -> Result<()> {
    if roles.contains(&actor.role) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "permission_denied",
        format!(
            "role {} may not do this (needs {})",
            actor.role.as_str(),
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    ))
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is over the {limit}-byte limit"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), limit).collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(bad("body_unreadable", "request body could not be read")),
    }
}

async fn text_body(req: Request<Incoming>) -> Result<String> {
    let body = read_body(req, crate::rules::MAX_FILE_BYTES).await?;
    String::from_utf8(body.to_vec()).map_err(|_| bad("invalid_rules", "rules file is not UTF-8"))
}

async fn json_body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T> {
    let body = read_body(req, JSON_LIMIT).await?;
    parse_json(&body)
}

async fn optional_json_body<T: DeserializeOwned + Default>(req: Request<Incoming>) -> Result<T> {
    let body = read_body(req, JSON_LIMIT).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&body)
}

async fn empty_body(req: Request<Incoming>) -> Result<()> {
    let body = read_body(req, JSON_LIMIT).await?;
    let trimmed: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if trimmed.is_empty() || trimmed == b"{}" {
        Ok(())
    } else {
        Err(bad(
            "parameter_unknown",
            "this endpoint takes no parameters",
        ))
    }
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        if let Some(field) = msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            let mut err = bad("parameter_unknown", format!("unknown field {field:?}"));
            err.extra = Some(("param", json!(field)));
            return err;
        }
        match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                bad("invalid_json", format!("body is not valid JSON: {msg}"))
            }
            _ => bad("parameter_invalid", msg),
        }
    })
}
