//! HTTPS upstreams, HTTP/2 and HTTP/1.1 by ALPN: the repair and passthrough paths over both, a
//! private CA trusted through `--upstream-ca`, and `rethread check` naming the protocol.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::process::Command;

use rethread_fake::Alpn;
use serde_json::Value;

use crate::common::*;

/// `rethread check` against `upstream`, off the runtime (the fake serves on it).
async fn check(upstream: String, ca: Option<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rethread"));
        cmd.args(["--upstream", &upstream, "--connect-timeout", "5s"]);
        if let Some(ca) = &ca {
            cmd.args(["--upstream-ca", ca]);
        }
        let out = cmd
            .arg("check")
            .env_remove("RETHREAD_UPSTREAM_CA")
            .env_remove("RETHREAD_CONFIG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn check_names_the_protocol_agreed_with_the_upstream() {
    for (alpn, protocol) in [
        (Alpn::H2AndHttp1, "TLS, HTTP/2"),
        (Alpn::Http1, "TLS, HTTP/1.1"),
    ] {
        let upstream = HttpsFake::start(alpn).await;
        let (ok, out) = check(upstream.url(), Some(upstream.ca().to_owned())).await;
        let port = upstream.fake.addr().port();
        assert!(
            out.contains(&format!(
                "upstream: reachable (127.0.0.1:{port}, {protocol})"
            )),
            "{out}"
        );
        assert!(ok, "{out}");
        assert!(
            out.contains(&format!("upstream_ca = {}", upstream.ca())),
            "{out}"
        );
    }
    let plain = fake().await;
    let (ok, out) = check(plain.url(), None).await;
    assert!(ok && out.contains(", HTTP/1.1)"), "{out}");
}

#[tokio::test]
async fn a_private_ca_is_needed_and_trusted_beside_the_system_roots() {
    let upstream = HttpsFake::start(Alpn::Http1).await;
    let (ok, out) = check(upstream.url(), None).await;
    assert!(!ok, "{out}");
    assert!(out.contains("UNREACHABLE"), "{out}");
    assert!(out.contains("certificate"), "the reason is named: {out}");

    let proxy = upstream.proxy(&[]);
    let resp = client().get(proxy.url("/v1/echo")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(echoed["version"], "HTTP/1.1");
}

#[test]
fn an_unreadable_upstream_ca_stops_rethread_at_start_naming_the_file() {
    let missing =
        std::env::temp_dir().join(format!("rethread-no-such-ca-{}.pem", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_rethread"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "https://127.0.0.1:9",
        ])
        .env("RETHREAD_UPSTREAM_CA", &missing)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

/// Both protocols, and the version the fake then reports.
const BOTH: [(Alpn, &str); 2] = [(Alpn::H2AndHttp1, "HTTP/2.0"), (Alpn::Http1, "HTTP/1.1")];

#[tokio::test]
async fn image_followup_gets_its_reasoning_back_over_both_protocols() {
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&["--fallback-retries", "0"]);
        let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
        assert_eq!(first.status, 200, "{version}: {}", first.text);
        let ig = output_id(&first.body, "image_generation_call");
        let followup = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
        assert_eq!(followup.status, 200, "{version}: {}", followup.text);
        assert_eq!(followup.inserted(), Some(2), "{version}");
        let sent: Value =
            serde_json::from_slice(&upstream.fake.last_request_body().unwrap()).unwrap();
        assert_eq!(sent["input"][1]["id"], output_id(&first.body, "reasoning"));
        assert_eq!(
            upstream.fake.http2_requests() == 2,
            alpn == Alpn::H2AndHttp1,
            "{version}"
        );
    }
}

#[tokio::test]
async fn a_streamed_turn_over_both_protocols_teaches_the_followup() {
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&["--fallback-retries", "0"]);
        let mut request = image_request();
        request["stream"] = serde_json::json!(true);
        let first = post(&proxy.url("/v1/responses"), KEY, &request, &[]).await;
        assert_eq!(first.status, 200, "{version}: {}", first.text);
        let ig = streamed_id(&first.text, "image_generation_call");
        let followup = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
        assert_eq!(followup.status, 200, "{version}: {}", followup.text);
        assert_eq!(followup.inserted(), Some(2), "{version}");
    }
}

#[tokio::test]
async fn the_authority_travels_as_http2_wants_and_http1_needs() {
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&[]);
        let resp = client()
            .get(proxy.url("/v1/echo"))
            .header("x-request-id", "mine")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{version}");
        let echoed: Value = resp.json().await.unwrap();
        assert_eq!(echoed["version"], version);
        let authority = upstream.fake.addr().to_string();
        if alpn == Alpn::Http1 {
            assert_eq!(
                echoed_header(&echoed, "host"),
                [authority.as_str()],
                "{echoed}"
            );
        } else {
            // RFC 9113 §8.3.1: the authority in `:authority`, and no `host` beside it.
            assert_eq!(echoed["authority"], authority.as_str(), "{echoed}");
            assert!(echoed_header(&echoed, "host").is_empty(), "{echoed}");
        }
        assert_eq!(echoed_header(&echoed, "x-request-id"), ["mine"]);
    }
}

#[tokio::test]
async fn websocket_mode_is_repaired_through_an_upstream_that_offers_http2() {
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&["--fallback-retries", "0"]);
        // An HTTP/2 connection is pooled first: the upgrade must not be sent on it.
        let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
        assert_eq!(first.status, 200, "{version}: {}", first.text);
        let mut socket = ws_connect(&format!("ws://{}/v1/responses", proxy.addr), KEY).await;
        let events = ws_create(&mut socket, image_request()).await;
        assert_eq!(
            events.last().unwrap()["type"],
            "response.completed",
            "{version}"
        );
        let ig = events
            .iter()
            .find(|e| {
                e["type"] == "response.output_item.done"
                    && e["item"]["type"] == "image_generation_call"
            })
            .unwrap()["item"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let followup = ws_create(&mut socket, image_followup(&ig)).await;
        assert_eq!(
            followup.last().unwrap()["type"],
            "response.completed",
            "{version}: {followup:?}"
        );
    }
}

#[tokio::test]
async fn passthrough_over_both_protocols_is_transparent() {
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&[]);
        let c = client();
        // Bodies: an empty POST keeps its length, a GET gets none.
        let echoed = echo(
            c.post(proxy.url("/v1/echo"))
                .header("content-length", "0")
                .body(""),
        )
        .await;
        assert_eq!(echoed["content_length"], "0", "{version}");
        assert_eq!(echoed["version"], version);
        let echoed = echo(c.get(proxy.url("/v1/echo?a=%2F%2f&b=+&c"))).await;
        assert_eq!(echoed["content_length"], Value::Null, "{version}");
        assert_eq!(echoed["transfer_encoding"], Value::Null, "{version}");
        assert_eq!(echoed["query"], "a=%2F%2f&b=+&c", "{version}");
        // Hop-by-hop and connection-specific headers stop at rethread (over HTTP/2 the fake would
        // answer 400 to any of them); the others pass, in order, lower-case on HTTP/2.
        let echoed = echo(
            c.get(proxy.url("/v1/echo"))
                .header("connection", "x-private")
                .header("x-private", "hop")
                .header("keep-alive", "timeout=5")
                .header("proxy-connection", "keep-alive")
                .header("te", "trailers")
                .header("upgrade", "h2c")
                .header("OpenAI-Beta", "responses=v1")
                .header("x-request-id", "mine"),
        )
        .await;
        for name in [
            "connection",
            "x-private",
            "keep-alive",
            "proxy-connection",
            "te",
            "upgrade",
        ] {
            assert!(
                echoed_header(&echoed, name).is_empty(),
                "{version}: {name} in {echoed}"
            );
        }
        assert_eq!(
            echoed_header(&echoed, "openai-beta"),
            ["responses=v1"],
            "{version}"
        );
        assert_eq!(
            echoed_header(&echoed, "x-request-id"),
            ["mine"],
            "{version}"
        );
        // Response headers, statuses, bodiless answers.
        response_headers_pass(&proxy, version).await;
        let resp = raw_client()
            .get(proxy.url("/v1/status/429"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 429, "{version}");
        assert_eq!(resp.headers()["retry-after"], "7");
        for code in [204, 304] {
            let resp = raw_client()
                .get(proxy.url(&format!("/v1/status/{code}")))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), code, "{version}");
            assert!(resp.bytes().await.unwrap().is_empty());
        }
        let head = raw_client()
            .head(proxy.url("/v1/echo"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200, "{version}");
        assert!(head.bytes().await.unwrap().is_empty());
        // A large download keeps its length.
        let n = 8 * 1024 * 1024;
        let resp = raw_client()
            .get(proxy.url(&format!("/v1/blob?bytes={n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()["content-length"],
            n.to_string().as_str(),
            "{version}"
        );
        let body = resp.bytes().await.unwrap();
        assert!(body.len() == n && body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        let http2 = upstream.fake.http2_requests() > 0;
        assert_eq!(http2, alpn == Alpn::H2AndHttp1, "{version}");
    }
}

#[tokio::test]
async fn a_mixed_case_header_reaches_an_http2_upstream_lower_case() {
    use std::io::{Read, Write};
    let upstream = HttpsFake::start(Alpn::H2AndHttp1).await;
    let proxy = upstream.proxy(&[]);
    let addr = proxy.addr.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .write_all(b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nX-Custom-Header: 1\r\nOpenAI-Organization: org\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let echoed: Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| {
        // A chunked answer: the JSON is the one line that starts with `{`.
        serde_json::from_str(body.lines().find(|l| l.starts_with('{')).unwrap()).unwrap()
    });
    assert_eq!(echoed["version"], "HTTP/2.0");
    assert_eq!(echoed_header(&echoed, "x-custom-header"), ["1"]);
    assert_eq!(echoed_header(&echoed, "openai-organization"), ["org"]);
}

#[tokio::test]
async fn a_large_upload_streams_through_over_both_protocols() {
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&["--fallback-retries", "0"]);
        // Passthrough, streamed without a length: HTTP/2 flow control all the way.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..256).map(|i| Ok(vec![i as u8; 64 * 1024])).collect();
        let all: Vec<u8> = chunks
            .iter()
            .flat_map(|c| c.as_ref().unwrap().clone())
            .collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let echoed = echo(client().post(proxy.url("/v1/echo/files")).body(body)).await;
        assert_eq!(echoed["body_len"], all.len(), "{version}");
        assert_eq!(echoed["body_fnv64"], fnv(&all), "{version}");
        // A Responses follow-up of 8 MiB, read, repaired and spliced.
        let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
        let ig = output_id(&first.body, "image_generation_call");
        let mut followup = image_followup(&ig);
        followup["input"][0] = user(&"x".repeat(8 << 20));
        let answer = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
        assert_eq!(answer.status, 200, "{version}: {}", answer.text);
        assert_eq!(answer.inserted(), Some(2), "{version}");
        assert!(upstream.fake.last_request_body().unwrap().len() > 8 << 20);
    }
}

#[tokio::test]
async fn a_long_sse_stream_arrives_whole_and_event_by_event_over_both_protocols() {
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&[]);
        let started = std::time::Instant::now();
        let mut resp = client()
            .get(proxy.url("/v1/sse?events=400&delay_ms=3"))
            .send()
            .await
            .unwrap();
        let first = resp.chunk().await.unwrap().unwrap();
        let first_at = started.elapsed();
        assert!(
            String::from_utf8_lossy(&first).starts_with("data: {\"i\":0}"),
            "{version}"
        );
        let mut all = first.to_vec();
        while let Some(c) = resp.chunk().await.unwrap() {
            all.extend_from_slice(&c);
        }
        let text = String::from_utf8(all).unwrap();
        assert_eq!(text.matches("data: ").count(), 400, "{version}");
        assert!(text.ends_with("data: {\"i\":399}\n\n"), "{version}");
        assert!(
            first_at < started.elapsed() / 4,
            "{version}: the first event was held back"
        );
    }
}

#[tokio::test]
async fn a_client_leaving_mid_stream_leaves_the_proxy_and_the_connection_serving() {
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&[]);
        clients_leave_mid_stream(&proxy, 3, "50", version).await;
    }
}

/// An HTTPS upstream that speaks only HTTP/2 and misbehaves as the request's `x-script` header
/// asks: `reset-before-head` (RST_STREAM instead of an answer), `reset-after-head` (RST_STREAM
/// right after the response head, before any byte of the body), `reset-mid-body` (RST_STREAM after
/// the first event), `goaway-mid-body` (GOAWAY with an error, the connection closed, after the
/// first event), `goaway-graceful` (GOAWAY, then the stream finished), `refuse-after-head`
/// (RST_STREAM with `REFUSED_STREAM` after the response head); anything else answers `ok`. It
/// counts the connections and streams it accepted.
struct H2Upstream {
    url: String,
    ca: std::path::PathBuf,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    streams: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl H2Upstream {
    async fn start() -> H2Upstream {
        use std::sync::atomic::Ordering;
        let ca = rethread_fake::TestCa::new().unwrap();
        let acceptor = ca.acceptor(Alpn::H2).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let path = std::env::temp_dir().join(format!(
            "rethread-test-h2-ca-{}-{}.pem",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(&path, ca.ca_pem()).unwrap();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let streams = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (count, streamed) = (connections.clone(), streams.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (acceptor, streamed) = (acceptor.clone(), streamed.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        h2_connection(tls, &streamed).await;
                    }
                });
            }
        });
        H2Upstream {
            url: format!("https://{addr}"),
            ca: path,
            connections,
            streams,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn streams(&self) -> usize {
        self.streams.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A rethread with one worker: these tests follow the fate of one HTTP/2 connection (each
    /// worker thread keeps its own).
    fn proxy(&self) -> Rethread {
        self.proxy_with_workers(1)
    }

    fn proxy_with_workers(&self, workers: usize) -> Rethread {
        Rethread::start(
            &self.url,
            &[
                "--upstream-ca",
                self.ca.to_str().unwrap(),
                "--fallback-retries",
                "0",
                "--workers",
                &workers.to_string(),
            ],
        )
    }
}

impl Drop for H2Upstream {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca);
    }
}

async fn h2_connection<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: T,
    streams: &std::sync::atomic::AtomicUsize,
) {
    use std::time::Duration;
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    let event = |i: u32| bytes::Bytes::from(format!("data: {{\"i\":{i}}}\n\n"));
    let mut abrupt = false;
    // Streams left open until the connection goes (dropping one would reset it).
    let mut open = Vec::new();
    loop {
        // Polling `accept` drives the connection (it writes what the streams queued).
        let next = tokio::time::timeout(Duration::from_millis(50), conn.accept()).await;
        let (request, mut respond) = match next {
            Err(_) if abrupt => {
                conn.abrupt_shutdown(h2::Reason::INTERNAL_ERROR);
                abrupt = false;
                continue;
            }
            Err(_) => continue,
            Ok(Some(Ok(accepted))) => accepted,
            Ok(_) => return,
        };
        streams.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let script = request
            .headers()
            .get("x-script")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let head = |content_type: &'static str| {
            http::Response::builder()
                .status(200)
                .header("content-type", content_type)
                .body(())
                .unwrap()
        };
        if script == "reset-before-head" {
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
            continue;
        }
        if script == "reset-after-head" || script == "refuse-after-head" {
            let mut body = respond
                .send_response(head("text/event-stream"), false)
                .unwrap();
            let reason = if script == "reset-after-head" {
                h2::Reason::INTERNAL_ERROR
            } else {
                h2::Reason::REFUSED_STREAM
            };
            tokio::spawn(async move {
                // Long enough for rethread to have passed the head on.
                tokio::time::sleep(Duration::from_millis(100)).await;
                body.send_reset(reason);
            });
            continue;
        }
        if script == "turn-then-late-end" {
            // A whole JSON turn of known length, and END_STREAM only in a later, empty frame (as
            // nginx sends it): the client has the turn before the stream has ended.
            let turn = serde_json::json!({"id": "resp_h2", "object": "response", "status": "completed", "store": true, "output": [
                {"id": "rs_h2", "type": "reasoning", "summary": []},
                {"id": "ig_h2", "type": "image_generation_call", "status": "completed", "result": "AAAA"},
                {"id": "msg_h2", "type": "message", "role": "assistant", "status": "completed", "content": []},
            ]})
            .to_string();
            let response = http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("content-length", turn.len())
                .body(())
                .unwrap();
            let mut body = respond.send_response(response, false).unwrap();
            body.send_data(bytes::Bytes::from(turn), false).unwrap();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = body.send_data(bytes::Bytes::new(), true);
            });
            continue;
        }
        if !script.contains("body") && script != "goaway-graceful" {
            let mut body = respond.send_response(head("text/plain"), false).unwrap();
            body.send_data(bytes::Bytes::from_static(b"ok"), true)
                .unwrap();
            continue;
        }
        let mut body = respond
            .send_response(head("text/event-stream"), false)
            .unwrap();
        body.send_data(event(0), false).unwrap();
        match script.as_str() {
            "reset-mid-body" => {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    body.send_reset(h2::Reason::INTERNAL_ERROR);
                });
            }
            "goaway-mid-body" => {
                open.push(body);
                abrupt = true;
            }
            _ => {
                conn.graceful_shutdown();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = body.send_data(event(1), true);
                });
            }
        }
    }
}

/// Reads a response to its end: the bytes, and whether it broke.
async fn read_all(mut resp: reqwest::Response) -> (String, bool) {
    let mut all = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => all.extend_from_slice(&c),
            Ok(None) => return (String::from_utf8_lossy(&all).into_owned(), false),
            Err(_) => return (String::from_utf8_lossy(&all).into_owned(), true),
        }
    }
}

async fn scripted(proxy: &Rethread, path: &str, script: &str) -> reqwest::Response {
    let mut request = image_request();
    request["stream"] = serde_json::json!(true);
    client()
        .post(proxy.url(path))
        .header("authorization", KEY)
        .header("x-script", script)
        .json(&request)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", proxy.logs()))
}

async fn still_serves(proxy: &Rethread) {
    let ok = client().get(proxy.url("/v1/ok")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn an_http2_stream_reset_before_its_answer_is_a_502_and_the_proxy_serves_on() {
    let upstream = H2Upstream::start().await;
    let proxy = upstream.proxy();
    still_serves(&proxy).await;
    for path in ["/v1/models", "/v1/responses"] {
        let resp = scripted(&proxy, path, "reset-before-head").await;
        assert_eq!(resp.status(), 502, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "upstream_unreachable", "{body}");
        still_serves(&proxy).await;
    }
    assert_eq!(
        upstream.connections(),
        1,
        "a stream reset keeps the connection"
    );
    assert_eq!(
        upstream.streams(),
        5,
        "three `ok`s and each reset stream once: a reset whose reason may follow processing is not sent again"
    );
}

#[tokio::test]
async fn a_stream_reset_after_its_response_started_is_not_sent_again() {
    let upstream = H2Upstream::start().await;
    let proxy = upstream.proxy();
    still_serves(&proxy).await;
    for path in ["/v1/files/x/content", "/v1/responses"] {
        let before = upstream.streams();
        // REFUSED_STREAM, which before the head would prove the stream unprocessed: after the
        // head, the answer has begun and is the client's to see broken.
        let resp = scripted(&proxy, path, "refuse-after-head").await;
        assert_eq!(resp.status(), 200, "{path}");
        let (_, broken) = read_all(resp).await;
        assert!(broken, "{path}: the body ends in an error");
        assert_eq!(upstream.streams(), before + 1, "{path}: sent once");
        still_serves(&proxy).await;
    }
}

#[tokio::test]
async fn an_http2_stream_reset_mid_body_reaches_the_client_as_a_broken_body() {
    let upstream = H2Upstream::start().await;
    let proxy = upstream.proxy();
    for path in ["/v1/files/x/content", "/v1/responses"] {
        let resp = scripted(&proxy, path, "reset-mid-body").await;
        assert_eq!(resp.status(), 200, "{path}");
        let (text, broke) = read_all(resp).await;
        assert!(
            text.starts_with("data: {\"i\":0}"),
            "{path}: what came first arrived: {text}"
        );
        assert!(broke, "{path}: the client must see the body break");
        still_serves(&proxy).await;
    }
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn an_http2_stream_reset_right_after_its_head_still_shows_the_client_the_head() {
    let upstream = H2Upstream::start().await;
    let proxy = upstream.proxy();
    for path in ["/v1/files/x/content", "/v1/responses"] {
        let resp = scripted(&proxy, path, "reset-after-head").await;
        assert_eq!(resp.status(), 200, "{path}");
        let (text, broke) = read_all(resp).await;
        assert!(
            text.is_empty() && broke,
            "{path}: a broken body, not an empty reply: {text}"
        );
        still_serves(&proxy).await;
    }
}

#[tokio::test]
async fn a_turn_is_learned_when_its_last_byte_passes_not_when_http2_says_the_stream_ended() {
    let upstream = H2Upstream::start().await;
    let proxy = upstream.proxy();
    let first = client()
        .post(proxy.url("/v1/responses"))
        .header("authorization", KEY)
        .header("x-script", "turn-then-late-end")
        .json(&image_request())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let turn: Value = first.json().await.unwrap();
    assert_eq!(turn["output"][1]["id"], "ig_h2");
    // At once: the upstream has not yet said that the first stream ended.
    let followup = post(
        &proxy.url("/v1/responses"),
        KEY,
        &image_followup("ig_h2"),
        &[("x-script", "ok")],
    )
    .await;
    assert_eq!(followup.status, 200);
    assert_eq!(followup.inserted(), Some(2), "{}", proxy.logs());
}

#[tokio::test]
async fn an_http2_goaway_mid_flight_breaks_only_that_body_and_a_new_connection_serves_on() {
    let upstream = H2Upstream::start().await;
    let proxy = upstream.proxy();
    for (round, path) in ["/v1/files/x/content", "/v1/responses"].iter().enumerate() {
        let resp = scripted(&proxy, path, "goaway-mid-body").await;
        assert_eq!(resp.status(), 200, "{path}");
        let (text, broke) = read_all(resp).await;
        assert!(text.starts_with("data: {\"i\":0}"), "{path}: {text}");
        assert!(broke, "{path}: the client must see the body break");
        still_serves(&proxy).await;
        assert_eq!(
            upstream.connections(),
            round + 2,
            "{path}: a new connection"
        );
    }
}

#[tokio::test]
async fn an_http2_graceful_goaway_lets_the_stream_finish_and_a_new_connection_serves_on() {
    let upstream = H2Upstream::start().await;
    let proxy = upstream.proxy();
    let resp = scripted(&proxy, "/v1/files/x/content", "goaway-graceful").await;
    assert_eq!(resp.status(), 200);
    let (text, broke) = read_all(resp).await;
    assert!(!broke, "{text}");
    assert_eq!(text, "data: {\"i\":0}\n\ndata: {\"i\":1}\n\n");
    still_serves(&proxy).await;
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_honoured_over_both_protocols() {
    use std::io::{Read, Write};
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&[]);
        let addr = proxy.addr.clone();
        let body = serde_json::to_vec(&image_request()).unwrap();
        let rest = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(&addr).unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            write!(stream, "POST /v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n", body.len()).unwrap();
            let mut first = [0u8; 25];
            stream.read_exact(&mut first).unwrap();
            assert!(String::from_utf8_lossy(&first).starts_with("HTTP/1.1 100 Continue"));
            stream.write_all(&body).unwrap();
            let mut rest = String::new();
            let _ = stream.read_to_string(&mut rest);
            rest
        })
        .await
        .unwrap();
        assert!(rest.contains("HTTP/1.1 200 OK"), "{version}: {rest}");
    }
}

/// An HTTP/1.1 upstream (over TLS when `acceptor` is given) that answers each request with 50
/// SSE events written in one go, as one chunked body.
async fn burst_upstream(acceptor: Option<rethread_fake::TlsAcceptor>) -> String {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
        let mut answer =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec();
        for i in 0..50 {
            let event = format!("data: {{\"i\":{i}}}\n\n");
            answer.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
        }
        answer.extend_from_slice(b"0\r\n\r\n");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                seen.drain(..end + 4);
                if io.write_all(&answer).await.is_err() || io.flush().await.is_err() {
                    return;
                }
            }
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            serve(tls).await;
                        }
                    }
                    None => serve(tcp).await,
                }
            });
        }
    });
    format!("{scheme}://{addr}")
}

/// The chunks of an HTTP/1.1 chunked body, as the client reads them from `addr` for `GET path`.
async fn chunks_seen(addr: &str, path: &str) -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    while !raw.ends_with(b"\r\n0\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the body ends")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(raw).unwrap();
    let (head, mut body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let mut chunks = Vec::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            return chunks;
        }
        chunks.push(rest[..size].to_owned());
        body = &rest[size + 2..];
    }
}

/// The upstream connection is read by the response's own task over TLS as over plain HTTP/1.1:
/// events that came in one upstream read go to the client as one write. Through the pooled
/// client each crossed from the connection's task alone, one write per event (209 writes per
/// 201-event stream in the benchmark, against 21 over plain HTTP).
#[tokio::test]
async fn events_read_together_from_an_https_http1_upstream_are_written_together() {
    let ca = rethread_fake::TestCa::new().unwrap();
    let ca_file =
        std::env::temp_dir().join(format!("rethread-burst-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca.ca_pem()).unwrap();
    for acceptor in [None, Some(ca.acceptor(Alpn::Http1).unwrap())] {
        let upstream = burst_upstream(acceptor).await;
        let proxy = Rethread::start(&upstream, &["--upstream-ca", ca_file.to_str().unwrap()]);
        for round in 0..3 {
            let chunks = chunks_seen(&proxy.addr, "/v1/sse").await;
            let text = chunks.concat();
            assert_eq!(text.matches("data: ").count(), 50, "{upstream}: {text}");
            assert!(
                chunks.len() <= 2,
                "{upstream}, round {round}: {} writes for one upstream write",
                chunks.len()
            );
        }
    }
    let _ = std::fs::remove_file(&ca_file);
}

/// Each worker thread drives an HTTP/2 connection of its own (a shared one woke another thread
/// for every frame of the other's streams), reused by every request it serves; the connection
/// that first found the upstream speaking HTTP/2 is one of them, not a wasted one.
#[tokio::test]
async fn each_worker_keeps_one_http2_connection_of_its_own() {
    let upstream = H2Upstream::start().await;
    let proxy = upstream.proxy_with_workers(2);
    // A new client connection each time: accepted connections go to the workers in turn.
    for _ in 0..6 {
        still_serves(&proxy).await;
    }
    assert_eq!(upstream.connections(), 2, "{}", proxy.logs());
}
