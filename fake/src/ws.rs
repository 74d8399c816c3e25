//! WebSocket mode: `GET …/responses` with `Upgrade: websocket`. Each `response.create` text
//! frame is validated exactly like a POST body and answered with the same events as SSE, one
//! text frame per event; validation errors come back as an `error` frame.
//!
//! Each socket remembers the response ids it produced: a `store:false` response can be chained
//! with `previous_response_id` on its own socket only, as the API keeps it in that socket's
//! memory (wild-failures-2026.md N6); elsewhere it is E9.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use crate::errors::ApiError;
use crate::reply::{self, ReplyOptions};
use crate::state::Shared;
use crate::turn;

/// Whether a request asks for a WebSocket upgrade.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Accept the upgrade (after checking credentials) and serve frames.
pub(crate) async fn upgrade(shared: Arc<Shared>, mut parts: Parts) -> Response {
    let headers = parts.headers.clone();
    let opts =
        ReplyOptions::from_headers(&headers, false).unwrap_or_else(|_| ReplyOptions::plain());
    let Some(tenant) = turn::tenant_key(&headers) else {
        let plain = ReplyOptions::plain().with_detail_errors(shared.opts.detail_errors);
        return reply::error(&ApiError::missing_key(), plain).await;
    };
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws.on_upgrade(move |socket| session(socket, shared, headers, tenant, opts)),
        Err(rejection) => rejection.into_response(),
    }
}

fn error_frame(err: &ApiError) -> Message {
    let text = format!(
        r#"{{"type":"error","status":{},"error":{}}}"#,
        err.status.as_u16(),
        err.object_string()
    );
    Message::Text(text.into())
}

async fn session(
    mut socket: WebSocket,
    shared: Arc<Shared>,
    headers: HeaderMap,
    tenant: String,
    opts: ReplyOptions,
) {
    let mut local = HashSet::new();
    while let Some(Ok(msg)) = socket.recv().await {
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        shared.set_last_body(Bytes::copy_from_slice(text.as_bytes()));
        let frames = answer(&shared, &headers, &tenant, &mut local, text.as_str());
        for frame in frames {
            if !opts.delay.is_zero() {
                tokio::time::sleep(opts.delay).await;
            }
            if socket.send(frame).await.is_err() {
                return;
            }
        }
    }
}

/// The frames answering one client frame; a created response's id joins the socket's `local`.
fn answer(
    shared: &Shared,
    headers: &HeaderMap,
    tenant: &str,
    local: &mut HashSet<String>,
    text: &str,
) -> Vec<Message> {
    let Ok(mut body) = serde_json::from_str::<Value>(text) else {
        return vec![error_frame(&ApiError::bad_json())];
    };
    if body.get("type").and_then(Value::as_str) != Some("response.create") {
        let err =
            ApiError::fake_usage("Unsupported event type; expected 'response.create'.".into());
        return vec![error_frame(&err)];
    }
    if let Some(obj) = body.as_object_mut() {
        obj.remove("type");
        obj.insert("stream".into(), Value::Bool(true));
    }
    match turn::create(shared, tenant, headers, &body, Some(local)) {
        Ok(created) => {
            local.insert(created.id);
            created
                .events
                .into_iter()
                .map(|e| Message::Text(e.data.into()))
                .collect()
        }
        Err(err) => vec![error_frame(&err)],
    }
}
