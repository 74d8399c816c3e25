//! SSE framing, stream knobs, replay, compression and WebSocket mode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// Parse an SSE body into (event line, data JSON) pairs, checking the framing.
fn parse_sse(text: &str) -> Vec<(String, Value)> {
    assert!(text.ends_with("\n\n"));
    assert!(!text.contains("[DONE]"));
    text.trim_end_matches('\n')
        .split("\n\n")
        .map(|block| {
            let mut lines = block.lines();
            let event = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_string();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            assert!(lines.next().is_none(), "one data line per event");
            let value: Value = serde_json::from_str(data).unwrap();
            assert_eq!(value["type"], json!(event));
            (event, value)
        })
        .collect()
}

async fn stream_text(
    fake: &Fake,
    body: Value,
    headers: &[(&str, &str)],
) -> (reqwest::header::HeaderMap, String) {
    let mut req = fake
        .http
        .post(fake.url("/v1/responses"))
        .header("authorization", KEY)
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    (headers, resp.text().await.unwrap())
}

#[tokio::test]
async fn sse_framing_and_order() {
    let fake = start().await;
    let body = json!({"model": "gpt-5", "stream": true, "input": "draw", "include": ["reasoning.encrypted_content"], "tools": [{"type": "image_generation"}]});
    let (headers, text) = stream_text(&fake, body, &[]).await;
    assert_eq!(headers["content-type"], "text/event-stream; charset=utf-8");
    let events = parse_sse(&text);
    for (i, (_, v)) in events.iter().enumerate() {
        assert_eq!(v["sequence_number"], json!(i));
    }
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        &types[..3],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added"
        ]
    );
    assert_eq!(types.last().copied(), Some("response.completed"));
    for t in [
        "response.image_generation_call.partial_image",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
    ] {
        assert!(types.contains(&t), "{t}");
    }
    let added = &events[2].1["item"];
    let done = &events[3].1["item"];
    assert_eq!(events[3].0, "response.output_item.done");
    let full = done["encrypted_content"].as_str().unwrap();
    let partial = added["encrypted_content"].as_str().unwrap();
    assert!(full.starts_with(partial) && partial.len() < full.len());
    let completed = &events.last().unwrap().1["response"];
    let done_items: Vec<&Value> = events
        .iter()
        .filter(|(t, _)| t == "response.output_item.done")
        .map(|(_, v)| &v["item"])
        .collect();
    assert_eq!(
        completed["output"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        done_items
    );
    assert_eq!(completed["status"], "completed");

    // The streamed turn is remembered: the E1 rule applies to it.
    let ig = done_items[1]["id"].as_str().unwrap();
    let (status, _) = fake
        .post(
            json!({"input": [{"type": "image_generation_call", "id": ig}]}),
            &[],
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn sse_is_incremental_with_delay() {
    let fake = start().await;
    let start = Instant::now();
    let resp = fake
        .http
        .post(fake.url("/v1/responses"))
        .header("authorization", KEY)
        .header("x-fake-delay-ms", "40")
        .json(&json!({"stream": true, "input": "x"}))
        .send()
        .await
        .unwrap();
    let mut resp = resp;
    let first = resp.chunk().await.unwrap().unwrap();
    let first_at = start.elapsed();
    assert!(String::from_utf8_lossy(&first).starts_with("event: response.created\n"));
    while resp.chunk().await.unwrap().is_some() {}
    let total = start.elapsed();
    assert!(total >= Duration::from_millis(40 * 8), "{total:?}");
    assert!(first_at < total / 2, "first {first_at:?} total {total:?}");
}

#[tokio::test]
async fn rotate_ids_and_failed_stream() {
    let fake = start().await;
    let body = json!({"stream": true, "input": "x"});
    let (_, text) = stream_text(
        &fake,
        body.clone(),
        &[("x-fake-shape", "rs,msg"), ("x-fake-rotate-ids", "1")],
    )
    .await;
    let events = parse_sse(&text);
    let final_msg = events.last().unwrap().1["response"]["output"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (t, v) in &events {
        let shown = v["item_id"].as_str().or(v["item"]["id"].as_str());
        if let Some(id) = shown {
            if v["output_index"] == 1 {
                assert_eq!(t == "response.output_item.done", id == final_msg, "{t}");
            }
        }
    }

    let (_, text) = stream_text(
        &fake,
        body,
        &[("x-fake-shape", "rs,ig,msg"), ("x-fake-fail-stream", "1")],
    )
    .await;
    let events = parse_sse(&text);
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(&types[types.len() - 2..], ["error", "response.failed"]);
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "response.output_item.done")
            .count(),
        2
    );
    let failed = &events.last().unwrap().1["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["output"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn replay_starting_after() {
    let fake = start().await;
    let (_, text) = stream_text(&fake, json!({"stream": true, "input": "x"}), &[]).await;
    let events = parse_sse(&text);
    let id = events[0].1["response"]["id"].as_str().unwrap();
    let url = fake.url(&format!("/v1/responses/{id}?stream=true&starting_after=3"));
    let replay = fake
        .http
        .get(url)
        .header("authorization", KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let replayed = parse_sse(&replay);
    assert_eq!(replayed.len(), events.len() - 4);
    assert_eq!(replayed[0].1, events[4].1);
}

fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate()
        .build()
        .unwrap()
}

#[tokio::test]
async fn gzip_sse_flushes_per_event() {
    let fake = start().await;
    let mut resp = raw_client()
        .post(fake.url("/v1/responses"))
        .header("authorization", KEY)
        .header("accept-encoding", "gzip")
        .header("x-fake-delay-ms", "30")
        .json(&json!({"stream": true, "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut decoder = async_compression::tokio::write::GzipDecoder::new(Vec::new());
    let first = resp.chunk().await.unwrap().unwrap();
    decoder.write_all(&first).await.unwrap();
    decoder.flush().await.unwrap();
    let so_far = String::from_utf8(decoder.get_ref().clone()).unwrap();
    assert!(
        so_far.starts_with("event: response.created\n") && so_far.ends_with("\n\n"),
        "{so_far}"
    );
    while let Some(chunk) = resp.chunk().await.unwrap() {
        decoder.write_all(&chunk).await.unwrap();
    }
    decoder.shutdown().await.unwrap();
    let text = String::from_utf8(decoder.into_inner()).unwrap();
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().0, "response.completed");
}

#[tokio::test]
async fn every_coding_round_trips() {
    let fake = start().await;
    for (accept, expect) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("deflate", "deflate"),
        ("identity", ""),
    ] {
        // reqwest decodes what it announced; check the header with a raw client first.
        let raw = raw_client()
            .post(fake.url("/v1/responses"))
            .header("authorization", KEY)
            .header("accept-encoding", accept)
            .json(&json!({"input": "x"}))
            .send()
            .await
            .unwrap();
        let got = raw
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert_eq!(got, expect);
        let (status, body) = fake
            .post(
                json!({"input": "x"}),
                &[(
                    "x-fake-encoding",
                    if accept == "identity" {
                        "identity"
                    } else {
                        accept
                    },
                )],
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["object"], "response");
    }
    // First supported token wins; errors are compressed too.
    let resp = raw_client()
        .post(fake.url("/v1/responses"))
        .header("accept-encoding", "foo, br, gzip")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-encoding"], "br");
    let no_compress = start_with(rethread_fake::FakeOptions {
        compress: false,
        image_bytes: 16,
        ..rethread_fake::FakeOptions::default()
    })
    .await;
    let resp = raw_client()
        .post(no_compress.url("/v1/responses"))
        .header("authorization", KEY)
        .header("accept-encoding", "gzip")
        .json(&json!({"input": "x", "tools": [{"type": "image_generation"}]}))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["output"][1]["result"].as_str().unwrap().len(), 24);
}

#[tokio::test]
async fn websocket_mode() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let fake = start().await;
    let url = format!("ws://{}/v1/responses", fake.handle.addr());
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", KEY.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();

    let create = json!({"type": "response.create", "model": "gpt-5", "input": "draw", "tools": [{"type": "image_generation"}]});
    socket
        .send(Message::Text(create.to_string().into()))
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(msg) = socket.next().await {
        let Message::Text(text) = msg.unwrap() else {
            continue;
        };
        let v: Value = serde_json::from_str(text.as_str()).unwrap();
        let done = v["type"] == "response.completed";
        events.push(v);
        if done {
            break;
        }
    }
    assert_eq!(events[0]["type"], "response.created");
    let output = events.last().unwrap()["response"]["output"].clone();
    let ig = output[1]["id"].as_str().unwrap();
    let rs = output[0]["id"].as_str().unwrap();

    let bad =
        json!({"type": "response.create", "input": [{"type": "image_generation_call", "id": ig}]});
    socket
        .send(Message::Text(bad.to_string().into()))
        .await
        .unwrap();
    let Some(Ok(Message::Text(text))) = socket.next().await else {
        panic!("no error frame")
    };
    let expected = format!(
        r#"{{"type":"error","status":400,"error":{{"message":"Item '{ig}' of type 'image_generation_call' was provided without its required 'reasoning' item: '{rs}'.","type":"invalid_request_error","param":"input","code":null}}}}"#
    );
    assert_eq!(text.as_str(), expected);
    socket.close(None).await.unwrap();

    // Without credentials the upgrade is refused.
    let unauth = format!("ws://{}/v1/responses", fake.handle.addr());
    assert!(tokio_tungstenite::connect_async(unauth).await.is_err());
}

#[tokio::test]
async fn websocket_mode_refuses_the_new_rules_like_http() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let fake = start_with(rethread_fake::FakeOptions {
        azure_wording_models: vec!["my-gpt5-deployment".into()],
        ..rethread_fake::FakeOptions::default()
    })
    .await;
    let first = fake
        .turn(
            json!({"model": "my-gpt5-deployment", "input": "x"}),
            &[("x-fake-shape", "rs,rs,msg")],
        )
        .await;
    let [rs1, rs2, msg] = &ids(&first)[..] else {
        panic!()
    };
    let url = format!("ws://{}/v1/responses", fake.handle.addr());
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", KEY.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let frame = |body: Value, message: &str, param: &str, code: &str| {
        (
            body,
            format!(
                r#"{{"type":"error","status":400,"error":{{"message":"{message}","type":"invalid_request_error","param":"{param}","code":{code}}}}}"#
            ),
        )
    };
    let cases = [
        frame(
            json!({"model": "gpt-4o", "include": ["reasoning.encrypted_content"], "input": "x"}),
            "Encrypted content is not supported with this model.",
            "include",
            "null",
        ),
        frame(
            json!({"model": "gpt-4.1", "input": [item_ref(rs2), item_ref(msg)]}),
            "Reasoning input items can only be provided to a reasoning or computer use model. Remove reasoning items from your input and try again.",
            "input",
            "null",
        ),
        frame(
            json!({"model": "gpt-5", "input": [{"type": "reasoning", "id": rs1}]}),
            "Missing required parameter: 'input[0].summary'.",
            "input[0].summary",
            r#""missing_required_parameter""#,
        ),
        frame(
            json!({"model": "gpt-5", "input": [item_ref(rs1), item_ref(rs2), item_ref(msg)]}),
            &format!("Item '{rs1}' of type 'reasoning' was provided without its required following item."),
            "input",
            "null",
        ),
        frame(
            json!({"model": "my-gpt5-deployment", "input": [item_ref(msg)]}),
            &format!("Item '{msg}' of type 'message' was provided without its required preceding item of type 'reasoning'"),
            "input",
            "null",
        ),
        // The shapes of 2026 (wild-failures-2026.md N4, N5, N12).
        frame(
            json!({"model": "gpt-5", "input": [user("x"), {"type": "reasoning", "id": rs2, "summary": [], "status": null}, item_ref(msg)]}),
            "Unknown parameter: 'input[1].status'.",
            "input[1].status",
            r#""unknown_parameter""#,
        ),
        frame(
            json!({"model": "gpt-5", "previous_response_id": format!("resp_{}", "0".repeat(70)), "input": "x"}),
            "Invalid 'previous_response_id': string too long. Expected a string with maximum length 64, but got a string with length 75 instead.",
            "previous_response_id",
            r#""string_above_max_length""#,
        ),
        frame(
            json!({"model": "gpt-5", "input": [{"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "other"}}]}),
            "Invalid value: 'other'. Supported values are: 'search', 'open_page', and 'find_in_page'.",
            "input[0].action.type",
            r#""invalid_value""#,
        ),
    ];
    for (mut body, expected) in cases {
        body["type"] = json!("response.create");
        socket
            .send(Message::Text(body.to_string().into()))
            .await
            .unwrap();
        let Some(Ok(Message::Text(text))) = socket.next().await else {
            panic!("no error frame")
        };
        assert_eq!(text.as_str(), expected);
    }
    socket.close(None).await.unwrap();
}
