//! Issue 24: an HTTP/2 upstream that ends its connections (GOAWAY after N streams, as nginx's
//! `keepalive_requests`) or refuses streams (`REFUSED_STREAM`) under load. Streams it did not
//! process are sent again on a new connection; the client sees every answer whole, once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;

use rethread_fake::{Alpn, FakeOptions, H2Faults, TestCa};
use serde_json::{json, Value};

use crate::common::*;
use crate::nginx::Nginx;

/// Requests sent by each of `CONCURRENCY` clients.
const PER_CLIENT: usize = 32;
const CONCURRENCY: usize = 64;

/// One request of the mix and whether its answer came back whole and its own: the Responses
/// API as JSON and as SSE (ids must be unique across the run), an upload whose digest the echo
/// must repeat, and a stream of numbered events.
async fn one(
    http: &reqwest::Client,
    base: &str,
    i: usize,
    seen: &std::sync::Mutex<HashSet<String>>,
) -> Result<(), String> {
    let url = |path: &str| format!("{base}{path}");
    let fail = |what: &str, detail: String| Err(format!("request {i} ({what}): {detail}"));
    match i % 4 {
        0 | 1 => {
            let stream = i % 4 == 1;
            let body = json!({"model": "gpt-5", "input": format!("request {i}"), "stream": stream});
            let resp = http
                .post(url("/v1/responses"))
                .header("authorization", KEY)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("request {i}: {e:?}"))?;
            let status = resp.status();
            let text = resp
                .text()
                .await
                .map_err(|e| format!("request {i} body: {e:?}"))?;
            if status != 200 {
                return fail("responses", format!("{status} {text}"));
            }
            let id = if stream {
                let completed: Vec<Value> = streamed_events(&text)
                    .into_iter()
                    .filter(|e| e["type"] == "response.completed")
                    .collect();
                match completed.as_slice() {
                    [e] => e["response"]["id"].as_str().unwrap_or_default().to_owned(),
                    _ => return fail("sse", format!("not one whole stream: {text}")),
                }
            } else {
                let v: Value = serde_json::from_str(&text)
                    .map_err(|e| format!("request {i}: not one JSON answer ({e}): {text}"))?;
                if v["status"] != "completed" {
                    return fail("json", text);
                }
                v["id"].as_str().unwrap_or_default().to_owned()
            };
            if id.is_empty() || !seen.lock().unwrap().insert(id.clone()) {
                return fail("responses", format!("id {id:?} missing or answered twice"));
            }
            Ok(())
        }
        2 => {
            let upload = format!("upload {i} ").repeat(50 + i % 200).into_bytes();
            let resp = http
                .post(url("/v1/echo"))
                .body(upload.clone())
                .send()
                .await
                .map_err(|e| format!("request {i}: {e:?}"))?;
            let echoed: Value = resp
                .json()
                .await
                .map_err(|e| format!("request {i}: {e:?}"))?;
            if echoed["body_len"] != upload.len() || echoed["body_fnv64"] != fnv(&upload) {
                return fail("echo", echoed.to_string());
            }
            Ok(())
        }
        _ => {
            let events = 5 + i % 20;
            let resp = http
                .get(url(&format!("/v1/sse?events={events}")))
                .send()
                .await
                .map_err(|e| format!("request {i}: {e:?}"))?;
            let text = resp
                .text()
                .await
                .map_err(|e| format!("request {i}: {e:?}"))?;
            let expected: String = (0..events)
                .map(|n| format!("data: {{\"i\":{n}}}\n\n"))
                .collect();
            if text != expected {
                return fail("events", text);
            }
            Ok(())
        }
    }
}

fn streamed_events(sse: &str) -> Vec<Value> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

/// Runs `under_load` through `proxy`: every answer must come back whole, and once.
async fn every_answer_whole(proxy: &Rethread) {
    let failures = under_load(&proxy.url("")).await;
    assert!(
        failures.is_empty(),
        "{} of {} failed, e.g. {:?}\n{}",
        failures.len(),
        CONCURRENCY * PER_CLIENT,
        &failures[..failures.len().min(3)],
        proxy.logs()
    );
}

/// `CONCURRENCY` clients sending `PER_CLIENT` requests each; the failures.
async fn under_load(base: &str) -> Vec<String> {
    let http = client();
    let seen = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CONCURRENCY {
        let (http, base, seen) = (http.clone(), base.to_owned(), seen.clone());
        clients.spawn(async move {
            let mut failures = Vec::new();
            for n in 0..PER_CLIENT {
                if let Err(e) = one(&http, &base, c * PER_CLIENT + n, &seen).await {
                    failures.push(e);
                }
            }
            failures
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = clients.join_next().await {
        failures.extend(done.unwrap());
    }
    failures
}

fn resends(metrics: &str, reason: &str) -> f64 {
    series(metrics, "rethread_upstream_resends_total", "reason", reason)
}

fn fake_with(faults: H2Faults) -> FakeOptions {
    FakeOptions {
        tls: Some(Alpn::H2),
        h2_faults: faults,
        ..FakeOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_survives_an_http2_upstream_that_sends_goaway_every_50_streams() {
    let upstream = HttpsFake::start_with(fake_with(H2Faults {
        goaway_after: Some(50),
        refuse_every: None,
    }))
    .await;
    let proxy = upstream.proxy(&[]);
    every_answer_whole(&proxy).await;
    let metrics = metrics_text(&proxy).await;
    assert!(
        resends(&metrics, "goaway") > 0.0,
        "the run should have met GOAWAYs: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_are_sent_again_without_the_client_noticing() {
    let upstream = HttpsFake::start_with(fake_with(H2Faults {
        goaway_after: None,
        refuse_every: Some(7),
    }))
    .await;
    let proxy = upstream.proxy(&[]);
    let http = client();
    let seen = std::sync::Mutex::new(HashSet::new());
    for i in 0..40 {
        one(&http, &proxy.url(""), i, &seen).await.unwrap();
    }
    let metrics = metrics_text(&proxy).await;
    assert!(resends(&metrics, "refused_stream") >= 5.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_survives_nginx_ending_http2_connections_after_50_requests() {
    let fake = fake().await;
    let ca = TestCa::new().unwrap();
    let Some(nginx) = Nginx::start_with(fake.addr(), &ca, "keepalive_requests 50;") else {
        return;
    };
    let ca_file = nginx.write_ca(&ca);
    let proxy = Rethread::start(&nginx.url(), &["--upstream-ca", &ca_file]);
    every_answer_whole(&proxy).await;
}
