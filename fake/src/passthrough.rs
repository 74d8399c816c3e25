//! Routes that have nothing to do with the Responses API, for testing that the proxy passes
//! other traffic through unchanged: echo, large and streamed bodies, status codes, headers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::ids::fnv1a64;
use crate::query::Query;
use crate::reply::{self, ReplyOptions};
use crate::state::Shared;

const BLOB_CHUNK: usize = 64 * 1024;

/// `ANY /v1/echo[/…]`: describes the request it got.
pub(crate) async fn echo(
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let header_list: Vec<Value> = headers
        .iter()
        .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let single = |name: header::HeaderName| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let value = json!({
        "method": method.as_str(),
        "version": format!("{version:?}"),
        "authority": uri.authority().map(|a| a.as_str()),
        "path": uri.path(),
        "query": uri.query(),
        "headers": header_list,
        "body_len": bytes.len(),
        "body_fnv64": format!("{:016x}", fnv1a64(&bytes)),
        "content_length": single(header::CONTENT_LENGTH),
        "transfer_encoding": single(header::TRANSFER_ENCODING),
    });
    reply::json(StatusCode::OK, &value, ReplyOptions::plain()).await
}

/// `GET /v1/blob?bytes=N`: N bytes of `i % 251`, in 64 KiB chunks, with content-length.
pub(crate) fn blob(query: &Query) -> Response {
    let total = query.number("bytes").unwrap_or(0) as usize;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            let n = BLOB_CHUNK.min(total - sent);
            let chunk: Vec<u8> = (sent..sent + n).map(|i| (i % 251) as u8).collect();
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            sent += n;
        }
    });
    let mut resp = Response::new(reply::channel_body(rx));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(total as u64));
    resp
}

/// `GET /v1/sse?events=N&delay_ms=M`: N events `data: {"i":i}`, M ms apart.
pub(crate) fn sse(query: &Query) -> Response {
    let count = query.number("events").unwrap_or(0);
    let delay = Duration::from_millis(query.number("delay_ms").unwrap_or(0));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for i in 0..count {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx
                .send(Bytes::from(format!("data: {{\"i\":{i}}}\n\n")))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut resp = Response::new(reply::channel_body(rx));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `ANY /v1/status/{code}`.
pub(crate) fn status(code: &str) -> Response {
    let Some(status) = code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
    else {
        return (StatusCode::BAD_REQUEST, "bad status code").into_response();
    };
    let mut resp = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Response::new(Body::empty())
    } else {
        let body = json!({"status": status.as_u16()}).to_string();
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    *resp.status_mut() = status;
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
    }
    resp
}

/// `GET /v1/headers`: repeated and OpenAI-style response headers.
pub(crate) fn headers() -> Response {
    let mut resp = Response::new(Body::from("ok"));
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
    h.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
    h.insert("x-request-id", HeaderValue::from_static("req_fake"));
    h.insert("openai-processing-ms", HeaderValue::from_static("5"));
    h.insert(
        "x-ratelimit-remaining-requests",
        HeaderValue::from_static("99"),
    );
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// `GET|POST /v1/json?bytes=N`: a JSON object of about N bytes.
pub(crate) async fn json_blob(query: &Query, body: Body) -> Response {
    let _ = axum::body::to_bytes(body, usize::MAX).await;
    let target = query.number("bytes").unwrap_or(1024) as usize;
    let mut items = Vec::new();
    let mut size = 40;
    let mut i = 0;
    while size < target {
        let item = json!({"i": i, "text": "lorem ipsum dolor sit amet"});
        size += item.to_string().len() + 1;
        items.push(item);
        i += 1;
    }
    let value = json!({"object": "list", "data": items, "has_more": false});
    reply::json(StatusCode::OK, &value, ReplyOptions::plain()).await
}

/// `GET /fake/stats`.
pub(crate) async fn stats(shared: &Shared) -> Response {
    let faults = shared.faults.counts();
    let value = json!({
        "responses_posts": shared.responses_posts.load(Ordering::Relaxed),
        "requests_total": shared.requests_total.load(Ordering::Relaxed),
        "faults": {"errors": faults.errors, "resets": faults.resets, "stalls": faults.stalls},
    });
    reply::json(StatusCode::OK, &value, ReplyOptions::plain()).await
}
