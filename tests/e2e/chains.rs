//! Chains the server holds (`previous_response_id`): each failure of
//! shared/reference/wild-failures-2026.md rows N6, N7, N8 and N1 (chained) is refused by the fake
//! when sent direct, and passes through rethread.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use serde_json::{json, Value};

use crate::common::*;

fn tools() -> Value {
    json!([{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}])
}

/// A request of the chain: `input`, continuing `previous` when given.
pub(crate) fn request(store: bool, previous: Option<&str>, input: Value) -> Value {
    let mut body = json!({"model": "gpt-5", "store": store, "tools": tools(), "input": input});
    if let Some(previous) = previous {
        body["previous_response_id"] = json!(previous);
    }
    body
}

/// The first output item of `ty` in a response object.
fn item<'a>(response: &'a Value, ty: &str) -> &'a Value {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == ty)
        .unwrap_or_else(|| panic!("no {ty} in {response}"))
}

fn output_of(call: &Value) -> Value {
    json!({"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"})
}

/// The response object a WebSocket turn ended with (panics on an error event).
pub(crate) fn completed(events: &[Value]) -> &Value {
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed", "{events:?}");
    &last["response"]
}

fn error_code(events: &[Value]) -> Option<&str> {
    let last = events.last()?;
    (last["type"] == "error").then(|| last["error"]["code"].as_str().unwrap_or(""))
}

pub(crate) fn ws_url(base: &str) -> String {
    format!("{}/v1/responses", base.replace("http://", "ws://"))
}

/// The fake's base URL and rethread's: each case is sent direct, then through rethread.
fn direct_then_through(fake: &FakeHandle, proxy: &Rethread) -> [(String, bool); 2] {
    [
        (fake.url(), false),
        (format!("http://{}", proxy.addr), true),
    ]
}

/// How often rethread applied `rule`.
async fn applied(proxy: &Rethread, rule: &str) -> f64 {
    let metrics = metrics_text(proxy).await;
    series(&metrics, "rethread_repair_rules_total", "rule", rule)
}

/// Asserts the fake refused `answer` as the API does: `status`, a message holding `text`.
fn assert_refused(answer: &Answer, status: u16, text: &str) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert!(answer.text.contains(text), "{}", answer.text);
}

fn repairs(answer: &Answer) -> String {
    answer
        .headers
        .get("x-rethread-repairs")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn n7_a_chained_request_that_sends_its_chains_call_again_is_repaired_over_http() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    for (base, through) in direct_then_through(&fake, &proxy) {
        let url = format!("{base}/v1/responses");
        let first = post(&url, KEY, &request(true, None, json!("weather?")), &[]).await;
        assert_eq!(first.status, 200, "{}", first.text);
        let call = item(&first.body, "function_call").clone();
        let id = first.body["id"].as_str().unwrap();
        let followup = request(true, Some(id), json!([call.clone(), output_of(&call)]));
        let answer = post(&url, KEY, &followup, &[]).await;
        if !through {
            assert_refused(&answer, 400, "Duplicate item found with id");
            continue;
        }
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(repairs(&answer), "dedupe=1");
        let sent = sent_body(&fake);
        assert_eq!(
            sent["input"],
            json!([output_of(&call)]),
            "only the new item goes"
        );
        assert_eq!(sent["previous_response_id"], json!(id));
    }
    assert_eq!(applied(&proxy, "dedupe").await, 1.0);
}

#[tokio::test]
async fn n7_a_stored_chains_hosted_calls_sent_again_re_serialised_are_repaired() {
    // Memory keeps no copy of a stored turn's web search or image call, only its digest; the
    // client's copy comes back re-serialised (keys in another order, `status` gone, a null).
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    for (shape, ty) in [
        ("rs,ws,msg", "web_search_call"),
        ("rs,ig,msg", "image_generation_call"),
    ] {
        for (base, through) in direct_then_through(&fake, &proxy) {
            let url = format!("{base}/v1/responses");
            let first = json!({"model": "gpt-5", "store": true, "input": "find it",
                "tools": [{"type": "web_search"}, {"type": "image_generation"}]});
            let first = post(&url, KEY, &first, &[("x-fake-shape", shape)]).await;
            assert_eq!(first.status, 200, "{}", first.text);
            let mut copy: serde_json::Map<String, Value> =
                item(&first.body, ty).as_object().unwrap().clone();
            copy.remove("status");
            let mut copy: Value = copy
                .into_iter()
                .rev()
                .collect::<serde_json::Map<_, _>>()
                .into();
            copy["background_note"] = Value::Null;
            let id = first.body["id"].as_str().unwrap();
            let followup = request(true, Some(id), json!([copy, user("and then?")]));
            let answer = post(&url, KEY, &followup, &[]).await;
            if !through {
                assert_refused(&answer, 400, "Duplicate item found with id");
                continue;
            }
            assert_eq!(answer.status, 200, "{ty}: {}", answer.text);
            assert_eq!(repairs(&answer), "dedupe=1", "{ty}");
            assert_eq!(
                sent_body(&fake)["input"],
                json!([user("and then?")]),
                "{ty}"
            );
        }
    }
    // An edit under the same id is the client's: it goes as sent, and the upstream's refusal
    // comes back.
    let url = proxy.url("/v1/responses");
    let first = json!({"model": "gpt-5", "store": true, "input": "find it",
        "tools": [{"type": "web_search"}]});
    let first = post(&url, KEY, &first, &[("x-fake-shape", "rs,ws,msg")]).await;
    let mut edited = item(&first.body, "web_search_call").clone();
    edited["action"]["query"] = json!("something else");
    let id = first.body["id"].as_str().unwrap();
    let followup = request(true, Some(id), json!([edited, user("and then?")]));
    let answer = post(&url, KEY, &followup, &[]).await;
    assert_refused(&answer, 400, "Duplicate item found with id");
}

#[tokio::test]
async fn n7_a_websocket_incremental_turn_that_resends_its_chains_call_is_repaired() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    for (base, through) in direct_then_through(&fake, &proxy) {
        let mut socket = ws_connect(&ws_url(&base), KEY).await;
        let first = ws_create(&mut socket, request(false, None, json!("weather?"))).await;
        let first = completed(&first).clone();
        let call = item(&first, "function_call").clone();
        let id = first["id"].as_str().unwrap();
        let followup = request(false, Some(id), json!([call.clone(), output_of(&call)]));
        let events = ws_create(&mut socket, followup).await;
        if !through {
            let last = events.last().unwrap();
            assert_eq!(last["type"], "error", "{events:?}");
            let message = last["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("Duplicate item found with id"),
                "{message}"
            );
            continue;
        }
        completed(&events);
        assert_eq!(sent_body(&fake)["input"], json!([output_of(&call)]));
    }
}

/// Two turns of a `store: false` WebSocket session through `base`, then the socket closed:
/// the second response's id, and the ids the model saw in that history.
pub(crate) async fn a_closed_session(base: &str) -> (String, Vec<String>) {
    let mut socket = ws_connect(&ws_url(base), KEY).await;
    let first = ws_create(&mut socket, request(false, None, json!("weather?"))).await;
    let first = completed(&first).clone();
    let call = item(&first, "function_call").clone();
    let id = first["id"].as_str().unwrap();
    let second = ws_create(
        &mut socket,
        request(false, Some(id), json!([output_of(&call)])),
    )
    .await;
    let second = completed(&second).clone();
    let mut ids: Vec<String> = Vec::new();
    for response in [&first, &second] {
        for i in response["output"].as_array().unwrap() {
            ids.push(i["id"].as_str().unwrap().to_owned());
        }
    }
    drop(socket);
    (second["id"].as_str().unwrap().to_owned(), ids)
}

/// Asserts the upstream got the whole history once, and no `previous_response_id`.
pub(crate) fn assert_whole_history(fake: &FakeHandle, ids: &[String]) {
    let sent = sent_body(fake);
    assert!(sent.get("previous_response_id").is_none(), "{sent}");
    let input = sent["input"].as_array().unwrap();
    for id in ids {
        let n = input.iter().filter(|i| i["id"] == json!(id)).count();
        assert_eq!(n, 1, "{id} in {sent}");
    }
    assert_eq!(input[0], json!({"role": "user", "content": "weather?"}));
    let outputs = input
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .count();
    assert_eq!(outputs, 1, "{sent}");
    assert_eq!(
        input.last().unwrap(),
        &json!({"role": "user", "content": "and tomorrow?"})
    );
}

#[tokio::test]
async fn n6_a_store_false_websocket_session_continues_on_a_new_socket() {
    let fake = fake().await;
    let (id, _) = a_closed_session(&fake.url()).await;
    let mut socket = ws_connect(&ws_url(&fake.url()), KEY).await;
    let events = ws_create(
        &mut socket,
        request(false, Some(&id), json!("and tomorrow?")),
    )
    .await;
    assert_eq!(
        error_code(&events),
        Some("previous_response_not_found"),
        "{events:?}"
    );

    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let base = format!("http://{}", proxy.addr);
    let (id, ids) = a_closed_session(&base).await;
    let mut socket = ws_connect(&ws_url(&base), KEY).await;
    let events = ws_create(
        &mut socket,
        request(false, Some(&id), json!("and tomorrow?")),
    )
    .await;
    assert!(
        events.iter().all(|e| e["type"] != "error"),
        "the client sees no error: {events:?}"
    );
    let third = completed(&events).clone();
    assert_whole_history(&fake, &ids);
    // The session goes on, on the new socket, as a chain the upstream holds again.
    let answer = output_of(item(&third, "function_call"));
    let next = request(false, third["id"].as_str(), json!([answer]));
    completed(&ws_create(&mut socket, next).await);
    assert_eq!(sent_body(&fake)["previous_response_id"], third["id"]);
    assert_eq!(applied(&proxy, "expand").await, 1.0);
}

#[tokio::test]
async fn n6_a_websocket_session_continues_over_http() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    for (base, through) in direct_then_through(&fake, &proxy) {
        let (id, ids) = a_closed_session(&base).await;
        let url = format!("{base}/v1/responses");
        let answer = post(
            &url,
            KEY,
            &request(false, Some(&id), json!("and tomorrow?")),
            &[],
        )
        .await;
        if !through {
            assert_eq!(answer.status, 400, "{}", answer.text);
            assert_eq!(answer.body["error"]["code"], "previous_response_not_found");
            continue;
        }
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(repairs(&answer), "include=1, expand=1");
        assert_whole_history(&fake, &ids);
    }
}

#[tokio::test]
async fn n6_a_lost_chains_back_to_back_reasoning_is_left_out_of_its_history() {
    // The model answered two reasoning items in a row: the first has nothing of its own after
    // it, and the API refuses it replayed (E12), so the history sent in the chain's place
    // leaves it out.
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let base = format!("http://{}", proxy.addr);
    let mut socket = ws_connect_with(&ws_url(&base), KEY, &[("x-fake-shape", "rs,rs,msg")]).await;
    let first = ws_create(&mut socket, request(false, None, json!("think twice"))).await;
    let first = completed(&first).clone();
    drop(socket);
    let output = first["output"].as_array().unwrap();
    let id = first["id"].as_str().unwrap();
    let answer = post(
        &proxy.url("/v1/responses"),
        KEY,
        &request(false, Some(id), json!("and then?")),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(repairs(&answer), "include=1, expand=1");
    let sent = sent_body(&fake);
    let ids: Vec<&Value> = sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert!(!ids.contains(&&output[0]["id"]), "{sent}");
    assert!(
        ids.contains(&&output[1]["id"]) && ids.contains(&&output[2]["id"]),
        "{sent}"
    );
}

#[tokio::test]
async fn n6_a_chain_rethread_does_not_hold_whole_is_left_to_the_client() {
    let fake = fake().await;
    let (id, _) = a_closed_session(&fake.url()).await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let url = proxy.url("/v1/responses");
    let answer = post(
        &url,
        KEY,
        &request(false, Some(&id), json!("and tomorrow?")),
        &[],
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert_eq!(answer.body["error"]["code"], "previous_response_not_found");
    proxy.wait_for_log("memory does not hold all of it");
}

#[tokio::test]
async fn n8_an_upstream_that_forces_store_false_gets_full_items() {
    let fake = spawn_fake(FakeOptions {
        force_store_false: true,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    for (base, through) in direct_then_through(&fake, &proxy) {
        let url = format!("{base}/v1/responses");
        // The first answer shows what the upstream does with `store`.
        let warm = post(&url, KEY, &json!({"model": "gpt-5", "input": "hi"}), &[]).await;
        assert_eq!(warm.body["store"], false, "{}", warm.text);
        let first = post(&url, KEY, &image_request(), &[]).await;
        let ig = output_id(&first.body, "image_generation_call");
        let answer = post(&url, KEY, &image_followup(&ig), &[]).await;
        if !through {
            assert_refused(&answer, 404, "Items are not persisted");
            continue;
        }
        assert_eq!(answer.status, 200, "{}", answer.text);
        let sent = sent_body(&fake);
        let image = sent["input"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "image_generation_call")
            .unwrap();
        assert!(
            image["result"].is_string(),
            "the image goes back in full: {sent}"
        );
        assert!(sent["input"][1]["encrypted_content"].is_string(), "{sent}");
    }
}

#[tokio::test]
async fn n1_a_chained_request_that_answers_some_calls_gets_the_others_answered_when_asked() {
    let fake = fake().await;
    let proxy = Rethread::start(
        &fake.url(),
        &["--fallback-retries", "0", "--unanswered-calls", "answer"],
    );
    let shape = [("x-fake-shape", "rs,fc,fc")];
    for (base, through) in direct_then_through(&fake, &proxy) {
        let url = format!("{base}/v1/responses");
        let first = post(&url, KEY, &request(true, None, json!("weather?")), &shape).await;
        let calls: Vec<&Value> = first.body["output"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["type"] == "function_call")
            .collect();
        assert_eq!(calls.len(), 2);
        let id = first.body["id"].as_str().unwrap();
        let followup = request(true, Some(id), json!([output_of(calls[0])]));
        let answer = post(&url, KEY, &followup, &[]).await;
        if !through {
            assert_refused(&answer, 400, "No tool output found");
            continue;
        }
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(repairs(&answer), "answer=1");
        let sent = sent_body(&fake);
        assert_eq!(sent["input"][0]["call_id"], calls[1]["call_id"], "{sent}");
        assert_eq!(sent["input"][1], output_of(calls[0]));
    }
}

#[tokio::test]
async fn chain_repairs_can_be_switched_off() {
    let fake = fake().await;
    let proxy = Rethread::start(
        &fake.url(),
        &["--rewrite-dedupe", "false", "--rewrite-expand", "false"],
    );
    let base = format!("http://{}", proxy.addr);
    let (id, _) = a_closed_session(&base).await;
    let url = proxy.url("/v1/responses");
    let answer = post(
        &url,
        KEY,
        &request(false, Some(&id), json!("and tomorrow?")),
        &[],
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    let first = post(&url, KEY, &request(true, None, json!("weather?")), &[]).await;
    let call = item(&first.body, "function_call").clone();
    let followup = request(
        true,
        first.body["id"].as_str(),
        json!([call.clone(), output_of(&call)]),
    );
    let answer = post(&url, KEY, &followup, &[]).await;
    assert_eq!(answer.status, 400, "{}", answer.text);
}

#[tokio::test]
async fn n7_a_request_that_sends_again_what_its_conversation_holds_is_repaired() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "1"]);
    for (base, through) in direct_then_through(&fake, &proxy) {
        let created = client()
            .post(format!("{base}/v1/conversations"))
            .header("authorization", KEY)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 200);
        let conversation: Value = created.json().await.unwrap();
        let url = format!("{base}/v1/responses");
        let mut first = request(true, None, json!("weather?"));
        first["conversation"] = conversation["id"].clone();
        let first = post(&url, KEY, &first, &[]).await;
        assert_eq!(first.status, 200, "{}", first.text);
        let call = item(&first.body, "function_call").clone();
        // The Agents SDK's way: the whole history again, with the conversation's id.
        let mut followup = request(true, None, json!([call.clone(), output_of(&call)]));
        followup["conversation"] = json!({"id": conversation["id"]});
        let answer = post(&url, KEY, &followup, &[]).await;
        if !through {
            assert_refused(&answer, 400, "Duplicate item found with id");
            continue;
        }
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(repairs(&answer), "dedupe=1");
        assert_eq!(sent_body(&fake)["input"], json!([output_of(&call)]));
    }
}
