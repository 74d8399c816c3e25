//! The Responses API's WebSocket mode: `response.create` frames repaired, server events learned.
//!
//! After the upgrade, rethread speaks WebSocket to both sides and relays every message. A client
//! text frame that is a `response.create` goes through the same decision and splice as an HTTP
//! body; server text frames are the same events as the SSE stream and teach the same turns, one
//! turn per terminal event. Anything else (binary, ping, frames that are not understood) passes
//! unchanged.
//!
//! The guarantees of HTTP hold here too. A `response.create` waits in a queue until its response
//! starts (`response.created`), and the client's next one is sent only then (the upstream
//! answers one at a time anyway), so every event is matched with the frame it answers. An `error` event that arrives before that is the upstream's
//! refusal of it: if memory lacked a reasoning item the error names, the frame is sent again with
//! it; if rethread had changed the frame, the client's own frame is sent once; only then does the
//! client see the error. The upstream answers one `response.create` at a time, in order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::attempt::{Attempt, Outgoing, Transport};
use super::learn::{remember, Learning};
use crate::app::App;
use crate::capture::TurnBuilder;
use crate::otel::Parent;
use crate::repair::upstream_error;
use crate::tenant::TenantKey;

/// How long the other direction may go on after one side closed, so the close handshake and the
/// last events still get through.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct FrameType<'a> {
    #[serde(rename = "type", borrow, default)]
    ty: Option<std::borrow::Cow<'a, str>>,
}

fn frame_type(text: &str) -> Option<String> {
    serde_json::from_str::<FrameType<'_>>(text)
        .ok()
        .and_then(|f| f.ty.map(|t| t.into_owned()))
}

/// State shared by the two directions of one socket.
struct Socket {
    app: Arc<App>,
    tenant: TenantKey,
    /// The upgrade's SERVER span: each `response.create`'s CLIENT spans hang there.
    parent: Parent,
    /// `response.create` frames sent upstream whose responses have not started yet, oldest first.
    pending: Mutex<VecDeque<Attempt>>,
    /// Told whenever a `response.create` leaves the queue (its response started, or its
    /// refusal went to the client).
    left: tokio::sync::Notify,
}

impl Socket {
    /// A builder for the next response's turn; it reads the response's own facts (id, model,
    /// usage) only for a trace.
    fn turn_builder(&self) -> TurnBuilder {
        let builder = TurnBuilder::new(self.app.capture_limits(false).keep);
        match self.parent.is_open() {
            true => builder.with_facts(),
            false => builder,
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Attempt>> {
        crate::sync::lock(&self.pending)
    }

    /// Waits (up to `PIPELINE_WAIT`) until no `response.create` waits for its response, so
    /// each event that starts or refuses one is matched with the right frame, even when a
    /// refused one is sent again.
    async fn one_at_a_time(&self) {
        let deadline = tokio::time::Instant::now() + PIPELINE_WAIT;
        loop {
            let left = self.left.notified();
            if self.queue().is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, left).await.is_err() {
                return;
            }
        }
    }
}

/// Longest a client's `response.create` waits for the one before it to start.
const PIPELINE_WAIT: Duration = Duration::from_secs(10);

/// Relays messages between the upgraded client and upstream connections until both close (or
/// one has closed and the other has had `CLOSE_GRACE` to follow).
pub(super) async fn relay(
    app: Arc<App>,
    tenant: TenantKey,
    parent: Parent,
    client: Upgraded,
    upstream: Upgraded,
) {
    let client = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
    let upstream =
        WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, None).await;
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    let socket = Arc::new(Socket {
        app,
        tenant,
        parent,
        pending: Mutex::new(VecDeque::new()),
        left: tokio::sync::Notify::new(),
    });
    // Frames the inbound side wants sent again (a retry or the client's own), in order.
    let (resend, mut resends) = mpsc::unbounded_channel::<String>();

    let outbound = {
        let socket = socket.clone();
        async move {
            loop {
                let message = tokio::select! {
                    message = client_rx.next() => match message {
                        Some(Ok(Message::Text(text))) => {
                            Message::Text(outgoing(&socket, text.as_str()).await.into())
                        }
                        Some(Ok(other)) => other,
                        _ => break,
                    },
                    Some(text) = resends.recv() => Message::Text(text.into()),
                };
                let closing = matches!(message, Message::Close(_));
                if upstream_tx.send(message).await.is_err() || closing {
                    break;
                }
            }
            let _ = upstream_tx.close().await;
        }
    };
    let inbound = {
        let socket = socket.clone();
        async move {
            let mut builder = socket.turn_builder();
            let mut started = Started::default();
            while let Some(Ok(message)) = upstream_rx.next().await {
                if let Message::Text(text) = &message {
                    match incoming(&socket, text.as_str(), &mut started) {
                        Incoming::Relay => {
                            learn(&socket, &mut builder, &mut started, text.as_str())
                        }
                        Incoming::Refused(attempt) => {
                            if let Some(frame) = refused(&socket, attempt, text.as_bytes()).await {
                                if resend.send(frame).is_ok() {
                                    continue; // the client never sees this refusal
                                }
                            }
                        }
                    }
                }
                let closing = matches!(message, Message::Close(_));
                if client_tx.send(message).await.is_err() || closing {
                    break;
                }
            }
            let _ = client_tx.close().await;
        }
    };
    tokio::pin!(outbound, inbound);
    tokio::select! {
        () = &mut outbound => { let _ = tokio::time::timeout(CLOSE_GRACE, inbound).await; }
        () = &mut inbound => { let _ = tokio::time::timeout(CLOSE_GRACE, outbound).await; }
    }
}

/// The frame to send upstream for a client's text frame: repaired when it is a `response.create`
/// rethread can improve. Every `response.create` is queued until its response starts.
async fn outgoing(socket: &Socket, text: &str) -> String {
    if frame_type(text).as_deref() != Some("response.create") {
        return text.to_owned();
    }
    socket.one_at_a_time().await;
    let bytes = Bytes::copy_from_slice(text.as_bytes());
    let parent = socket.parent.clone();
    let (attempt, outgoing) = Attempt::begin(
        &socket.app,
        socket.tenant,
        bytes,
        Transport::WebSocket,
        parent,
    )
    .await;
    let frame = framed(outgoing).unwrap_or_else(|| text.to_owned());
    socket.queue().push_back(attempt);
    frame
}

/// A frame's text; `None` when the bytes are not UTF-8 (a change only inserts JSON, so never in
/// practice).
fn framed(outgoing: Outgoing) -> Option<String> {
    String::from_utf8(outgoing.into_vec()).ok()
}

enum Incoming {
    /// Pass the event to the client.
    Relay,
    /// The upstream refused this `response.create` (taken from the front of the queue): decide
    /// what to send instead (`refused`).
    Refused(Box<Attempt>),
}

/// The response being streamed: its request's model and origin, for the turn it teaches.
#[derive(Default)]
struct Started {
    learning: Option<Learning>,
}

/// What to do with a server event, given the `response.create` frames waiting for theirs.
fn incoming(socket: &Socket, text: &str, current: &mut Started) -> Incoming {
    let ty = frame_type(text);
    let mut queue = socket.queue();
    match ty.as_deref() {
        Some("response.created") => {
            if let Some(started) = queue.pop_front() {
                socket.left.notify_waiters();
                current.learning = Some(started.finish(true).learning);
            }
            Incoming::Relay
        }
        Some("error") => match queue.pop_front() {
            Some(front) => Incoming::Refused(Box::new(front)),
            None => Incoming::Relay,
        },
        _ => Incoming::Relay,
    }
}

/// After the upstream refused `attempt`'s frame: the frame to send instead (back at the front
/// of the queue, which waits for its response), or `None` to let the client see the refusal.
/// The client's next `response.create` waits meanwhile (`one_at_a_time`), so nothing is sent
/// between the refusal and what answers it.
async fn refused(socket: &Socket, mut attempt: Box<Attempt>, event: &[u8]) -> Option<String> {
    let error = upstream_error::read(event);
    match attempt.refused(&error).await.and_then(framed) {
        Some(frame) => {
            socket.queue().push_front(*attempt);
            Some(frame)
        }
        None => {
            attempt.finish(false);
            socket.left.notify_waiters();
            None
        }
    }
}

/// Feeds a server event to the turn being built; a terminal event records the turn.
fn learn(socket: &Socket, builder: &mut TurnBuilder, current: &mut Started, text: &str) {
    match builder.on_event(text.as_bytes()) {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::debug!(error = %e, "websocket event not understood");
            return;
        }
    }
    let done = std::mem::replace(builder, socket.turn_builder());
    let Learning {
        model,
        origin,
        span,
        ..
    } = current.learning.take().unwrap_or_default();
    span.answered(done.facts());
    drop(span);
    if let Some(turn) = done.finish() {
        remember(&socket.app, socket.tenant, model.as_deref(), origin, turn);
    }
}
