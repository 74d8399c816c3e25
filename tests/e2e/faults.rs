//! Faults on either side: rethread answers clearly, loses nothing, and serves the next request.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

/// An upstream that answers every connection with `answer`, then closes.
fn scripted_upstream(answer: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                stream
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut buf = [0u8; 65536];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(&answer);
            });
        }
    });
    url
}

async fn still_serves(proxy: &Rethread) {
    let resp = client().get(proxy.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_with_an_openai_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let proxy = Rethread::start(&dead, &["--connect-timeout", "1s"]);
    for path in ["/v1/models", "/v1/responses"] {
        let answer = post(&proxy.url(path), KEY, &image_request(), &[]).await;
        assert_eq!(answer.status, 502, "{}", answer.text);
        assert_eq!(answer.body["error"]["code"], "upstream_unreachable");
        assert_eq!(answer.body["error"]["type"], "upstream_error");
    }
    still_serves(&proxy).await;
}

#[tokio::test]
async fn an_oversized_responses_body_is_a_413() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--body-limit", "1KiB"]);
    let big = json!({"model": "gpt-5", "input": "x".repeat(4096)});
    let answer = post(&proxy.url("/v1/responses"), KEY, &big, &[]).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.body["error"]["code"], "request_too_large");
    // Without a content-length too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(serde_json::to_vec(&big).unwrap())];
    let resp = client()
        .post(proxy.url("/v1/responses"))
        .header("authorization", KEY)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Other paths stream any size.
    let resp = client()
        .post(proxy.url("/v1/echo"))
        .body(vec![1u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_silent_upstream_times_out_but_a_live_stream_is_never_cut() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--idle-timeout", "400ms"]);
    let slow = post(
        &proxy.url("/v1/responses"),
        KEY,
        &image_request(),
        &[("x-fake-delay-ms", "1500")],
    )
    .await;
    assert_eq!(slow.status, 504, "{}", slow.text);
    assert_eq!(slow.body["error"]["code"], "upstream_timeout");
    let started = Instant::now();
    let resp = client()
        .get(proxy.url("/v1/sse?events=8&delay_ms=150"))
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("\"i\":7"), "{text}");
    assert!(started.elapsed() > Duration::from_millis(1000));
}

#[tokio::test]
async fn a_slow_upload_that_keeps_moving_outlives_the_idle_timeout() {
    // The idle timeout bounds silence, not the whole exchange: an upload still sending a chunk
    // every 200 ms for 2 s passes a 500 ms idle timeout.
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--idle-timeout", "500ms"]);
    let chunks = futures_util::stream::unfold(0u32, |n| async move {
        if n == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some((Ok::<_, std::io::Error>(vec![7u8; 1000]), n + 1))
    });
    let resp = client()
        .post(proxy.url("/v1/echo"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echoed: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echoed["body_len"], 10_000);
}

#[tokio::test]
async fn a_client_leaving_mid_stream_leaves_the_proxy_serving() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    clients_leave_mid_stream(&proxy, 1, "100", "HTTP").await;
}

#[tokio::test]
async fn a_failed_stream_passes_through_and_teaches_its_completed_items() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let answer = streamed_image_turn(&proxy, &[("x-fake-fail-stream", "1")]).await;
    assert!(answer.text.contains("response.failed"));
    let ig = streamed_id(&answer.text, "image_generation_call");
    let followup = image_followup_through(&proxy, &ig).await;
    assert!(followup.inserted().unwrap_or(0) >= 1, "{}", followup.text);
}

#[tokio::test]
async fn an_upstream_reset_mid_body_reaches_the_client_as_a_broken_body() {
    let upstream = scripted_upstream(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"output\":[".to_vec());
    let proxy = Rethread::start(&upstream, &[]);
    let resp = client()
        .post(proxy.url("/v1/responses"))
        .header("authorization", KEY)
        .json(&image_request())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.is_err(),
        "the client must see the body break"
    );
    still_serves(&proxy).await;
}

#[tokio::test]
async fn unreadable_upstream_bodies_are_forwarded_as_they_are() {
    for (content_type, encoding, body) in [
        (
            "application/json",
            "",
            &b"{\"output\":[{\"id\":\"rs_1\""[..],
        ),
        (
            "text/event-stream",
            "",
            b"event: response.completed\ndata: {not json\n\n",
        ),
        (
            "application/json",
            "content-encoding: gzip\r\n",
            b"{\"this is\":\"not gzip\"}",
        ),
        (
            "application/json",
            "content-encoding: compress\r\n",
            b"whatever",
        ),
    ] {
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n{encoding}content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        let proxy = Rethread::start(&scripted_upstream(answer), &[]);
        let resp = raw_client()
            .post(proxy.url("/v1/responses"))
            .header("authorization", KEY)
            .json(&image_request())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.bytes().await.unwrap(), body);
        proxy.wait_for_log("response taught nothing");
        still_serves(&proxy).await;
    }
}

#[tokio::test]
async fn a_ten_megabyte_response_is_forwarded_and_learned() {
    let item = format!(
        r#"{{"id":"ig_big","type":"image_generation_call","result":"{}"}}"#,
        "A".repeat(10 << 20)
    );
    let body = format!(
        r#"{{"id":"resp_big","store":true,"output":[{{"id":"rs_big","type":"reasoning","summary":[]}},{item}]}}"#
    );
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body.as_bytes());
    let proxy = Rethread::start(&scripted_upstream(answer), &[]);
    let resp = raw_client()
        .post(proxy.url("/v1/responses"))
        .header("authorization", KEY)
        .json(&image_request())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().len(), body.len());
    proxy.wait_for_log("turn learned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_honoured() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let body = serde_json::to_vec(&image_request()).unwrap();
    let mut stream = TcpStream::connect(&proxy.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "POST /v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    let mut first = [0u8; 25];
    stream.read_exact(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("HTTP/1.1 100 Continue"));
    stream.write_all(&body).unwrap();
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    assert!(rest.contains("HTTP/1.1 200 OK"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_with_its_headers_is_cut_off() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--header-timeout", "500ms"]);
    let mut stream = TcpStream::connect(&proxy.addr).unwrap();
    stream
        .write_all(b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the connection was closed by rethread"
    );
    still_serves(&proxy).await;
}

#[tokio::test]
async fn an_sse_stream_cut_mid_event_reaches_the_client_cut_and_teaches_what_completed() {
    let events = "event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"output_index\":0,\"item\":{\"id\":\"rs_cut\",\"type\":\"reasoning\",\"summary\":[]}}\n\nevent: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"output_index\":1,\"item\":{\"id\":\"ig_cu";
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{events}\r\n",
        events.len()
    );
    let proxy = Rethread::start(&scripted_upstream(answer.into_bytes()), &[]);
    let mut request = image_request();
    request["stream"] = json!(true);
    let resp = client()
        .post(proxy.url("/v1/responses"))
        .header("authorization", KEY)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut received = Vec::new();
    let mut stream = resp;
    let broke = loop {
        match stream.chunk().await {
            Ok(Some(c)) => received.extend_from_slice(&c),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(broke, "the client must see the stream break");
    assert!(
        String::from_utf8_lossy(&received).contains("rs_cut"),
        "bytes before the cut arrived"
    );
    proxy.wait_for_log("upstream body broke; remembering the items it completed");
    still_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_request_leaves_the_proxy_serving() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let mut stream = TcpStream::connect(&proxy.addr).unwrap();
    stream
        .write_all(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"model\":\"gpt-5\",\"input\":\"")
        .unwrap();
    drop(stream);
    let before = fake.responses_posts();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        fake.responses_posts(),
        before,
        "a half-sent request is never forwarded"
    );
    let answer = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_through() {
    let upstream = scripted_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n".to_vec(),
    );
    let proxy = Rethread::start(&upstream, &[]);
    let mut stream = TcpStream::connect(&proxy.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"GET /v1/files/x/content HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("hello"), "{text}");
    assert!(
        text.contains("x-checksum: abc123"),
        "the trailer arrived: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_with_its_body_gets_a_408() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--header-timeout", "500ms"]);
    let mut stream = TcpStream::connect(&proxy.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"model\":")
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(4));
    still_serves(&proxy).await;
}
