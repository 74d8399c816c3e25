//! `POST …/responses`: read the body (bounded), repair it from memory, forward it, retry once
//! per missing reasoning item the upstream names, and capture the answer.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::capture::{Capture, CaptureError};
use super::decode::Decoder;
use super::repair::{self, Insertion, Plan, Replacement};
use super::request::{self, RequestView};
use super::splice::{apply, include_edit, input_edits};
use super::tee::Tee;
use super::upstream_error::missing_reasoning;
use crate::app::App;
use crate::config::Mode;
use crate::error::ProxyError;
use crate::forward::{ChunksBody, Prefixed};
use crate::ledger::LedgerError;
use crate::metrics::item_type_label;
use crate::proxy::Note;
use crate::tenant::TenantKey;

/// Largest upstream error body read to look for a missing reasoning item.
const ERROR_BODY_LIMIT: usize = 64 << 10;

pub async fn handle(
    app: &Arc<App>,
    request: Request<Body>,
) -> Result<(Response<Body>, Note), ProxyError> {
    let (mut parts, body) = request.into_parts();
    let tenant = app.tenants.key_for(&parts.headers);
    // A client that stops sending its body is cut off like one that stops sending its headers.
    let idle = app.settings.header_timeout;
    let body = Body::new(crate::forward::IdleTimeout::new(body, idle));
    let bytes = read_body(body, &parts.headers, app.settings.body_limit, idle).await?;
    app.upstream.prepare(&mut parts)?;
    let mut note = Note::default();

    let view = match request::parse(&bytes) {
        Ok(view) => Some(view),
        Err(e) => {
            tracing::debug!(reason = %e, "request not understood; forwarding unchanged");
            metrics::counter!("rethread_unparsed_requests_total").increment(1);
            None
        }
    };
    let mut change = match &view {
        Some(view) => planned(app, tenant, &bytes, view).await,
        None => Change::default(),
    };
    if app.settings.mode == Mode::Observe && !change.is_empty() {
        metrics::counter!("rethread_would_insert_total").increment(change.items() as u64);
        tracing::info!(ids = ?change.ids(), include = change.include, "observe mode: would insert");
        change = Change::default();
    }

    let mut retries = 0;
    let response = loop {
        let body = match (&view, change.is_empty()) {
            (Some(view), false) => Body::new(ChunksBody::new(change.apply(&bytes, view))),
            _ => Body::from(bytes.clone()),
        };
        let mut upstream_request = Request::from_parts(clone_head(&parts), body);
        if !change.is_empty() {
            // The body changed length; hyper sets content-length from the body's exact size.
            upstream_request
                .headers_mut()
                .remove(header::CONTENT_LENGTH);
        }
        let sent = Instant::now();
        let response = app.upstream.send(upstream_request).await?;
        note.upstream += sent.elapsed();

        let may_retry = app.settings.mode == Mode::Repair
            && retries < app.settings.fallback_retries
            && response.status() == StatusCode::BAD_REQUEST;
        let Some(view) = view.as_ref().filter(|_| may_retry) else {
            break response;
        };
        let (head, body) = response.into_parts();
        let error = match read_error_body(body).await {
            Ok(error) => error,
            // Too large to be the error rethread looks for: pass it on whole.
            Err(body) => break Response::from_parts(head, body),
        };
        let encoding = head
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let cold = decoded(&error, encoding)
            .and_then(|text| missing_reasoning(&text))
            .and_then(|(item, rs)| repair::cold_insertion(view, &change.insertions, &item, &rs));
        match cold {
            Some(extra) => {
                tracing::debug!(id = %extra.id, "upstream named a missing reasoning item; retrying with it");
                metrics::counter!("rethread_fallback_retries_total", "outcome" => "retried")
                    .increment(1);
                change.insertions =
                    repair::with_insertion(std::mem::take(&mut change.insertions), extra);
                retries += 1;
            }
            None => {
                if retries > 0 {
                    metrics::counter!("rethread_fallback_retries_total", "outcome" => "still_failed").increment(1);
                }
                break Response::from_parts(head, Body::from(error));
            }
        }
    };

    note.inserted = change.items();
    if !change.is_empty() {
        record_repair(&change);
    }
    let mut response = if response.status().is_success() {
        captured(app, tenant, response)
    } else {
        response
    };
    if !change.is_empty() {
        response
            .headers_mut()
            .insert("x-rethread-inserted", HeaderValue::from(note.inserted));
    }
    Ok((response, note))
}

/// What rethread changes in a request.
#[derive(Debug, Default)]
pub(crate) struct Change {
    insertions: Vec<Insertion>,
    replacements: Vec<Replacement>,
    /// Add `reasoning.encrypted_content` to `include` (a stateless request that lacks it).
    include: bool,
}

impl Change {
    pub(crate) fn is_empty(&self) -> bool {
        self.insertions.is_empty() && self.replacements.is_empty() && !self.include
    }

    /// Items placed into the input: inserted, or rehydrated in full.
    pub(crate) fn items(&self) -> usize {
        self.insertions.len() + self.replacements.len()
    }

    pub(crate) fn ids(&self) -> Vec<&str> {
        let inserted = self.insertions.iter().map(|i| &*i.id);
        inserted
            .chain(self.replacements.iter().map(|r| &*r.id))
            .collect()
    }

    pub(crate) fn apply(&self, body: &Bytes, view: &RequestView<'_>) -> Vec<Bytes> {
        let mut edits = match &view.input {
            Some(input) => input_edits(body, input, &self.insertions, &self.replacements),
            None => Vec::new(),
        };
        if self.include {
            edits.extend(include_edit(body, view));
        }
        apply(body, edits)
    }
}

/// What memory says to change.
pub(crate) async fn planned(
    app: &App,
    tenant: TenantKey,
    body: &[u8],
    view: &RequestView<'_>,
) -> Change {
    let include = !view.store
        && app.settings.stateless_include
        && !view.includes_encrypted_reasoning
        && include_edit(body, view).is_some();
    let mut change = Change {
        include,
        ..Change::default()
    };
    let Some(input) = &view.input else {
        return change;
    };
    let mut keys: Vec<&str> = input
        .items
        .iter()
        .flat_map(|i| [i.id(), i.call_id()])
        .flatten()
        .filter(|k| !k.is_empty() && k.len() <= MAX_ID_LEN)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.truncate(MAX_LOOKUP_KEYS);
    if keys.is_empty() {
        return change;
    }
    let turns = match app.ledger.lookup(tenant, &keys).await {
        Ok(turns) => turns,
        Err(e) => {
            tracing::warn!(error = %e, "ledger lookup failed; forwarding without memory");
            metrics::counter!("rethread_store_errors_total", "op" => "lookup").increment(1);
            return change;
        }
    };
    let Plan {
        insertions,
        replacements,
        unrepairable,
    } = repair::plan(view, &turns, app.settings.repair);
    if let Some(why) = unrepairable {
        tracing::info!(reason = why.reason(), detail = ?why, "request names remembered items but cannot be repaired; forwarding unchanged");
        metrics::counter!("rethread_unrepairable_total", "reason" => why.reason()).increment(1);
    }
    change.insertions = insertions;
    change.replacements = replacements;
    change
}

/// Ids longer than this are not the API's; they are never looked up.
const MAX_ID_LEN: usize = 256;
/// At most this many distinct ids of one request are looked up.
const MAX_LOOKUP_KEYS: usize = 4096;

pub(crate) fn record_repair(change: &Change) {
    tracing::debug!(ids = ?change.ids(), include = change.include, "repaired request");
    metrics::counter!("rethread_repaired_requests_total").increment(1);
    let types = change
        .insertions
        .iter()
        .map(|i| &i.ty)
        .chain(change.replacements.iter().map(|r| &r.ty));
    for ty in types {
        metrics::counter!("rethread_repairs_total", "item_type" => item_type_label(ty))
            .increment(1);
    }
}

/// Wraps a successful response so its turn is learned as it streams to the client.
pub fn captured(app: &Arc<App>, tenant: TenantKey, response: Response<Body>) -> Response<Body> {
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let capture = Capture::new(
        header(header::CONTENT_TYPE),
        header(header::CONTENT_ENCODING),
        app.capture_limits(),
    );
    let app = app.clone();
    response.map(move |body| {
        Body::new(Tee::new(
            body,
            capture,
            Box::new(move |capture, clean| learn(&app, tenant, capture, clean)),
        ))
    })
}

/// Finishes a capture and records its turn. Runs as the last chunk leaves, so the turn is
/// remembered before the client can send a follow-up; a remote write completes in a task.
fn learn(app: &App, tenant: TenantKey, capture: Result<Capture, CaptureError>, clean: bool) {
    let turn = match capture.and_then(Capture::finish) {
        Ok(Some(turn)) => turn,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(reason = e.reason(), error = %e, "response taught nothing");
            metrics::counter!("rethread_capture_failures_total", "reason" => e.reason())
                .increment(1);
            return;
        }
    };
    if !clean {
        tracing::debug!("upstream body broke; remembering the items it completed");
    }
    remember(app, tenant, turn);
}

/// Records a learned turn: visible to this replica at once, a remote write finished in a task.
/// The memory store's write is already done when `record` returns, so it costs no task (a
/// spawn per turn would wake a parked runtime worker for nothing).
pub(crate) fn remember(app: &App, tenant: TenantKey, turn: super::items::Turn) {
    let items = turn.items.len();
    let mut write = app.ledger.record(tenant, turn);
    match (&mut write).now_or_never() {
        Some(done) => report_write(done, items),
        None => {
            tokio::spawn(async move { report_write(write.await, items) });
        }
    }
}

fn report_write(done: Result<(), LedgerError>, items: usize) {
    match done {
        Ok(()) => {
            metrics::counter!("rethread_turns_learned_total").increment(1);
            tracing::debug!(items, "turn learned");
        }
        Err(e) => {
            tracing::warn!(error = %e, "ledger write failed");
            metrics::counter!("rethread_store_errors_total", "op" => "record").increment(1);
        }
    }
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
        Err(e) if silent(&*e) => Err(ProxyError::ClientTimeout(idle)),
        Err(e) => Err(ProxyError::ClientBody(e.to_string())),
    }
}

/// Whether a body error is the idle timeout, however deep it is wrapped.
fn silent(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<crate::forward::IdleTimedOut>() {
            return true;
        }
        cause = e.source();
    }
    false
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

/// A copy of a request head for another attempt (extensions are not needed upstream).
fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}
