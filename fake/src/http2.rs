//! What strict HTTP/2 servers refuse, refused the same way.
//!
//! RFC 9113 §8.2.2 forbids connection-specific header fields, and §8.3.1 puts the authority in
//! `:authority`. nginx turns `:authority` into a `host` header and then refuses any `host` field
//! beside it with 400 ("client sent duplicate host header"), whatever its value; so does the fake.
//! The h2 layer beneath already resets a stream whose headers are connection-specific (`connection`,
//! `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`, `te` other than `trailers`)
//! before the fake sees it; the check here is a second line, answered like nginx's.

use axum::body::Body;
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;

/// Connection-specific header fields (RFC 9113 §8.2.2); `te` is allowed as `trailers`.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// The 400 a strict server answers to an HTTP/2 request, if it is malformed.
pub(crate) fn refusal(parts: &Parts) -> Option<Response> {
    if let (Some(authority), Some(host)) = (parts.uri.authority(), parts.headers.get(header::HOST))
    {
        return Some(bad_request(&format!(
            "client sent duplicate host header: \"host: {}\", previous value: \"host: {authority}\"",
            String::from_utf8_lossy(host.as_bytes())
        )));
    }
    if let Some(name) = CONNECTION_SPECIFIC
        .iter()
        .find(|name| parts.headers.contains_key(**name))
    {
        return Some(bad_request(&format!(
            "client sent connection-specific header \"{name}\" over HTTP/2"
        )));
    }
    if parts
        .headers
        .get(header::TE)
        .is_some_and(|te| te != "trailers")
    {
        return Some(bad_request(
            "client sent \"te\" other than \"trailers\" over HTTP/2",
        ));
    }
    None
}

fn bad_request(message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "malformed_http2_request"}});
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
