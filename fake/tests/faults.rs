//! Random upstream faults (`FakeOptions::faults`): 500s, answers cut mid-body, stalls; counted,
//! reproducible from a seed, and off by default.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use rethread_fake::{Alpn, FakeOptions, FaultCounts, Faults};
use serde_json::{json, Value};

const SERVER_ERROR: &str = r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;

fn with_faults(faults: Faults) -> FakeOptions {
    FakeOptions {
        faults,
        ..FakeOptions::default()
    }
}

/// Faults at these rates, seed 1.
fn always(error_rate: f64, reset_rate: f64, stall_rate: f64, stall: Duration) -> FakeOptions {
    with_faults(Faults {
        error_rate,
        reset_rate,
        stall_rate,
        stall,
        seed: 1,
    })
}

/// How a `POST …/responses` ended, as the client saw it.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Status and full body text.
    Answered(u16, String),
    /// Status, then the body read failed after these bytes.
    Cut(u16, Vec<u8>),
}

/// POST /v1/responses as tenant KEY (uncompressed, so a cut body can be read), reading the body
/// chunk by chunk.
async fn post(fake: &Fake, body: Value, key: Option<&str>) -> Outcome {
    let mut req = fake
        .http
        .post(fake.url("/v1/responses"))
        .header("x-fake-encoding", "identity")
        .json(&body);
    if let Some(key) = key {
        req = req.header("authorization", key);
    }
    read(req.send().await.unwrap()).await
}

async fn read(mut resp: reqwest::Response) -> Outcome {
    let status = resp.status().as_u16();
    let mut got = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => return Outcome::Answered(status, String::from_utf8(got).unwrap()),
            Err(_) => return Outcome::Cut(status, got),
        }
    }
}

fn hi(stream: bool) -> Value {
    json!({"model": "gpt-5", "input": "hi", "stream": stream})
}

/// The `data:` payloads of whole SSE events in a (possibly cut) body.
fn sse_events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect()
}

/// The `"id":"resp_…"` found in a cut JSON body.
fn response_id(partial: &[u8]) -> String {
    let text = String::from_utf8_lossy(partial);
    let start = text.find(r#""id":"resp_"#).unwrap() + r#""id":""#.len();
    let len = text[start..].find('"').unwrap();
    text[start..start + len].to_string()
}

async fn get_status(fake: &Fake, path: &str) -> u16 {
    fake.http
        .get(fake.url(path))
        .header("authorization", KEY)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn error_rate_one_answers_every_post_500() {
    let fake = start_with(always(1.0, 0.0, 0.0, Duration::ZERO)).await;
    let server_error = Outcome::Answered(500, SERVER_ERROR.into());
    assert_eq!(post(&fake, hi(false), Some(KEY)).await, server_error);
    assert_eq!(post(&fake, hi(true), Some(KEY)).await, server_error);
    assert_eq!(post(&fake, hi(false), None).await, server_error);
    assert_eq!(
        fake.handle.faults_injected(),
        FaultCounts {
            errors: 3,
            resets: 0,
            stalls: 0
        }
    );
    assert_eq!(fake.handle.responses_posts(), 3);

    // GET and WebSocket mode are untouched.
    assert_eq!(get_status(&fake, "/v1/responses/resp_nope").await, 404);
    let mut socket = fake.ws().await;
    let created = ws_turn(&mut socket, json!({"model": "gpt-5", "input": "hi"})).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(get_status(&fake, &format!("/v1/responses/{id}")).await, 200);
    assert_eq!(fake.handle.faults_injected().errors, 3);
}

#[tokio::test]
async fn reset_rate_one_cuts_json_and_forgets_the_turn() {
    let fake = start_with(always(0.0, 1.0, 0.0, Duration::ZERO)).await;
    let Outcome::Cut(200, partial) = post(&fake, hi(false), Some(KEY)).await else {
        panic!("the JSON answer was not cut")
    };
    let id = response_id(&partial);
    assert_eq!(get_status(&fake, &format!("/v1/responses/{id}")).await, 404);
    let chained = json!({"model": "gpt-5", "previous_response_id": id, "input": "again"});
    assert_error(
        fake.post(chained, &[]).await,
        400,
        &format!("Previous response with id '{id}' not found."),
        json!("previous_response_id"),
        json!("previous_response_not_found"),
    );
    assert_eq!(
        fake.handle.faults_injected().resets,
        1,
        "refusals are not cut"
    );
}

#[tokio::test]
async fn reset_rate_one_cuts_sse_and_forgets_the_turn() {
    let fake = start_with(always(0.0, 1.0, 0.0, Duration::ZERO)).await;
    let Outcome::Cut(200, partial) = post(&fake, hi(true), Some(KEY)).await else {
        panic!("the SSE answer was not cut")
    };
    let events = sse_events(&String::from_utf8(partial).unwrap());
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added"
        ]
    );
    let item = events[2]["item"]["id"].as_str().unwrap();
    let id = events[0]["response"]["id"].as_str().unwrap();
    assert_eq!(get_status(&fake, &format!("/v1/responses/{id}")).await, 404);
    let follow_up = json!({"model": "gpt-5", "input": [item_ref(item), user("next")]});
    assert_input_error(
        fake.post(follow_up, &[]).await,
        404,
        &format!("Item with id '{item}' not found."),
    );
    assert_eq!(fake.handle.faults_injected().resets, 1);
}

#[tokio::test]
async fn reset_over_http2_resets_the_stream() {
    let fake = start_with(FakeOptions {
        tls: Some(Alpn::H2),
        ..always(0.0, 1.0, 0.0, Duration::ZERO)
    })
    .await;
    let ca = reqwest::Certificate::from_pem(fake.handle.ca_pem().unwrap().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    for stream in [false, true] {
        let resp = client
            .post(fake.url("/v1/responses"))
            .header("authorization", KEY)
            .json(&hi(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert!(
            matches!(read(resp).await, Outcome::Cut(200, _)),
            "stream: {stream}"
        );
    }
    assert_eq!(fake.handle.faults_injected().resets, 2);
}

#[tokio::test]
async fn stall_rate_one_waits_before_answering() {
    let fake = start_with(always(0.0, 0.0, 1.0, Duration::from_millis(300))).await;
    let started = Instant::now();
    let created = fake.turn(hi(false), &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let id = created["id"].as_str().unwrap();
    assert_eq!(get_status(&fake, &format!("/v1/responses/{id}")).await, 200);
    assert_eq!(
        fake.handle.faults_injected(),
        FaultCounts {
            errors: 0,
            resets: 0,
            stalls: 1
        }
    );
}

/// The outcome of `n` requests in a row, one letter each: `E` 500, `R` cut, `.` answered 200
/// (a stall is not told apart), and the counts the fake reports.
async fn run(seed: u64, n: usize) -> (String, FaultCounts) {
    let fake = start_with(with_faults(Faults {
        error_rate: 0.05,
        reset_rate: 0.02,
        stall_rate: 0.01,
        stall: Duration::from_millis(1),
        seed,
    }))
    .await;
    let mut letters = String::with_capacity(n);
    for _ in 0..n {
        letters.push(match post(&fake, json!({"input": "hi"}), Some(KEY)).await {
            Outcome::Answered(500, _) => 'E',
            Outcome::Cut(200, _) => 'R',
            Outcome::Answered(200, _) => '.',
            other => panic!("unexpected {other:?}"),
        });
    }
    (letters, fake.handle.faults_injected())
}

#[tokio::test]
async fn rates_hold_over_many_requests_and_a_seed_repeats() {
    let ((letters, counts), (again, counts_again), (other, _)) =
        tokio::join!(run(42, 2_000), run(42, 2_000), run(43, 2_000));
    assert!((60..=140).contains(&counts.errors), "{counts:?}");
    assert!((15..=70).contains(&counts.resets), "{counts:?}");
    assert!((5..=40).contains(&counts.stalls), "{counts:?}");
    let seen = |c: char| letters.chars().filter(|&l| l == c).count() as u64;
    assert_eq!((seen('E'), seen('R')), (counts.errors, counts.resets));
    assert_eq!(again, letters);
    assert_eq!(counts_again, counts);
    assert_ne!(other, letters);
}

#[tokio::test]
async fn no_faults_change_nothing() {
    assert_eq!(FakeOptions::default().faults, Faults::default());
    let fake = start().await;
    for _ in 0..50 {
        let Outcome::Answered(200, _) = post(&fake, hi(false), Some(KEY)).await else {
            panic!("a JSON answer failed")
        };
        let Outcome::Answered(200, text) = post(&fake, hi(true), Some(KEY)).await else {
            panic!("an SSE answer failed")
        };
        assert_eq!(
            sse_events(&text).last().unwrap()["type"],
            "response.completed"
        );
    }
    assert_eq!(fake.handle.faults_injected(), FaultCounts::default());
}

#[tokio::test]
async fn binary_takes_fault_flags() {
    let fake = Binary::start(&[
        "--fault-error-rate",
        "1",
        "--fault-stall",
        "5",
        "--fault-seed",
        "9",
    ]);
    let answer = fake.post(&hi(false)).await;
    let stats = reqwest::Client::new()
        .get(format!("{}/fake/stats", fake.url))
        .send()
        .await;
    let answer = answer.unwrap();
    assert_eq!(answer.status(), 500);
    assert_eq!(answer.text().await.unwrap(), SERVER_ERROR);
    let stats: Value = stats.unwrap().json().await.unwrap();
    assert_eq!(
        stats["faults"],
        json!({"errors": 1, "resets": 0, "stalls": 0})
    );
}
