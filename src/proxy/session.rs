//! The steps every Responses session shares, over HTTP and WebSocket alike: what memory and
//! model knowledge say to change in a request, how a change is reported, and how an answer
//! teaches rethread a turn. One place, so the two transports cannot drift apart.

use std::sync::Arc;

use axum::body::Body;
use futures_util::FutureExt;
use http::{header, HeaderValue, Response};

use super::tee::Tee;
use crate::app::App;
use crate::capture::{Capture, CaptureError};
use crate::ledger::LedgerError;
use crate::repair::change::{self, Change, Rules};
use crate::repair::items::{ItemType, Turn};
use crate::repair::request::RequestView;
use crate::tenant::TenantKey;

/// What memory and model knowledge say to change.
pub async fn planned(app: &App, tenant: TenantKey, body: &[u8], view: &RequestView<'_>) -> Change {
    let rules = Rules {
        policy: app.settings.repair,
        stateless_include: app.settings.stateless_include,
        model_may_reason: app.models.may_reason(tenant, view.model.as_deref()),
    };
    let keys = lookup_keys(view);
    let turns = if keys.is_empty() {
        Vec::new()
    } else {
        match app.ledger.lookup(tenant, &keys).await {
            Ok(turns) => turns,
            Err(e) => {
                tracing::warn!(error = %e, "ledger lookup failed; forwarding without memory");
                metrics::counter!(crate::metrics::STORE_ERRORS, "op" => "lookup").increment(1);
                Vec::new()
            }
        }
    };
    let (change, unrepairable) = change::decide(body, view, &turns, rules);
    if let Some(why) = unrepairable {
        tracing::info!(reason = why.reason(), detail = ?why, "request names remembered items but cannot be repaired; forwarding unchanged");
        metrics::counter!(crate::metrics::UNREPAIRABLE, "reason" => why.reason()).increment(1);
    }
    change
}

/// The ids and call ids of a request's input, as memory is asked for them.
fn lookup_keys<'v>(view: &'v RequestView<'_>) -> Vec<&'v str> {
    let Some(input) = &view.input else {
        return Vec::new();
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
    keys
}

/// Ids longer than this are not the API's; they are never looked up.
const MAX_ID_LEN: usize = 256;
/// At most this many distinct ids of one request are looked up.
const MAX_LOOKUP_KEYS: usize = 4096;

pub fn record_repair(change: &Change) {
    tracing::debug!(ids = ?change.ids(), include = change.include, "repaired request");
    metrics::counter!(crate::metrics::REPAIRED_REQUESTS).increment(1);
    for ty in change.item_types() {
        metrics::counter!(crate::metrics::REPAIRS, "item_type" => ty.label()).increment(1);
    }
}

/// Wraps a successful response so its turn is learned as it streams to the client.
/// `model` is the request's, so a turn with reasoning items teaches that the model reasons.
pub fn captured(
    app: &Arc<App>,
    tenant: TenantKey,
    model: Option<Box<str>>,
    response: Response<Body>,
) -> Response<Body> {
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
            Box::new(move |capture, clean| learn(&app, tenant, model.as_deref(), capture, clean)),
        ))
    })
}

/// Finishes a capture and records its turn. Runs as the last chunk leaves, so the turn is
/// remembered before the client can send a follow-up; a remote write completes in a task.
fn learn(
    app: &App,
    tenant: TenantKey,
    model: Option<&str>,
    capture: Result<Capture, CaptureError>,
    clean: bool,
) {
    let turn = match capture.and_then(Capture::finish) {
        Ok(Some(turn)) => turn,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(reason = e.reason(), error = %e, "response taught nothing");
            metrics::counter!(crate::metrics::CAPTURE_FAILURES, "reason" => e.reason())
                .increment(1);
            return;
        }
    };
    if !clean {
        tracing::debug!("upstream body broke; remembering the items it completed");
    }
    remember(app, tenant, model, turn);
}

/// Records a learned turn: visible to this replica at once, a remote write finished in a task.
/// The memory store's write is already done when `record` returns, so it costs no task (a
/// spawn per turn would wake a parked runtime worker for nothing).
pub fn remember(app: &App, tenant: TenantKey, model: Option<&str>, turn: Turn) {
    if let Some(model) = model {
        if turn.items.iter().any(|i| i.ty == ItemType::Reasoning) {
            app.models.learn(tenant, model, true);
        }
    }
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
            metrics::counter!(crate::metrics::TURNS_LEARNED).increment(1);
            tracing::debug!(items, "turn learned");
        }
        Err(e) => {
            tracing::warn!(error = %e, "ledger write failed");
            metrics::counter!(crate::metrics::STORE_ERRORS, "op" => "record").increment(1);
        }
    }
}
