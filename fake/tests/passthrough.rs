//! The plain routes used to test that the proxy passes other traffic through unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn echo_describes_the_request() {
    let fake = start().await;
    let resp = fake
        .http
        .put(fake.url("/v1/echo/a/b?x=1&y=%20"))
        .header("x-one", "1")
        .header("x-two", "2")
        .body("hello")
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/v1/echo/a/b");
    assert_eq!(v["query"], "x=1&y=%20");
    assert_eq!(v["body_len"], 5);
    assert_eq!(v["body_fnv64"], "a430d84680aabd0b");
    assert_eq!(v["content_length"], "5");
    assert_eq!(v["transfer_encoding"], Value::Null);
    let names: Vec<&str> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    let one = names.iter().position(|n| *n == "x-one").unwrap();
    let two = names.iter().position(|n| *n == "x-two").unwrap();
    assert!(one < two);
    let v: Value = fake
        .http
        .get(fake.url("/v1/echo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["query"], Value::Null);
}

#[tokio::test]
async fn blob_sse_status_headers_json_stats() {
    let fake = start().await;
    let resp = fake
        .http
        .get(fake.url("/v1/blob?bytes=200000"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-length"], "200000");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(bytes.len(), 200_000);
    assert!(bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b as usize == i % 251));

    let text = fake
        .http
        .get(fake.url("/v1/sse?events=3&delay_ms=1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        text,
        "data: {\"i\":0}\n\ndata: {\"i\":1}\n\ndata: {\"i\":2}\n\n"
    );

    let resp = fake
        .http
        .post(fake.url("/v1/status/429"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let resp = fake
        .http
        .get(fake.url("/v1/status/204"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = fake
        .http
        .get(fake.url("/v1/status/500"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert!(resp.headers().get("retry-after").is_none());

    let resp = fake.http.get(fake.url("/v1/headers")).send().await.unwrap();
    let cookies: Vec<&str> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(resp.headers()["x-request-id"], "req_fake");
    assert_eq!(resp.headers()["openai-processing-ms"], "5");
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "99");
    assert_eq!(resp.text().await.unwrap(), "ok");

    let body = fake
        .http
        .get(fake.url("/v1/json?bytes=100000"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        body.len() >= 100_000 && body.len() < 101_000,
        "{}",
        body.len()
    );
    let _: Value = serde_json::from_slice(&body).unwrap();

    let stats: Value = fake
        .http
        .get(fake.url("/fake/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({"responses_posts": 0, "requests_total": 8, "faults": {"errors": 0, "resets": 0, "stalls": 0}})
    );
    assert_eq!(fake.handle.requests_total(), 8);
}

#[tokio::test]
async fn binary_prints_its_address() {
    let fake = Binary::start(&[
        "--image-bytes",
        "10",
        "--no-compress",
        "--non-reasoning-model",
        "dep-a, dep-b",
        "--azure-wording-model",
        "dep-az",
    ]);
    let result = fake
        .post(&json!({"input": "x", "tools": [{"type": "image_generation"}]}))
        .await;
    let refused = fake
        .post(&json!({"model": "dep-b", "input": "x", "include": ["reasoning.encrypted_content"]}))
        .await;
    let body: Value = result.unwrap().json().await.unwrap();
    assert_eq!(body["output"][1]["result"].as_str().unwrap().len(), 16);
    let refused = refused.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.text().await.unwrap(),
        r#"{"error":{"message":"Encrypted content is not supported with this model.","type":"invalid_request_error","param":"include","code":null}}"#
    );
}

#[tokio::test]
async fn binary_writes_detail_errors_when_asked() {
    let fake = Binary::start(&["--detail-errors"]);
    let call = json!({"type": "shell_call", "call_id": "call_s1", "action": {"commands": ["ls"]}});
    let refused = fake.post(&json!({"input": [call]})).await;
    let refused = refused.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.text().await.unwrap(),
        r#"{"detail":"No tool output found for shell call call_s1."}"#
    );
}
