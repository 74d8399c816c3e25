//! Issue 19: the shapes 2026 clients send (`wild-failures-2026.md`, rows N1–N12). Each test names
//! its row; each follow-up is refused by the strict fake sent directly and passes through
//! rethread as JSON, as SSE and over WebSocket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use crate::common::*;

fn function_tools() -> Value {
    json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}])
}

/// A first turn through `proxy` (so rethread learns it), of the fake's `shape`; its output.
async fn first_turn(proxy: &Rethread, mut body: Value, shape: &str) -> Vec<Value> {
    body["model"] = json!("gpt-5");
    let answer = post(
        &proxy.url("/v1/responses"),
        KEY,
        &body,
        &[("x-fake-shape", shape)],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body["output"].as_array().unwrap().clone()
}

fn of_type<'a>(output: &'a [Value], ty: &str) -> &'a Value {
    output.iter().find(|i| i["type"] == ty).unwrap()
}

/// `followup` is refused directly with `expected` in its message, and passes through rethread
/// as JSON, SSE and a WebSocket `response.create`.
async fn refused_direct_and_passed_through(
    row: &str,
    fake: &FakeHandle,
    proxy: &Rethread,
    followup: &Value,
    expected: &str,
) {
    let direct = post(&direct_url(fake), KEY, followup, &[]).await;
    assert!(
        (400..500).contains(&direct.status) && direct.text.contains(expected),
        "{row}: direct should be refused with {expected:?}: {} {}",
        direct.status,
        direct.text
    );
    let answer = post(&proxy.url("/v1/responses"), KEY, followup, &[]).await;
    assert_eq!(
        answer.status,
        200,
        "{row} (JSON): {}\n{}",
        answer.text,
        proxy.logs()
    );
    let mut streamed = followup.clone();
    streamed["stream"] = json!(true);
    let answer = post(&proxy.url("/v1/responses"), KEY, &streamed, &[]).await;
    assert_eq!(answer.status, 200, "{row} (SSE): {}", answer.text);
    assert!(
        answer.text.contains("response.completed"),
        "{row} (SSE): {}",
        answer.text
    );
    let mut socket = ws_connect(&format!("ws://{}/v1/responses", proxy.addr), KEY).await;
    let events = ws_create(&mut socket, followup.clone()).await;
    assert_eq!(
        events.last().unwrap()["type"],
        "response.completed",
        "{row} (WebSocket): {events:?}"
    );
}

fn repairs_metric(metrics: &str, rule: &str) -> f64 {
    series(metrics, "rethread_repair_rules_total", "rule", rule)
}

/// The weather call's follow-up: the user's words, `rs` and `fc` as the client sends them back,
/// and the call's output.
fn call_followup(rs: Value, fc: Value) -> Value {
    let output =
        json!({"type": "function_call_output", "call_id": fc["call_id"], "output": "sunny"});
    json!({"model": "gpt-5", "tools": function_tools(), "input": [user("weather?"), rs, fc, output]})
}

#[tokio::test]
async fn n3_reasoning_replayed_with_its_text_in_content_is_sanitised() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let output = first_turn(
        &proxy,
        json!({"input": "weather?", "tools": function_tools()}),
        "rs,fc",
    )
    .await;
    let mut rs = of_type(&output, "reasoning").clone();
    rs["content"] = json!([{"type": "reasoning_text", "text": "I should call the tool."}]);
    let fc = of_type(&output, "function_call").clone();
    let followup = call_followup(rs, fc);
    refused_direct_and_passed_through("N3", &fake, &proxy, &followup, "array too long").await;
    let sent = sent_body(&fake);
    assert!(sent["input"][1].get("content").is_none(), "{sent}");
    assert!(repairs_metric(&metrics_text(&proxy).await, "sanitise") >= 3.0);
}

#[tokio::test]
async fn n4_output_only_keys_sent_as_null_are_left_out() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let output = first_turn(
        &proxy,
        json!({"input": "weather?", "tools": function_tools()}),
        "rs,fc",
    )
    .await;
    // model_dump() of the SDK's output items.
    let mut rs = of_type(&output, "reasoning").clone();
    rs["status"] = Value::Null;
    rs["encrypted_content"] = Value::Null;
    let mut fc = of_type(&output, "function_call").clone();
    fc["status"] = Value::Null;
    let followup = call_followup(rs, fc.clone());
    refused_direct_and_passed_through("N4", &fake, &proxy, &followup, "Unknown parameter").await;
    let sent = sent_body(&fake);
    assert!(sent["input"][1].get("status").is_none(), "{sent}");
    assert!(sent["input"][2].get("status").is_none(), "{sent}");
    assert_eq!(
        sent["input"][2]["call_id"], fc["call_id"],
        "nothing else changed"
    );
}

#[tokio::test]
async fn n5_a_call_id_over_64_characters_gets_one_short_alias() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let long = format!(
        "codex_mcp__weather__get_weather_exec-{}",
        "0123456789abcdef".repeat(3)
    );
    assert!(long.len() > 64);
    // A history another provider made: a call and its output, with that provider's call id.
    let followup = json!({"model": "gpt-5", "tools": function_tools(), "input": [
        user("weather?"),
        {"type": "function_call", "call_id": long, "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": long, "output": "sunny"},
        user("and tomorrow?")
    ]});
    refused_direct_and_passed_through("N5 call_id", &fake, &proxy, &followup, "string too long")
        .await;
    let sent = sent_body(&fake);
    let (call, output) = (&sent["input"][1]["call_id"], &sent["input"][2]["call_id"]);
    assert_eq!(call, output, "one alias for the call and its output");
    assert!(call.as_str().unwrap().len() <= 64, "{sent}");
}

#[tokio::test]
async fn n5_an_item_id_over_64_characters_is_left_out() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let long = format!("msg_{}", "a".repeat(120));
    let followup = json!({"model": "gpt-5", "input": [
        user("hi"),
        {"type": "message", "role": "assistant", "id": long,
         "content": [{"type": "output_text", "text": "hello", "annotations": []}]},
        user("again")
    ]});
    refused_direct_and_passed_through("N5 id", &fake, &proxy, &followup, "string too long").await;
    let sent = sent_body(&fake);
    assert!(sent["input"][1].get("id").is_none(), "{sent}");
    assert_eq!(sent["input"][1]["content"][0]["text"], "hello");
}

#[tokio::test]
async fn n12_a_mangled_web_search_action_is_put_back_from_memory() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let tools = json!([{"type": "web_search"}]);
    let output = first_turn(
        &proxy,
        json!({"input": "news?", "tools": tools}),
        "rs,ws,msg",
    )
    .await;
    let mut mangled = output.clone();
    for item in &mut mangled {
        if item["type"] == "web_search_call" {
            item["action"] = json!({"type": "other"});
        }
    }
    let mut input = vec![user("news?")];
    input.extend(mangled);
    input.push(user("more?"));
    let followup = json!({"model": "gpt-5", "tools": tools, "input": input});
    refused_direct_and_passed_through("N12", &fake, &proxy, &followup, "Invalid value: 'other'")
        .await;
}

#[tokio::test]
async fn n2_a_local_shell_output_with_the_calls_id_in_id_is_paired() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let tools = json!([{"type": "local_shell"}]);
    let output = first_turn(&proxy, json!({"input": "ls", "tools": tools}), "rs,lsh").await;
    let call = of_type(&output, "local_shell_call").clone();
    let mut input = vec![user("ls")];
    input.extend(output.clone());
    // The Agents SDK's LocalShellTool: the call's id in `id`, no `call_id`.
    input
        .push(json!({"type": "local_shell_call_output", "id": call["call_id"], "output": "a.txt"}));
    let followup = json!({"model": "gpt-5", "tools": tools, "input": input});
    refused_direct_and_passed_through("N2", &fake, &proxy, &followup, "local shell call").await;
    let sent = sent_body(&fake);
    let out = sent["input"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(out["call_id"], call["call_id"], "{sent}");
}

#[tokio::test]
async fn n2_a_custom_tool_output_whose_call_was_dropped_gets_its_call_back() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let tools = json!([{"type": "custom", "name": "apply_patch"}]);
    let output = first_turn(
        &proxy,
        json!({"input": "patch it", "tools": tools}),
        "rs,ct",
    )
    .await;
    let call = of_type(&output, "custom_tool_call").clone();
    // A gateway's context compression dropped the call and kept its output.
    let followup = json!({"model": "gpt-5", "tools": tools, "input": [
        user("patch it"),
        {"type": "custom_tool_call_output", "call_id": call["call_id"], "output": "done"}
    ]});
    refused_direct_and_passed_through("N2", &fake, &proxy, &followup, "custom tool call").await;
}

#[tokio::test]
async fn n1_unanswered_calls_are_answered_only_when_the_operator_asks() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &["--unanswered-calls", "answer"]);
    let output = first_turn(
        &proxy,
        json!({"input": "weather?", "tools": function_tools()}),
        "rs,fc",
    )
    .await;
    // The user interrupted the tool and asked something else.
    let mut input = vec![user("weather?")];
    input.extend(output.clone());
    input.push(user("never mind, tell me a joke"));
    let followup = json!({"model": "gpt-5", "tools": function_tools(), "input": input});
    refused_direct_and_passed_through("N1", &fake, &proxy, &followup, "No tool output found").await;
    let sent = sent_body(&fake);
    let call_id = of_type(&output, "function_call")["call_id"].clone();
    let answer = sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call_output")
        .unwrap()
        .clone();
    assert_eq!(answer["call_id"], call_id);
    // Logged at info (the line can trail the response: logs are read from a pipe).
    proxy.wait_for_log("left unanswered");

    // Off by default: the refusal reaches the client as without rethread.
    let plain = Rethread::start(&fake.url(), &[]);
    let answer = post(&plain.url("/v1/responses"), KEY, &followup, &[]).await;
    assert_eq!(answer.status, 400, "{}", answer.text);
}

#[tokio::test]
async fn n10_n11_items_rethread_does_not_know_travel_byte_for_byte() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    // Codex's private items and remote compaction, as Codex sends them (whitespace and key
    // order included): rethread must not touch a byte.
    let body = concat!(
        r#"{"model":"gpt-5","store":false,"stream":false,"input":["#,
        r#"{"type":"additional_tools","role":"developer","id":"at_0001","tools":[{"type":"namespace","name":"mcp"}]},"#,
        r#"{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]},"#,
        r#"{"type":"agent_message","id":"amsg_01","author":"a","recipient":"b","content":"x","internal_chat_message_metadata_passthrough":{}},"#,
        r#"{"type":"compaction","id":"cmp_1","encrypted_content":"e1"},"#,
        r#"{"type":"compaction","id":"cmp_2","encrypted_content":"e2"},"#,
        r#"{ "type" : "compaction_trigger" }"#,
        r#"],"include":["reasoning.encrypted_content"]}"#
    );
    let _ = client()
        .post(proxy.url("/v1/responses"))
        .header("authorization", KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(fake.last_request_body().unwrap(), body.as_bytes());
}
