//! Which headers travel: hop-by-hop headers (RFC 9110 §7.6.1) and those `Connection` names stop
//! at rethread; an upgrade keeps what the next hop needs to switch protocols.

use http::header::{self, HeaderName};
use http::HeaderMap;

/// Whether a request asks to switch protocols (WebSocket).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// Removes hop-by-hop headers and those the `Connection` header names; an upgrade keeps
/// `Connection: upgrade` and `Upgrade`, which the next hop needs. The remaining headers keep their
/// order.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let drop = |name: &HeaderName| {
        let kept_for_upgrade = upgrade && (name == header::CONNECTION || name == header::UPGRADE);
        !kept_for_upgrade && (HOP_BY_HOP.contains(&name.as_str()) || named.contains(name))
    };
    if !headers.keys().any(drop) {
        return;
    }
    retain(headers, |name| !drop(name));
    if upgrade {
        headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    }
}

/// Removes every `name` field, keeping the others in their order.
pub(super) fn remove_header(headers: &mut HeaderMap, name: &HeaderName) {
    if headers.contains_key(name) {
        retain(headers, |n| n != name);
    }
}

/// Keeps the fields whose name passes `keep`, in their order (removing from a `HeaderMap` in
/// place would move the last field into the gap).
fn retain(headers: &mut HeaderMap, keep: impl Fn(&HeaderName) -> bool) {
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        if keep(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    *headers = kept;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_stop_here() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("accept-encoding", "gzip, br".parse().unwrap());
        h.insert("x-request-id", "abc".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["accept-encoding", "x-request-id"]);
    }

    #[test]
    fn removing_a_header_keeps_the_others_in_order() {
        let mut h = HeaderMap::new();
        for name in ["a", "host", "b", "c"] {
            h.append(name, "1".parse().unwrap());
        }
        h.append("a", "2".parse().unwrap());
        remove_header(&mut h, &header::HOST);
        let names: Vec<_> = h
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(names, [("a", "1"), ("a", "2"), ("b", "1"), ("c", "1")]);
    }

    #[test]
    fn an_upgrade_keeps_what_the_next_hop_needs() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert!(h["connection"]
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("upgrade"));
    }
}
