//! HTTP handlers of the Responses endpoint: create, retrieve (JSON or SSE replay), delete, and
//! list input items. Everything is scoped to the caller's tenant.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::faults::{self, Fault};
use crate::query::Query;
use crate::reply::{self, ReplyOptions};
use crate::state::Shared;
use crate::turn::{self, Created};

/// Reply settings of a non-streaming answer: from headers, falling back to plain.
pub(crate) fn reply_opts(shared: &Shared, headers: &HeaderMap) -> ReplyOptions {
    ReplyOptions::from_headers(headers, shared.opts.compress)
        .unwrap_or_else(|_| ReplyOptions::plain())
        .with_detail_errors(shared.opts.detail_errors)
}

/// `POST …/responses`, with the faults of `FakeOptions::faults` injected.
pub(crate) async fn create(shared: Arc<Shared>, headers: HeaderMap, body: Body) -> Response {
    shared.responses_posts.fetch_add(1, Ordering::Relaxed);
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    shared.set_last_body(bytes.clone());
    let fault = shared.faults.draw(&shared.opts.faults);
    if let Some(failed) = early_fault(&shared, &headers, fault).await {
        return failed;
    }
    let detail = shared.opts.detail_errors;
    let opts = match ReplyOptions::from_headers(&headers, shared.opts.compress) {
        Ok(o) => o.with_detail_errors(detail),
        Err(e) => return reply::error(&e, ReplyOptions::plain().with_detail_errors(detail)).await,
    };
    let Some(tenant) = turn::tenant_key(&headers) else {
        return reply::error(&ApiError::missing_key(), opts).await;
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return reply::error(&ApiError::bad_json(), opts).await;
    };
    match turn::prepare(&shared, &tenant, &headers, &value, None) {
        Err(e) => reply::error(&e, opts).await,
        // Cut: the turn is dropped unrecorded, as if the server had failed.
        Ok(prepared) if fault == Some(Fault::Reset) => {
            shared.faults.count(Fault::Reset);
            let stream = prepared.created.stream;
            faults::cut(answer(prepared.created, opts).await, stream).await
        }
        Ok(prepared) => answer(prepared.remember(&shared, &tenant), opts).await,
    }
}

/// The faults that strike before the request is looked at: a 500, or a stall (then `None`, to
/// answer normally).
async fn early_fault(
    shared: &Shared,
    headers: &HeaderMap,
    fault: Option<Fault>,
) -> Option<Response> {
    match fault? {
        Fault::Error => {
            shared.faults.count(Fault::Error);
            let opts = reply_opts(shared, headers);
            Some(reply::error(&ApiError::server_error(), opts).await)
        }
        Fault::Stall => {
            shared.faults.count(Fault::Stall);
            tokio::time::sleep(shared.opts.faults.stall).await;
            None
        }
        Fault::Reset => None,
    }
}

/// A created turn's answer: SSE when it asked to stream, else JSON.
async fn answer(created: Created, opts: ReplyOptions) -> Response {
    match created.stream {
        true => reply::sse(created.events, opts),
        false => reply::json(StatusCode::OK, &created.response, opts).await,
    }
}

/// `GET|DELETE …/responses/{id}` and `GET …/responses/{id}/input_items`.
pub(crate) async fn by_id(
    shared: Arc<Shared>,
    method: Method,
    headers: HeaderMap,
    id: &str,
    query: Query,
    input_items: bool,
) -> Response {
    let opts = reply_opts(&shared, &headers);
    let Some(tenant) = turn::tenant_key(&headers) else {
        return reply::error(&ApiError::missing_key(), opts).await;
    };
    let not_found = ApiError::not_found_response(id);
    if method == Method::DELETE && !input_items {
        let deleted = {
            let mut tenants = shared.tenants();
            let turn = tenants
                .get_mut(&tenant)
                .and_then(|t| t.turns.get_mut(id))
                .filter(|t| t.visible());
            turn.map(|t| t.deleted = true).is_some()
        };
        return match deleted {
            true => {
                reply::json(
                    StatusCode::OK,
                    &json!({"id": id, "object": "response", "deleted": true}),
                    opts,
                )
                .await
            }
            false => reply::error(&not_found, opts).await,
        };
    }
    if method != Method::GET {
        return reply::json(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": {"message": "Method not allowed.", "type": "invalid_request_error", "param": null, "code": null}}), opts).await;
    }
    let found = {
        let tenants = shared.tenants();
        tenants
            .get(&tenant)
            .and_then(|t| t.visible_turn(id))
            .cloned()
    };
    let Some(turn) = found else {
        return reply::error(&not_found, opts).await;
    };
    if input_items {
        let data: Vec<&Value> = turn
            .input
            .iter()
            .filter(|v| v.get("id").is_some())
            .collect();
        let list = json!({
            "object": "list",
            "data": data,
            "first_id": data.first().and_then(|v| v.get("id")),
            "last_id": data.last().and_then(|v| v.get("id")),
            "has_more": false,
        });
        return reply::json(StatusCode::OK, &list, opts).await;
    }
    if query.get("stream") == Some("true") {
        let after: i64 = query
            .get("starting_after")
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        let events = turn
            .events
            .into_iter()
            .filter(|e| e.sequence_number as i64 > after)
            .collect();
        return reply::sse(events, opts);
    }
    reply::json(StatusCode::OK, &turn.response, opts).await
}
