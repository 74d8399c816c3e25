//! Do no harm, as a property through the real binary and the strict fake: random turns, then
//! follow-ups built from them the way clients break them (drop, duplicate, reorder, strip ids,
//! strip `summary`, nest, switch the model, flip `store`, reference instead of full, answer each
//! call right after it; and the 2026 breaks: `model_dump()` nulls, reasoning text in `content`,
//! calls dropped with their outputs kept, over-long call ids, custom and local-shell calls). Each
//! follow-up goes to the fake directly and through rethread. Two properties hold:
//!
//! 1. never worse: an answer the API gives as 2xx stays 2xx through rethread;
//! 2. nothing the client said is lost: when rethread's answer is 2xx, what reached the upstream
//!    holds every user, system and developer message and every `*_output` of the client's, in
//!    the client's order, and every call and assistant message, by content (only reasoning items
//!    and exact duplicates may go; the model's own items may be put back).
//!
//! A third of the cases continue a chain instead (`chained_case`): one or two turns made through
//! rethread over WebSocket or HTTP, stored or not, the socket closed, then a follow-up over HTTP
//! naming the chain's last response, broken the ways chained clients break it (items of the chain
//! sent again, calls left unanswered, `store` flipped). There, items the chain holds may go too.
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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
const KINDS: &[&str] = &[
    "rs", "rs", "rs", "msg", "msg", "fc", "fc", "ig", "ws", "ct", "lsh",
];

fn shape(rng: &mut Rng) -> String {
    let n = 1 + rng.below(5);
    let kinds: Vec<&str> = (0..n).map(|_| *rng.pick(KINDS)).collect();
    kinds.join(",")
}

fn is_call(item: &Value) -> bool {
    matches!(
        item["type"].as_str(),
        Some("function_call" | "custom_tool_call" | "local_shell_call")
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

/// One way clients break a follow-up, applied in place; its name, for the tally of what stays
/// refused.
fn break_once(
    rng: &mut Rng,
    items: &mut Vec<Value>,
    body: &mut Value,
    output: &[Value],
) -> &'static str {
    if items.is_empty() {
        return "none";
    }
    let k = rng.below(items.len());
    let name = match rng.below(19) {
        0 | 1 => {
            let gone = items.remove(k);
            match gone["type"].as_str() {
                Some(ty) if ty.ends_with("_output") => "drop an output (N1)",
                Some("reasoning") => "drop a reasoning item",
                None | Some("message") if gone["role"] == "user" => "drop a user message",
                _ => "drop one of the model's items",
            }
        }
        2 => {
            let copy = items[k].clone();
            items.insert(k, copy);
            "duplicate an item"
        }
        3 if items.len() > 1 => {
            let j = (k + 1) % items.len();
            items.swap(k, j);
            "swap two items"
        }
        4 => {
            if let Some(o) = items[k].as_object_mut() {
                o.remove("id");
            }
            "strip an id"
        }
        5 => {
            if items[k]["type"] == "reasoning" {
                if let Some(o) = items[k].as_object_mut() {
                    o.remove("summary");
                }
            }
            "strip summary"
        }
        6 => {
            if let Some(id) = items[k].get("id").cloned() {
                items[k] = json!({"type": "item_reference", "id": id});
            }
            "reference an item"
        }
        7 => {
            if let (Some(id), Some(ty)) =
                (items[k].get("id").cloned(), items[k].get("type").cloned())
            {
                items[k] = json!({"type": ty, "id": id});
            }
            "bare id"
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
            "answer each call after it"
        }
        9 => {
            body["model"] = json!(*rng.pick(&["gpt-4.1", DEPLOYMENT, "gpt-5-chat-latest"]));
            "switch the model"
        }
        10 => {
            let store = body["store"].as_bool().unwrap_or(true);
            body["store"] = json!(!store);
            match store {
                true => "flip store to false",
                false => "flip store to true",
            }
        }
        11 => {
            // A client that asks every request for encrypted reasoning, to a model that does not
            // reason (row 25; issue 27).
            body["model"] = json!(*rng.pick(&["gpt-4.1", DEPLOYMENT]));
            body["include"] = json!([
                "reasoning.encrypted_content",
                "message.output_text.logprobs"
            ]);
            "encrypted include, non-reasoning model"
        }
        13 => {
            // model_dump(): output-only keys as null (N4).
            if let Some(o) = items[k].as_object_mut() {
                if o.contains_key("type") {
                    o.insert("status".into(), Value::Null);
                }
            }
            "null status (N4)"
        }
        14 => {
            // Reasoning text in `content`, from a compatible provider (N3).
            if items[k]["type"] == "reasoning" {
                items[k]["content"] = json!([{"type": "reasoning_text", "text": "thinking"}]);
            }
            "reasoning content (N3)"
        }
        15 => {
            // A call dropped, its output kept (N2: a gateway's compression).
            if let Some(at) = items.iter().position(is_call) {
                items.remove(at);
            }
            "drop a call (N2)"
        }
        16 => {
            // A call id over 64 characters on a call and its output (N5).
            if let Some(call_id) = items
                .iter()
                .find(|i| is_call(i))
                .map(|c| c["call_id"].clone())
            {
                let long = format!(
                    "harness__{}_{}",
                    call_id.as_str().unwrap_or(""),
                    "x".repeat(64)
                );
                for item in items.iter_mut() {
                    if item["call_id"] == call_id {
                        item["call_id"] = json!(long);
                    }
                }
            }
            "long call id (N5)"
        }
        17 => {
            // A custom tool call in place of the function call it was (N2's clients).
            if items[k]["type"] == "function_call" {
                let call = items[k].clone();
                items[k] = json!({"type": "custom_tool_call", "call_id": call["call_id"],
                    "name": call["name"], "input": call["arguments"]});
                for item in items.iter_mut() {
                    if item["type"] == "function_call_output" && item["call_id"] == call["call_id"]
                    {
                        item["type"] = json!("custom_tool_call_output");
                    }
                }
            }
            "custom call in place (N2)"
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
            "image by id (seed)"
        }
        _ => {
            body["include"] = match rng.below(3) {
                0 => Value::Null,
                1 => json!([]),
                _ => json!(["reasoning.encrypted_content"]),
            };
            "include"
        }
    };
    name
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

fn flat(input: &Value) -> Vec<Value> {
    match input {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        Value::Object(_) => vec![input.clone()],
        _ => Vec::new(),
    }
}

/// What a client item said, for the properties: `(in order, key)`; `None` for what may go
/// (reasoning, ids alone).
fn said(item: &Value) -> Option<(bool, String)> {
    let ty = item["type"].as_str().unwrap_or("message");
    let role = item["role"].as_str();
    if ty == "message" && matches!(role, Some("user" | "system" | "developer")) {
        return Some((true, format!("{role:?}:{}", item["content"])));
    }
    if ty.ends_with("_output") && ty != "tool_search_output" {
        return Some((true, format!("{ty}:{}", item["output"])));
    }
    if is_call(item) && item.get("name").is_some()
        || ty == "local_shell_call" && item.get("action").is_some()
    {
        let what = [
            &item["name"],
            &item["arguments"],
            &item["input"],
            &item["action"],
        ];
        return Some((false, format!("{ty}:{what:?}")));
    }
    if ty == "message" && role == Some("assistant") && item.get("content").is_some() {
        return Some((false, format!("assistant:{}", item["content"])));
    }
    None
}

/// Property 2: what the client said that did not reach the upstream, if anything.
fn lost(client: &Value, sent: &Value) -> Option<String> {
    let sent: Vec<String> = flat(&sent["input"])
        .iter()
        .filter_map(said)
        .map(|(_, k)| k)
        .collect();
    let mut at = 0;
    for (ordered, key) in flat(&client["input"]).iter().filter_map(said) {
        if ordered {
            match sent[at..].iter().position(|k| *k == key) {
                Some(p) => at += p + 1,
                None => return Some(format!("{key} missing or out of the client's order")),
            }
        } else if !sent.contains(&key) {
            return Some(format!("{key} missing"));
        }
    }
    None
}

#[derive(Default)]
struct Tally {
    cases: AtomicU64,
    direct_ok: AtomicU64,
    repaired: AtomicU64,
    both_refused: AtomicU64,
    chained: AtomicU64,
    chained_repaired: AtomicU64,
    chained_refused: AtomicU64,
    /// Per break: follow-ups refused direct that carried it, and how many of those stayed
    /// refused through rethread.
    breaks: Mutex<BTreeMap<&'static str, (u64, u64)>>,
    /// Follow-ups refused direct that carry no break of `UNREPAIRED`, and how many of those
    /// passed through rethread.
    repairable: AtomicU64,
    repairable_repaired: AtomicU64,
}

/// Breaks no rewrite repairs, and why: a call left without its output has nothing in memory
/// to answer it (N1; `--unanswered-calls answer` writes one, opt-in); a `store: false` response
/// made over HTTP was never held by the server, and rethread keeps no stateless request's
/// input (each carries its whole history: keeping them would cost the square of a
/// conversation), so its chain cannot be sent in its place.
const UNREPAIRED: &[&str] = &[
    "drop an output (N1)",
    "chain: a call left unanswered (N1)",
    "chain: store:false over HTTP",
];

/// Extra arguments for the rethread under test (`RETHREAD_HARM_ARGS`, split on spaces), e.g.
/// `--unanswered-calls answer`.
fn extra_args() -> Vec<String> {
    std::env::var("RETHREAD_HARM_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

impl Tally {
    fn by_break(&self, breaks: &[&'static str], repaired: bool) {
        let answering = extra_args().iter().any(|a| a == "answer");
        let unrepaired = |b: &&str| UNREPAIRED.contains(b) && !(answering && b.contains("(N1)"));
        if !breaks.iter().any(unrepaired) {
            self.repairable.fetch_add(1, Ordering::Relaxed);
            self.repairable_repaired
                .fetch_add(u64::from(repaired), Ordering::Relaxed);
        }
        let mut seen: Vec<&'static str> = breaks.to_vec();
        seen.sort_unstable();
        seen.dedup();
        let mut table = self.breaks.lock().unwrap();
        for name in seen {
            let (refused, stayed) = table.entry(name).or_default();
            *refused += 1;
            *stayed += u64::from(!repaired);
        }
    }

    /// The breaks of follow-ups refused direct, most often left refused first.
    fn breaks_table(&self) -> String {
        let table = self.breaks.lock().unwrap();
        let mut rows: Vec<_> = table.iter().collect();
        rows.sort_by_key(|(_, (_, stayed))| std::cmp::Reverse(*stayed));
        rows.iter()
            .map(|(name, (refused, stayed))| {
                format!("  {name:<40} refused direct {refused:>6}, still refused {stayed:>6}\n")
            })
            .collect()
    }
}

async fn one_case(seed: u64, fake: &FakeHandle, proxy: &Rethread, tally: &Tally) -> Option<String> {
    let proxy_url = &proxy.url("/v1/responses");
    let mut rng = Rng(seed | 1);
    if rng.chance(33) {
        return chained_case(seed, &mut rng, fake, proxy, tally).await;
    }
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
    let mut breaks = Vec::new();
    for _ in 0..1 + rng.below(3) {
        breaks.push(break_once(&mut rng, &mut items, &mut body, &all));
    }
    items.push(user("and then?"));
    body["input"] = input_value(&mut rng, items);
    if rng.chance(15) {
        body["stream"] = json!(true);
    }
    compare(seed, &body, fake, proxy, tally, None, &breaks).await
}

/// A follow-up that continues a chain made through rethread (see the module's doc).
async fn chained_case(
    seed: u64,
    rng: &mut Rng,
    fake: &FakeHandle,
    proxy: &Rethread,
    tally: &Tally,
) -> Option<String> {
    let proxy_url = &proxy.url("/v1/responses");
    let stored = rng.chance(40);
    let over_socket = !stored && rng.chance(70);
    let tools = json!([{"type": "function", "name": "get_weather"}, {"type": "image_generation"}]);
    let mut socket = match over_socket {
        true => {
            let url = format!("ws://{}/v1/responses", proxy.addr);
            Some(ws_connect_with(&url, KEY, &[("x-fake-shape", &shape(rng))]).await)
        }
        false => None,
    };
    // Over HTTP a `store: false` response cannot be continued at all: one turn.
    let turns = if stored || over_socket {
        1 + rng.below(2)
    } else {
        1
    };
    let (mut previous, mut last, mut chain) = (Value::Null, Vec::new(), Vec::new());
    for depth in 0..turns {
        let mut input = vec![user(if depth == 0 { "go" } else { "more" })];
        input.splice(0..0, last.iter().filter(|i| is_call(i)).map(output_of));
        let mut body = json!({"model": "gpt-5", "store": stored, "input": input, "tools": tools});
        if !previous.is_null() {
            body["previous_response_id"] = previous.clone();
        }
        let response = match &mut socket {
            Some(socket) => {
                let events = ws_create(socket, body).await;
                let end = events.last()?.clone();
                if end["type"] != "response.completed" {
                    return Some(format!("chain turn refused: {end}"));
                }
                end["response"].clone()
            }
            None => {
                let shape = [("x-fake-shape", shape(rng))];
                let shape: Vec<(&str, &str)> =
                    shape.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let answer = post(proxy_url, KEY, &body, &shape).await;
                if answer.status != 200 {
                    return Some(format!("chain turn refused: {}", answer.text));
                }
                answer.body
            }
        };
        last = response["output"].as_array()?.clone();
        chain.extend(last.iter().cloned());
        previous = response["id"].clone();
    }
    drop(socket);
    let mut items: Vec<Value> = last.iter().filter(|_| rng.chance(25)).cloned().collect();
    if rng.chance(10) {
        items.extend(chain.first().cloned());
    }
    let calls: Vec<&Value> = last.iter().filter(|i| is_call(i)).collect();
    let answered: Vec<Value> = calls
        .iter()
        .filter(|_| !rng.chance(15))
        .map(|c| output_of(c))
        .collect();
    let unanswered = answered.len() < calls.len();
    items.extend(answered);
    items.push(user("and then?"));
    let mut body = json!({"model": "gpt-5", "store": stored, "tools": tools,
        "previous_response_id": previous, "input": items});
    let mut breaks = vec![match (stored, over_socket) {
        (true, _) => "chain: stored",
        (false, true) => "chain: store:false over WebSocket",
        (false, false) => "chain: store:false over HTTP",
    }];
    if rng.chance(15) {
        body["store"] = json!(!stored);
        breaks.push("chain: store flipped");
    }
    if unanswered {
        breaks.push("chain: a call left unanswered (N1)");
    }
    if rng.chance(15) {
        body["stream"] = json!(true);
    }
    let held: Vec<String> = chain
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect();
    tally.chained.fetch_add(1, Ordering::Relaxed);
    compare(seed, &body, fake, proxy, tally, Some(&held), &breaks).await
}

/// Sends `body` direct and through rethread and checks both properties; `held`, for a chained
/// case: ids of items the request's chain holds, which may go; `breaks`: what the case did to
/// its follow-up, for the tally of what stays refused.
async fn compare(
    seed: u64,
    body: &Value,
    fake: &FakeHandle,
    proxy: &Rethread,
    tally: &Tally,
    held: Option<&[String]>,
    breaks: &[&'static str],
) -> Option<String> {
    let proxy_url = &proxy.url("/v1/responses");
    let fake_url = &direct_url(fake);
    let direct = post(fake_url, KEY, body, &[]).await;
    let through = post(proxy_url, KEY, body, &[]).await;
    tally.cases.fetch_add(1, Ordering::Relaxed);
    let ok = |s: u16| (200..300).contains(&s);
    if !ok(direct.status) {
        tally.by_break(breaks, ok(through.status));
    }
    match (ok(direct.status), ok(through.status)) {
        (true, false) => {
            return Some(format!(
                "seed {seed}: direct {} but through rethread {}\nrequest: {body}\nrethread answered: {}",
                direct.status, through.status, through.text
            ))
        }
        (true, true) => tally.direct_ok.fetch_add(1, Ordering::Relaxed),
        (false, true) => {
            if held.is_some() {
                tally.chained_repaired.fetch_add(1, Ordering::Relaxed);
            }
            tally.repaired.fetch_add(1, Ordering::Relaxed)
        }
        (false, false) => {
            if held.is_some() {
                tally.chained_refused.fetch_add(1, Ordering::Relaxed);
            }
            tally.both_refused.fetch_add(1, Ordering::Relaxed);
            if std::env::var_os("RETHREAD_HARM_SHOW_REFUSED").is_some() {
                let logs = proxy.logs();
                let tail: Vec<&str> = logs.lines().rev().take(6).collect();
                println!("refused both ways: {}\n  {body}\n  {tail:?}\n  breaks: {breaks:?}", through.text);
            }
            return None;
        }
    };
    // This worker's fake got nothing else since: its last body is what rethread sent.
    let sent: Value = serde_json::from_slice(&fake.last_request_body()?).ok()?;
    let mut said = body.clone();
    said["input"] = flat(&body["input"])
        .into_iter()
        .filter(|i| {
            !i["id"]
                .as_str()
                .is_some_and(|id| held.unwrap_or_default().iter().any(|h| h == id))
        })
        .collect();
    lost(&said, &sent).map(|what| format!("seed {seed}: {what}\nrequest: {body}\nsent: {sent}"))
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
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let workers = 4;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            // A fake and a rethread of its own: the fake's last request is this worker's.
            let fake = strict_fake().await;
            let args = extra_args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let proxy = Rethread::start_env(
                &fake.url(),
                &args,
                &[(
                    "RETHREAD_LOG",
                    &std::env::var("RETHREAD_HARM_LOG")
                        .unwrap_or("warn,rethread=info,rethread::proxy=warn".into()),
                )],
            );
            let mut failures = Vec::new();
            let mut n = w;
            while n < cases {
                let case_seed = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                if let Some(f) = one_case(case_seed, &fake, &proxy, &tally).await {
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
        "do no harm: {} cases ({} chained: {} refused directly and accepted through rethread, {} refused both ways), seed {seed}, {:.1}s: {} accepted directly, {} refused directly and accepted through rethread, {} refused both ways, {} counter-examples",
        tally.cases.load(Ordering::Relaxed),
        tally.chained.load(Ordering::Relaxed),
        tally.chained_repaired.load(Ordering::Relaxed),
        tally.chained_refused.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        tally.direct_ok.load(Ordering::Relaxed),
        tally.repaired.load(Ordering::Relaxed),
        tally.both_refused.load(Ordering::Relaxed),
        failures.len()
    );
    let load = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64;
    let refused = load(&tally.repaired) + load(&tally.both_refused);
    println!(
        "{:.1}% of the follow-ups refused direct pass through rethread; {:.1}% of the {} whose breaks all have a repair",
        100.0 * load(&tally.repaired) / refused.max(1.0),
        100.0 * load(&tally.repairable_repaired) / load(&tally.repairable).max(1.0),
        tally.repairable.load(Ordering::Relaxed),
    );
    print!(
        "refused direct, by what the case broke (a case counts under each of its breaks):\n{}",
        tally.breaks_table()
    );
    assert!(
        failures.is_empty(),
        "{} counter-examples; first:\n{}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn the_second_property_catches_lost_or_reordered_words_and_allows_what_may_go() {
    let call = json!({"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f", "arguments": "{}"});
    let output = json!({"type": "function_call_output", "call_id": "c1", "output": "ok"});
    let client = json!({"input": [user("a"), {"type": "reasoning", "id": "rs_1", "summary": []}, call, output, user("b")]});
    // Reasoning dropped, the call's call_id aliased: nothing the client said is lost.
    let mut aliased_output = output.clone();
    aliased_output["call_id"] = json!("call_rt00");
    let fine = json!({"input": [user("a"), call, aliased_output, [user("b")]]});
    assert_eq!(lost(&client, &fine), None);
    // A user's words dropped, or two put in another order, or the call gone: caught.
    assert!(lost(&client, &json!({"input": [user("a"), call, output]})).is_some());
    assert!(lost(
        &client,
        &json!({"input": [user("b"), call, output, user("a")]})
    )
    .is_some());
    assert!(lost(&client, &json!({"input": [user("a"), output, user("b")]})).is_some());
}
