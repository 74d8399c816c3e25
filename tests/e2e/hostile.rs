//! Hostile input: no panic, no 5xx of rethread's own making, bounded memory, and the next request
//! succeeds. A body rethread cannot read is forwarded unchanged for the upstream to judge.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;
use serde_json::json;

async fn send_raw_body(proxy: &Rethread, body: Vec<u8>) -> (u16, Vec<u8>) {
    let resp = raw_client()
        .post(proxy.url("/v1/responses"))
        .header("authorization", KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

async fn next_request_succeeds(proxy: &Rethread) {
    let answer = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn unreadable_bodies_are_forwarded_unchanged() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let mut deep = b"{\"input\":".to_vec();
    deep.extend(std::iter::repeat_n(b'[', 200_000));
    deep.extend(std::iter::repeat_n(b']', 200_000));
    deep.push(b'}');
    let mut deep_objects = b"{\"input\":[".to_vec();
    for _ in 0..100_000 {
        deep_objects.extend_from_slice(b"{\"a\":");
    }
    deep_objects.extend_from_slice(b"1");
    deep_objects.extend(std::iter::repeat_n(b'}', 100_000));
    deep_objects.extend_from_slice(b"]}");
    let bodies: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        b"{\"model\":\"gpt-5\",\"input\":\"\xff\xfe\"}".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        b"".to_vec(),
        b"[]".to_vec(),
        b"{\"input\":5}".to_vec(),
        b"{\"input\":null}".to_vec(),
        b"{\"input\":{\"type\":\"message\"}}".to_vec(),
        b"{\"input\":[],\"input\":[{\"type\":\"item_reference\",\"id\":\"rs_1\"}]}".to_vec(),
        b"{\"input\":[{\"type\":\"image_generation_call\",\"id\":\"ig_1\",\"id\":\"ig_2\"}]}"
            .to_vec(),
        b"{\"input\":[{\"type\":7,\"id\":[]}]}".to_vec(),
        deep,
        deep_objects,
    ];
    for body in bodies {
        let label = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        let before = fake.responses_posts();
        let (status, _) = send_raw_body(&proxy, body.clone()).await;
        assert!(status < 500, "{label}: {status}");
        assert_eq!(
            fake.responses_posts() - before,
            1,
            "{label}: forwarded once"
        );
        assert_eq!(
            fake.last_request_body().unwrap(),
            body,
            "{label}: unchanged"
        );
    }
    next_request_succeeds(&proxy).await;
}

#[tokio::test]
async fn odd_ids_are_matched_exactly_and_never_break_the_body() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    for id in [
        "ig_\"quoted\"",
        "ig_new\nline",
        "ig_ünïcødé_🙂",
        "ig_\\back",
        "",
        "ig_\u{0}",
    ] {
        let body = json!({"model": "gpt-5", "input": [{"type": "image_generation_call", "id": id}, {"type": "item_reference", "id": id}]});
        let bytes = serde_json::to_vec(&body).unwrap();
        let (status, _) = send_raw_body(&proxy, bytes.clone()).await;
        assert!(status < 500, "{id:?}: {status}");
        assert_eq!(fake.last_request_body().unwrap(), bytes);
    }
    next_request_succeeds(&proxy).await;
}

#[tokio::test]
async fn a_hundred_thousand_items_and_a_huge_string_are_handled() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let ig = output_id(&first.body, "image_generation_call");
    let mut items: Vec<_> = (0..100_000)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    items.push(json!({"type": "image_generation_call", "id": ig}));
    let answer = post(
        &proxy.url("/v1/responses"),
        KEY,
        &json!({"model": "gpt-5", "input": items}),
        &[],
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        &answer.text[..answer.text.len().min(300)]
    );
    assert_eq!(answer.inserted(), Some(2));
    let image = format!("data:image/png;base64,{}", "QUJD".repeat(5 << 20));
    let body = json!({"model": "gpt-5", "input": [
        {"role": "user", "content": [{"type": "input_image", "image_url": image}]},
        {"type": "image_generation_call", "id": ig}
    ]});
    let answer = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.inserted(), Some(2));
    let sent = fake.last_request_body().unwrap();
    assert!(sent
        .windows(image.len().min(64))
        .any(|w| w == &image.as_bytes()[..64]));
}

fn raw_exchange(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_are_refused() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let both = b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /v1/status/500 HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = raw_exchange(&proxy.addr, both);
    assert!(!answer.contains("500 Internal"), "{answer}");
    let twice = b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\nConnection: close\r\n\r\nabcd";
    let answer = raw_exchange(&proxy.addr, twice);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    next_request_succeeds(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_never_chooses_the_host() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let absolute = raw_exchange(&proxy.addr, b"GET http://169.254.169.254/v1/echo HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n");
    assert!(absolute.starts_with("HTTP/1.1 200"), "{absolute}");
    assert!(
        absolute.contains("\"path\":\"/v1/echo\""),
        "forwarded to the upstream only: {absolute}"
    );
    let connect = raw_exchange(
        &proxy.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    assert!(connect.contains("not_forwardable"));
    next_request_succeeds(&proxy).await;
}
