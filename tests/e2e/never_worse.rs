//! Never worse than no proxy: each shape a user reported where rethread broke a request the API
//! would accept (or turned one refusal into another), through the real binary and the strict
//! fake. Every test compares with, or reasons from, the answer the fake gives directly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use crate::common::*;
use serde_json::{json, Value};

fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.headers.get(name).map(|v| v.to_str().unwrap())
}

/// Whether a JSON text has an object with the same key twice, at any depth.
fn has_duplicate_key(text: &[u8]) -> bool {
    struct Check;
    impl<'de> serde::de::Visitor<'de> for Check {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("json")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<bool, M::Error> {
            let mut keys = std::collections::HashSet::new();
            let mut dup = false;
            while let Some(key) = map.next_key::<String>()? {
                dup |= !keys.insert(key);
                dup |= map.next_value::<Dup>()?.0;
            }
            Ok(dup)
        }
        fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<bool, S::Error> {
            let mut dup = false;
            while let Some(d) = seq.next_element::<Dup>()? {
                dup |= d.0;
            }
            Ok(dup)
        }
        fn visit_str<E>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    struct Dup(bool);
    impl<'de> serde::Deserialize<'de> for Dup {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Check).map(Dup)
        }
    }
    serde_json::from_slice::<Dup>(text).unwrap().0
}

#[tokio::test]
async fn a_stateless_request_to_a_model_that_does_not_reason_is_not_given_include() {
    // Row 25: rethread added include to every store:false request, and gpt-4.1 refuses it.
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let body = json!({"model": "gpt-4.1", "store": false, "input": "hi"});
    let answer = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.inserted(), None);
    assert!(sent_body(&fake).get("include").is_none());
    assert_eq!(fake.responses_posts(), 1);
}

#[tokio::test]
async fn a_deployment_that_refuses_encrypted_content_gets_the_clients_own_request_once() {
    // Row 25 on Azure: a deployment name rethread cannot know. The refusal of its change makes
    // rethread send the client's bytes, and teaches it not to change that model's requests again.
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let body = json!({"model": DEPLOYMENT, "store": false, "input": "hi"});
    let answer = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        header(&answer, "x-rethread-reverted"),
        Some("encrypted_unsupported")
    );
    assert_eq!(answer.inserted(), None);
    assert_eq!(
        fake.responses_posts(),
        2,
        "the changed request, then the client's"
    );
    assert_eq!(sent_body(&fake), body);

    let again = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(header(&again, "x-rethread-reverted"), None);
    assert_eq!(fake.responses_posts(), 3, "learned: one request only");
    let metrics = metrics_text(&proxy).await;
    assert!(
        metrics.contains(r#"rethread_reverts_total{reason="encrypted_unsupported"} 1"#),
        "{metrics}"
    );
    // The log names the refusal by its code and param, never its body or the key.
    let logs = proxy.logs();
    assert!(
        logs.contains("param=include") || logs.contains("param=\"include\""),
        "{logs}"
    );
    assert!(
        !logs.contains("Encrypted content is not supported"),
        "{logs}"
    );
    assert!(!logs.contains("sk-test"), "{logs}");
}

#[tokio::test]
async fn a_conversation_that_switches_to_a_model_that_does_not_reason_gets_no_reasoning() {
    // Row 27: the image turn came from gpt-5; the follow-up goes to gpt-4.1 with the image by id.
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let ig = output_id(&first.body, "image_generation_call");
    let mut followup = image_followup(&ig);
    followup["model"] = json!("gpt-4.1");

    let direct = post(&direct_url(&fake), KEY, &followup, &[]).await;
    assert_eq!(direct.status, 200, "the API accepts it: {}", direct.text);
    let through = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    assert_eq!(through.status, 200, "{}", through.text);
    assert_eq!(through.inserted(), None);
    assert_eq!(sent_body(&fake), followup);
}

#[tokio::test]
async fn an_unknown_model_that_refuses_reasoning_items_gets_the_clients_own_request() {
    // Row 27 with a deployment name: rethread inserts reasoning, the upstream says the model
    // does not reason, and the client's own request goes, which it accepts.
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let ig = output_id(&first.body, "image_generation_call");
    let mut followup = image_followup(&ig);
    followup["model"] = json!(DEPLOYMENT);
    let through = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    assert_eq!(through.status, 200, "{}", through.text);
    assert_eq!(
        header(&through, "x-rethread-reverted"),
        Some("reasoning_unsupported")
    );
    assert_eq!(sent_body(&fake), followup);
    // Learned: the next follow-up to that deployment is not changed at all.
    let posts = fake.responses_posts();
    let again = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(fake.responses_posts(), posts + 1);
    assert_eq!(header(&again, "x-rethread-reverted"), None);
}

#[tokio::test]
async fn back_to_back_reasoning_is_never_rebuilt_in_front_of_a_call() {
    // Row 7: the API returned [rs1, rs2, fc]; the client sends [rs1, fc, out]. Inserting rs2
    // would build [rs1, rs2, fc, out], which the API refuses on rs1 (E12). rs1 can never be
    // replayed: it is dropped, and rs2 goes before its call.
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let turn = post(
        &proxy.url("/v1/responses"),
        KEY,
        &json!({"model": "gpt-5", "input": "weather?", "tools": [{"type": "function", "name": "get_weather"}]}),
        &[("x-fake-shape", "rs,rs,fc")],
    )
    .await;
    assert_eq!(turn.status, 200, "{}", turn.text);
    let output = turn.body["output"].as_array().unwrap().clone();
    let followup = json!({
        "model": "gpt-5",
        "input": [
            user("weather?"),
            {"type": "item_reference", "id": output[0]["id"]},
            output[2],
            {"type": "function_call_output", "call_id": output[2]["call_id"], "output": "sunny"},
        ],
    });
    let direct = post(&direct_url(&fake), KEY, &followup, &[]).await;
    assert_eq!(direct.status, 400);
    let through = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    assert_eq!(through.status, 200, "{}", through.text);
    assert_eq!(
        header(&through, "x-rethread-repairs"),
        Some("insert=1, drop=1")
    );
    let sent = sent_body(&fake);
    let ids: Vec<&str> = sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            output[1]["id"].as_str().unwrap(),
            output[2]["id"].as_str().unwrap()
        ]
    );
}

#[tokio::test]
async fn a_null_include_is_replaced_never_written_twice() {
    // llama-index sends "include": null. A second "include" key beside it loses to the null in
    // parsers that keep the last value, so no encrypted reasoning would come back.
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let body = br#"{"model":"gpt-5","store":false,"include":null,"input":"hi"}"#;
    let response = client()
        .post(proxy.url("/v1/responses"))
        .header("authorization", KEY)
        .header("content-type", "application/json")
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let sent = fake.last_request_body().unwrap();
    assert!(
        !has_duplicate_key(&sent),
        "{}",
        String::from_utf8_lossy(&sent)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&sent).unwrap()["include"],
        json!(["reasoning.encrypted_content"])
    );
    let reasoning = &answer["output"][0];
    assert_eq!(reasoning["type"], "reasoning");
    assert!(reasoning["encrypted_content"].is_string(), "{answer}");
}

#[tokio::test]
async fn a_nested_input_is_flattened_even_when_nothing_is_missing() {
    // The seed report's own form: [user, [rs, ig, msg]].
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let ids: Vec<Value> = first.body["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| json!({"type": "item_reference", "id": i["id"]}))
        .collect();
    let followup = json!({"model": "gpt-5", "input": [user("again"), ids], "tools": [{"type": "image_generation"}]});
    let answer = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.inserted(), Some(0));
    let sent = sent_body(&fake);
    let input = sent["input"].as_array().unwrap();
    assert_eq!(input.len(), 4);
    assert!(input.iter().all(|i| !i.is_array()), "{sent}");
}

#[tokio::test]
async fn refusals_that_say_nothing_about_the_content_are_relayed_not_resent() {
    // No credentials: the upstream answers 401 to the changed request, which is relayed as it is.
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let response = client()
        .post(proxy.url("/v1/responses"))
        .json(&json!({"model": "gpt-5", "store": false, "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("x-rethread-reverted").is_none());
    assert_eq!(fake.responses_posts(), 1);
}

#[tokio::test]
async fn a_streamed_request_is_reverted_before_its_first_byte() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let body = json!({"model": DEPLOYMENT, "store": false, "stream": true, "input": "hi"});
    let answer = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(
        answer.text.contains("response.completed"),
        "{}",
        answer.text
    );
    assert_eq!(
        header(&answer, "x-rethread-reverted"),
        Some("encrypted_unsupported")
    );
}

#[tokio::test]
async fn a_websocket_frame_refused_for_rethreads_change_is_sent_as_the_client_wrote_it() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let mut socket = ws_connect(&format!("ws://{}/v1/responses", proxy.addr), KEY).await;
    let events = ws_create(
        &mut socket,
        json!({"model": DEPLOYMENT, "store": false, "input": "hi"}),
    )
    .await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed", "{events:?}");
    assert!(events.iter().all(|e| e["type"] != "error"));
    let sent = sent_body(&fake);
    assert!(sent.get("include").is_none(), "{sent}");
}

#[tokio::test]
async fn a_websocket_followup_is_repaired_from_the_upstreams_error_when_memory_is_cold() {
    let fake = strict_fake().await;
    // The first turn bypasses rethread: it knows nothing of it.
    let first = unseen_image_turn(&fake, "/v1/responses", KEY).await;
    let ig = output_id(&first.body, "image_generation_call");
    let rs = output_id(&first.body, "reasoning");
    let proxy = Rethread::start(&fake.url(), &[]);
    let mut socket = ws_connect(&format!("ws://{}/v1/responses", proxy.addr), KEY).await;
    let events = ws_create(&mut socket, image_followup(&ig)).await;
    assert_eq!(
        events.last().unwrap()["type"],
        "response.completed",
        "{events:?}"
    );
    let sent = sent_body(&fake);
    assert!(sent.to_string().contains(&rs), "{sent}");
    // The socket goes on serving.
    let events = ws_create(&mut socket, json!({"model": "gpt-5", "input": "more"})).await;
    assert_eq!(events.last().unwrap()["type"], "response.completed");
}
