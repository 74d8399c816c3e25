//! The fake rejects exactly what the real Responses API rejects, with the exact texts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use rethread_fake::FakeOptions;
use serde_json::{json, Value};

fn image_turn() -> Value {
    json!({"model": "gpt-5", "input": "Draw a cat", "tools": [{"type": "image_generation"}]})
}

#[tokio::test]
async fn image_follow_up_needs_its_reasoning() {
    let fake = start().await;
    let first = fake.turn(image_turn(), &[]).await;
    let types: Vec<&str> = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["reasoning", "image_generation_call", "message"]);
    let [rs, ig, _msg] = &ids(&first)[..] else {
        panic!()
    };
    assert!(first["output"][1]["result"].as_str().unwrap().len() > 2000);

    let bad = json!({"model": "gpt-5", "previous_response_id": null, "tools": [{"type": "image_generation"}], "input": [
        user("Now make it look realistic"),
        {"type": "image_generation_call", "id": ig},
    ]});
    let msg = format!("Item '{ig}' of type 'image_generation_call' was provided without its required 'reasoning' item: '{rs}'.");
    assert_input_error(fake.post(bad, &[]).await, 400, &msg);

    let good = json!({"model": "gpt-5", "tools": [{"type": "image_generation"}], "input": [
        user("Now make it look realistic"),
        item_ref(rs),
        {"type": "image_generation_call", "id": ig},
    ]});
    fake.turn(good, &[]).await;
    assert_eq!(fake.handle.responses_posts(), 3);
    let last: Value = serde_json::from_slice(&fake.handle.last_request_body().unwrap()).unwrap();
    assert_eq!(last["input"][1]["id"], json!(rs));
}

#[tokio::test]
async fn e1_for_messages_and_parallel_calls() {
    let fake = start().await;
    let first = fake
        .turn(
            json!({"model": "m", "input": "hi"}),
            &[("x-fake-shape", "rs,ig,rs,msg")],
        )
        .await;
    let [rs1, ig, rs2, msg] = &ids(&first)[..] else {
        panic!()
    };
    let ok = json!({"input": [item_ref(rs1), {"type": "image_generation_call", "id": ig}, item_ref(rs2), item_ref(msg), user("next")]});
    fake.turn(ok, &[]).await;
    let bad = json!({"input": [item_ref(rs1), {"type": "image_generation_call", "id": ig}, item_ref(msg)]});
    let text = format!("Item '{msg}' of type 'message' was provided without its required 'reasoning' item: '{rs2}'.");
    assert_input_error(fake.post(bad, &[]).await, 400, &text);

    // Parallel calls: the group must stay contiguous (R2).
    let calls = fake
        .turn(
            json!({"input": "go", "tools": [{"type": "function", "name": "f"}]}),
            &[("x-fake-shape", "rs,fc,fc")],
        )
        .await;
    let out = calls["output"].as_array().unwrap();
    let (rs, fc1, fc2) = (&out[0], &out[1], &out[2]);
    let output_of =
        |c: &Value| json!({"type": "function_call_output", "call_id": c["call_id"], "output": "1"});
    let interleaved = json!({"input": [rs["id"].as_str().map(item_ref), fc1, output_of(fc1), fc2, output_of(fc2)]});
    let text = format!("Item '{}' of type 'function_call' was provided without its required 'reasoning' item: '{}'.", fc2["id"].as_str().unwrap(), rs["id"].as_str().unwrap());
    assert_input_error(fake.post(interleaved, &[]).await, 400, &text);
    let grouped = json!({"input": [rs["id"].as_str().map(item_ref), fc1, fc2, output_of(fc1), output_of(fc2)]});
    fake.turn(grouped, &[]).await;
}

#[tokio::test]
async fn e2_reasoning_without_follower() {
    let fake = start().await;
    let first = fake.turn(image_turn(), &[]).await;
    let [rs, _ig, msg] = &ids(&first)[..] else {
        panic!()
    };
    let text = format!(
        "Item '{rs}' of type 'reasoning' was provided without its required following item."
    );
    assert_input_error(
        fake.post(json!({"input": [user("a"), item_ref(rs)]}), &[])
            .await,
        400,
        &text,
    );
    let rewritten = json!({"input": [item_ref(rs), {"role": "assistant", "content": "edited"}]});
    assert_input_error(fake.post(rewritten, &[]).await, 400, &text);
    // R5: any member of the group may follow.
    fake.turn(
        json!({"input": [item_ref(rs), item_ref(msg), user("b")]}),
        &[],
    )
    .await;
}

#[tokio::test]
async fn e4_duplicates_and_chain() {
    let fake = start().await;
    let first = fake.turn(image_turn(), &[]).await;
    let [rs, ig, msg] = &ids(&first)[..] else {
        panic!()
    };
    let dup = json!({"input": [item_ref(rs), item_ref(ig), item_ref(msg), item_ref(msg)]});
    let text = format!(
        "Duplicate item found with id {msg}. Remove duplicate items from your input and try again."
    );
    assert_input_error(fake.post(dup, &[]).await, 400, &text);
    let chained =
        json!({"previous_response_id": first["id"], "input": [item_ref(rs), item_ref(ig)]});
    let text = format!(
        "Duplicate item found with id {rs}. Remove duplicate items from your input and try again."
    );
    assert_input_error(fake.post(chained, &[]).await, 400, &text);
    let fine = fake
        .turn(
            json!({"previous_response_id": first["id"], "input": [user("again")]}),
            &[],
        )
        .await;
    assert_eq!(fine["previous_response_id"], first["id"]);
}

#[tokio::test]
async fn e5_e6_call_pairing() {
    let fake = start().await;
    let call =
        json!({"type": "function_call", "call_id": "call_x1", "name": "f", "arguments": "{}"});
    assert_input_error(
        fake.post(json!({"input": [user("a"), call]}), &[]).await,
        400,
        "No tool output found for function call call_x1.",
    );
    let custom =
        json!({"type": "custom_tool_call", "call_id": "call_c1", "name": "t", "input": "x"});
    assert_input_error(
        fake.post(json!({"input": [custom]}), &[]).await,
        400,
        "No tool output found for custom tool call call_c1.",
    );
    let orphan = json!({"type": "function_call_output", "call_id": "call_zz", "output": "1"});
    assert_input_error(
        fake.post(json!({"input": [user("a"), orphan]}), &[]).await,
        400,
        "No tool call found for function call output with call_id call_zz.",
    );
    let orphan = json!({"type": "custom_tool_call_output", "call_id": "call_cc", "output": "1"});
    assert_input_error(
        fake.post(json!({"input": [orphan]}), &[]).await,
        400,
        "No tool call found for custom tool call output with call_id call_cc.",
    );
    let paired = json!({"input": [user("a"), call, {"type": "function_call_output", "call_id": "call_x1", "output": "1"}]});
    fake.turn(paired, &[]).await;

    // An output for a call of the previous_response_id chain is fine.
    let tools = json!([{"type": "function", "name": "get_time"}]);
    let first = fake
        .turn(json!({"input": "time?", "tools": tools}), &[])
        .await;
    assert_eq!(first["output"][1]["name"], "get_time");
    let call_id = first["output"][1]["call_id"].as_str().unwrap();
    let next = json!({"previous_response_id": first["id"], "tools": tools, "input": [{"type": "function_call_output", "call_id": call_id, "output": "noon"}]});
    let second = fake.turn(next, &[]).await;
    assert_eq!(second["output"].as_array().unwrap().len(), 2);
    assert_eq!(second["output"][1]["type"], "message");
}

#[tokio::test]
async fn e3_lookups() {
    let fake = start().await;
    assert_input_error(
        fake.post(json!({"input": [item_ref("rs_ffff")]}), &[])
            .await,
        404,
        "Item with id 'rs_ffff' not found.",
    );
    let bare = json!({"input": [{"type": "image_generation_call", "id": "ig_00"}]});
    assert_input_error(
        fake.post(bare, &[]).await,
        404,
        "Item with id 'ig_00' not found.",
    );

    let unstored = fake.turn(json!({"input": "hi", "store": false}), &[]).await;
    assert!(unstored["output"][0]["encrypted_content"].is_string());
    let rs = unstored["output"][0]["id"].as_str().unwrap();
    let e3 = format!("Item with id '{rs}' not found. Items are not persisted when `store` is set to false. Try again with `store` set to true, or remove this item from your input.");
    assert_input_error(
        fake.post(json!({"input": [item_ref(rs)]}), &[]).await,
        404,
        &e3,
    );

    // A stored item referenced from a store:false request.
    let stored = fake.turn(json!({"input": "hi"}), &[]).await;
    let [srs, smsg] = &ids(&stored)[..] else {
        panic!()
    };
    let e3 = format!("Item with id '{srs}' not found. Items are not persisted when `store` is set to false. Try again with `store` set to true, or remove this item from your input.");
    let body = json!({"store": false, "input": [{"type": "reasoning", "id": srs, "summary": []}, item_ref(smsg)]});
    assert_input_error(fake.post(body, &[]).await, 404, &e3);

    // The stateless path: full reasoning with encrypted content and a full message.
    let out = unstored["output"].as_array().unwrap();
    let replay = json!({"store": false, "input": [out[0], out[1], user("more")]});
    fake.turn(replay, &[]).await;

    // Another tenant cannot see the items.
    let other = fake
        .post_as(
            OTHER_KEY,
            json!({"input": [item_ref(srs), item_ref(smsg)]}),
            &[],
        )
        .await;
    assert_input_error(other, 404, &format!("Item with id '{srs}' not found."));
}

#[tokio::test]
async fn e7_prefixes() {
    let fake = start().await;
    let body = json!({"input": [user("a"), {"type": "function_call", "id": "ws_1", "call_id": "call_1", "name": "f", "arguments": "{}"}]});
    assert_error(
        fake.post(body, &[]).await,
        400,
        "Invalid 'input[1].id': 'ws_1'. Expected an ID that begins with 'fc'.",
        json!("input[1].id"),
        json!("invalid_value"),
    );
    // Nested arrays are flattened; the index is the flattened one.
    let body = json!({"input": [[user("a"), user("b")], {"type": "web_search_call", "id": "fc_1", "status": "completed"}]});
    assert_error(
        fake.post(body, &[]).await,
        400,
        "Invalid 'input[2].id': 'fc_1'. Expected an ID that begins with 'ws'.",
        json!("input[2].id"),
        json!("invalid_value"),
    );
}

#[tokio::test]
async fn e8_encrypted_content() {
    let fake = start().await;
    let first = fake
        .turn(
            json!({"input": "hi", "include": ["reasoning.encrypted_content"]}),
            &[],
        )
        .await;
    let rs = first["output"][0].clone();
    let id = rs["id"].as_str().unwrap();
    let body = json!({"store": false, "input": [rs, first["output"][1]]});
    let text = format!("The encrypted content for item {id} could not be verified. Reason: Encrypted content organization_id did not match the target organization.");
    assert_error(
        fake.post_as(OTHER_KEY, body.clone(), &[]).await,
        400,
        &text,
        Value::Null,
        json!("invalid_encrypted_content"),
    );
    // The same tenant with a different organization is another tenant too.
    let org = fake
        .post(body.clone(), &[("openai-organization", "org-2")])
        .await;
    assert_eq!(org.0, 400);
    fake.turn(body, &[]).await;

    let mut broken = first["output"][0].clone();
    broken["encrypted_content"] = json!("gAAAAB-garbage");
    let text = format!("The encrypted content for item {id} could not be verified. Reason: Encrypted content could not be decrypted or parsed.");
    let body = json!({"store": false, "input": [broken, first["output"][1]]});
    assert_error(
        fake.post(body, &[]).await,
        400,
        &text,
        Value::Null,
        json!("invalid_encrypted_content"),
    );
}

#[tokio::test]
async fn e9_previous_response() {
    let fake = start().await;
    let body = json!({"previous_response_id": "resp_nope", "input": "x"});
    assert_error(
        fake.post(body, &[]).await,
        400,
        "Previous response with id 'resp_nope' not found.",
        json!("previous_response_id"),
        json!("previous_response_not_found"),
    );
    let unstored = fake.turn(json!({"input": "x", "store": false}), &[]).await;
    let id = unstored["id"].as_str().unwrap();
    let (status, body) = fake
        .post(json!({"previous_response_id": id, "input": "y"}), &[])
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        format!("Previous response with id '{id}' not found.")
    );
}

#[tokio::test]
async fn vercel_function_call_replay_by_call_id() {
    let fake = start().await;
    let tools = json!([{"type": "function", "name": "get_weather"}]);
    let first = fake
        .turn(json!({"input": "weather?", "tools": tools}), &[])
        .await;
    let [rs, _fc] = &ids(&first)[..] else {
        panic!()
    };
    let call_id = first["output"][1]["call_id"].as_str().unwrap();
    let body = json!({"tools": tools, "input": [
        user("weather?"),
        item_ref(rs),
        {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": call_id, "output": "sunny"},
    ]});
    fake.turn(body, &[]).await;

    // A retried call whose call_id the server never produced leaves the reasoning unpaired.
    let body = json!({"tools": tools, "input": [
        item_ref(rs),
        {"type": "function_call", "call_id": "call_retry", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_retry", "output": "sunny"},
    ]});
    let text = format!(
        "Item '{rs}' of type 'reasoning' was provided without its required following item."
    );
    assert_input_error(fake.post(body, &[]).await, 400, &text);
}

#[tokio::test]
async fn credentials_and_malformed_bodies() {
    let fake = start().await;
    let resp = fake
        .http
        .post(fake.url("/v1/responses"))
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"message":"You didn't provide an API key.","type":"invalid_request_error","param":null,"code":null}}"#
    );
    let resp = fake
        .http
        .post(fake.url("/openai/deployments/d1/responses?api-version=v1"))
        .header("api-key", "k")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("We could not parse the JSON body of your request."));
    let (status, body) = fake.post(json!({"input": 5}), &[]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "input");
    assert_eq!(body["error"]["code"], "invalid_type");
    let (status, _) = fake
        .post(json!({"input": "x"}), &[("x-fake-shape", "rs,zz")])
        .await;
    assert_eq!(status, 400);
    // Azure-style paths are the Responses endpoint too, with the api-key tenant.
    let resp = fake
        .http
        .post(fake.url("/openai/v1/responses"))
        .header("api-key", "k")
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(fake.handle.responses_posts(), 5);
}

#[tokio::test]
async fn retrieve_and_delete() {
    let fake = start().await;
    let first = fake
        .turn(json!({"input": "x", "model": "gpt-5"}), &[])
        .await;
    let id = first["id"].as_str().unwrap();
    let url = fake.url(&format!("/v1/responses/{id}"));
    let got: Value = fake
        .http
        .get(&url)
        .header("authorization", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, first);
    let other = fake
        .http
        .get(&url)
        .header("authorization", OTHER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let items: Value = fake
        .http
        .get(format!("{url}/input_items"))
        .header("authorization", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(items["object"], "list");
    let del: Value = fake
        .http
        .delete(&url)
        .header("authorization", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        del,
        json!({"id": id, "object": "response", "deleted": true})
    );
    assert_eq!(
        fake.http
            .get(&url)
            .header("authorization", KEY)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let rs = first["output"][0]["id"].as_str().unwrap();
    assert_input_error(
        fake.post(json!({"input": [item_ref(rs)]}), &[]).await,
        404,
        &format!("Item with id '{rs}' not found."),
    );
}

#[tokio::test]
async fn back_to_back_reasoning_and_leading_items() {
    let fake = start().await;
    let tools = json!([{"type": "function", "name": "f"}]);
    let first = fake
        .turn(
            json!({"input": "x", "tools": tools}),
            &[("x-fake-shape", "rs,rs,fc")],
        )
        .await;
    let out = first["output"].as_array().unwrap().clone();
    let [rs1, rs2, fc] = &ids(&first)[..] else {
        panic!()
    };
    let call_id = out[2]["call_id"].as_str().unwrap();
    let fco = json!({"type": "function_call_output", "call_id": call_id, "output": "1"});
    let text = format!(
        "Item '{rs1}' of type 'reasoning' was provided without its required following item."
    );
    // E12: the verbatim replay is refused on rs1, which has no follower of its own.
    assert_input_error(
        fake.post(
            json!({"input": [item_ref(rs1), item_ref(rs2), out[2], fco]}),
            &[],
        )
        .await,
        400,
        &text,
    );
    fake.turn(json!({"input": [item_ref(rs2), out[2], fco]}), &[])
        .await;
    assert_input_error(
        fake.post(json!({"input": [item_ref(rs1), user("x")]}), &[])
            .await,
        400,
        &text,
    );
    // E1 is checked before E2: the call names the reasoning it really needs.
    let e1 = format!("Item '{fc}' of type 'function_call' was provided without its required 'reasoning' item: '{rs2}'.");
    assert_input_error(
        fake.post(json!({"input": [item_ref(rs1), out[2], fco]}), &[])
            .await,
        400,
        &e1,
    );
    let text = format!("Item '{fc}' of type 'function_call' was provided without its required 'reasoning' item: '{rs2}'.");
    assert_input_error(
        fake.post(
            json!({"input": [item_ref(rs1), item_ref(rs2), user("x"), out[2], fco]}),
            &[],
        )
        .await,
        400,
        &text,
    );

    let mcp = fake
        .turn(
            json!({"input": "x"}),
            &[("x-fake-shape", "mcpl,rs,mcp,rs,msg")],
        )
        .await;
    let [mcpl, rs_a, mcp_call, _, _] = &ids(&mcp)[..] else {
        panic!()
    };
    fake.turn(json!({"input": [item_ref(mcpl), user("x")]}), &[])
        .await;
    fake.turn(
        json!({"input": [item_ref(mcpl), item_ref(rs_a), item_ref(mcp_call)]}),
        &[],
    )
    .await;
}

fn e2(rs: &str) -> String {
    format!("Item '{rs}' of type 'reasoning' was provided without its required following item.")
}

const E14: &str = "Encrypted content is not supported with this model.";
const E15: &str = "Reasoning input items can only be provided to a reasoning or computer use model. Remove reasoning items from your input and try again.";

fn assert_e14(got: (u16, Value)) {
    assert_error(got, 400, E14, json!("include"), Value::Null);
}

/// The types of a response's output items.
fn types(resp: &Value) -> Vec<String> {
    resp["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn back_to_back_reasoning_is_refused_on_the_first() {
    let fake = start().await;
    let tools = json!([{"type": "function", "name": "f"}]);
    let first = fake
        .turn(
            json!({"model": "o4-mini", "input": "x", "tools": tools}),
            &[("x-fake-shape", "rs,rs,fc")],
        )
        .await;
    let out = first["output"].as_array().unwrap().clone();
    let [rs1, rs2, _fc] = &ids(&first)[..] else {
        panic!()
    };
    let fco = json!({"type": "function_call_output", "call_id": out[2]["call_id"], "output": "1"});
    let typed = json!({"type": "reasoning", "id": rs1, "summary": []});
    // Whatever follows rs1, and in whatever form it is replayed, it has no follower of its own.
    for input in [
        json!([user("x"), item_ref(rs1), item_ref(rs2), out[2], fco]),
        json!([user("x"), typed, item_ref(rs2), out[2], fco]),
        json!([user("x"), {"id": rs1}, {"id": rs2}, out[2], fco]),
        json!([user("x"), item_ref(rs1), user("y")]),
        json!([user("x"), item_ref(rs1)]),
    ] {
        let body = json!({"model": "o4-mini", "tools": tools, "input": input});
        assert_input_error(fake.post(body, &[]).await, 400, &e2(rs1));
    }
    // Without rs1 the turn replays.
    let body = json!({"model": "o4-mini", "tools": tools, "input": [user("x"), item_ref(rs2), out[2], fco]});
    fake.turn(body, &[]).await;

    // store:false: full items with encrypted content; rs1 is still followed by a reasoning item.
    let unstored = fake
        .turn(
            json!({"model": "o4-mini", "input": "x", "tools": tools, "store": false}),
            &[("x-fake-shape", "rs,rs,fc")],
        )
        .await;
    let out = unstored["output"].as_array().unwrap().clone();
    let fco = json!({"type": "function_call_output", "call_id": out[2]["call_id"], "output": "1"});
    let rs1 = out[0]["id"].as_str().unwrap();
    let body = json!({"model": "o4-mini", "store": false, "tools": tools, "input": [user("x"), out[0], out[1], out[2], fco]});
    assert_input_error(fake.post(body, &[]).await, 400, &e2(rs1));
    let body = json!({"model": "o4-mini", "store": false, "tools": tools, "input": [user("x"), out[1], out[2], fco]});
    fake.turn(body, &[]).await;
}

#[tokio::test]
async fn a_reasoning_only_turn_cannot_be_replayed() {
    let fake = start().await;
    let only = fake
        .turn(
            json!({"model": "gpt-5", "input": "x"}),
            &[("x-fake-shape", "rs")],
        )
        .await;
    let [rs] = &ids(&only)[..] else { panic!() };
    for input in [
        json!([user("x"), item_ref(rs), user("again")]),
        json!([user("x"), {"type": "reasoning", "id": rs, "summary": []}, user("again")]),
        json!([user("x"), item_ref(rs)]),
    ] {
        let body = json!({"model": "gpt-5", "input": input});
        assert_input_error(fake.post(body, &[]).await, 400, &e2(rs));
    }

    // A reasoning item last in its turn has nothing after it either.
    let trailing = fake
        .turn(
            json!({"model": "gpt-5", "input": "x"}),
            &[("x-fake-shape", "rs,msg,rs")],
        )
        .await;
    let [rs1, msg, rs2] = &ids(&trailing)[..] else {
        panic!()
    };
    for input in [
        json!([item_ref(rs1), item_ref(msg), item_ref(rs2), user("again")]),
        json!([item_ref(rs1), item_ref(msg), item_ref(rs2)]),
    ] {
        let body = json!({"model": "gpt-5", "input": input});
        assert_input_error(fake.post(body, &[]).await, 400, &e2(rs2));
    }
    let body = json!({"model": "gpt-5", "input": [item_ref(rs1), item_ref(msg), user("again")]});
    fake.turn(body, &[]).await;
}

#[tokio::test]
async fn encrypted_content_is_refused_for_a_model_that_does_not_reason() {
    let fake = start_with(FakeOptions {
        non_reasoning_models: vec!["my-gpt41-deployment".into()],
        ..FakeOptions::default()
    })
    .await;
    let include = json!(["reasoning.encrypted_content"]);
    for model in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-3.5-turbo",
        "chatgpt-4o-latest",
        "gpt-5-chat-latest",
        "my-gpt41-deployment",
    ] {
        for store in [false, true] {
            let body = json!({"model": model, "store": store, "include": include, "input": "hi"});
            assert_e14(fake.post(body, &[]).await);
        }
        // The same request without the include is fine.
        let body = json!({"model": model, "store": false, "input": "hi"});
        fake.turn(body, &[]).await;
    }
    let body = json!({"model": "gpt-5", "store": false, "include": include, "input": "hi"});
    fake.turn(body, &[]).await;
    // Names are exact: another deployment reasons.
    let body = json!({"model": "my-gpt5-deployment", "include": include, "input": "hi"});
    fake.turn(body, &[]).await;
}

#[tokio::test]
async fn reasoning_items_are_refused_for_a_model_that_does_not_reason() {
    let fake = start().await;
    let tools = json!([{"type": "function", "name": "f"}]);
    let first = fake
        .turn(
            json!({"model": "gpt-5", "input": "hi", "include": ["reasoning.encrypted_content"]}),
            &[],
        )
        .await;
    let out = first["output"].as_array().unwrap().clone();
    let [rs, msg] = &ids(&first)[..] else {
        panic!()
    };
    let mut idless = out[0].clone();
    idless.as_object_mut().unwrap().remove("id");
    for input in [
        json!([user("hi"), item_ref(rs), item_ref(msg), user("more")]),
        json!([user("hi"), {"id": rs}, item_ref(msg), user("more")]),
        json!([user("hi"), out[0], out[1], user("more")]),
        json!([user("hi"), idless, out[1], user("more")]),
        json!([user("hi"), {"type": "reasoning", "id": rs, "summary": []}, user("more")]),
    ] {
        let body = json!({"model": "gpt-4.1", "input": input});
        assert_input_error(fake.post(body, &[]).await, 400, E15);
    }

    // The model-switch fix (reasoning stripped, ids kept) is accepted: no pairing without reasoning.
    let body = json!({"model": "gpt-4.1", "input": [user("hi"), item_ref(msg), user("more")]});
    fake.turn(body, &[]).await;
    let body = json!({"model": "gpt-4.1", "input": [user("hi"), out[1], user("more")]});
    fake.turn(body, &[]).await;
    let calls = fake
        .turn(
            json!({"model": "gpt-5", "input": "go", "tools": tools}),
            &[],
        )
        .await;
    let fc = calls["output"][1].clone();
    let fco = json!({"type": "function_call_output", "call_id": fc["call_id"], "output": "1"});
    let body = json!({"model": "gpt-4o", "tools": tools, "input": [user("go"), fc, fco]});
    fake.turn(body, &[]).await;
    // The other checks still apply.
    let body = json!({"model": "gpt-4o", "tools": tools, "input": [user("go"), fc]});
    let text = format!(
        "No tool output found for function call {}.",
        fc["call_id"].as_str().unwrap()
    );
    assert_input_error(fake.post(body, &[]).await, 400, &text);
}

#[tokio::test]
async fn a_full_reasoning_item_needs_its_summary() {
    let fake = start().await;
    let first = fake
        .turn(
            json!({"model": "gpt-5", "input": "hi", "include": ["reasoning.encrypted_content"]}),
            &[],
        )
        .await;
    let out = first["output"].as_array().unwrap().clone();
    let rs = out[0]["id"].as_str().unwrap();
    let mut no_summary = out[0].clone();
    no_summary.as_object_mut().unwrap().remove("summary");
    for (input, n) in [
        (json!([user("hi"), no_summary, out[1], user("more")]), 1),
        (
            json!([[user("hi"), user("again")], {"type": "reasoning", "id": rs}, out[1]]),
            2,
        ),
        (
            json!([{"type": "reasoning", "encrypted_content": out[0]["encrypted_content"]}, out[1]]),
            0,
        ),
    ] {
        let param = format!("input[{n}].summary");
        let body = json!({"model": "gpt-5", "input": input});
        assert_error(
            fake.post(body, &[]).await,
            400,
            &format!("Missing required parameter: '{param}'."),
            json!(param),
            json!("missing_required_parameter"),
        );
    }
    // A reference needs no summary.
    let body = json!({"model": "gpt-5", "input": [user("hi"), item_ref(rs), out[1], user("more")]});
    fake.turn(body, &[]).await;
}

#[tokio::test]
async fn azure_deployment_answers_e1_in_its_own_wording() {
    let fake = start_with(FakeOptions {
        azure_wording_models: vec!["my-gpt5-deployment".into()],
        ..FakeOptions::default()
    })
    .await;
    let tools = json!([{"type": "image_generation"}]);
    let first = fake
        .turn(
            json!({"model": "my-gpt5-deployment", "input": "Draw a cat", "tools": tools}),
            &[],
        )
        .await;
    let [rs, ig, msg] = &ids(&first)[..] else {
        panic!()
    };
    let input = json!([user("Draw a cat"), {"type": "image_generation_call", "id": ig}]);
    let body = json!({"model": "my-gpt5-deployment", "tools": tools, "input": input});
    let text = format!("Item '{ig}' of type 'image_generation_call' was provided without its required preceding item of type 'reasoning'");
    assert_input_error(fake.post(body, &[]).await, 400, &text);
    let body = json!({"model": "my-gpt5-deployment", "input": [user("hi"), item_ref(msg)]});
    let text = format!("Item '{msg}' of type 'message' was provided without its required preceding item of type 'reasoning'");
    assert_input_error(fake.post(body, &[]).await, 400, &text);
    // Another model gets the usual wording for the same input.
    let body = json!({"model": "gpt-5", "tools": tools, "input": input});
    let text = format!("Item '{ig}' of type 'image_generation_call' was provided without its required 'reasoning' item: '{rs}'.");
    assert_input_error(fake.post(body, &[]).await, 400, &text);
    // E2 keeps its wording.
    let body = json!({"model": "my-gpt5-deployment", "input": [user("hi"), item_ref(rs)]});
    assert_input_error(fake.post(body, &[]).await, 400, &e2(rs));
}

#[tokio::test]
async fn store_false_full_reasoning_is_accepted_before_any_non_reasoning_item() {
    let fake = start().await;
    let tools = json!([{"type": "function", "name": "get_weather"}]);
    let include = json!(["reasoning.encrypted_content"]);
    let first = fake
        .turn(
            json!({"model": "gpt-5", "store": false, "include": include, "input": "weather?", "tools": tools}),
            &[],
        )
        .await;
    let out = first["output"].as_array().unwrap().clone();
    let [rs, fc] = &ids(&first)[..] else { panic!() };
    // The recorded 200 (tidyverse/ellmer): the call comes back without id, its call_id being the
    // server's item id, so it is not the reasoning's recorded follower.
    let call =
        json!({"type": "function_call", "call_id": fc, "name": "get_weather", "arguments": "{}"});
    let output = json!({"type": "function_call_output", "call_id": fc, "output": "sunny"});
    let body = json!({"model": "gpt-5", "store": false, "include": include, "tools": tools,
        "input": [user("weather?"), out[0], call, output]});
    fake.turn(body, &[]).await;
    let body = json!({"model": "gpt-5", "store": false, "input": [user("weather?"), out[0], user("again")]});
    fake.turn(body, &[]).await;
    // Still refused: nothing after it, and the same request with store:true.
    let body = json!({"model": "gpt-5", "store": false, "input": [user("weather?"), out[0]]});
    assert_input_error(fake.post(body, &[]).await, 400, &e2(rs));
    let stored = fake
        .turn(
            json!({"model": "gpt-5", "include": include, "input": "weather?", "tools": tools}),
            &[],
        )
        .await;
    let srs = stored["output"][0]["id"].as_str().unwrap();
    let body = json!({"model": "gpt-5", "tools": tools,
        "input": [user("weather?"), stored["output"][0], call, output]});
    assert_input_error(fake.post(body, &[]).await, 400, &e2(srs));
    let body = json!({"model": "gpt-5", "store": false, "input": [user("weather?"), stored["output"][0], user("again")]});
    fake.turn(body, &[]).await;
}

#[tokio::test]
async fn non_reasoning_models_return_no_reasoning_items() {
    let fake = start_with(FakeOptions {
        non_reasoning_models: vec!["my-gpt41-deployment".into()],
        ..FakeOptions::default()
    })
    .await;
    let image = json!([{"type": "image_generation"}]);
    let search = json!([{"type": "web_search"}]);
    let function = json!([{"type": "function", "name": "f"}]);
    for (model, tools, shape, expected) in [
        ("gpt-4o", json!([]), None, vec!["message"]),
        (
            "gpt-4.1",
            image.clone(),
            None,
            vec!["image_generation_call", "message"],
        ),
        (
            "gpt-5-chat-latest",
            search,
            None,
            vec!["web_search_call", "message"],
        ),
        ("chatgpt-4o-latest", function, None, vec!["function_call"]),
        (
            "my-gpt41-deployment",
            json!([]),
            Some("rs"),
            vec!["message"],
        ),
        (
            "gpt-4o-mini",
            json!([]),
            Some("rs,fc,rs,msg"),
            vec!["function_call", "message"],
        ),
        (
            "gpt-5",
            image,
            None,
            vec!["reasoning", "image_generation_call", "message"],
        ),
    ] {
        let headers: Vec<(&str, &str)> = shape.iter().map(|s| ("x-fake-shape", *s)).collect();
        let body = json!({"model": model, "store": false, "tools": tools, "input": "go"});
        let resp = fake.turn(body, &headers).await;
        assert_eq!(types(&resp), expected, "{model}");
    }
}

#[tokio::test]
async fn checks_run_in_the_documented_order() {
    let fake = start().await;
    let include = json!(["reasoning.encrypted_content"]);
    // E16 before E14.
    let body = json!({"model": "gpt-4o", "include": include, "input": [{"type": "reasoning", "id": "rs_1"}]});
    assert_error(
        fake.post(body, &[]).await,
        400,
        "Missing required parameter: 'input[0].summary'.",
        json!("input[0].summary"),
        json!("missing_required_parameter"),
    );
    // E14 before E9.
    let body = json!({"model": "gpt-4o", "include": include, "previous_response_id": "resp_nope", "input": "x"});
    assert_e14(fake.post(body, &[]).await);
    // E4 before E15, E15 before E3b.
    let rs = json!({"type": "reasoning", "id": "rs_1", "summary": []});
    let body = json!({"model": "gpt-4o", "input": [rs, rs]});
    let text =
        "Duplicate item found with id rs_1. Remove duplicate items from your input and try again.";
    assert_input_error(fake.post(body, &[]).await, 400, text);
    let body = json!({"model": "gpt-4o", "input": [rs, item_ref("msg_1")]});
    assert_input_error(fake.post(body, &[]).await, 400, E15);
    let body = json!({"model": "gpt-5", "input": [rs, item_ref("msg_1")]});
    assert_input_error(
        fake.post(body, &[]).await,
        404,
        "Item with id 'rs_1' not found.",
    );
}

// The shapes of 2026 (shared/reference/wild-failures-2026.md).

#[tokio::test]
async fn n3_reasoning_input_takes_no_content() {
    let fake = start().await;
    let first = fake
        .turn(
            json!({"model": "gpt-5", "store": false, "input": "hi"}),
            &[],
        )
        .await;
    let out = first["output"].as_array().unwrap().clone();
    let text = |t: &str| json!({"type": "reasoning_text", "text": t});
    for (content, len) in [
        (json!([text("I think")]), 1),
        (json!([text("a"), text("b")]), 2),
    ] {
        let mut rs = out[0].clone();
        rs["content"] = content;
        let body = json!({"model": "gpt-5", "store": false, "input": [user("hi"), rs, out[1], user("more")]});
        assert_error(
            fake.post(body, &[]).await,
            400,
            &format!("Invalid 'input[1].content': array too long. Expected an array with maximum length 0, but got an array with length {len} instead."),
            json!("input[1].content"),
            json!("array_above_max_length"),
        );
    }
    // The fix (content emptied) and a null content are accepted.
    for content in [json!([]), Value::Null] {
        let mut rs = out[0].clone();
        rs["content"] = content;
        let body = json!({"model": "gpt-5", "store": false, "input": [user("hi"), rs, out[1], user("more")]});
        fake.turn(body, &[]).await;
    }
}

#[tokio::test]
async fn n4_a_null_status_is_an_unknown_parameter() {
    let fake = start().await;
    let first = fake
        .turn(json!({"model": "gpt-5", "input": "hi"}), &[])
        .await;
    let out = first["output"].as_array().unwrap().clone();
    // What `model_dump()` makes of the output items (openai/openai-python#3008).
    let mut rs = out[0].clone();
    rs["content"] = Value::Null;
    rs["encrypted_content"] = Value::Null;
    rs["status"] = Value::Null;
    let mut msg = out[1].clone();
    let unknown = |n: usize| {
        let param = format!("input[{n}].status");
        (format!("Unknown parameter: '{param}'."), json!(param))
    };
    let body = json!({"model": "gpt-5", "input": [user("hi"), rs, msg, user("more")]});
    let (text, param) = unknown(1);
    assert_error(
        fake.post(body, &[]).await,
        400,
        &text,
        param,
        json!("unknown_parameter"),
    );
    // On any item, in input order.
    rs.as_object_mut().unwrap().remove("status");
    msg["status"] = Value::Null;
    let body = json!({"model": "gpt-5", "input": [user("hi"), rs, msg, user("more")]});
    let (text, param) = unknown(2);
    assert_error(
        fake.post(body, &[]).await,
        400,
        &text,
        param,
        json!("unknown_parameter"),
    );
    // The fix (null `status` dropped) is accepted, `content` and `encrypted_content` null too,
    // and so is a non-null `status`.
    msg["status"] = json!("completed");
    rs["status"] = json!("completed");
    let body = json!({"model": "gpt-5", "input": [user("hi"), rs, msg, user("more")]});
    fake.turn(body, &[]).await;
    rs.as_object_mut().unwrap().remove("status");
    let body = json!({"model": "gpt-5", "input": [user("hi"), rs, msg, user("more")]});
    fake.turn(body, &[]).await;
}

fn too_long(param: &str, len: usize) -> String {
    format!("Invalid '{param}': string too long. Expected a string with maximum length 64, but got a string with length {len} instead.")
}

fn assert_too_long(got: (u16, Value), param: &str, len: usize) {
    assert_error(
        got,
        400,
        &too_long(param, len),
        json!(param),
        json!("string_above_max_length"),
    );
}

#[tokio::test]
async fn n5_ids_longer_than_64_characters() {
    let fake = start().await;
    let long = |prefix: &str, len: usize| format!("{prefix}{}", "a".repeat(len - prefix.len()));
    let pair = |call_id: &str| {
        [
            json!({"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"}),
            json!({"type": "function_call_output", "call_id": call_id, "output": "1"}),
        ]
    };
    // A call_id from a harness that namespaces it (69 characters).
    let call_id = long("codex_mcp__server__tool_exec-", 69);
    let [call, output] = pair(&call_id);
    let body = json!({"input": [user("a"), call, output]});
    assert_too_long(fake.post(body, &[]).await, "input[1].call_id", 69);
    // Only the output carries it.
    let [_, output] = pair(&call_id);
    let body = json!({"input": [user("a"), output]});
    assert_too_long(fake.post(body, &[]).await, "input[1].call_id", 69);
    // An item id (a Copilot reasoning handle), before any lookup or pairing check.
    let rs = json!({"type": "reasoning", "id": long("rs_", 1760), "summary": []});
    let body = json!({"input": [user("a"), user("b"), rs, user("c")]});
    assert_too_long(fake.post(body, &[]).await, "input[2].id", 1760);
    let msg = json!({"type": "message", "id": long("msg_", 74), "role": "user", "content": "x"});
    let body = json!({"input": [msg]});
    assert_too_long(fake.post(body, &[]).await, "input[0].id", 74);
    // In input order: the first over-long string wins; id before call_id on one item.
    let [call, output] = pair(&call_id);
    let mut with_id = call.clone();
    with_id["id"] = json!(long("fc_", 65));
    let body = json!({"input": [user("a"), with_id, output]});
    assert_too_long(fake.post(body, &[]).await, "input[1].id", 65);
    let body = json!({"input": [user("a"), user("b"), call, output, msg]});
    assert_too_long(fake.post(body, &[]).await, "input[2].call_id", 69);
    // previous_response_id (a double-base64 gateway id), before E9.
    let body = json!({"previous_response_id": long("resp_", 205), "input": "x"});
    assert_too_long(fake.post(body, &[]).await, "previous_response_id", 205);

    // The fix: 64 characters are fine.
    let [call, output] = pair(&long("call_", 64));
    fake.turn(json!({"input": [user("a"), call, output]}), &[])
        .await;
    let msg = json!({"type": "message", "id": long("msg_", 64), "role": "user", "content": "x"});
    fake.turn(json!({"input": [msg]}), &[]).await;
    let body = json!({"previous_response_id": long("resp_", 64), "input": "x"});
    assert_error(
        fake.post(body, &[]).await,
        400,
        &format!(
            "Previous response with id '{}' not found.",
            long("resp_", 64)
        ),
        json!("previous_response_id"),
        json!("previous_response_not_found"),
    );
}

#[tokio::test]
async fn n12_web_search_action_of_an_unknown_type() {
    let fake = start().await;
    let tools = json!([{"type": "web_search"}]);
    let first = fake
        .turn(
            json!({"model": "gpt-5", "input": "search", "tools": tools}),
            &[],
        )
        .await;
    assert_eq!(
        types(&first),
        ["reasoning", "web_search_call", "reasoning", "message"]
    );
    let out = first["output"].as_array().unwrap().clone();
    for action in ["other", "find"] {
        let mut ws = out[1].clone();
        ws["action"] = json!({"type": action});
        let body = json!({"model": "gpt-5", "tools": tools, "input": [user("search"), out[0], ws, out[2], out[3], user("more")]});
        assert_error(
            fake.post(body, &[]).await,
            400,
            &format!("Invalid value: '{action}'. Supported values are: 'search', 'open_page', and 'find_in_page'."),
            json!("input[2].action.type"),
            json!("invalid_value"),
        );
    }
    // The recorded item, and the other known actions, are accepted.
    let body = json!({"model": "gpt-5", "tools": tools, "input": [user("search"), out[0], out[1], out[2], out[3], user("more")]});
    fake.turn(body, &[]).await;
    for action in [
        json!({"type": "open_page", "url": null}),
        json!({"type": "find_in_page", "url": "https://example.com", "pattern": "x"}),
    ] {
        let mut ws = out[1].clone();
        ws["action"] = action;
        let body = json!({"model": "gpt-5", "tools": tools, "input": [user("search"), out[0], ws, out[2], out[3], user("more")]});
        fake.turn(body, &[]).await;
    }
}

#[tokio::test]
async fn n2_every_call_type_pairs_with_its_own_words() {
    let fake = start().await;
    // (tool offered, call type, output type, call in words, output in words)
    for (tool, call_type, output_type, call_words, output_words) in [
        (
            json!({"type": "function", "name": "f"}),
            "function_call",
            "function_call_output",
            "function call",
            "function call output",
        ),
        (
            json!({"type": "custom", "name": "apply_patch"}),
            "custom_tool_call",
            "custom_tool_call_output",
            "custom tool call",
            "custom tool call output",
        ),
        (
            json!({"type": "local_shell"}),
            "local_shell_call",
            "local_shell_call_output",
            "local shell call",
            "local shell call output",
        ),
        (
            json!({"type": "shell"}),
            "shell_call",
            "shell_call_output",
            "shell call",
            "shell call output",
        ),
        (
            json!({"type": "apply_patch"}),
            "apply_patch_call",
            "apply_patch_call_output",
            "apply patch call",
            "apply patch call output",
        ),
        (
            json!({"type": "tool_search", "execution": "client"}),
            "tool_search_call",
            "tool_search_output",
            "tool search call",
            "tool search output",
        ),
    ] {
        let tools = json!([tool]);
        let first = fake
            .turn(
                json!({"model": "gpt-5", "input": "go", "tools": tools}),
                &[],
            )
            .await;
        assert_eq!(types(&first), ["reasoning", call_type]);
        let out = first["output"].as_array().unwrap().clone();
        let call_id = out[1]["call_id"].as_str().unwrap();
        let output = json!({"type": output_type, "call_id": call_id, "output": "ok"});
        let body = json!({"model": "gpt-5", "tools": tools, "input": [user("go"), out[0], out[1]]});
        let text = format!("No tool output found for {call_words} {call_id}.");
        assert_input_error(fake.post(body, &[]).await, 400, &text);
        let body = json!({"model": "gpt-5", "tools": tools, "input": [user("go"), output]});
        let text = format!("No tool call found for {output_words} with call_id {call_id}.");
        assert_input_error(fake.post(body, &[]).await, 400, &text);
        // Answered: accepted, and the turn answers with a message.
        let body = json!({"model": "gpt-5", "tools": tools, "input": [user("go"), out[0], out[1], output]});
        let second = fake.turn(body, &[]).await;
        assert_eq!(types(&second), ["reasoning", "message"], "{call_type}");
    }

    // The Agents SDK's local-shell output carrying the call id in `id` leaves the call unanswered
    // (openai/openai-agents-python PR#1855).
    let tools = json!([{"type": "local_shell"}]);
    let first = fake
        .turn(
            json!({"model": "gpt-5", "input": "ls", "tools": tools}),
            &[],
        )
        .await;
    let out = first["output"].as_array().unwrap().clone();
    let call_id = out[1]["call_id"].as_str().unwrap();
    let by_id = json!({"type": "local_shell_call_output", "id": call_id, "output": "ok"});
    let body =
        json!({"model": "gpt-5", "tools": tools, "input": [user("ls"), out[0], out[1], by_id]});
    let text = format!("No tool output found for local shell call {call_id}.");
    assert_input_error(fake.post(body, &[]).await, 400, &text);

    // A tool search the server executed needs no output from the client.
    let hosted = json!({"type": "tool_search_call", "id": "tsc_1", "call_id": null, "execution": "server", "arguments": {}, "status": "completed"});
    let found = json!({"type": "tool_search_output", "id": "tso_1", "call_id": null, "execution": "server", "tools": [], "status": "completed"});
    fake.turn(json!({"input": [user("a"), hosted, found, user("b")]}), &[])
        .await;
}

#[tokio::test]
async fn detail_errors_writes_the_message_only() {
    let fake = start_with(FakeOptions {
        detail_errors: true,
        ..FakeOptions::default()
    })
    .await;
    let call = json!({"type": "custom_tool_call", "call_id": "call_c1", "name": "t", "input": "x"});
    let (status, body) = fake.post(json!({"input": [user("a"), call]}), &[]).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"detail": "No tool output found for custom tool call call_c1."})
    );
    let resp = fake
        .http
        .post(fake.url("/v1/responses"))
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"detail":"You didn't provide an API key."}"#
    );
    // Answers that are not refusals are unchanged.
    let ok = fake.turn(json!({"input": "x"}), &[]).await;
    assert_eq!(ok["object"], "response");
}

fn e9(id: &str) -> String {
    format!("Previous response with id '{id}' not found.")
}

#[tokio::test]
async fn a_store_false_chain_resolves_on_its_own_socket_only() {
    // wild-failures-2026.md N6: the API keeps a store:false response in its socket's memory.
    let fake = start().await;
    let tools = json!([{"type": "function", "name": "f"}]);
    let mut a = fake.ws().await;
    let first = ws_turn(
        &mut a,
        json!({"model": "gpt-5", "store": false, "input": "go", "tools": tools}),
    )
    .await;
    assert_eq!(first["store"], false);
    let id = first["id"].as_str().unwrap();
    let call = first["output"][1].clone();
    let output =
        json!({"type": "function_call_output", "call_id": call["call_id"], "output": "ok"});

    // On socket A the chain resolves and its items count: its call is a duplicate (E4), and an
    // output for it pairs with it (no E6).
    let resent = json!({"model": "gpt-5", "store": false, "previous_response_id": id, "tools": tools, "input": [call, output]});
    let dup = format!(
        "Duplicate item found with id {}. Remove duplicate items from your input and try again.",
        call["id"].as_str().unwrap()
    );
    assert_eq!(
        ws_create(&mut a, resent).await,
        error_frame(&dup, json!("input"), Value::Null)
    );
    let chained = json!({"model": "gpt-5", "store": false, "previous_response_id": id, "tools": tools, "input": [output]});
    let second = ws_turn(&mut a, chained.clone()).await;
    assert_eq!(second["previous_response_id"], id);
    assert_eq!(types(&second), ["reasoning", "message"]);

    // Socket B and HTTP never saw it: E9.
    let mut b = fake.ws().await;
    assert_eq!(
        ws_create(&mut b, chained.clone()).await,
        error_frame(
            &e9(id),
            json!("previous_response_id"),
            json!("previous_response_not_found")
        )
    );
    assert_error(
        fake.post(chained, &[]).await,
        400,
        &e9(id),
        json!("previous_response_id"),
        json!("previous_response_not_found"),
    );

    // A stored response made on A resolves everywhere.
    let stored = ws_turn(&mut a, json!({"model": "gpt-5", "input": "hi"})).await;
    let next = json!({"model": "gpt-5", "previous_response_id": stored["id"], "input": "more"});
    ws_turn(&mut b, next.clone()).await;
    fake.turn(next, &[]).await;
}

#[tokio::test]
async fn a_chained_request_must_answer_the_previous_responses_calls() {
    // wild-failures-2026.md N1, chained: the calls of the previous response are pending.
    let fake = start().await;
    let tools = json!([{"type": "function", "name": "f"}]);
    let first = fake
        .turn(
            json!({"model": "gpt-5", "input": "go", "tools": tools}),
            &[("x-fake-shape", "rs,fc,fc")],
        )
        .await;
    let out = first["output"].as_array().unwrap().clone();
    let output_of =
        |c: &Value| json!({"type": "function_call_output", "call_id": c["call_id"], "output": "1"});
    let chained = |input: Value| json!({"model": "gpt-5", "previous_response_id": first["id"], "tools": tools, "input": input});
    let e5 = |c: &Value| {
        format!(
            "No tool output found for function call {}.",
            c["call_id"].as_str().unwrap()
        )
    };
    let got = fake.post(chained(json!([user("and?")])), &[]).await;
    assert_input_error(got, 400, &e5(&out[1]));
    // Only the last output of a parallel batch.
    let got = fake.post(chained(json!([output_of(&out[2])])), &[]).await;
    assert_input_error(got, 400, &e5(&out[1]));
    let second = fake
        .turn(
            chained(json!([output_of(&out[2]), output_of(&out[1])])),
            &[],
        )
        .await;

    // Only the previous response's own output: the calls of older turns were answered before.
    let next =
        json!({"model": "gpt-5", "previous_response_id": second["id"], "input": [user("thanks")]});
    fake.turn(next, &[]).await;

    // Every call type in its own words.
    let tools = json!([{"type": "custom", "name": "apply_patch"}]);
    let first = fake
        .turn(
            json!({"model": "gpt-5", "input": "go", "tools": tools}),
            &[],
        )
        .await;
    let call_id = first["output"][1]["call_id"].as_str().unwrap();
    let next = json!({"model": "gpt-5", "previous_response_id": first["id"], "tools": tools, "input": [user("and?")]});
    let text = format!("No tool output found for custom tool call {call_id}.");
    assert_input_error(fake.post(next, &[]).await, 400, &text);
}

#[tokio::test]
async fn forced_store_false_answers_store_false_and_keeps_nothing() {
    // wild-failures-2026.md N8: a gateway in front of the upstream forces store:false.
    let fake = start_with(FakeOptions {
        force_store_false: true,
        ..FakeOptions::default()
    })
    .await;
    let first = fake
        .turn(json!({"model": "gpt-5", "store": true, "input": "hi"}), &[])
        .await;
    assert_eq!(first["store"], false);
    assert!(first["output"][0]["encrypted_content"].is_string());
    let [_rs, msg] = &ids(&first)[..] else {
        panic!()
    };
    let id = first["id"].as_str().unwrap();

    let bare = json!({"model": "gpt-5", "store": true, "input": [{"type": "message", "id": msg}, user("more")]});
    let e3 = format!("Item with id '{msg}' not found. Items are not persisted when `store` is set to false. Try again with `store` set to true, or remove this item from your input.");
    assert_input_error(fake.post(bare, &[]).await, 404, &e3);
    let chained =
        json!({"model": "gpt-5", "store": true, "previous_response_id": id, "input": "more"});
    assert_error(
        fake.post(chained, &[]).await,
        400,
        &e9(id),
        json!("previous_response_id"),
        json!("previous_response_not_found"),
    );
    let got = fake
        .http
        .get(fake.url(&format!("/v1/responses/{id}")))
        .header("authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 404);

    // Over WebSocket the chain is socket-local, as for any store:false response.
    let mut socket = fake.ws().await;
    let own = ws_turn(&mut socket, json!({"model": "gpt-5", "input": "hi"})).await;
    assert_eq!(own["store"], false);
    let next = json!({"model": "gpt-5", "store": true, "previous_response_id": own["id"], "input": "more"});
    ws_turn(&mut socket, next).await;
}

fn e4(id: &str) -> String {
    format!(
        "Duplicate item found with id {id}. Remove duplicate items from your input and try again."
    )
}

fn conversation_not_found(id: &str) -> String {
    format!("Conversation with id '{id}' not found.")
}

/// A user message carrying an id, so that re-sending it can be caught.
fn user_with_id(id: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "role": "user", "content": [{"type": "input_text", "text": text}]})
}

/// N7 (c): a conversation holds what was sent and produced in it. Re-sending that is E4, and an
/// output may answer a call the conversation holds.
#[tokio::test]
async fn a_conversation_holds_its_turns_and_refuses_them_again() {
    let fake = start().await;
    let body = json!({"metadata": {"topic": "weather"}});
    let (status, created) = fake.post_to(KEY, "/v1/conversations", body, &[]).await;
    assert_eq!(status, 200, "{created}");
    let conv = created["id"].as_str().unwrap();
    assert!(conv.starts_with("conv_") && conv.len() == 5 + 48, "{conv}");
    assert_eq!(created["object"], "conversation");
    assert!(created["created_at"].as_u64().is_some(), "{created}");
    assert_eq!(created["metadata"], json!({}));

    let tools = json!([{"type": "function", "name": "get_weather", "parameters": {}}]);
    let asked = user_with_id("msg_asked1", "weather?");
    let body = json!({"model": "gpt-5", "conversation": conv, "tools": tools, "input": [asked]});
    let first = fake.turn(body, &[("x-fake-shape", "rs,fc")]).await;
    assert_eq!(first["conversation"], json!({"id": conv}));
    assert_eq!(first["previous_response_id"], Value::Null);
    let call = first["output"][1].clone();
    let call_id = call["call_id"].as_str().unwrap();
    let output = json!({"type": "function_call_output", "call_id": call_id, "output": "sunny"});

    // The call (output) and the message (input) are the conversation's now.
    let again = json!({"conversation": {"id": conv}, "tools": tools, "input": [call, output]});
    let call_item = call["id"].as_str().unwrap();
    assert_input_error(fake.post(again, &[]).await, 400, &e4(call_item));
    let again = json!({"conversation": conv, "input": [asked, user("and tomorrow?")]});
    assert_input_error(fake.post(again, &[]).await, 400, &e4("msg_asked1"));

    // The output alone pairs with the call the conversation holds, and only there.
    let alone = json!({"tools": tools, "input": [output]});
    let text = format!("No tool call found for function call output with call_id {call_id}.");
    assert_input_error(fake.post(alone, &[]).await, 400, &text);
    let answered =
        json!({"model": "gpt-5", "conversation": conv, "tools": tools, "input": [output]});
    let second = fake.turn(answered, &[]).await;
    assert_eq!(second["conversation"], json!({"id": conv}));
    let reply = &ids(&second)[1];
    let again = json!({"conversation": conv, "input": [item_ref(reply)]});
    assert_input_error(fake.post(again, &[]).await, 400, &e4(reply));

    let unknown = json!({"conversation": {"id": "conv_missing"}, "input": "hi"});
    assert_error(
        fake.post(unknown, &[]).await,
        404,
        &conversation_not_found("conv_missing"),
        json!("conversation"),
        Value::Null,
    );
    let both = json!({"conversation": conv, "previous_response_id": first["id"], "input": "hi"});
    assert_error(
        fake.post(both, &[]).await,
        400,
        "Mutually exclusive parameters: Ensure you are only providing one of: 'previous_response_id' or 'conversation'.",
        Value::Null,
        Value::Null,
    );
    assert_error(
        fake.post(json!({"conversation": 5, "input": "hi"}), &[]).await,
        400,
        "Invalid type for 'conversation': expected one of a string or an object, but got a number instead.",
        json!("conversation"),
        json!("invalid_type"),
    );
}

#[tokio::test]
async fn another_tenant_cannot_use_the_conversation() {
    let fake = start().await;
    let conv = fake.conversation(json!([])).await;
    let body = json!({"conversation": conv, "input": "hi"});
    assert_error(
        fake.post_as(OTHER_KEY, body.clone(), &[]).await,
        404,
        &conversation_not_found(&conv),
        json!("conversation"),
        Value::Null,
    );
    fake.turn(body, &[]).await;
    // The body is optional; credentials are not.
    let resp = fake
        .http
        .post(fake.url("/v1/conversations"))
        .header("authorization", OTHER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = fake
        .http
        .post(fake.url("/v1/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"message":"You didn't provide an API key.","type":"invalid_request_error","param":null,"code":null}}"#
    );
}

/// The items a conversation is created with count as sent, and WebSocket mode grows it too.
#[tokio::test]
async fn a_conversation_is_seeded_and_grows_over_websocket() {
    let fake = start().await;
    let seeded = user_with_id("msg_seed1", "hello");
    let conv = fake.conversation(json!([seeded])).await;
    let body = json!({"conversation": conv, "input": [seeded]});
    assert_input_error(fake.post(body, &[]).await, 400, &e4("msg_seed1"));

    let mut socket = fake.ws().await;
    let body = json!({"model": "gpt-5", "conversation": conv, "input": "hi"});
    let first = ws_turn(&mut socket, body).await;
    assert_eq!(first["conversation"], json!({"id": conv}));
    let rs = &ids(&first)[0];
    let again = json!({"conversation": conv, "input": [item_ref(rs)]});
    let frame = ws_create(&mut socket, again.clone()).await;
    assert_eq!(frame, error_frame(&e4(rs), json!("input"), Value::Null));
    assert_input_error(fake.post(again, &[]).await, 400, &e4(rs));
}
