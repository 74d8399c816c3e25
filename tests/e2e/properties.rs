//! Property tests through the real path: for any turn shapes the fake produces and any client
//! input built from them, rethread never drops, reorders or duplicates a client item, every
//! request it changes is accepted by the strict fake, and every input that is repairable by
//! construction ends in a 200.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use crate::common::*;
use proptest::prelude::*;
use serde_json::{json, Value};

struct World {
    runtime: tokio::runtime::Runtime,
    fake: FakeHandle,
    proxy: Rethread,
}

const KINDS: [&str; 5] = ["rs", "msg", "fc", "ig", "ws"];

#[derive(Debug, Clone)]
struct TurnPlan {
    shape: Vec<usize>,
    picks: Vec<bool>,
    forms: Vec<u8>,
    extra_outputs: Vec<bool>,
    user_before: bool,
}

fn turn_plan() -> impl Strategy<Value = TurnPlan> {
    (1usize..6).prop_flat_map(|n| {
        (
            prop::collection::vec(0usize..KINDS.len(), n),
            prop::collection::vec(any::<bool>(), n),
            prop::collection::vec(0u8..3, n),
            prop::collection::vec(any::<bool>(), n),
            any::<bool>(),
        )
            .prop_map(
                |(shape, picks, forms, extra_outputs, user_before)| TurnPlan {
                    shape,
                    picks,
                    forms,
                    extra_outputs,
                    user_before,
                },
            )
    })
}

fn is_call(item: &Value) -> bool {
    item["type"] == "function_call"
}

fn form(item: &Value, form: u8) -> Value {
    let id = item["id"].clone();
    if is_call(item) {
        return if form == 1 {
            json!({"type": "function_call", "call_id": item["call_id"], "name": item["name"], "arguments": item["arguments"]})
        } else {
            item.clone()
        };
    }
    match form {
        // A full reasoning item needs its `summary` (E16); the bare form of others is {type, id}.
        0 if item["type"] == "reasoning" => json!({"type": "reasoning", "id": id, "summary": []}),
        0 => json!({"type": item["type"], "id": id}),
        1 => json!({"type": "item_reference", "id": id}),
        _ => item.clone(),
    }
}

/// Whether every reasoning item the client sends can be given a follower of its group.
fn repairable(output: &[Value], plan: &TurnPlan) -> bool {
    let reasoning = |i: usize| output[i]["type"] == "reasoning";
    for r in (0..output.len()).filter(|&i| reasoning(i) && plan.picks[i]) {
        let members: Vec<usize> = (r + 1..output.len())
            .take_while(|&i| !reasoning(i))
            .collect();
        if members.iter().any(|&m| plan.picks[m]) {
            continue;
        }
        // A reasoning item whose group holds nothing else can never be replayed (E12, E13).
        let ok = if members.is_empty() {
            false
        } else {
            members
                .iter()
                .any(|&m| !is_call(&output[m]) || plan.extra_outputs[m])
        };
        if !ok {
            return false;
        }
    }
    true
}

async fn run_case(
    w: &World,
    turns: Vec<TurnPlan>,
    perturb: Option<usize>,
) -> Result<(), TestCaseError> {
    let url = w.proxy.url("/v1/responses");
    let mut input: Vec<Value> = Vec::new();
    let mut expect_ok = true;
    for plan in &turns {
        let shape: Vec<&str> = plan.shape.iter().map(|&k| KINDS[k]).collect();
        let first = post(
            &url,
            KEY,
            &json!({"model": "gpt-5", "input": "go"}),
            &[("x-fake-shape", &shape.join(","))],
        )
        .await;
        prop_assert_eq!(first.status, 200, "{}", first.text);
        let output = first.body["output"].as_array().unwrap().clone();
        expect_ok &= repairable(&output, plan);
        if plan.user_before {
            input.push(user("next"));
        }
        let mut outputs = Vec::new();
        for (i, item) in output.iter().enumerate() {
            if plan.picks[i] {
                input.push(form(item, plan.forms[i]));
            }
            if is_call(item) && (plan.picks[i] || plan.extra_outputs[i]) {
                outputs.push(json!({"type": "function_call_output", "call_id": item["call_id"], "output": "ok"}));
            }
        }
        input.extend(outputs);
    }
    if let Some(k) = perturb {
        if input.len() >= 2 {
            let k = k % (input.len() - 1);
            input.swap(k, k + 1);
            expect_ok = false;
        }
    }
    if input.is_empty() {
        return Ok(());
    }
    let answer = post(
        &url,
        KEY,
        &json!({"model": "gpt-5", "input": input.clone()}),
        &[],
    )
    .await;
    let forwarded: Value = serde_json::from_slice(&w.fake.last_request_body().unwrap()).unwrap();
    let forwarded = forwarded["input"].as_array().unwrap().clone();
    // Every client item is there, unchanged and in order.
    let mut at = 0;
    for item in &input {
        let found = forwarded[at..].iter().position(|f| f == item);
        prop_assert!(
            found.is_some(),
            "client item {item} dropped, changed or reordered"
        );
        at += found.unwrap() + 1;
    }
    // No id twice.
    let mut ids: Vec<&str> = forwarded.iter().filter_map(|f| f["id"].as_str()).collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    prop_assert_eq!(ids.len(), total, "an id was sent twice: {:?}", forwarded);
    if answer.inserted().is_some() && answer.status != 200 {
        // Never a new error: what rethread changed and the fake refused, it refused unchanged too.
        let direct = post(
            &format!("{}/v1/responses", w.fake.url()),
            KEY,
            &json!({"model": "gpt-5", "input": input}),
            &[],
        )
        .await;
        prop_assert_ne!(
            direct.status,
            200,
            "rethread broke a request the fake accepts: {}\n{:?}",
            answer.text,
            forwarded
        );
    }
    if expect_ok {
        prop_assert_eq!(
            answer.status,
            200,
            "a repairable input failed: {}\n{:?}",
            answer.text,
            forwarded
        );
    }
    Ok(())
}

#[test]
fn repair_never_drops_reorders_or_duplicates_and_its_requests_are_accepted() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake = runtime.block_on(fake());
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let world = World {
        runtime,
        fake,
        proxy,
    };
    let config = ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (
        prop::collection::vec(turn_plan(), 1..4),
        prop::option::weighted(0.2, 0usize..64),
    );
    let result = runner.run(&strategy, |(turns, perturb)| {
        world.runtime.block_on(run_case(&world, turns, perturb))
    });
    drop(world.proxy);
    if let Err(e) = result {
        panic!("{e}");
    }
}
