//! rethread's own errors, and the one place they become HTTP responses.
//!
//! Upstream errors are never rewritten: they pass through as the upstream sent them. Only what
//! rethread itself cannot do (reach the upstream, accept an oversized body, proxy a `CONNECT`)
//! becomes an OpenAI-style error body, so SDKs show it like any other API error.

use std::error::Error;
use std::fmt;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

pub(crate) type BoxError = Box<dyn Error + Send + Sync>;

/// Where reaching the upstream failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// No connection (refused, unresolvable, TLS, connect timeout).
    Connect,
    /// A connection, but the request or its response head failed on it.
    Request,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connection failed",
            Self::Request => "request failed",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// The message carries the cause chain (never the request, which may hold credentials).
    #[error("rethread could not reach the upstream: {stage}: {source}{}", causes(&**.source))]
    Unreachable {
        stage: Stage,
        #[source]
        source: BoxError,
    },
    /// The upstream did not process the request, and its body was read too far to send again.
    #[error("the upstream did not process the request ({reason}), and it was not sent again: its body was read past the {limit} bytes kept for a resend: {source}{}", causes(&**.source))]
    NotResent {
        reason: &'static str,
        limit: usize,
        #[source]
        source: BoxError,
    },
    #[error("the upstream did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("request body exceeds rethread's limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body could not be read: {source}{}", causes(&**.source))]
    ClientBody {
        #[source]
        source: BoxError,
    },
    #[error("the client sent nothing of its request body for {0:?}")]
    ClientTimeout(std::time::Duration),
    #[error("rethread forwards only origin-form requests to its configured upstream")]
    NotForwardable,
}

impl ProxyError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Unreachable { .. } | Self::NotResent { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_unreachable",
            ),
            Self::Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
            ),
            Self::BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
            ),
            Self::ClientBody { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "unreadable_body",
            ),
            Self::ClientTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
            ),
            Self::NotForwardable => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "not_forwardable",
            ),
        }
    }

    /// A label for metrics.
    pub(crate) fn code(&self) -> &'static str {
        self.parts().2
    }
}

/// The causes of an error, each after a colon.
pub(crate) fn causes(error: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether `E` is `error` or one of its causes, however deep.
pub(crate) fn is_caused_by<E: Error + 'static>(error: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<E>() {
            return true;
        }
        cause = e.source();
    }
    false
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let (status, ty, code) = self.parts();
        let body = serde_json::json!({
            "error": { "message": self.to_string(), "type": ty, "param": null, "code": code }
        });
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}
