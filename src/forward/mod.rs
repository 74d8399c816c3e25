//! The upstream client: where a request goes, which headers travel, and how long to wait.
//!
//! Bodies are streamed both ways as hyper frames (trailers included), connections are pooled, and
//! HTTPS upstreams negotiate HTTP/2 by ALPN. Hop-by-hop headers (RFC 9110 §7.6.1) stop here;
//! everything else, `accept-encoding` and `x-request-id` included, passes unchanged. Silence is
//! bounded by an idle timeout that restarts with every chunk, so a live stream is never cut.

use std::time::Duration;

use axum::body::Body;
use http::header;
use http::{Request, Response, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::ProxyError;

mod body;
mod coalesce;
mod headers;
mod inline;

use body::{within_idle, Progress, Watched};
pub use body::{ChunksBody, IdleTimedOut, IdleTimeout, Prefixed};
pub use coalesce::Coalesce;
pub use headers::{is_upgrade, remove_hop_by_hop};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The configured upstream and a pooled client for it.
#[derive(Clone)]
pub struct Upstream {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    prefix: String,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    /// Connections driven in the request's own task, for a plain-HTTP upstream.
    inline: Option<std::sync::Arc<inline::InlinePool>>,
    idle_timeout: Duration,
}

impl Upstream {
    pub fn new(
        base: &Uri,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> std::io::Result<Self> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let provider = rustls::crypto::ring::default_provider;
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider())
        {
            Ok(builder) => builder,
            Err(_) => {
                // No system roots (an image without CA files): only plain-HTTP upstreams work.
                let config =
                    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider()))
                        .with_safe_default_protocol_versions()
                        .map_err(std::io::Error::other)?
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let tls = builder
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http1_preserve_header_case(true)
            .build(tls);
        let (Some(scheme), Some(authority)) = (base.scheme().cloned(), base.authority().cloned())
        else {
            return Err(std::io::Error::other("upstream must be an absolute URL"));
        };
        let inline = (scheme == http::uri::Scheme::HTTP)
            .then(|| std::sync::Arc::new(inline::InlinePool::new(&authority, connect_timeout)));
        Ok(Upstream {
            scheme,
            authority,
            prefix: base.path().trim_end_matches('/').to_owned(),
            client,
            inline,
            idle_timeout,
        })
    }

    /// The upstream URI for a client's path and query: the upstream's own path prefixed.
    pub fn target(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        if !path_and_query.starts_with('/') {
            return Err(ProxyError::NotForwardable);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path_and_query}", self.prefix))
            .build()
            .map_err(|_| ProxyError::NotForwardable)
    }

    /// Sends a prepared request; the response body is guarded by the idle timeout.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let idle = self.idle_timeout;
        match &self.inline {
            Some(pool) if !is_upgrade(request.headers()) => {
                let progress = Progress::new();
                let request = request.map(|b| Body::new(Watched::new(b, progress.clone())));
                let response = match within_idle(pool.send(request), idle, &progress).await {
                    None => return Err(ProxyError::Timeout(idle)),
                    Some(Err(e)) => return Err(ProxyError::Unreachable(describe(&e))),
                    Some(Ok(r)) => r,
                };
                Ok(response.map(|body| Body::new(Coalesce::new(IdleTimeout::new(body, idle)))))
            }
            _ => {
                let response = self.send_raw(request).await?;
                Ok(response.map(|body| Body::new(Coalesce::new(IdleTimeout::new(body, idle)))))
            }
        }
    }

    /// Sends a prepared request and returns the upstream's response as it came (for upgrades,
    /// whose connection outlives the body).
    pub async fn send_raw(
        &self,
        request: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, ProxyError> {
        let progress = Progress::new();
        let request = request.map(|b| Body::new(Watched::new(b, progress.clone())));
        match within_idle(self.client.request(request), self.idle_timeout, &progress).await {
            None => Err(ProxyError::Timeout(self.idle_timeout)),
            Some(Err(e)) if e.is_connect() => Err(ProxyError::Unreachable(format!(
                "connection failed{}",
                causes(&e)
            ))),
            Some(Err(e)) => Err(ProxyError::Unreachable(format!(
                "request failed{}",
                causes(&e)
            ))),
            Some(Ok(r)) => Ok(r),
        }
    }

    /// Rewrites a client's request head for the upstream.
    pub fn prepare(&self, parts: &mut http::request::Parts) -> Result<(), ProxyError> {
        if parts.method == http::Method::CONNECT {
            return Err(ProxyError::NotForwardable);
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = self.target(path)?;
        // The pool picks HTTP/1.1 or HTTP/2 per connection; the request must not insist.
        parts.version = Version::HTTP_11;
        let upgrade = is_upgrade(&parts.headers);
        remove_hop_by_hop(&mut parts.headers, upgrade);
        // Replaced in place, so header order is kept.
        if parts.headers.contains_key(header::HOST) {
            if let Ok(host) = http::HeaderValue::from_str(self.authority.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        Ok(())
    }
}

/// An error and its causes, without the request (it may hold credentials).
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    format!("{error}{}", causes(error))
}

/// The causes of an error, each after a colon.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_path_is_a_prefix() {
        let u = Upstream::new(
            &"http://h:1/base/".parse().unwrap(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            u.target("/v1/responses?a=%2F").unwrap().to_string(),
            "http://h:1/base/v1/responses?a=%2F"
        );
        assert!(u.target("*").is_err());
    }
}
