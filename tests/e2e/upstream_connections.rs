//! Upstream connections to a plain-HTTP upstream: kept alive and reused by the worker that opened
//! them, never reused once a response was left unread, and a connection the upstream closed while
//! idle costs the client nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

/// How the scripted upstream treats a connection after each answer.
#[derive(Clone, Copy)]
enum AfterAnswer {
    KeepAlive,
    /// Closes the socket without saying so in the answer (as an idle timeout would).
    Close,
}

/// An HTTP/1.1 upstream that answers every request with `body` (chunked, one chunk per line, a
/// pause between chunks for `slow_path`) and counts the connections it accepted.
struct Upstream {
    url: String,
    accepted: Arc<AtomicUsize>,
}

impl Upstream {
    fn start(after: AfterAnswer) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || serve(stream, after));
            }
        });
        Upstream { url, accepted }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, after: AfterAnswer) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let Some((request_line, length)) = read_request_head(&mut reader) else {
            return;
        };
        let length = length.unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let head_only = request_line.starts_with("HEAD ");
        let slow = request_line.contains("/slow");
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if !head_only {
            for i in 0..20 {
                let event = format!("data: {{\"i\":{i}}}\n\n");
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                if out.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
                if slow {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            if out.write_all(b"0\r\n\r\n").is_err() {
                return;
            }
        }
        if let AfterAnswer::Close = after {
            return;
        }
    }
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let upstream = Upstream::start(AfterAnswer::KeepAlive);
    let proxy = Rethread::start(&upstream.url, &[]);
    let client = client();
    for path in ["/v1/models", "/v1/responses", "/v1/files", "/v1/responses"] {
        let resp = client
            .post(proxy.url(path))
            .header("authorization", KEY)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(text.ends_with("data: {\"i\":19}\n\n"), "{text}");
    }
    let head = client.head(proxy.url("/v1/models")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let after_head = client.get(proxy.url("/v1/models")).send().await.unwrap();
    assert_eq!(after_head.status(), 200);
    after_head.text().await.unwrap();
    assert_eq!(upstream.connections(), 1);
}

/// Accepted connections are handed to the workers in turn, so two clients' connections are
/// served by the two workers. Each worker keeps its own upstream connection: one opened by the
/// other worker would report its reads to that worker, which would wake this one for each.
#[tokio::test]
async fn each_worker_reuses_the_upstream_connections_it_opened() {
    let upstream = Upstream::start(AfterAnswer::KeepAlive);
    let proxy = Rethread::start(&upstream.url, &["--workers", "2"]);
    let clients = [client(), client()];
    for _ in 0..3 {
        for client in &clients {
            let resp = client.get(proxy.url("/v1/models")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let text = resp.text().await.unwrap();
            assert!(text.ends_with("data: {\"i\":19}\n\n"), "{text}");
        }
    }
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    let upstream = Upstream::start(AfterAnswer::Close);
    let proxy = Rethread::start(&upstream.url, &[]);
    for _ in 0..3 {
        let resp = client().get(proxy.url("/v1/models")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap();
        // Long enough for the upstream's close to reach rethread.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(upstream.connections(), 3);
}

#[tokio::test]
async fn a_response_left_unread_by_its_client_never_reaches_the_next_request() {
    let upstream = Upstream::start(AfterAnswer::KeepAlive);
    let proxy = Rethread::start(&upstream.url, &[]);
    let mut resp = client().get(proxy.url("/v1/slow")).send().await.unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: {\"i\":0}"));
    drop(resp);
    let next = client().get(proxy.url("/v1/models")).send().await.unwrap();
    assert_eq!(next.status(), 200);
    let text = next.text().await.unwrap();
    assert!(text.starts_with("data: {\"i\":0}\n\n"), "{text}");
    assert!(text.ends_with("data: {\"i\":19}\n\n"), "{text}");
    assert_eq!(upstream.connections(), 2);
}
