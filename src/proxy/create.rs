//! `POST …/responses`: read the body (bounded), repair it from memory, forward it, retry once
//! per missing reasoning item the upstream names, send the client's own bytes when the upstream
//! refuses a changed request, and capture the answer.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};

use super::learn::{captured, Origin};
use super::outcome::Outcome;
use super::session::{finished, planned, Next, Planned};
use crate::app::App;
use crate::capture::decode::Decoder;
use crate::config::Mode;
use crate::error::{is_caused_by, ProxyError};
use crate::forward::{copy_head, ChunksBody, Prefixed};
use crate::repair::change::Change;
use crate::repair::request;
use crate::repair::upstream_error::{self, Refusal, UpstreamError};

/// Largest upstream error body read to see what the refusal was.
const ERROR_BODY_LIMIT: usize = 64 << 10;

pub async fn handle(
    app: &Arc<App>,
    request: Request<Body>,
) -> Result<(Response<Body>, Outcome), ProxyError> {
    let (mut parts, body) = request.into_parts();
    let tenant = app.tenants.key_for(&parts.headers);
    // A client that stops sending its body is cut off like one that stops sending its headers.
    let idle = app.settings.server.header_timeout;
    let body = Body::new(crate::forward::IdleTimeout::new(body, idle));
    let bytes = read_body(body, &parts.headers, app.settings.capture.body_limit, idle).await?;
    app.upstream.prepare(&mut parts)?;
    let mut note = Outcome::default();

    let view = match request::parse(&bytes) {
        Ok(view) => Some(view),
        Err(e) => {
            tracing::debug!(reason = %e, "request not understood; forwarding unchanged");
            metrics::counter!(crate::metrics::UNPARSED).increment(1);
            None
        }
    };
    let model: Option<Box<str>> = view
        .as_ref()
        .and_then(|v| v.model.as_deref().map(Into::into));
    let mut planned = match &view {
        Some(view) => planned(app, tenant, &bytes, view).await,
        None => Planned::unchanged(),
    };
    let mut change = std::mem::take(&mut planned.change);
    if app.settings.repair.mode == Mode::Observe && !change.is_empty() {
        metrics::counter!(crate::metrics::WOULD_INSERT).increment(change.items() as u64);
        tracing::info!(rules = %change.rules_text(), ids = ?change.ids(), include = change.include, "observe mode: would change");
        change = Change::default();
    }

    let mut reverted: Option<&'static str> = None;
    let response = loop {
        let body = match (&view, change.is_empty()) {
            (Some(view), false) => Body::new(ChunksBody::new(change.apply(&bytes, view))),
            _ => Body::from(bytes.clone()),
        };
        let mut upstream_request = Request::from_parts(copy_head(&parts), body);
        if !change.is_empty() {
            // The body changed length; hyper sets content-length from the body's exact size.
            upstream_request
                .headers_mut()
                .remove(header::CONTENT_LENGTH);
        }
        let sent = Instant::now();
        let response = app.upstream.send_held(upstream_request).await?;
        note.upstream += sent.elapsed();

        // Only a refusal of the request's content is worth reading, and only once the client's
        // own request has not been sent yet: it may be answered by another change, or by the
        // client's bytes.
        let status = response.status();
        if !upstream_error::is_content_refusal(status.as_u16()) || reverted.is_some() {
            break response;
        }
        let (head, body) = response.into_parts();
        let (error, body) = match read_error_body(body).await {
            Ok(error) => {
                let encoding = head
                    .headers
                    .get(header::CONTENT_ENCODING)
                    .and_then(|v| v.to_str().ok());
                let read = decoded(&error, encoding).map(|text| upstream_error::read(&text));
                (read, Body::from(error))
            }
            // Too large to be one of the API's refusals: it cannot be read, only relayed.
            Err(body) => (None, body),
        };
        let error = error.unwrap_or(UpstreamError {
            refusal: Refusal::Other,
            code: None,
            param: None,
        });
        let next = planned
            .after_refusal(
                app,
                tenant,
                model.as_deref(),
                &bytes,
                view.as_ref(),
                &change,
                &error,
            )
            .await;
        match next {
            Next::Retry(next) => change = *next,
            Next::Revert(reason) => {
                reverted = Some(reason);
                change = Change::default();
            }
            Next::Relay => break Response::from_parts(head, body),
        }
    };

    note.inserted = change.items();
    finished(
        app,
        tenant,
        model.as_deref(),
        view.as_ref().is_some_and(|v| v.reasoning_param),
        &change,
        response.status().is_success(),
    );
    let mut response = if response.status().is_success() {
        let stateless = view
            .as_ref()
            .is_some_and(|v| !v.store || app.upstream_store.drops_store(tenant));
        let origin = Origin::of(app, tenant, view.as_ref(), &bytes, &change, false);
        captured(app, tenant, model, stateless, origin, response)
    } else {
        response
    };
    if !change.is_empty() {
        let headers = response.headers_mut();
        headers.insert("x-rethread-inserted", HeaderValue::from(note.inserted));
        if let Ok(rules) = HeaderValue::from_str(&change.rules_text()) {
            headers.insert("x-rethread-repairs", rules);
        }
    }
    if let Some(reason) = reverted {
        response
            .headers_mut()
            .insert("x-rethread-reverted", HeaderValue::from_static(reason));
    }
    Ok((response, note))
}

async fn read_body(
    body: Body,
    headers: &http::HeaderMap,
    limit: usize,
    idle: std::time::Duration,
) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(e) if is_caused_by::<crate::forward::IdleTimedOut>(&*e) => {
            Err(ProxyError::ClientTimeout(idle))
        }
        Err(source) => Err(ProxyError::ClientBody { source }),
    }
}

/// An error body decoded for reading (the client still gets the original bytes).
fn decoded(body: &[u8], encoding: Option<&str>) -> Option<Vec<u8>> {
    let mut decoder = Decoder::for_encoding(encoding, ERROR_BODY_LIMIT * 16)?;
    let mut out = Vec::new();
    decoder.feed(body, &mut |d| out.extend_from_slice(d)).ok()?;
    decoder.finish(&mut |d| out.extend_from_slice(d)).ok()?;
    Some(out)
}

/// Reads a small error body whole; a larger or broken one comes back as a body that replays
/// what was read and continues with the rest.
async fn read_error_body(mut body: Body) -> Result<Bytes, Body> {
    let mut read = Vec::new();
    loop {
        match body.frame().await {
            None => return Ok(Bytes::from(read)),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read.extend_from_slice(data);
                }
                if read.len() > ERROR_BODY_LIMIT {
                    return Err(Body::new(Prefixed::new(Bytes::from(read), body)));
                }
            }
            Some(Err(e)) => {
                let rest = Body::new(http_body_util::StreamBody::new(futures_util::stream::once(
                    async move { Err::<http_body::Frame<Bytes>, _>(e) },
                )));
                return Err(Body::new(Prefixed::new(Bytes::from(read), rest)));
            }
        }
    }
}
