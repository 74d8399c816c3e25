//! One request's life, whatever the transport. Its steps: `begin` (read the request, ask memory,
//! decide the change, observe mode), `refused` (after the upstream refused what was sent: another
//! change, the client's own request once, or nothing), and `finish` (count and log the change,
//! learn the model, hand capture what the answer's turn needs).
//!
//! The HTTP handler (`create.rs`) and the WebSocket relay (`socket.rs`) only move bytes between
//! the client, the upstream and these steps: every decision about a request is taken here, so a
//! change to how requests are handled is made once and the two transports cannot drift apart.

mod plan;
mod refusal;

use std::sync::Arc;

use bytes::Bytes;

use super::learn::{Learning, Origin};
use crate::app::App;
use crate::config::Mode;
use crate::otel::{ClientSpan, Parent, Repaired};
use crate::repair::change::{Change, Rules};
use crate::repair::items::Turn;
use crate::repair::request::{self, RequestView};
use crate::repair::rewrite::Directives;
use crate::repair::upstream_error::UpstreamError;
use crate::tenant::TenantKey;

/// How the request arrived: a WebSocket `store: false` turn is a chain the server holds only on
/// that socket, so its input is remembered (`Origin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Http,
    WebSocket,
}

/// What to send upstream.
pub(crate) enum Outgoing {
    /// The client's own bytes.
    Original(Bytes),
    /// The client's bytes with a change spliced in.
    Changed(Vec<Bytes>),
}

impl Outgoing {
    /// The bytes as one buffer (a WebSocket frame).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Outgoing::Original(bytes) => bytes.to_vec(),
            Outgoing::Changed(chunks) => crate::repair::splice::concat(&chunks),
        }
    }
}

/// What an attempt ended with: what the client is told, and what capture needs to learn the
/// answer's turn.
pub(crate) struct Finished {
    /// Items rethread placed into what was finally sent.
    pub(crate) inserted: usize,
    /// The rules the final change applied (`x-rethread-repairs`), when it changed anything.
    pub(crate) repairs: Option<String>,
    /// Why the client's own request was sent instead of a changed one (`x-rethread-reverted`).
    pub(crate) reverted: Option<&'static str>,
    /// What capture needs, the CLIENT span of what was finally sent included (it ends with
    /// the answer's last event).
    pub(crate) learning: Learning,
    /// Whether memory answered (`otel::Repaired::memory`).
    memory: &'static str,
    /// Why a request naming remembered items was left unchanged.
    unchanged: Option<&'static str>,
}

impl Finished {
    /// What the attempt did, for a span.
    pub(crate) fn repaired(&self) -> Repaired<'_> {
        Repaired {
            memory: self.memory,
            rules: self.repairs.as_deref(),
            inserted: self.inserted,
            reverted: self.reverted,
            unchanged: self.unchanged,
        }
    }
}

/// One request from its first byte to the upstream's accepted (or relayed) answer.
pub(crate) struct Attempt {
    app: Arc<App>,
    tenant: TenantKey,
    transport: Transport,
    /// The client's own request.
    body: Bytes,
    /// What the request says of itself, when rethread understood it.
    facts: Option<Facts>,
    /// What is being sent: the client's request with this change.
    change: Change,
    /// The chain facts of what is being sent, recorded with the answer's turn.
    origin: Origin,
    /// The client's own request has been sent (the refusal's kind): whatever comes now is
    /// relayed.
    reverted: Option<&'static str>,
    /// What memory holds for the request, and the decisions taken from it so far.
    grounds: Grounds,
    /// Where the attempts' CLIENT spans hang, and the span of what is being sent.
    parent: Parent,
    span: ClientSpan,
    /// Times a request was sent upstream so far.
    sends: u32,
}

/// The few fields of a request the steps after `begin` need without parsing it again.
struct Facts {
    model: Option<Box<str>>,
    /// The request sets `reasoning` (only a model that reasons accepts it).
    reasoning_param: bool,
    store: bool,
}

/// What a change is decided from, kept so that a refusal can ask for another.
struct Grounds {
    /// Remembered turns holding the request's ids.
    turns: Vec<Arc<Turn>>,
    /// The chain the request continues, as memory holds it, newest first (walked only when
    /// needed: `plan::chain_for`).
    chain: Vec<Arc<Turn>>,
    /// The chain's whole history, once the upstream said it lost the chain and memory held it.
    history: Option<Arc<[Bytes]>>,
    /// Memory did not answer before the request went (down, slower than `store_timeout`): a
    /// refusal asks it once more.
    missed: bool,
    rules: Rules,
    directives: Directives,
    /// Retries a refusal has asked for so far (bounded by `fallback_retries`).
    retries: u32,
    /// Whether memory answered: `hit`, `none`, `unavailable` or `not_asked`.
    memory: &'static str,
    /// Why the request was left unchanged though it names remembered items.
    unchanged: Option<&'static str>,
}

impl Attempt {
    /// Reads the request, asks memory and decides the change; returns what to send first. A
    /// body rethread cannot read is sent as it came.
    pub(crate) async fn begin(
        app: &Arc<App>,
        tenant: TenantKey,
        body: Bytes,
        transport: Transport,
        parent: Parent,
    ) -> (Attempt, Outgoing) {
        // The view borrows a handle to the same bytes, so the attempt can own the body.
        let read = body.clone();
        let view = match request::parse(&read) {
            Ok(view) => Some(view),
            Err(e) => {
                tracing::debug!(reason = %e, ?transport, "request not understood; forwarding unchanged");
                metrics::counter!(crate::metrics::UNPARSED).increment(1);
                None
            }
        };
        let (grounds, mut change) = match &view {
            Some(view) => plan::planned(app, tenant, &body, view).await,
            None => (Grounds::unchanged(), Change::default()),
        };
        if app.settings.repair.mode == Mode::Observe && !change.is_empty() {
            metrics::counter!(crate::metrics::WOULD_INSERT).increment(change.items() as u64);
            tracing::info!(rules = %change.rules_text(), ids = ?change.ids(), include = change.include, ?transport, "observe mode: would change");
            change = Change::default();
        }
        let facts = view.as_ref().map(|v| Facts {
            model: v.model.as_deref().map(Into::into),
            reasoning_param: v.reasoning_param,
            store: v.store,
        });
        let mut attempt = Attempt {
            app: app.clone(),
            tenant,
            transport,
            body,
            facts,
            change: Change::default(),
            origin: Origin::default(),
            reverted: None,
            grounds,
            parent,
            span: ClientSpan::default(),
            sends: 0,
        };
        let outgoing = attempt.send(change, view.as_ref());
        (attempt, outgoing)
    }

    /// Whether a refusal of what was sent is still worth reading: not once the client's own
    /// request went (its answer is the client's, whatever it is).
    pub(crate) fn reads_refusals(&self) -> bool {
        self.reverted.is_none()
    }

    /// After the upstream refused what was sent: what to send instead, or `None` to relay the
    /// refusal to the client.
    pub(crate) async fn refused(&mut self, error: &UpstreamError) -> Option<Outgoing> {
        self.span.refused(error.refusal.label());
        let body = self.body.clone();
        let view = request::parse(&body).ok();
        match self.next_after(view.as_ref(), error).await {
            refusal::Next::Retry(change) => Some(self.send(*change, view.as_ref())),
            refusal::Next::Revert(reason) => {
                self.reverted = Some(reason);
                Some(self.send(Change::default(), view.as_ref()))
            }
            refusal::Next::Relay => None,
        }
    }

    /// The last step, once the upstream answered what was finally sent (`accepted`: the
    /// response started): the change is counted and logged, and an accepted `reasoning`
    /// parameter teaches that the model reasons (unless rethread took encrypted reasoning out
    /// of the request, which says nothing of it).
    pub(crate) fn finish(mut self, accepted: bool) -> Finished {
        let change = &self.change;
        if !change.is_empty() {
            record_repair(change);
        }
        let stateless = self
            .facts
            .as_ref()
            .is_some_and(|f| !f.store || self.app.upstream_store.drops_store(self.tenant));
        let (model, reasoning_param) = match self.facts {
            Some(f) => (f.model, f.reasoning_param),
            None => (None, false),
        };
        if accepted && reasoning_param && !change.exclude {
            if let Some(model) = &model {
                self.app.models.learn(self.tenant, model, true);
            }
        }
        let finished = Finished {
            inserted: change.items(),
            repairs: (!change.is_empty()).then(|| change.rules_text()),
            reverted: self.reverted,
            learning: Learning {
                model,
                stateless,
                origin: self.origin,
                span: std::mem::take(&mut self.span),
            },
            memory: self.grounds.memory,
            unchanged: self.grounds.unchanged,
        };
        finished.learning.span.repaired(&finished.repaired());
        finished
    }

    /// The CLIENT span of what is being sent (its `traceparent` goes upstream with it; the
    /// upstream's status is noted on it).
    pub(crate) fn span(&mut self) -> &mut ClientSpan {
        &mut self.span
    }

    /// Makes `change` the one being sent, under a CLIENT span of its own, and returns its bytes.
    fn send(&mut self, change: Change, view: Option<&RequestView<'_>>) -> Outgoing {
        let model = self.facts.as_ref().and_then(|f| f.model.as_deref());
        let upstream = &self.app.settings.upstream.url;
        self.span = self.parent.responses(upstream, model, self.sends);
        self.sends += 1;
        let websocket = self.transport == Transport::WebSocket;
        self.origin = Origin::of(&self.app, self.tenant, view, &self.body, &change, websocket);
        let outgoing = match view {
            Some(view) if !change.is_empty() => Outgoing::Changed(change.apply(&self.body, view)),
            _ => Outgoing::Original(self.body.clone()),
        };
        self.change = change;
        outgoing
    }
}

/// One info line naming the rules a change applied (the ids at debug), and the metrics.
fn record_repair(change: &Change) {
    tracing::info!(rules = %change.rules_text(), inserted = change.items(), "repaired request");
    if !change.answered.is_empty() {
        tracing::info!(call_ids = ?change.answered, "wrote an output for calls the request left unanswered (unanswered_calls = answer)");
    }
    tracing::debug!(inserted = ?change.ids(), dropped = ?change.dropped_ids(), "repaired request's items");
    metrics::counter!(crate::metrics::REPAIRED_REQUESTS).increment(1);
    for ty in change.item_types() {
        metrics::counter!(crate::metrics::REPAIRS, "item_type" => ty.label()).increment(1);
    }
    for (rule, n) in change.rules() {
        metrics::counter!(crate::metrics::REPAIR_RULES, "rule" => rule).increment(n as u64);
    }
}
