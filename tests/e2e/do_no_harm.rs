//! Do no harm, as a property through the real binary and the strict fake: random turns, then
//! follow-ups built from them the way clients break them (drop, duplicate, reorder, strip ids,
//! strip `summary`, nest, switch the model, flip `store`, reference instead of full, answer each
//! call right after it). Each follow-up goes to the fake directly and through rethread; an answer
//! the API gives as 2xx must stay 2xx through rethread.
//!
//! `RETHREAD_HARM_CASES` (default 300) and `RETHREAD_HARM_SEED` choose the run; the dedicated
//! large run is `RETHREAD_HARM_CASES=10000 cargo test --test e2e do_no_harm -- --nocapture`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::print_stdout
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::common::*;
use serde_json::{json, Value};

/// xorshift64*: small, seeded, good enough to pick shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Output kinds a turn is made of; reasoning is more likely, so groups and back-to-back
/// reasoning appear often.
const KINDS: &[&str] = &["rs", "rs", "rs", "msg", "msg", "fc", "fc", "ig", "ws", "ct"];

fn shape(rng: &mut Rng) -> String {
    let n = 1 + rng.below(5);
    let kinds: Vec<&str> = (0..n).map(|_| *rng.pick(KINDS)).collect();
    kinds.join(",")
}

fn is_call(item: &Value) -> bool {
    matches!(
        item["type"].as_str(),
        Some("function_call" | "custom_tool_call")
    )
}

fn output_of(call: &Value) -> Value {
    let ty = format!("{}_output", call["type"].as_str().unwrap());
    json!({"type": ty, "call_id": call["call_id"], "output": "ok"})
}

/// The follow-up a careful client would send: every item, each call's output after the turn.
fn whole(output: &[Value]) -> Vec<Value> {
    let mut items: Vec<Value> = output.to_vec();
    items.extend(output.iter().filter(|i| is_call(i)).map(output_of));
    items
}

/// One way clients break a follow-up, applied in place.
fn break_once(rng: &mut Rng, items: &mut Vec<Value>, body: &mut Value, output: &[Value]) {
    if items.is_empty() {
        return;
    }
    let k = rng.below(items.len());
    match rng.below(14) {
        0 | 1 => {
            items.remove(k);
        }
        2 => {
            let copy = items[k].clone();
            items.insert(k, copy);
        }
        3 if items.len() > 1 => {
            let j = (k + 1) % items.len();
            items.swap(k, j);
        }
        4 => {
            if let Some(o) = items[k].as_object_mut() {
                o.remove("id");
            }
        }
        5 => {
            if items[k]["type"] == "reasoning" {
                if let Some(o) = items[k].as_object_mut() {
                    o.remove("summary");
                }
            }
        }
        6 => {
            if let Some(id) = items[k].get("id").cloned() {
                items[k] = json!({"type": "item_reference", "id": id});
            }
        }
        7 => {
            if let (Some(id), Some(ty)) =
                (items[k].get("id").cloned(), items[k].get("type").cloned())
            {
                items[k] = json!({"type": ty, "id": id});
            }
        }
        8 => {
            // Each call answered right after it (row 3).
            let mut answered = Vec::new();
            for item in output {
                answered.push(item.clone());
                if is_call(item) {
                    answered.push(output_of(item));
                }
            }
            *items = answered;
        }
        9 => {
            body["model"] = json!(*rng.pick(&["gpt-4.1", DEPLOYMENT, "gpt-5-chat-latest"]));
        }
        10 => {
            let store = body["store"].as_bool().unwrap_or(true);
            body["store"] = json!(!store);
        }
        11 => {
            // A client that asks every request for encrypted reasoning, to a model that does not
            // reason (row 25; issue 27).
            body["model"] = json!(*rng.pick(&["gpt-4.1", DEPLOYMENT]));
            body["include"] = json!([
                "reasoning.encrypted_content",
                "message.output_text.logprobs"
            ]);
        }
        12 => {
            // The seed's follow-up: the image call by id alone, after the user's words (issue 27
            // under store:false).
            if let Some(ig) = output.iter().find(|i| i["type"] == "image_generation_call") {
                *items = vec![
                    json!({"role": "user", "content": [{"type": "input_text", "text": "again"}]}),
                    json!({"type": "image_generation_call", "id": ig["id"]}),
                ];
            }
        }
        _ => {
            body["include"] = match rng.below(3) {
                0 => Value::Null,
                1 => json!([]),
                _ => json!(["reasoning.encrypted_content"]),
            };
        }
    }
}

/// The `input` value, sometimes with a run of items nested in an array (the seed report's form).
fn input_value(rng: &mut Rng, items: Vec<Value>) -> Value {
    if items.len() < 2 || !rng.chance(10) {
        return Value::Array(items);
    }
    let at = rng.below(items.len() - 1);
    let mut items = items;
    let tail: Vec<Value> = items.drain(at..).collect();
    items.push(Value::Array(tail));
    Value::Array(items)
}

#[derive(Default)]
struct Tally {
    cases: AtomicU64,
    direct_ok: AtomicU64,
    repaired: AtomicU64,
    both_refused: AtomicU64,
}

async fn one_case(seed: u64, fake_url: &str, proxy_url: &str, tally: &Tally) -> Option<String> {
    let mut rng = Rng(seed | 1);
    let stored = !rng.chance(30);
    let model = if rng.chance(10) { "gpt-4.1" } else { "gpt-5" };
    let tools = json!([{"type": "function", "name": "get_weather"}, {"type": "image_generation"}]);
    let mut turns = Vec::new();
    for _ in 0..1 + rng.below(2) {
        let first = json!({"model": model, "store": stored, "input": "go", "tools": tools});
        let answer = post(
            proxy_url,
            KEY,
            &first,
            &[("x-fake-shape", &shape(&mut rng))],
        )
        .await;
        if answer.status != 200 {
            return Some(format!("turn refused: {}", answer.text));
        }
        turns.push(answer.body["output"].as_array().unwrap().clone());
    }
    let mut items = vec![user("go")];
    for output in &turns {
        items.extend(whole(output));
    }
    let mut body = json!({"model": model, "store": stored, "tools": tools});
    let all: Vec<Value> = turns.concat();
    for _ in 0..1 + rng.below(3) {
        break_once(&mut rng, &mut items, &mut body, &all);
    }
    items.push(user("and then?"));
    body["input"] = input_value(&mut rng, items);
    if rng.chance(15) {
        body["stream"] = json!(true);
    }

    let direct = post(fake_url, KEY, &body, &[]).await;
    let through = post(proxy_url, KEY, &body, &[]).await;
    tally.cases.fetch_add(1, Ordering::Relaxed);
    let ok = |s: u16| (200..300).contains(&s);
    match (ok(direct.status), ok(through.status)) {
        (true, false) => {
            return Some(format!(
                "seed {seed}: direct {} but through rethread {}\nrequest: {body}\nrethread answered: {}",
                direct.status, through.status, through.text
            ))
        }
        (true, true) => tally.direct_ok.fetch_add(1, Ordering::Relaxed),
        (false, true) => tally.repaired.fetch_add(1, Ordering::Relaxed),
        (false, false) => tally.both_refused.fetch_add(1, Ordering::Relaxed),
    };
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_api_accepts_is_never_refused_through_rethread() {
    let cases: u64 = std::env::var("RETHREAD_HARM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("RETHREAD_HARM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_2026_1201);
    let fake = spawn_fake(FakeOptions {
        non_reasoning_models: vec![DEPLOYMENT.into()],
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let proxy = Rethread::start_env(
        &fake.url(),
        &[],
        &[("RETHREAD_LOG", "warn,rethread=info,rethread::proxy=warn")],
    );
    let fake_url = format!("{}/v1/responses", fake.url());
    let proxy_url = proxy.url("/v1/responses");
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let workers = 4;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (fake_url, proxy_url, tally) = (fake_url.clone(), proxy_url.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = w;
            while n < cases {
                let case_seed = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                if let Some(f) = one_case(case_seed, &fake_url, &proxy_url, &tally).await {
                    failures.push(f);
                }
                n += workers;
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    println!(
        "do no harm: {} cases, seed {seed}, {:.1}s: {} accepted directly, {} refused directly and accepted through rethread, {} refused both ways, {} counter-examples",
        tally.cases.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        tally.direct_ok.load(Ordering::Relaxed),
        tally.repaired.load(Ordering::Relaxed),
        tally.both_refused.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} counter-examples; first:\n{}",
        failures.len(),
        failures[0]
    );
}
