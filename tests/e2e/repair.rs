//! The repairing proxy end to end: the real binary, real sockets, the strict fake upstream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use crate::common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn the_fake_rejects_the_bare_image_followup_like_the_real_api() {
    let fake = fake().await;
    let first = unseen_image_turn(&fake, "/v1/responses", KEY).await;
    let (rs, ig) = (
        output_id(&first.body, "reasoning"),
        output_id(&first.body, "image_generation_call"),
    );
    let followup = post(&direct_url(&fake), KEY, &image_followup(&ig), &[]).await;
    assert_eq!(followup.status, 400);
    assert_eq!(
        followup.body["error"]["message"],
        format!("Item '{ig}' of type 'image_generation_call' was provided without its required 'reasoning' item: '{rs}'.")
    );
}

#[tokio::test]
async fn image_followup_gets_its_reasoning_back() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        first.inserted(),
        None,
        "an unchanged request carries no header"
    );
    let ig = output_id(&first.body, "image_generation_call");

    let followup = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
    assert_eq!(followup.status, 200, "{}", followup.text);
    assert_eq!(
        followup.inserted(),
        Some(2),
        "the reasoning item and the message"
    );
    let sent: Value = serde_json::from_slice(&fake.last_request_body().unwrap()).unwrap();
    let kinds: Vec<_> = sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap_or("user").to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "user",
            "item_reference",
            "image_generation_call",
            "item_reference"
        ]
    );
    assert_eq!(sent["input"][1]["id"], output_id(&first.body, "reasoning"));
    assert_eq!(sent["input"][3]["id"], output_id(&first.body, "message"));
}

#[tokio::test]
async fn minimal_repair_inserts_only_the_reasoning_item() {
    let fake = fake().await;
    let proxy = Rethread::start(
        &fake.url(),
        &["--repair", "minimal", "--fallback-retries", "0"],
    );
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let ig = output_id(&first.body, "image_generation_call");
    let followup = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
    assert_eq!(followup.status, 200, "{}", followup.text);
    assert_eq!(followup.inserted(), Some(1));
}

#[tokio::test]
async fn a_streamed_compressed_turn_teaches_the_followup() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    for encoding in ["gzip", "br", "zstd", "deflate"] {
        let mut request = image_request();
        request["stream"] = json!(true);
        let first = raw_client()
            .post(proxy.url("/v1/responses"))
            .header("authorization", KEY)
            .header("accept-encoding", encoding)
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(
            first.headers()["content-encoding"],
            encoding,
            "the client gets the original encoding"
        );
        let text = String::from_utf8(decode(encoding, &first.bytes().await.unwrap())).unwrap();
        let ig = streamed_id(&text, "image_generation_call");
        let followup = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
        assert_eq!(followup.status, 200, "{encoding}: {}", followup.text);
        assert_eq!(followup.inserted(), Some(2), "{encoding}");
    }
}

fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::MultiGzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap(),
        "deflate" => flate2::read::ZlibDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap(),
        "br" => brotli::Decompressor::new(body, 4096)
            .read_to_end(&mut out)
            .unwrap(),
        "zstd" => zstd::stream::read::Decoder::new(body)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap(),
        _ => panic!("{encoding}"),
    };
    out
}

#[tokio::test]
async fn rotating_stream_ids_are_learned_by_output_index() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first = streamed_image_turn(&proxy, &[("x-fake-rotate-ids", "1")]).await;
    let ig = streamed_id(&first.text, "image_generation_call");
    let followup = image_followup_through(&proxy, &ig).await;
    assert_eq!(followup.status, 200, "{}", followup.text);
}

#[tokio::test]
async fn function_call_followup_gets_its_reasoning_back() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let tools =
        json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
    let first = post(
        &proxy.url("/v1/responses"),
        KEY,
        &json!({"model": "gpt-5", "input": "weather?", "tools": tools}),
        &[],
    )
    .await;
    let call = first.body["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap()
        .clone();
    let followup = json!({
        "model": "gpt-5", "tools": tools,
        "input": [user("weather?"), call, {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]
    });
    let answer = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.inserted(), Some(1));
}

#[tokio::test]
async fn every_turn_shape_is_repaired() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    // (shape, index of the item sent back by id, expected insertions)
    for (shape, pick, inserted) in [
        ("rs,ig,msg", 1, 2),
        ("rs,ig,rs,msg", 1, 1),
        ("rs,ig,rs,msg", 3, 1),
        ("rs,ws,rs,ws,rs,msg", 3, 1),
        ("mcpl,rs,mcp,rs,msg", 2, 1),
        ("rs,ci,rs,ci,rs,msg", 5, 1),
        ("rs,fs,rs,msg", 1, 1),
        ("rs,rs,msg", 2, 1),
        ("rs,mcpr", 1, 1),
        ("rs,msg", 1, 1),
    ] {
        let first = post(
            &proxy.url("/v1/responses"),
            KEY,
            &json!({"model": "gpt-5", "input": "go"}),
            &[("x-fake-shape", shape)],
        )
        .await;
        assert_eq!(first.status, 200, "{shape}: {}", first.text);
        let item = &first.body["output"][pick];
        let followup = json!({"model": "gpt-5", "input": [user("more"), {"type": "item_reference", "id": item["id"]}]});
        let answer = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
        assert_eq!(answer.status, 200, "{shape} [{pick}]: {}", answer.text);
        assert_eq!(answer.inserted(), Some(inserted), "{shape} [{pick}]");
    }
}

#[tokio::test]
async fn a_reasoning_item_sent_alone_gets_its_follower() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let rs = output_id(&first.body, "reasoning");
    let followup = json!({"model": "gpt-5", "input": [user("again"), {"type": "reasoning", "id": rs, "summary": []}]});
    let answer = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.inserted(), Some(2));
}

#[tokio::test]
async fn nested_input_arrays_are_flattened_when_repaired() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let ig = output_id(&first.body, "image_generation_call");
    let followup = json!({"model": "gpt-5", "input": [user("x"), [{"type": "image_generation_call", "id": ig}]]});
    let answer = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let sent: Value = serde_json::from_slice(&fake.last_request_body().unwrap()).unwrap();
    assert!(
        sent["input"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i.is_object()),
        "{sent}"
    );
}

#[tokio::test]
async fn vercel_style_idless_calls_pass_unchanged() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let tools = json!([{"type": "function", "name": "f", "parameters": {"type": "object"}}]);
    let first = post(
        &proxy.url("/v1/responses"),
        KEY,
        &json!({"model": "gpt-5", "input": "go", "tools": tools}),
        &[],
    )
    .await;
    let rs = output_id(&first.body, "reasoning");
    let call = first.body["output"][1].clone();
    let body = json!({"model": "gpt-5", "tools": tools, "input": [
        {"type": "item_reference", "id": rs},
        {"type": "function_call", "call_id": call["call_id"], "name": call["name"], "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "ok"}
    ]});
    let bytes = serde_json::to_vec(&body).unwrap();
    let answer = raw_client()
        .post(proxy.url("/v1/responses"))
        .header("authorization", KEY)
        .header("content-type", "application/json")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().get("x-rethread-inserted").is_none());
    assert_eq!(
        fake.last_request_body().unwrap(),
        bytes,
        "forwarded byte for byte"
    );
}

#[tokio::test]
async fn unchanged_requests_are_forwarded_byte_for_byte() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let body = b"{ \"model\" : \"gpt-5\",\n  \"input\": \"hi \\u00e9\", \"extra\": {\"a\": [1, 2.50, 3e2]} }".to_vec();
    let answer = raw_client()
        .post(proxy.url("/v1/responses"))
        .header("authorization", KEY)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(fake.last_request_body().unwrap(), body);
}

#[tokio::test]
async fn nothing_is_inserted_into_a_chained_request_and_its_chains_items_are_left_out() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let ig = output_id(&first.body, "image_generation_call");
    let mut followup = image_followup(&ig);
    followup["previous_response_id"] = first.body["id"].clone();
    let answer = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    // The image call is already in the chain (the fake, like the API, would answer "Duplicate
    // item found"): it is left out, and nothing of its group is inserted.
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.inserted(), Some(0));
    assert_eq!(
        answer.headers["x-rethread-repairs"].to_str().unwrap(),
        "dedupe=1"
    );
    assert_eq!(
        sent_body(&fake)["input"],
        serde_json::json!([user("Now make it look realistic")])
    );
    proxy.wait_for_log("chained");
}

#[tokio::test]
async fn one_tenants_memory_never_repairs_anothers_request() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let ig = output_id(&first.body, "image_generation_call");
    let other = post(
        &proxy.url("/v1/responses"),
        OTHER_KEY,
        &image_followup(&ig),
        &[],
    )
    .await;
    assert_eq!(other.inserted(), None);
    assert_eq!(other.status, 404, "{}", other.text);
    // Same key, another project: another tenant too.
    let project = post(
        &proxy.url("/v1/responses"),
        KEY,
        &image_followup(&ig),
        &[("openai-project", "proj_2")],
    )
    .await;
    assert_eq!(project.inserted(), None);
}

#[tokio::test]
async fn cold_memory_falls_back_to_the_reasoning_the_upstream_names() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    // The first turn bypasses rethread: it knows nothing about it.
    let cold = cold_image_followup(&fake, &proxy, |_| {}).await;
    let answer = cold.answer;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.inserted(), Some(1));
    assert_eq!(cold.posts, 2, "one failure, one retry");
}

#[tokio::test]
async fn cold_memory_fallback_is_bounded_and_passes_the_error_through() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let cold = cold_image_followup(&fake, &proxy, |_| {}).await;
    let answer = cold.answer;
    assert_eq!(answer.status, 400);
    assert!(answer
        .text
        .contains("without its required 'reasoning' item"));
    assert_eq!(cold.posts, 1);
}

#[tokio::test]
async fn cold_memory_fallback_works_for_streaming_requests() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let cold = cold_image_followup(&fake, &proxy, |f| f["stream"] = json!(true)).await;
    let answer = cold.answer;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.text.contains("response.completed"));
    assert_eq!(answer.inserted(), Some(1));
}

#[tokio::test]
async fn a_retrieved_response_teaches_its_turn() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    a_retrieval_teaches_its_turn(&fake, &proxy, "/v1/responses", "", KEY).await;
}

#[tokio::test]
async fn observe_mode_learns_but_changes_nothing() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--mode", "observe"]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let ig = output_id(&first.body, "image_generation_call");
    let answer = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.inserted(), None);
    proxy.wait_for_log("observe mode: would change");
}
