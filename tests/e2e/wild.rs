//! The failure shapes users reported (`wild-failures.md`, one test per row rethread can act on,
//! each naming its source): the follow-up fails sent straight to the strict fake and passes
//! through rethread, and what rethread forwards carries no id twice and no call without its
//! output. The rows rethread must leave alone are forwarded byte for byte.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use serde_json::{json, Value};

use crate::common::*;

const TOOLS: &str = r#"[{"type":"function","name":"get_weather"},{"type":"image_generation"}]"#;

fn tools() -> Value {
    serde_json::from_str(TOOLS).unwrap()
}

/// A response of `shape` (the fake's `x-fake-shape`) learned through rethread.
async fn turn_response(proxy: &Rethread, shape: &str, store: bool) -> Value {
    let body = json!({"model": "gpt-5", "store": store, "input": "go", "tools": tools()});
    let answer = post(
        &proxy.url("/v1/responses"),
        KEY,
        &body,
        &[("x-fake-shape", shape)],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body
}

/// The output items of such a response.
async fn turn(proxy: &Rethread, shape: &str, store: bool) -> Vec<Value> {
    turn_response(proxy, shape, store).await["output"]
        .as_array()
        .unwrap()
        .clone()
}

fn reference(item: &Value) -> Value {
    json!({"type": "item_reference", "id": item["id"]})
}

fn output_of(call: &Value) -> Value {
    json!({"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"})
}

fn followup(input: Vec<Value>, store: bool) -> Value {
    json!({"model": "gpt-5", "store": store, "tools": tools(), "input": input})
}

/// Sends `body` directly (it must fail) and through rethread (it must pass); returns what
/// rethread forwarded and its `x-rethread-repairs`.
async fn repaired(fake: &FakeHandle, proxy: &Rethread, body: &Value) -> (Value, String) {
    let direct = post(&direct_url(fake), KEY, body, &[]).await;
    assert!(
        (400..500).contains(&direct.status),
        "the API refuses it: {}",
        direct.text
    );
    let through = post(&proxy.url("/v1/responses"), KEY, body, &[]).await;
    assert_eq!(through.status, 200, "{}", through.text);
    let sent: Value = serde_json::from_slice(&fake.last_request_body().unwrap()).unwrap();
    let input = sent["input"].as_array().unwrap();
    let mut ids: Vec<&str> = input.iter().filter_map(|i| i["id"].as_str()).collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "an id twice: {sent}");
    for (n, item) in input.iter().enumerate() {
        if item["type"] == "function_call" {
            let answered = input[n + 1..]
                .iter()
                .any(|o| o["type"] == "function_call_output" && o["call_id"] == item["call_id"]);
            assert!(answered, "a call without its output: {sent}");
        }
    }
    let rules = through
        .headers
        .get("x-rethread-repairs")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (sent, rules)
}

fn types(sent: &Value) -> Vec<String> {
    sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap_or("user").to_owned())
        .collect()
}

async fn world() -> (FakeHandle, Rethread) {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "2"]);
    (fake, proxy)
}

#[tokio::test]
async fn row_3_parallel_calls_answered_one_by_one() {
    // community.openai.com/t/…/1355347 ("The Real Issue"), gpt-5 multi-hop.
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs,fc,fc,fc", true).await;
    let mut input = vec![user("go"), out[0].clone()];
    for call in &out[1..] {
        input.push(call.clone());
        input.push(output_of(call));
    }
    let (sent, rules) = repaired(&fake, &proxy, &followup(input, true)).await;
    assert_eq!(rules, "move=4");
    assert_eq!(
        types(&sent)[1..],
        [
            "reasoning",
            "function_call",
            "function_call",
            "function_call",
            "function_call_output",
            "function_call_output",
            "function_call_output"
        ]
    );
}

#[tokio::test]
async fn row_4_a_handoff_output_inside_its_group() {
    // openai/openai-agents-python PR #3574 (handoffs; Azure).
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs,fc,msg", true).await;
    let input = vec![
        reference(&out[0]),
        out[1].clone(),
        output_of(&out[1]),
        reference(&out[2]),
    ];
    let (sent, rules) = repaired(&fake, &proxy, &followup(input, true)).await;
    assert!(rules.contains("move="), "{rules}");
    assert_eq!(sent["input"][3]["type"], "function_call_output");
}

#[tokio::test]
async fn row_5_commentary_replayed_after_its_call() {
    // continuedev/continue#11994 (fixed on the client by #11785).
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs,msg,fc", true).await;
    let input = vec![
        reference(&out[0]),
        out[2].clone(),
        output_of(&out[2]),
        reference(&out[1]),
    ];
    let (sent, _) = repaired(&fake, &proxy, &followup(input, true)).await;
    assert_eq!(sent["input"][1]["id"], out[1]["id"]);
    assert_eq!(sent["input"][2]["id"], out[2]["id"]);
}

#[tokio::test]
async fn row_6_a_message_persisted_before_its_reasoning() {
    // openai/codex#33044 (commentary race).
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs,msg", true).await;
    let input = vec![user("go"), reference(&out[1]), reference(&out[0])];
    let (sent, _) = repaired(&fake, &proxy, &followup(input, true)).await;
    assert_eq!(sent["input"][1]["id"], out[0]["id"]);
}

#[tokio::test]
async fn row_7_the_apis_own_back_to_back_reasoning() {
    // community.openai.com/t/…/1280238; openai/codex#1227, #1233 (o4-mini).
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs,rs,fc", true).await;
    let input = vec![
        reference(&out[0]),
        reference(&out[1]),
        out[2].clone(),
        output_of(&out[2]),
    ];
    let (sent, rules) = repaired(&fake, &proxy, &followup(input, true)).await;
    assert_eq!(rules, "drop=1");
    assert_eq!(sent["input"][0]["id"], out[1]["id"]);
}

#[tokio::test]
async fn row_8_a_reasoning_only_turn_replayed() {
    // community.openai.com/t/…/1373609 (reasoning-only output); openai/codex PR #15542.
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs", true).await;
    let input = vec![user("go"), reference(&out[0]), user("and?")];
    let (sent, rules) = repaired(&fake, &proxy, &followup(input, true)).await;
    assert_eq!(rules, "drop=1");
    assert_eq!(types(&sent), ["user", "user"]);
}

#[tokio::test]
async fn row_9_a_call_dropped_by_the_sdk_its_reasoning_kept() {
    // openai/openai-agents-python#2503 (nest_handoff_history), PR #3207.
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs,fc", true).await;
    let input = vec![
        json!({"role": "assistant", "content": "For context, the weather was asked."}),
        reference(&out[0]),
        user("and?"),
    ];
    let (_, rules) = repaired(&fake, &proxy, &followup(input, true)).await;
    assert_eq!(rules, "drop=1");
}

#[tokio::test]
async fn row_10_the_same_under_store_false_and_the_rest_still_rehydrated() {
    // openai/openai-agents-python#1668 (fix PR #1757): reasoning without its encrypted content.
    let (fake, proxy) = world().await;
    let calls = turn(&proxy, "rs,fc", false).await;
    let chat = turn(&proxy, "rs,msg", false).await;
    let input = vec![
        user("go"),
        json!({"type": "reasoning", "id": calls[0]["id"], "summary": []}),
        user("more"),
        reference(&chat[0]),
        reference(&chat[1]),
    ];
    let (sent, rules) = repaired(&fake, &proxy, &followup(input, false)).await;
    assert_eq!(rules, "rehydrate=2, drop=1, include=1");
    assert!(sent["input"][2]["encrypted_content"].is_string(), "{sent}");
}

#[tokio::test]
async fn row_11_an_edited_message_wins() {
    // pydantic-ai cassette test_openai_responses_thinking_with_modified_history; community
    // thread 1374727; openai/openai-agents-js#326.
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs,msg", true).await;
    let input = vec![
        user("go"),
        out[0].clone(),
        json!({"role": "assistant", "content": "An answer the user edited."}),
        user("and?"),
    ];
    let (sent, rules) = repaired(&fake, &proxy, &followup(input, true)).await;
    assert_eq!(rules, "drop=1");
    assert!(
        !sent.to_string().contains(out[1]["id"].as_str().unwrap()),
        "the original message is never restored beside the edit: {sent}"
    );
}

#[tokio::test]
async fn row_12_reasoning_whose_id_was_stripped() {
    // omnigent-ai/omnigent#5066 (reasoning_item_id_policy="omit"); NousResearch/hermes-agent
    // #97427 (store:false strips reasoning ids).
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs,fc", false).await;
    let mut stripped = out[0].clone();
    stripped.as_object_mut().unwrap().remove("id");
    let input = vec![user("go"), stripped, out[1].clone(), output_of(&out[1])];
    let (sent, rules) = repaired(&fake, &proxy, &followup(input, false)).await;
    assert_eq!(rules, "adopt=1, include=1");
    let reasoning: Vec<&Value> = sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "reasoning")
        .collect();
    assert_eq!(reasoning.len(), 1, "one copy, adopted: {sent}");
    assert_eq!(reasoning[0]["id"], out[0]["id"]);
}

#[tokio::test]
async fn an_assistant_message_replayed_as_id_less_text_adopts_its_id() {
    // litellm 1.110 (chat-completions bridge), @langchain/openai 1.6 (outputVersion "v1"),
    // llama-index-llms-openai 0.8.3, langchain-openai 1.7 (store=False): the reasoning keeps its
    // id, the message comes back as id-less text.
    let (fake, proxy) = world().await;
    for store in [true, false] {
        let out = turn(&proxy, "rs,msg", store).await;
        let text = out[1]["content"][0]["text"].clone();
        let input = vec![
            user("go"),
            out[0].clone(),
            json!({"role": "assistant", "content": text}),
            user("and?"),
        ];
        let body = followup(input, store);
        let (sent, rules) = if store {
            repaired(&fake, &proxy, &body).await
        } else {
            // Under store:false the API takes a full reasoning item before any other item (a
            // recorded 200), so the copy is not refused; rethread still sends one copy, not two.
            let through = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
            assert_eq!(through.status, 200, "{}", through.text);
            let rules = through.headers["x-rethread-repairs"]
                .to_str()
                .unwrap()
                .to_owned();
            let sent = serde_json::from_slice(&fake.last_request_body().unwrap()).unwrap();
            (sent, rules)
        };
        let expected = if store {
            "adopt=1"
        } else {
            "adopt=1, include=1"
        };
        assert_eq!(rules, expected, "store {store}");
        assert_eq!(sent["input"][2]["id"], out[1]["id"]);
        assert_eq!(sent["input"].as_array().unwrap().len(), 4, "no second copy");
    }
}

#[tokio::test]
async fn row_16_the_same_reasoning_twice() {
    // vercel/ai#7883, #10573; OpenRouterTeam/ai-sdk-provider#254; continuedev/continue#10723.
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs,msg", true).await;
    let input = vec![
        user("go"),
        reference(&out[0]),
        reference(&out[0]),
        reference(&out[1]),
    ];
    let (_, rules) = repaired(&fake, &proxy, &followup(input, true)).await;
    assert_eq!(rules, "drop=1");
}

#[tokio::test]
async fn row_28_reasoning_without_summary() {
    // newo-ether/Agora#126, #141; AAswordman/Operit#797 (official API).
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs,msg", true).await;
    let input = vec![
        user("go"),
        json!({"type": "reasoning", "id": out[0]["id"]}),
        reference(&out[1]),
    ];
    let (sent, rules) = repaired(&fake, &proxy, &followup(input, true)).await;
    assert_eq!(rules, "complete=1");
    assert_eq!(sent["input"][1]["summary"], json!([]));
}

#[tokio::test]
async fn row_29_a_call_sent_by_reference_beside_its_output() {
    // vercel/ai PR #11114: the upstream's E6 asks for the call itself.
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs,fc", true).await;
    let input = vec![
        user("go"),
        reference(&out[0]),
        reference(&out[1]),
        output_of(&out[1]),
    ];
    let (sent, _) = repaired(&fake, &proxy, &followup(input, true)).await;
    assert_eq!(sent["input"][2]["type"], "function_call");
    assert_eq!(sent["input"][2]["call_id"], out[1]["call_id"]);
}

/// Sends `body` directly and through rethread: the same answer, and rethread forwarded it
/// byte for byte with no header of its own.
async fn left_alone(fake: &FakeHandle, proxy: &Rethread, body: &Value) {
    let direct = post(&direct_url(fake), KEY, body, &[]).await;
    let through = post(&proxy.url("/v1/responses"), KEY, body, &[]).await;
    assert_eq!(through.status, direct.status, "{}", through.text);
    if direct.status != 200 {
        assert_eq!(through.body, direct.body);
    }
    assert!(through.headers.get("x-rethread-inserted").is_none());
    assert!(through.headers.get("x-rethread-repairs").is_none());
    assert_eq!(
        fake.last_request_body().unwrap(),
        serde_json::to_vec(body).unwrap()
    );
}

#[tokio::test]
async fn row_17_two_different_items_with_one_id_are_left_alone() {
    // earendil-works/pi#5147, #5149, #5151: which of the two is right cannot be known.
    let (fake, proxy) = world().await;
    let out = turn(&proxy, "rs,msg", true).await;
    let mut other = out[1].clone();
    other["content"][0]["text"] = json!("a client-minted message that took the same id");
    let input = vec![user("go"), out[0].clone(), out[1].clone(), user("b"), other];
    left_alone(&fake, &proxy, &followup(input, true)).await;
}

#[tokio::test]
async fn row_23_an_item_the_upstream_itself_lost_is_left_alone() {
    // openai/openai-agents-python#2020 (labelled a server issue): memory has the turn, the
    // upstream no longer does. Nothing rethread could insert would help.
    let (fake, proxy) = world().await;
    let first = turn_response(&proxy, "rs,msg", true).await;
    let deleted = client()
        .delete(format!(
            "{}/v1/responses/{}",
            fake.url(),
            first["id"].as_str().unwrap()
        ))
        .header("authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let out = first["output"].as_array().unwrap();
    let input = vec![user("go"), reference(&out[0]), reference(&out[1])];
    left_alone(&fake, &proxy, &followup(input, true)).await;
}

#[tokio::test]
async fn row_15a_a_chain_that_ends_in_reasoning_is_left_alone() {
    // openai/openai-agents-python#1611: the dangling reasoning is the server's, in the chain.
    let (fake, proxy) = world().await;
    let first = turn_response(&proxy, "rs", true).await;
    let next =
        json!({"model": "gpt-5", "previous_response_id": first["id"], "input": [user("and?")]});
    left_alone(&fake, &proxy, &next).await;
}

#[tokio::test]
async fn row_2_the_azure_wording_names_nothing_to_insert_and_is_relayed() {
    // openai/openai-node#1791, openai/openai-openapi#536, mastra-ai/mastra#13205: E1 in the
    // wording that names no reasoning item. With memory cold, rethread can only say what it was.
    let fake = spawn_fake(FakeOptions {
        azure_wording_models: vec!["contoso-gpt5".into()],
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let first = json!({"model": "contoso-gpt5", "input": "go", "tools": tools()});
    let turn = post(
        &direct_url(&fake),
        KEY,
        &first,
        &[("x-fake-shape", "rs,msg")],
    )
    .await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let body =
        json!({"model": "contoso-gpt5", "input": [user("go"), reference(&turn.body["output"][1])]});
    let through = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
    assert_eq!(through.status, 400);
    assert!(
        through.body["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("without its required preceding item of type 'reasoning'"),
        "{}",
        through.text
    );
    proxy.wait_for_log("missing_reasoning_unnamed");
    assert_eq!(
        fake.responses_posts(),
        2,
        "the turn and one try: nothing to retry with"
    );
}
