//! Learning from an answer, over HTTP and WebSocket alike: the turn a response teaches, with
//! what its request said of its chain (`Origin`), recorded as the response's last bytes leave.

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderValue, Response};

use super::tee::Tee;
use crate::app::App;
use crate::capture::{Capture, CaptureError};
use crate::ledger::LedgerError;
use crate::otel::ClientSpan;
use crate::repair;
use crate::repair::change::Change;
use crate::repair::items::{ItemType, Turn};
use crate::repair::request::RequestView;
use crate::tenant::TenantKey;

/// What a response's request said of its chain: recorded with the turn (`Link`).
#[derive(Debug, Default)]
pub(super) struct Origin {
    /// `previous_response_id`, as the client sent it (an expanded request's upstream copy no
    /// longer names it).
    parent: Option<Box<str>>,
    /// The request's input as sent, kept for a `store: false` chain: one made over WebSocket,
    /// or a chained request (over HTTP the server never holds such a chain; rethread does).
    input: Option<Bytes>,
    /// The request asked the upstream to store the response (`upstream_store.rs` learns whether
    /// it did).
    asked_store: bool,
    /// The request's `conversation`: the server appends the turn to it.
    conversation: Option<Box<str>>,
}

impl Origin {
    /// The origin of a request whose `change` was accepted. Its input is kept only up to
    /// `full_item_max`, like any item kept in full.
    pub(super) fn of(
        app: &App,
        tenant: TenantKey,
        view: Option<&RequestView<'_>>,
        body: &Bytes,
        change: &Change,
        websocket: bool,
    ) -> Origin {
        let Some(view) = view else {
            return Origin::default();
        };
        let parent = view.previous_response_id.as_deref().map(Into::into);
        let stateless = !view.store || app.upstream_store.drops_store(tenant);
        let keep = stateless && (websocket || parent.is_some());
        let input = keep.then(|| {
            if change.is_empty() {
                return repair::chain::input_array(body);
            }
            let sent = Change {
                expand: None,
                ..change.clone()
            };
            repair::chain::input_array(&repair::splice::concat(&sent.apply(body, view)))
        });
        let limit = app.settings.capture.full_item_max;
        Origin {
            parent,
            input: input.flatten().filter(|i| i.len() <= limit),
            asked_store: view.store,
            conversation: view.conversation.as_deref().map(Into::into),
        }
    }

    fn apply(self, turn: &mut Turn) {
        if let Some(link) = &mut turn.link {
            if self.parent.is_some() {
                link.parent = self.parent;
            }
            link.input = self.input;
            link.conversation = self.conversation;
        }
    }
}

/// What learning an answer's turn needs of its request.
#[derive(Default)]
pub(super) struct Learning {
    /// The request's model: a turn with reasoning items teaches that the model reasons.
    pub(super) model: Option<Box<str>>,
    /// The request was `store: false`: its image results are kept.
    pub(super) stateless: bool,
    pub(super) origin: Origin,
    /// The CLIENT span of the attempt answered: it learns the answer's id, model and usage,
    /// and ends with its last byte.
    pub(super) span: ClientSpan,
}

/// Wraps a successful response so its turn is learned as it streams to the client.
pub(super) fn captured(
    app: &Arc<App>,
    tenant: TenantKey,
    learning: Learning,
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
        app.capture_limits(learning.stateless),
    )
    .map(|capture| match learning.span.is_open() {
        true => capture.with_facts(),
        false => capture,
    });
    let app = app.clone();
    response.map(move |body| {
        Body::new(Tee::new(
            body,
            capture,
            Box::new(move |capture, clean| learn(&app, tenant, learning, capture, clean)),
        ))
    })
}

/// Finishes a capture and records its turn. Runs as the last chunk leaves, so the turn is
/// remembered before the client can send a follow-up; a remote write completes in a task.
fn learn(
    app: &App,
    tenant: TenantKey,
    learning: Learning,
    capture: Result<Capture, CaptureError>,
    clean: bool,
) {
    let Learning {
        model,
        origin,
        span,
        ..
    } = learning;
    let turn = match capture.map(Capture::finish_with_facts) {
        Ok((turn, facts)) => {
            span.answered(facts.as_ref());
            turn
        }
        Err(e) => Err(e),
    };
    drop(span);
    let turn = match turn {
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
    remember(app, tenant, model.as_deref(), origin, turn);
}

/// Records a learned turn: visible to this replica at once, a remote write finished in a task.
/// The memory store's write is already done when `record` returns, so it costs no task (a
/// spawn per turn would wake a parked runtime worker for nothing).
pub(super) fn remember(
    app: &App,
    tenant: TenantKey,
    model: Option<&str>,
    origin: Origin,
    mut turn: Turn,
) {
    if origin.asked_store {
        app.upstream_store.learn(tenant, turn.stored);
    }
    let repair = &app.settings.repair;
    if repair.rewrites.dedupe || repair.rewrites.expand || repair.answer_calls().is_some() {
        origin.apply(&mut turn);
    } else {
        // Nothing reads a chain: it is not remembered.
        turn.link = None;
    }
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
