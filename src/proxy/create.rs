//! `POST …/responses` over HTTP: the body read (bounded), sent as the request's `Attempt` says,
//! a refusal read and handed back to it, the answer captured and the client told what changed.
//! Every decision is the attempt's; this file only moves bytes.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};

use super::attempt::{Attempt, Outgoing, Transport};
use super::learn::captured;
use super::outcome::Outcome;
use crate::app::App;
use crate::capture::decode::Decoder;
use crate::error::{is_caused_by, ProxyError};
use crate::forward::{copy_head, ChunksBody, Prefixed};
use crate::otel::ServerSpan;
use crate::repair::upstream_error::{self, Refusal, UpstreamError};

/// Largest upstream error body read to see what the refusal was.
const ERROR_BODY_LIMIT: usize = 64 << 10;

pub(super) async fn handle(
    app: &Arc<App>,
    request: Request<Body>,
    span: &ServerSpan,
) -> Result<(Response<Body>, Outcome), ProxyError> {
    let (mut parts, body) = request.into_parts();
    let tenant = app.tenants.key_for(&parts.headers);
    // A client that stops sending its body is cut off like one that stops sending its headers.
    let idle = app.settings.server.header_timeout;
    let body = Body::new(crate::forward::IdleTimeout::new(body, idle));
    let bytes = read_body(body, &parts.headers, app.settings.capture.body_limit, idle).await?;
    app.upstream.prepare(&mut parts)?;
    let mut outcome = Outcome::default();

    let (mut attempt, mut outgoing) =
        Attempt::begin(app, tenant, bytes, Transport::Http, span.parent()).await;
    let response = loop {
        let mut request = upstream_request(&parts, outgoing);
        attempt.span().inject(request.headers_mut());
        let sent = Instant::now();
        let response = app.upstream.send_held(request).await?;
        outcome.upstream += sent.elapsed();
        attempt.span().status(response.status().as_u16());
        // Only a refusal of the request's content is worth reading, and only while the
        // attempt may still answer it with another change or the client's own bytes.
        if !upstream_error::is_content_refusal(response.status().as_u16())
            || !attempt.reads_refusals()
        {
            break response;
        }
        let (head, body) = response.into_parts();
        let (error, body) = read_refusal(&head, body).await;
        match attempt.refused(&error).await {
            Some(next) => outgoing = next,
            None => break Response::from_parts(head, body),
        }
    };

    let accepted = response.status().is_success();
    let finished = attempt.finish(accepted);
    outcome.inserted = finished.inserted;
    span.repaired(&finished.repaired());
    let mut response = if accepted {
        captured(app, tenant, finished.learning, response)
    } else {
        response
    };
    let headers = response.headers_mut();
    if let Some(repairs) = finished.repairs {
        headers.insert("x-rethread-inserted", HeaderValue::from(finished.inserted));
        if let Ok(rules) = HeaderValue::from_str(&repairs) {
            headers.insert("x-rethread-repairs", rules);
        }
    }
    if let Some(reason) = finished.reverted {
        headers.insert("x-rethread-reverted", HeaderValue::from_static(reason));
    }
    Ok((response, outcome))
}

/// The request to send upstream: the client's head with `outgoing` as its body.
fn upstream_request(parts: &http::request::Parts, outgoing: Outgoing) -> Request<Body> {
    let (body, changed) = match outgoing {
        Outgoing::Original(bytes) => (Body::from(bytes), false),
        Outgoing::Changed(chunks) => (Body::new(ChunksBody::new(chunks)), true),
    };
    let mut request = Request::from_parts(copy_head(parts), body);
    if changed {
        // The body changed length; hyper sets content-length from the body's exact size.
        request.headers_mut().remove(header::CONTENT_LENGTH);
    }
    request
}

/// What an upstream refusal says, and its body to relay should the client get it.
async fn read_refusal(head: &http::response::Parts, body: Body) -> (UpstreamError, Body) {
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
    (error, body)
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
