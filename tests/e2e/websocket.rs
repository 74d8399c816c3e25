//! The Responses API's WebSocket mode through rethread: `response.create` frames repaired, server
//! events learned, everything else relayed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

fn image_id(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "response.output_item.done")
        .find(|e| e["item"]["type"] == "image_generation_call")
        .unwrap()["item"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_websocket_image_followup_is_repaired() {
    let fake = fake().await;
    let direct_url = format!("{}/v1/responses", fake.url().replace("http://", "ws://"));
    let mut direct = ws_connect(&direct_url, KEY).await;
    let events = ws_create(&mut direct, image_request()).await;
    let failed = ws_create(&mut direct, image_followup(&image_id(&events))).await;
    assert_eq!(
        failed.last().unwrap()["type"],
        "error",
        "the fake refuses it like the API"
    );

    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let mut socket = ws_connect(&format!("ws://{}/v1/responses", proxy.addr), KEY).await;
    let events = ws_create(&mut socket, image_request()).await;
    assert_eq!(events.last().unwrap()["type"], "response.completed");
    let followup = ws_create(&mut socket, image_followup(&image_id(&events))).await;
    assert_eq!(
        followup.last().unwrap()["type"],
        "response.completed",
        "{followup:?}"
    );
    let sent: Value = serde_json::from_slice(&fake.last_request_body().unwrap()).unwrap();
    assert_eq!(sent["input"][1]["type"], "item_reference");
    // A frame that is not understood passes unchanged, and the socket stays usable.
    socket.send(Message::Text("not json".into())).await.unwrap();
    let third = ws_create(&mut socket, image_request()).await;
    assert!(third
        .iter()
        .any(|e| e["type"] == "response.completed" || e["type"] == "error"));
}

#[tokio::test]
async fn a_turn_learned_over_http_repairs_a_websocket_followup_and_back() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let mut socket = ws_connect(&format!("ws://{}/v1/responses", proxy.addr), KEY).await;
    let followup = ws_create(
        &mut socket,
        image_followup(&output_id(&first.body, "image_generation_call")),
    )
    .await;
    assert_eq!(followup.last().unwrap()["type"], "response.completed");
    let events = ws_create(&mut socket, image_request()).await;
    let answer = post(
        &proxy.url("/v1/responses"),
        KEY,
        &image_followup(&image_id(&events)),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.inserted(), Some(2));
}

#[tokio::test]
async fn a_websocket_on_another_path_passes_through_both_ways() {
    // A bare WebSocket echo upstream (Realtime-like), reached through rethread unchanged.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
        while let Some(Ok(message)) = socket.next().await {
            if message.is_text() || message.is_binary() {
                socket.send(message).await.unwrap();
            }
        }
    });
    let proxy = Rethread::start(&upstream, &[]);
    let mut socket = ws_connect(&format!("ws://{}/v1/realtime?model=x", proxy.addr), KEY).await;
    socket
        .send(Message::Text("{\"type\":\"session.update\"}".into()))
        .await
        .unwrap();
    socket
        .send(Message::Binary(vec![0u8, 1, 2, 255].into()))
        .await
        .unwrap();
    let Some(Ok(Message::Text(text))) = socket.next().await else {
        panic!("no text echo")
    };
    assert_eq!(text.as_str(), "{\"type\":\"session.update\"}");
    let Some(Ok(Message::Binary(bytes))) = socket.next().await else {
        panic!("no binary echo")
    };
    assert_eq!(&bytes[..], &[0u8, 1, 2, 255]);
}

#[tokio::test]
async fn websocket_frames_count_in_the_same_metrics_as_http() {
    // Observe mode and frames rethread cannot read are counted over a socket as over HTTP (B2).
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--mode", "observe"]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let ig = output_id(&first.body, "image_generation_call");
    let mut socket = ws_connect(&format!("ws://{}/v1/responses", proxy.addr), KEY).await;
    let events = ws_create(&mut socket, image_followup(&ig)).await;
    assert_eq!(
        events.last().unwrap()["type"],
        "error",
        "observe changes nothing"
    );
    let odd = serde_json::json!({"model": "gpt-5", "input": [{"type": 1}]});
    ws_create(&mut socket, odd).await;
    let metrics = metrics_text(&proxy).await;
    assert!(
        metrics.contains("rethread_would_insert_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rethread_unparsed_requests_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_close_gets_the_upstreams_close_reply() {
    // The close handshake completes through rethread: the client's Close goes up, the
    // upstream's reply comes back, and the client never sees an abnormal closure (B4).
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let mut socket = ws_connect(&format!("ws://{}/v1/responses", proxy.addr), KEY).await;
    let events = ws_create(&mut socket, image_request()).await;
    assert_eq!(events.last().unwrap()["type"], "response.completed");
    socket.close(None).await.unwrap();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next())
        .await
        .unwrap();
    assert!(
        matches!(reply, Some(Ok(Message::Close(_)))),
        "expected the upstream's Close, got {reply:?}"
    );
}

/// The repair metrics a follow-up leaves behind: repaired requests, and items per rule.
async fn repair_counts(proxy: &Rethread) -> (f64, f64) {
    let metrics = metrics_text(proxy).await;
    (
        family_sum(&metrics, "rethread_repaired_requests_total"),
        family_sum(&metrics, "rethread_repair_rules_total"),
    )
}

#[tokio::test]
async fn a_followup_repaired_after_a_refusal_is_counted_alike_over_http_and_websocket() {
    // Cold memory: the upstream's E1 names the missing reasoning item, rethread inserts it and
    // sends again. Over WebSocket that second change went uncounted (issue 21).
    let fake = fake().await;
    let first = unseen_image_turn(&fake, "/v1/responses", KEY).await;
    let ig = output_id(&first.body, "image_generation_call");

    let json_logs = ["--log-format", "json"];
    let http = Rethread::start(&fake.url(), &json_logs);
    let answer = post(&http.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    let ws = Rethread::start(&fake.url(), &json_logs);
    let mut socket = ws_connect(&format!("ws://{}/v1/responses", ws.addr), KEY).await;
    let events = ws_create(&mut socket, image_followup(&ig)).await;
    assert_eq!(
        events.last().unwrap()["type"],
        "response.completed",
        "{events:?}"
    );

    let over_http = repair_counts(&http).await;
    assert_eq!(over_http.0, 1.0, "one repaired request");
    assert!(over_http.1 >= 1.0);
    assert_eq!(
        repair_counts(&ws).await,
        over_http,
        "the same counts over WebSocket"
    );
    // The same log line, field for field.
    let repaired = |proxy: &Rethread| {
        proxy.wait_for_log("repaired request");
        proxy
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "repaired request")
            .map(|mut l| {
                l.as_object_mut().unwrap().remove("timestamp");
                l
            })
    };
    let logged = repaired(&http);
    assert!(logged.is_some(), "{}", http.logs());
    assert_eq!(logged, repaired(&ws), "the same log fields over WebSocket");
    assert_eq!(
        answer
            .headers
            .get("x-rethread-repairs")
            .and_then(|v| v.to_str().ok()),
        logged.unwrap()["rules"].as_str(),
        "the header names the rules the log line names"
    );
}
