//! Issue 27, part 2: the seed's follow-up under `store: false`. The API cannot look up an image
//! call of an unstored turn (E3), so the follow-up `[user, {type: "image_generation_call", id}]`
//! needs the call back whole, result included; rethread keeps the result of `store:false` image
//! turns within `stateless_image_budget` and rehydrates the call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use crate::common::*;

/// Raw bytes of a real-size image: about 1.5 MB of base64.
const IMAGE_BYTES: usize = 1_100_000;

async fn image_fake() -> FakeHandle {
    spawn_fake(FakeOptions {
        image_bytes: IMAGE_BYTES,
        ..FakeOptions::default()
    })
    .await
    .unwrap()
}

fn stateless(mut body: Value) -> Value {
    body["store"] = json!(false);
    body
}

/// The first turn through `proxy`, as JSON or streamed; the image call's id and result, and
/// the turn's items.
async fn first_turn(proxy: &Rethread, key: &str, stream: bool) -> (String, String, Vec<Value>) {
    let mut request = stateless(image_request());
    request["stream"] = json!(stream);
    let first = post(&proxy.url("/v1/responses"), key, &request, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let items = if stream {
        streamed_items(&first.text)
    } else {
        first.body["output"].as_array().unwrap().clone()
    };
    let image = items
        .iter()
        .find(|i| i["type"] == "image_generation_call")
        .unwrap();
    let result = image["result"].as_str().unwrap().to_owned();
    assert!(
        result.len() > 1 << 20,
        "a real-size image: {} bytes",
        result.len()
    );
    (image["id"].as_str().unwrap().to_owned(), result, items)
}

fn reference_followup(ig: &str) -> Value {
    json!({
        "model": "gpt-5",
        "store": false,
        "input": [user("Now make it look realistic"), {"type": "item_reference", "id": ig}],
        "tools": [{"type": "image_generation"}]
    })
}

fn sent_image(fake: &FakeHandle) -> Option<Value> {
    let sent: Value = serde_json::from_slice(&fake.last_request_body().unwrap()).unwrap();
    sent["input"]
        .as_array()?
        .iter()
        .find(|i| i["type"] == "image_generation_call")
        .cloned()
}

#[tokio::test]
async fn a_stateless_image_followup_gets_the_whole_image_call_back() {
    for stream in [false, true] {
        for by_reference in [false, true] {
            let fake = image_fake().await;
            let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
            let (ig, result, _) = first_turn(&proxy, KEY, stream).await;
            let followup = if by_reference {
                reference_followup(&ig)
            } else {
                stateless(image_followup(&ig))
            };

            let direct = post(&direct_url(&fake), KEY, &followup, &[]).await;
            assert_eq!(direct.status, 404, "{}", direct.text);
            assert!(
                direct
                    .text
                    .contains("Items are not persisted when `store` is set to false"),
                "{}",
                direct.text
            );

            let answer = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
            assert_eq!(
                answer.status,
                200,
                "stream={stream} reference={by_reference}: {}\n{}",
                answer.text,
                proxy.logs()
            );
            let sent = sent_image(&fake).expect("the image call is sent");
            assert_eq!(sent["id"], ig.as_str());
            assert_eq!(sent["result"], result.as_str(), "the result, whole");

            // The image never reaches the logs or the metrics.
            let sample = &result[result.len() / 2..result.len() / 2 + 64];
            assert!(!proxy.logs().contains(sample));
            assert!(!metrics_text(&proxy).await.contains(sample));
        }
    }
}

#[tokio::test]
async fn another_tenants_stateless_image_is_never_used() {
    let fake = image_fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let (ig, _, _) = first_turn(&proxy, KEY, false).await;
    let answer = post(
        &proxy.url("/v1/responses"),
        OTHER_KEY,
        &stateless(image_followup(&ig)),
        &[],
    )
    .await;
    assert_eq!(answer.status, 404, "as without rethread: {}", answer.text);
    let sent = sent_image(&fake).unwrap();
    assert!(sent.get("result").is_none(), "{sent}");
}

#[tokio::test]
async fn an_image_over_the_tenants_budget_is_not_kept_and_the_followup_fails_as_without_rethread() {
    let fake = image_fake().await;
    let proxy = Rethread::start(
        &fake.url(),
        &[
            "--fallback-retries",
            "0",
            "--tenant-stateless-image-budget",
            "1MiB",
        ],
    );
    let (ig, _, _) = first_turn(&proxy, KEY, false).await;
    let answer = post(
        &proxy.url("/v1/responses"),
        KEY,
        &stateless(image_followup(&ig)),
        &[],
    )
    .await;
    assert_eq!(answer.status, 404, "{}", answer.text);
}

#[tokio::test]
async fn a_stored_turns_image_is_never_sent_back_whole() {
    let fake = image_fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    assert_eq!(first.status, 200);
    let ig = output_id(&first.body, "image_generation_call");
    let answer = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let sent = sent_image(&fake).unwrap();
    assert!(
        sent.get("result").is_none(),
        "the server looks it up: {sent}"
    );
}

#[tokio::test]
async fn a_stateless_followup_that_leaves_the_image_out_does_not_get_it() {
    // The API accepts [reasoning, message] without the image under store:false: megabytes the
    // client did not send stay out.
    let fake = image_fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let (_, _, items) = first_turn(&proxy, KEY, false).await;
    let msg = items.iter().find(|i| i["type"] == "message").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let followup = json!({"model": "gpt-5", "store": false, "input": [
        user("Now make it look realistic"), {"type": "message", "id": msg}
    ]});
    let answer = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(sent_image(&fake).is_none());
}
