//! Issue 27, part 1 (row 25 of wild-failures.md): clients that add
//! `include: ["reasoning.encrypted_content"]` to every `store:false` request (pydantic-ai,
//! hermes-agent, Microsoft Agent Framework, OpenHands) get E14 from a model that does not reason.
//! rethread removes that one entry, sends once more, and remembers the model for the tenant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use crate::common::*;

fn request(model: &str, stream: bool, include: Value) -> Value {
    json!({"model": model, "store": false, "stream": stream, "include": include, "input": "hi"})
}

fn repairs(answer: &Answer) -> &str {
    answer
        .headers
        .get("x-rethread-repairs")
        .map_or("", |v| v.to_str().unwrap())
}

#[tokio::test]
async fn the_clients_encrypted_reasoning_include_is_removed_for_a_model_that_refuses_it() {
    for model in ["gpt-4.1", DEPLOYMENT] {
        for stream in [false, true] {
            let fake = strict_fake().await;
            let include = json!([
                "reasoning.encrypted_content",
                "message.output_text.logprobs"
            ]);
            let body = request(model, stream, include);
            let direct = post(&direct_url(&fake), KEY, &body, &[]).await;
            assert_eq!(
                direct.status, 400,
                "{model}: direct is refused: {}",
                direct.text
            );
            assert!(
                direct.text.contains("Encrypted content is not supported"),
                "{}",
                direct.text
            );

            let proxy = Rethread::start(&fake.url(), &[]);
            let before = fake.responses_posts();
            let answer = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
            assert_eq!(
                answer.status, 200,
                "{model} stream={stream}: {}",
                answer.text
            );
            if stream {
                assert!(
                    answer.text.contains("response.completed"),
                    "{}",
                    answer.text
                );
            }
            assert_eq!(repairs(&answer), "exclude=1");
            assert_eq!(
                sent_body(&fake)["include"],
                json!(["message.output_text.logprobs"]),
                "the other entries are kept"
            );
            assert_eq!(sent_body(&fake)["input"], "hi", "nothing else changed");
            assert_eq!(
                fake.responses_posts() - before,
                2,
                "refused, then sent without it"
            );

            // Learned for this tenant and model: the entry goes before the request is sent.
            let again = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
            assert_eq!(again.status, 200, "{}", again.text);
            assert_eq!(repairs(&again), "exclude=1");
            assert_eq!(fake.responses_posts() - before, 3, "learned: no 400 first");

            // Another tenant has not shown that model refusing it.
            let other = post(&proxy.url("/v1/responses"), OTHER_KEY, &body, &[]).await;
            assert_eq!(other.status, 200, "{}", other.text);
            assert_eq!(fake.responses_posts() - before, 5);

            let metrics = metrics_text(&proxy).await;
            assert!(
                metrics.contains(r#"rethread_repair_rules_total{rule="exclude"} 3"#),
                "{metrics}"
            );
        }
    }
}

#[tokio::test]
async fn an_include_holding_only_the_encrypted_entry_loses_the_key() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let body = request(DEPLOYMENT, false, json!(["reasoning.encrypted_content"]));
    let answer = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let sent = sent_body(&fake);
    assert!(sent.get("include").is_none(), "{sent}");
    assert_eq!(sent["store"], false);
}

#[tokio::test]
async fn a_model_that_reasons_keeps_the_clients_include() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let body = request("gpt-5", false, json!(["reasoning.encrypted_content"]));
    let answer = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(repairs(&answer), "");
    assert_eq!(sent_body(&fake), body);
}

#[tokio::test]
async fn switched_off_the_refusal_reaches_the_client() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &["--rewrite-exclude", "false"]);
    let body = request(DEPLOYMENT, false, json!(["reasoning.encrypted_content"]));
    let answer = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert_eq!(fake.responses_posts(), 1);
}

#[tokio::test]
async fn over_websocket_the_clients_include_is_removed_too() {
    let fake = strict_fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let mut socket = ws_connect(&format!("ws://{}/v1/responses", proxy.addr), KEY).await;
    let mut body = request(DEPLOYMENT, false, json!(["reasoning.encrypted_content"]));
    body.as_object_mut().unwrap().remove("stream");
    let events = ws_create(&mut socket, body).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed", "{events:?}");
    assert!(sent_body(&fake).get("include").is_none());
}
