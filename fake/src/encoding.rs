//! Content-encoding of Responses answers, negotiated from `accept-encoding` like the real
//! service (which compresses large JSON and SSE). Streams are flushed per event so a compressed
//! SSE body still reaches the client incrementally.

use async_compression::tokio::write::{BrotliEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder};
use axum::http::HeaderMap;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

/// A content coding the fake can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Identity,
    Gzip,
    Br,
    Zstd,
    Deflate,
}

impl Coding {
    fn from_token(token: &str) -> Option<Coding> {
        match token.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Some(Coding::Gzip),
            "br" => Some(Coding::Br),
            "zstd" => Some(Coding::Zstd),
            "deflate" => Some(Coding::Deflate),
            "identity" => Some(Coding::Identity),
            _ => None,
        }
    }

    /// The `content-encoding` value, `None` for identity.
    pub(crate) fn header_value(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Br => Some("br"),
            Coding::Zstd => Some("zstd"),
            Coding::Deflate => Some("deflate"),
        }
    }
}

/// Choose the coding: `x-fake-encoding` forces one; else, when `compress` is on, the first
/// supported token of `accept-encoding` (q=0 excluded); else identity.
pub(crate) fn negotiate(headers: &HeaderMap, compress: bool) -> Result<Coding, String> {
    if let Some(forced) = headers.get("x-fake-encoding").and_then(|v| v.to_str().ok()) {
        return Coding::from_token(forced.trim())
            .ok_or_else(|| format!("x-fake-encoding: unknown coding '{forced}'"));
    }
    if !compress {
        return Ok(Coding::Identity);
    }
    let accept = headers
        .get_all("accept-encoding")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    for part in accept.split(',') {
        let mut pieces = part.split(';');
        let token = pieces.next().unwrap_or("").trim();
        let refused = pieces.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        if refused {
            continue;
        }
        match Coding::from_token(token) {
            Some(Coding::Identity) | None => {}
            Some(c) => return Ok(c),
        }
    }
    Ok(Coding::Identity)
}

enum Inner {
    Identity,
    Gzip(GzipEncoder<Vec<u8>>),
    Br(Box<BrotliEncoder<Vec<u8>>>),
    Zstd(ZstdEncoder<Vec<u8>>),
    Deflate(ZlibEncoder<Vec<u8>>),
}

/// An incremental encoder: each `chunk` returns the bytes to send now (flushed).
pub(crate) struct Encoder {
    inner: Inner,
}

macro_rules! each {
    ($inner:expr, $e:ident => $body:expr, $identity:expr) => {
        match $inner {
            Inner::Identity => $identity,
            Inner::Gzip($e) => $body,
            Inner::Br($e) => $body,
            Inner::Zstd($e) => $body,
            Inner::Deflate($e) => $body,
        }
    };
}

impl Encoder {
    pub(crate) fn new(coding: Coding) -> Self {
        let inner = match coding {
            Coding::Identity => Inner::Identity,
            Coding::Gzip => Inner::Gzip(GzipEncoder::new(Vec::new())),
            Coding::Br => Inner::Br(Box::new(BrotliEncoder::new(Vec::new()))),
            Coding::Zstd => Inner::Zstd(ZstdEncoder::new(Vec::new())),
            Coding::Deflate => Inner::Deflate(ZlibEncoder::new(Vec::new())),
        };
        Encoder { inner }
    }

    /// Encode and flush `data`.
    pub(crate) async fn chunk(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        each!(&mut self.inner, e => {
            e.write_all(data).await?;
            e.flush().await?;
            Ok(Bytes::from(std::mem::take(e.get_mut())))
        }, Ok(Bytes::copy_from_slice(data)))
    }

    /// Finish the stream; returns the trailing bytes.
    pub(crate) async fn finish(&mut self) -> std::io::Result<Bytes> {
        each!(&mut self.inner, e => {
            e.shutdown().await?;
            Ok(Bytes::from(std::mem::take(e.get_mut())))
        }, Ok(Bytes::new()))
    }
}

/// Encode a whole body at once.
pub(crate) async fn encode_all(coding: Coding, data: &[u8]) -> std::io::Result<Bytes> {
    if coding == Coding::Identity {
        return Ok(Bytes::copy_from_slice(data));
    }
    let mut enc = Encoder::new(coding);
    let mut out = enc.chunk(data).await?.to_vec();
    out.extend_from_slice(&enc.finish().await?);
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(accept) {
            h.insert("accept-encoding", v);
        }
        h
    }

    #[test]
    fn first_supported_token_wins() {
        assert_eq!(negotiate(&headers("gzip, br"), true), Ok(Coding::Gzip));
        assert_eq!(
            negotiate(&headers("foo, zstd;q=1, gzip"), true),
            Ok(Coding::Zstd)
        );
        assert_eq!(
            negotiate(&headers("br;q=0, deflate"), true),
            Ok(Coding::Deflate)
        );
        assert_eq!(negotiate(&headers("gzip"), false), Ok(Coding::Identity));
        assert_eq!(negotiate(&HeaderMap::new(), true), Ok(Coding::Identity));
    }
}
