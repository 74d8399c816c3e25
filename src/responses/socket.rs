//! The Responses API's WebSocket mode: `response.create` frames repaired, server events learned.
//!
//! After the upgrade, rethread speaks WebSocket to both sides and relays every message. A client
//! text frame that is a `response.create` goes through the same plan and splice as an HTTP body;
//! server text frames are the same events as the SSE stream and teach the same turns, one turn per
//! terminal event. Anything else (binary, ping, frames that are not understood) passes unchanged.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::capture::TurnBuilder;
use super::create::{planned, record_repair, remember};
use super::request;
use crate::app::App;
use crate::config::Mode;
use crate::tenant::TenantKey;

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

/// Relays messages between the upgraded client and upstream connections until either closes.
pub async fn relay(app: Arc<App>, tenant: TenantKey, client: Upgraded, upstream: Upgraded) {
    let client = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
    let upstream =
        WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, None).await;
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();

    let outbound = {
        let app = app.clone();
        async move {
            while let Some(Ok(message)) = client_rx.next().await {
                let message = match message {
                    Message::Text(text) => {
                        Message::Text(repaired(&app, tenant, text.as_str()).await.into())
                    }
                    other => other,
                };
                let closing = matches!(message, Message::Close(_));
                if upstream_tx.send(message).await.is_err() || closing {
                    break;
                }
            }
            let _ = upstream_tx.close().await;
        }
    };
    let inbound = async move {
        let mut builder = TurnBuilder::new(app.capture_limits().keep);
        while let Some(Ok(message)) = upstream_rx.next().await {
            if let Message::Text(text) = &message {
                learn(&app, tenant, &mut builder, text.as_str());
            }
            let closing = matches!(message, Message::Close(_));
            if client_tx.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = client_tx.close().await;
    };
    // Either side closing ends the session; the other direction is dropped with it.
    tokio::select! {
        () = outbound => {},
        () = inbound => {},
    }
}

/// The frame to send upstream: repaired when it is a `response.create` rethread can improve.
async fn repaired(app: &App, tenant: TenantKey, text: &str) -> String {
    if frame_type(text).as_deref() != Some("response.create") {
        return text.to_owned();
    }
    let bytes = Bytes::copy_from_slice(text.as_bytes());
    let Ok(view) = request::parse(&bytes) else {
        return text.to_owned();
    };
    let change = planned(app, tenant, &bytes, &view).await;
    if change.is_empty() {
        return text.to_owned();
    }
    if app.settings.mode == Mode::Observe {
        tracing::info!(ids = ?change.ids(), "observe mode: would insert (websocket)");
        return text.to_owned();
    }
    record_repair(&change);
    tracing::info!(
        inserted = change.items(),
        "repaired a websocket response.create"
    );
    let spliced = super::splice::concat(&change.apply(&bytes, &view));
    String::from_utf8(spliced).unwrap_or_else(|_| text.to_owned())
}

/// Feeds a server event to the turn being built; a terminal event records the turn.
fn learn(app: &App, tenant: TenantKey, builder: &mut TurnBuilder, text: &str) {
    match builder.on_event(text.as_bytes()) {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::debug!(error = %e, "websocket event not understood");
            return;
        }
    }
    let done = std::mem::replace(builder, TurnBuilder::new(app.capture_limits().keep));
    if let Some(turn) = done.finish() {
        remember(app, tenant, turn);
    }
}
