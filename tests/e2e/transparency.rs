//! Passthrough is transparent: one test per HTTP/1.1 edge case, as linkerd2-proxy does.
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
use serde_json::Value;

#[tokio::test]
async fn content_length_zero_is_preserved() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let echoed = echo(
        client()
            .post(proxy.url("/v1/echo"))
            .header("content-length", "0")
            .body(""),
    )
    .await;
    assert_eq!(echoed["content_length"], "0");
    assert_eq!(echoed["transfer_encoding"], Value::Null);
}

#[tokio::test]
async fn bodiless_requests_get_no_transfer_encoding() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let echoed = echo(client().get(proxy.url("/v1/echo"))).await;
    assert_eq!(echoed["transfer_encoding"], Value::Null);
    assert_eq!(echoed["content_length"], Value::Null);
    assert_eq!(echoed["method"], "GET");
}

#[tokio::test]
async fn a_chunked_upload_streams_through_intact() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..64).map(|i| Ok(vec![i as u8; 16 * 1024])).collect();
    let all: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.as_ref().unwrap().clone())
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let echoed = echo(client().post(proxy.url("/v1/echo/files")).body(body)).await;
    assert_eq!(echoed["body_len"], all.len());
    assert_eq!(echoed["transfer_encoding"], "chunked");
    assert_eq!(echoed["body_fnv64"], fnv(&all));
}

#[tokio::test]
async fn a_multipart_upload_passes_byte_for_byte() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "assistants")
        .part(
            "file",
            reqwest::multipart::Part::bytes(data.clone()).file_name("a.jsonl"),
        );
    let resp = client()
        .post(proxy.url("/v1/echo/files"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let echoed: Value = resp.json().await.unwrap();
    let content_type = echoed_header(&echoed, "content-type")[0];
    assert!(content_type.starts_with("multipart/form-data; boundary="));
    assert!(echoed["body_len"].as_u64().unwrap() > data.len() as u64);
}

#[tokio::test]
async fn a_large_download_streams_with_its_length() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let n = 20 * 1024 * 1024;
    let resp = raw_client()
        .get(proxy.url(&format!("/v1/blob?bytes={n}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-length"], n.to_string().as_str());
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), n);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[tokio::test]
async fn sse_on_another_path_arrives_event_by_event() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let started = Instant::now();
    let mut resp = client()
        .get(proxy.url("/v1/sse?events=10&delay_ms=100"))
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("\"i\":0"));
    let mut rest = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert!(String::from_utf8_lossy(&rest).contains("\"i\":9"));
    assert!(
        first_at < started.elapsed() / 2,
        "the first event was not held back"
    );
}

#[tokio::test]
async fn head_and_bodiless_statuses_have_no_body() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let head = raw_client()
        .head(proxy.url("/v1/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.bytes().await.unwrap().is_empty());
    for code in [204, 304] {
        let resp = raw_client()
            .get(proxy.url(&format!("/v1/status/{code}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), code);
        assert!(resp.headers().get("transfer-encoding").is_none());
        assert!(resp.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn upstream_errors_and_their_headers_pass_through() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    for code in [429, 500, 503] {
        let direct = raw_client()
            .get(format!("{}/v1/status/{code}", fake.url()))
            .send()
            .await
            .unwrap();
        let direct_retry = direct.headers().get("retry-after").cloned();
        let direct_body = direct.bytes().await.unwrap();
        let via = raw_client()
            .get(proxy.url(&format!("/v1/status/{code}")))
            .send()
            .await
            .unwrap();
        assert_eq!(via.status().as_u16(), code);
        assert_eq!(via.headers().get("retry-after").cloned(), direct_retry);
        assert_eq!(via.bytes().await.unwrap(), direct_body);
    }
    let before = fake.requests_total();
    let _ = raw_client()
        .get(proxy.url("/v1/status/503"))
        .send()
        .await
        .unwrap();
    assert_eq!(fake.requests_total() - before, 1, "never retried");
}

#[tokio::test]
async fn response_headers_pass_both_ways() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    response_headers_pass(&proxy, "HTTP").await;
    let echoed = echo(
        client()
            .get(proxy.url("/v1/echo"))
            .header("x-request-id", "mine")
            .header("openai-beta", "responses=v1")
            .header("accept-encoding", "zstd")
            .header("connection", "x-private")
            .header("x-private", "hop")
            .header("keep-alive", "timeout=5"),
    )
    .await;
    assert_eq!(echoed_header(&echoed, "x-request-id"), ["mine"]);
    assert_eq!(echoed_header(&echoed, "openai-beta"), ["responses=v1"]);
    assert_eq!(echoed_header(&echoed, "accept-encoding"), ["zstd"]);
    assert!(echoed_header(&echoed, "x-private").is_empty());
    assert!(echoed_header(&echoed, "keep-alive").is_empty());
}

#[tokio::test]
async fn odd_query_strings_are_preserved() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let query = "a=%2F%2f&b=%E2%9C%93&c=+&d&e=%zz&f=a%20b";
    let echoed = echo(client().get(format!("{}?{query}", proxy.url("/v1/echo")))).await;
    assert_eq!(echoed["query"], query);
}

#[tokio::test]
async fn the_upstream_path_prefix_is_kept() {
    let fake = fake().await;
    let proxy = Rethread::start(&format!("{}/v1/echo/base", fake.url()), &[]);
    let echoed = echo(client().get(proxy.url("/v1/files?x=1"))).await;
    assert_eq!(echoed["path"], "/v1/echo/base/v1/files");
}

/// A one-shot upstream that records the raw request head and answers with mixed-case headers.
fn raw_upstream() -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nX-Mixed-Case: Yes\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        String::from_utf8(head).unwrap()
    });
    (url, handle)
}

#[test]
fn header_case_and_order_are_kept_both_ways() {
    let (upstream, seen) = raw_upstream();
    let proxy = Rethread::start(&upstream, &[]);
    let mut stream = TcpStream::connect(&proxy.addr).unwrap();
    stream
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Custom-Header: 1\r\nOpenAI-Organization: org\r\nx-lower: 2\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let head = seen.join().unwrap();
    let custom = head.find("X-Custom-Header: 1").expect(&head);
    let org = head.find("OpenAI-Organization: org").expect(&head);
    let lower = head.find("x-lower: 2").expect(&head);
    assert!(custom < org && org < lower, "{head}");
    assert!(answer.contains("X-Mixed-Case: Yes"), "{answer}");
    let a = answer.find("Set-Cookie: a=1").expect(&answer);
    let b = answer.find("Set-Cookie: b=2").expect(&answer);
    assert!(a < b);
}
