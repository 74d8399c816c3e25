//! Turning JSON values and SSE event lists into HTTP answers (with optional delay and
//! compression). SSE bodies are produced by a task that sends one flushed chunk per event.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use crate::encoding::{self, Coding, Encoder};
use crate::errors::ApiError;
use crate::events::frame;
use crate::state::StoredEvent;

/// Per-request reply settings taken from headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplyOptions {
    pub coding: Coding,
    pub delay: Duration,
    /// Write errors as `{"detail": "<message>"}` (`FakeOptions::detail_errors`).
    pub detail_errors: bool,
}

impl ReplyOptions {
    /// Read `x-fake-delay-ms` and negotiate the coding.
    pub(crate) fn from_headers(headers: &HeaderMap, compress: bool) -> Result<Self, ApiError> {
        let coding = encoding::negotiate(headers, compress).map_err(ApiError::fake_usage)?;
        let delay_ms = headers
            .get("x-fake-delay-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok(ReplyOptions {
            coding,
            delay: Duration::from_millis(delay_ms),
            detail_errors: false,
        })
    }

    pub(crate) fn plain() -> Self {
        ReplyOptions {
            coding: Coding::Identity,
            delay: Duration::ZERO,
            detail_errors: false,
        }
    }

    /// The same options, writing errors in the `{"detail": …}` form when `on`.
    pub(crate) fn with_detail_errors(self, on: bool) -> Self {
        ReplyOptions {
            detail_errors: on,
            ..self
        }
    }
}

fn set_encoding(resp: &mut Response, coding: Coding) {
    if let Some(v) = coding.header_value() {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static(v));
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// A JSON answer.
pub(crate) async fn json(status: StatusCode, value: &Value, opts: ReplyOptions) -> Response {
    json_text(status, value.to_string(), opts).await
}

/// A JSON answer from already serialized text.
pub(crate) async fn json_text(status: StatusCode, raw: String, opts: ReplyOptions) -> Response {
    if !opts.delay.is_zero() {
        tokio::time::sleep(opts.delay).await;
    }
    let (coding, body) = match encoding::encode_all(opts.coding, raw.as_bytes()).await {
        Ok(b) => (opts.coding, b),
        Err(_) => (Coding::Identity, Bytes::from(raw)),
    };
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    set_encoding(&mut resp, coding);
    resp
}

/// An API error answer: `{"error": {…}}`, or `{"detail": "…"}` with `opts.detail_errors`.
pub(crate) async fn error(err: &ApiError, opts: ReplyOptions) -> Response {
    let body = match opts.detail_errors {
        true => err.detail_string(),
        false => err.body_string(),
    };
    json_text(err.status, body, opts).await
}

/// A `text/event-stream` answer, one chunk per event.
pub(crate) fn sse(events: Vec<StoredEvent>, opts: ReplyOptions) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let mut enc = Encoder::new(opts.coding);
        for e in &events {
            if !opts.delay.is_zero() {
                tokio::time::sleep(opts.delay).await;
            }
            let Ok(chunk) = enc.chunk(frame(e).as_bytes()).await else {
                return;
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        if let Ok(tail) = enc.finish().await {
            if !tail.is_empty() {
                let _ = tx.send(tail).await;
            }
        }
    });
    let mut resp = Response::new(channel_body(rx));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set_encoding(&mut resp, opts.coding);
    resp
}

/// A body that yields whatever the channel receives.
pub(crate) fn channel_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
    });
    Body::from_stream(stream)
}
