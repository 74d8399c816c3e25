//! Every request that is not rethread's own: classify, forward, log one line.
//!
//! Only two routes are read: creating a response (repaired, and its answer captured) and
//! retrieving one (captured). Everything else, WebSocket upgrades included, passes through with
//! bodies streamed both ways and never parsed.

mod attempt;
mod create;
mod learn;
mod outcome;
mod socket;
mod tee;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::IntoResponse;
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::app::App;
use crate::error::ProxyError;
use crate::forward::{is_upgrade, remove_hop_by_hop};
use crate::metrics::status_class;
use crate::otel::{Parent, ServerSpan};
use outcome::Outcome;

/// What kind of request this is, as far as rethread cares; also a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteClass {
    ResponsesCreate,
    ResponsesRetrieve,
    /// The Responses API's WebSocket mode: frames repaired and learned.
    ResponsesSocket,
    Upgrade,
    Passthrough,
}

impl RouteClass {
    pub(crate) const ALL: [RouteClass; 5] = [
        Self::ResponsesCreate,
        Self::ResponsesRetrieve,
        Self::ResponsesSocket,
        Self::Upgrade,
        Self::Passthrough,
    ];

    pub(crate) fn of(method: &Method, path: &str, upgrade: bool) -> Self {
        let mut segments = path.trim_end_matches('/').rsplit('/');
        let last = segments.next().unwrap_or("");
        let before = segments.next().unwrap_or("");
        if upgrade && method == Method::GET && last == "responses" {
            RouteClass::ResponsesSocket
        } else if upgrade {
            RouteClass::Upgrade
        } else if method == Method::POST && last == "responses" {
            RouteClass::ResponsesCreate
        } else if method == Method::GET && before == "responses" && !last.is_empty() {
            RouteClass::ResponsesRetrieve
        } else {
            RouteClass::Passthrough
        }
    }

    /// `http.route`: the template of the paths of this class (`…` stands for the upstream's
    /// path prefix, `/v1` or Azure's `/openai/v1`); `None` where rethread knows no route.
    pub(crate) fn route(self) -> Option<&'static str> {
        match self {
            Self::ResponsesCreate | Self::ResponsesSocket => Some("…/responses"),
            Self::ResponsesRetrieve => Some("…/responses/{response_id}"),
            Self::Upgrade | Self::Passthrough => None,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::ResponsesCreate => "responses_create",
            Self::ResponsesRetrieve => "responses_retrieve",
            Self::ResponsesSocket => "responses_socket",
            Self::Upgrade => "upgrade",
            Self::Passthrough => "passthrough",
        }
    }
}

pub(crate) async fn handle(State(app): State<Arc<App>>, request: Request<Body>) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    let class = RouteClass::of(&method, request.uri().path(), is_upgrade(request.headers()));
    let span = match &app.telemetry {
        Some(telemetry) => telemetry.server(&method, class.route(), request.headers()),
        None => ServerSpan::default(),
    };
    let outcome = match class {
        RouteClass::ResponsesCreate => create::handle(&app, request, &span).await,
        RouteClass::ResponsesRetrieve => retrieve(&app, request, &span.parent()).await,
        RouteClass::Upgrade => upgrade(&app, request, &span.parent()).await,
        RouteClass::ResponsesSocket => upgrade(&app, request, &span.parent()).await,
        RouteClass::Passthrough => forward(&app, request, &span.parent()).await,
    };
    let (mut response, note, error) = match outcome {
        Ok((response, note)) => (response, note, None),
        Err(e) => {
            let code = e.code();
            let message = e.to_string();
            (e.into_response(), Outcome::default(), Some((code, message)))
        }
    };
    let upgrade = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    remove_hop_by_hop(response.headers_mut(), upgrade);
    span.respond(
        response.status().as_u16(),
        error.as_ref().map(|(code, _)| *code),
    );
    let trace_id = span.trace_id();
    let response = span.hold(response);

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics::counter!(crate::metrics::REQUESTS, "route" => class.label(), "status" => status_class(status)).increment(1);
    if !note.upstream.is_zero() {
        metrics::histogram!(crate::metrics::UPSTREAM_SECONDS, "route" => class.label())
            .record(note.upstream.as_secs_f64());
        metrics::histogram!(crate::metrics::OVERHEAD_SECONDS, "route" => class.label())
            .record(elapsed.saturating_sub(note.upstream).as_secs_f64());
    }
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match error {
        None => tracing::info!(
            method = %method,
            route = class.label(),
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            inserted = note.inserted,
            upstream_request_id = request_id,
            trace_id = trace_id.as_deref(),
            "request"
        ),
        Some((code, message)) => tracing::warn!(
            method = %method,
            route = class.label(),
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            code,
            error = %message,
            trace_id = trace_id.as_deref(),
            "request failed"
        ),
    }
    response
}

async fn forward(
    app: &App,
    request: Request<Body>,
    parent: &Parent,
) -> Result<(Response<Body>, Outcome), ProxyError> {
    let (mut parts, body) = request.into_parts();
    app.upstream.prepare(&mut parts)?;
    let mut span = parent.forward(&parts.method, &app.settings.upstream.url);
    span.inject(&mut parts.headers);
    let sent = Instant::now();
    let response = app.upstream.send(Request::from_parts(parts, body)).await?;
    span.status(response.status().as_u16());
    Ok((
        span.hold(response),
        Outcome {
            inserted: 0,
            upstream: sent.elapsed(),
        },
    ))
}

/// `GET …/responses/{id}`: background mode and retrieval teach the same turns as creation.
async fn retrieve(
    app: &Arc<App>,
    request: Request<Body>,
    parent: &Parent,
) -> Result<(Response<Body>, Outcome), ProxyError> {
    let tenant = app.tenants.key_for(request.headers());
    let (response, note) = forward(app, request, parent).await?;
    if !response.status().is_success() {
        return Ok((response, note));
    }
    Ok((
        learn::captured(app, tenant, learn::Learning::default(), response),
        note,
    ))
}

/// A protocol switch (WebSocket): forwarded, then bytes are copied both ways until either side
/// closes.
async fn upgrade(
    app: &Arc<App>,
    mut request: Request<Body>,
    parent: &Parent,
) -> Result<(Response<Body>, Outcome), ProxyError> {
    let class = RouteClass::of(request.method(), request.uri().path(), true);
    let tenant = app.tenants.key_for(request.headers());
    let client_side = hyper::upgrade::on(&mut request);
    let (mut parts, body) = request.into_parts();
    app.upstream.prepare(&mut parts)?;
    let inspect = class == RouteClass::ResponsesSocket;
    if inspect {
        // Frames must stay readable: no per-message compression on an inspected socket.
        parts.headers.remove(http::header::SEC_WEBSOCKET_EXTENSIONS);
    }
    let mut span = parent.forward(&parts.method, &app.settings.upstream.url);
    span.inject(&mut parts.headers);
    let sent = Instant::now();
    let mut response = app
        .upstream
        .send_raw(Request::from_parts(parts, body))
        .await?;
    span.status(response.status().as_u16());
    let note = Outcome {
        inserted: 0,
        upstream: sent.elapsed(),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_side = hyper::upgrade::on(&mut response);
        let app = app.clone();
        // Each `response.create` of the socket gets a CLIENT span of its own under the
        // upgrade's SERVER span.
        let parent = parent.clone();
        tokio::spawn(async move {
            match tokio::try_join!(client_side, upstream_side) {
                Ok((client, upstream)) if inspect => {
                    socket::relay(app, tenant, parent, client, upstream).await;
                }
                Ok((client, upstream)) => {
                    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
            }
        });
    }
    Ok((response.map(Body::new), note))
}
