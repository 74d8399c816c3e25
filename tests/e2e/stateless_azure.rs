//! `store: false` (and ZDR) turns replayed in full, and Azure OpenAI's paths and `api-key`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use crate::common::*;
use serde_json::{json, Value};

fn tools() -> Value {
    json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}])
}

fn first_call(response: &Value) -> Value {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap()
        .clone()
}

fn call_followup(call: &Value) -> Value {
    json!({"model": "gpt-5", "store": false, "tools": tools(), "input": [
        user("weather?"),
        call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
    ]})
}

#[tokio::test]
async fn a_stateless_call_followup_gets_the_full_reasoning_with_its_encrypted_content() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first_request =
        json!({"model": "gpt-5", "store": false, "tools": tools(), "input": "weather?"});
    let first = post(&proxy.url("/v1/responses"), KEY, &first_request, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        first.inserted(),
        Some(0),
        "changed: include added, no item inserted"
    );
    let sent: Value = serde_json::from_slice(&fake.last_request_body().unwrap()).unwrap();
    assert_eq!(sent["include"], json!(["reasoning.encrypted_content"]));
    let encrypted = first.body["output"][0]["encrypted_content"]
        .as_str()
        .unwrap()
        .to_owned();

    // Straight to the fake, the follow-up fails like the real API.
    let direct = post(
        &direct_url(&fake),
        KEY,
        &call_followup(&first_call(&first.body)),
        &[],
    )
    .await;
    assert_eq!(direct.status, 400, "{}", direct.text);

    let answer = post(
        &proxy.url("/v1/responses"),
        KEY,
        &call_followup(&first_call(&first.body)),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.inserted(), Some(1));
    let sent: Value = serde_json::from_slice(&fake.last_request_body().unwrap()).unwrap();
    assert_eq!(sent["input"][1]["type"], "reasoning");
    assert_eq!(sent["input"][1]["encrypted_content"], encrypted.as_str());
    assert!(!String::from_utf8_lossy(&fake.last_request_body().unwrap()).contains("item_reference"));
}

#[tokio::test]
async fn a_streamed_stateless_turn_is_replayed_from_its_done_events() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first_request = json!({"model": "gpt-5", "store": false, "stream": true, "tools": tools(),
        "include": ["reasoning.encrypted_content"], "input": "weather?"});
    let first = post(
        &proxy.url("/v1/responses"),
        KEY,
        &first_request,
        &[("x-fake-encoding", "gzip")],
    )
    .await;
    assert_eq!(first.inserted(), None, "include was already there");
    let items = streamed_items(&first.text);
    let call = items
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap()
        .clone();
    let answer = post(&proxy.url("/v1/responses"), KEY, &call_followup(&call), &[]).await;
    assert_eq!(
        answer.status, 200,
        "the full encrypted content, not the partial copy: {}",
        answer.text
    );
}

#[tokio::test]
async fn a_stateless_reference_is_rehydrated_into_the_full_item() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first = post(
        &proxy.url("/v1/responses"),
        KEY,
        &json!({"model": "gpt-5", "store": false, "tools": tools(), "input": "w"}),
        &[],
    )
    .await;
    let rs = output_id(&first.body, "reasoning");
    let call = first_call(&first.body);
    let mut followup = call_followup(&call);
    followup["input"]
        .as_array_mut()
        .unwrap()
        .insert(1, json!({"type": "item_reference", "id": rs}));
    let direct = post(&direct_url(&fake), KEY, &followup, &[]).await;
    assert_eq!(direct.status, 404, "{}", direct.text);
    let answer = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.inserted(), Some(1));
}

#[tokio::test]
async fn tenants_never_receive_each_others_encrypted_content() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first = post(
        &proxy.url("/v1/responses"),
        KEY,
        &json!({"model": "gpt-5", "store": false, "tools": tools(), "input": "w"}),
        &[],
    )
    .await;
    let encrypted = first.body["output"][0]["encrypted_content"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = post(
        &proxy.url("/v1/responses"),
        OTHER_KEY,
        &call_followup(&first_call(&first.body)),
        &[],
    )
    .await;
    assert_eq!(
        answer.inserted(),
        Some(0),
        "include added; nothing of the other tenant inserted"
    );
    assert!(!String::from_utf8_lossy(&fake.last_request_body().unwrap()).contains(&encrypted));
}

#[tokio::test]
async fn azure_paths_and_api_keys_are_repaired() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    for path in [
        "/openai/v1/responses",
        "/openai/v1/responses?api-version=preview",
        "/openai/responses?api-version=2025-03-01-preview",
        "/openai/deployments/gpt-5-prod/responses?api-version=2025-04-01-preview",
    ] {
        let first = client()
            .post(proxy.url(path))
            .header("api-key", "azure-key-1")
            .json(&image_request())
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), 200, "{path}");
        let first: Value = first.json().await.unwrap();
        let ig = output_id(&first, "image_generation_call");
        let answer = client()
            .post(proxy.url(path))
            .header("api-key", "azure-key-1")
            .json(&image_followup(&ig))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        assert_eq!(answer.headers()["x-rethread-inserted"], "2", "{path}");
        // Another Azure key is another tenant.
        let other = client()
            .post(proxy.url(path))
            .header("api-key", "azure-key-2")
            .json(&image_followup(&ig))
            .send()
            .await
            .unwrap();
        assert!(
            other.headers().get("x-rethread-inserted").is_none(),
            "{path}"
        );
    }
}

#[tokio::test]
async fn an_azure_retrieval_with_an_entra_token_teaches_its_turn() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let token = "Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi.entra";
    a_retrieval_teaches_its_turn(
        &fake,
        &proxy,
        "/openai/v1/responses",
        "?api-version=preview",
        token,
    )
    .await;
}
