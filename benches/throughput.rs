//! Micro-benchmarks of the hot pure paths: capture throughput (MB/s) on a 1.5 MB image response
//! and on a long SSE stream, repair planning + splicing, small and with a 5 MB image input, and
//! recording a turn in a memory ledger that already holds 100,000.
//! Run: `cargo bench --bench throughput`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rethread::capture::{Capture, CaptureLimits, KeepPolicy};
use rethread::repair::items::{ItemType, Turn, TurnItem};
use rethread::repair::plan::{plan, RestorePolicy};
use rethread::repair::request::parse;
use rethread::repair::splice::splice;

const LIMITS: CaptureLimits = CaptureLimits {
    max_body: 64 << 20,
    keep: KeepPolicy {
        full_item_max: 256 << 10,
        image_max: 32 << 20,
    },
    stateless: false,
};

fn image_response() -> Vec<u8> {
    let image = "QUJD".repeat(1_500_000 / 4);
    format!(
        r#"{{"id":"resp_1","object":"response","store":true,"status":"completed","output":[{{"id":"rs_1","type":"reasoning","summary":[]}},{{"id":"ig_1","type":"image_generation_call","status":"completed","result":"{image}","revised_prompt":"a cat"}},{{"id":"msg_1","type":"message","role":"assistant","content":[{{"type":"output_text","text":"","annotations":[]}}]}}],"usage":{{"input_tokens":1}}}}"#
    )
    .into_bytes()
}

fn long_stream() -> Vec<u8> {
    let mut out = String::new();
    out.push_str("event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"store\":true,\"output\":[]}}\n\n");
    for i in 0..2000 {
        out.push_str(&format!("event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":{i},\"item_id\":\"msg_1\",\"output_index\":1,\"delta\":\"token {i} \",\"obfuscation\":\"abcdef\"}}\n\n"));
    }
    out.push_str("event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"output_index\":0,\"item\":{\"id\":\"rs_1\",\"type\":\"reasoning\",\"summary\":[]}}\n\n");
    out.push_str("event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"store\":true,\"output\":[{\"id\":\"rs_1\",\"type\":\"reasoning\",\"summary\":[]},{\"id\":\"msg_1\",\"type\":\"message\",\"content\":[]}]}}\n\n");
    out.into_bytes()
}

/// A stream shaped like the bench's W3 (`[rs, msg × 14]`, 201 events, ~55 KB): each message's
/// text in deltas, then in its `output_item.done`, then all of them again in `response.completed`.
fn messages_stream() -> Vec<u8> {
    let words: Vec<String> = (0..9)
        .map(|w| format!("word{w} of a long story, "))
        .collect();
    let text = words.concat();
    let message = |m: usize| {
        format!(
            r#"{{"id":"msg_{m:048}","type":"message","status":"completed","role":"assistant","content":[{{"type":"output_text","annotations":[],"logprobs":[],"text":"{text}"}}]}}"#
        )
    };
    let reasoning = format!(r#"{{"id":"rs_{:048}","type":"reasoning","summary":[]}}"#, 0);
    let mut events = vec![
        ("response.created", r#"{"type":"response.created","response":{"id":"resp_1","object":"response","status":"in_progress","store":true,"previous_response_id":null,"output":[]}}"#.to_string()),
        ("response.in_progress", r#"{"type":"response.in_progress","response":{"id":"resp_1","object":"response","status":"in_progress","store":true,"previous_response_id":null,"output":[]}}"#.to_string()),
        ("response.output_item.added", format!(r#"{{"type":"response.output_item.added","output_index":0,"item":{reasoning}}}"#)),
        ("response.output_item.done", format!(r#"{{"type":"response.output_item.done","output_index":0,"item":{reasoning}}}"#)),
    ];
    for m in 1..=14 {
        let id = format!("msg_{m:048}");
        events.push(("response.output_item.added", format!(r#"{{"type":"response.output_item.added","output_index":{m},"item":{{"id":"{id}","type":"message","status":"in_progress","role":"assistant","content":[]}}}}"#)));
        events.push(("response.content_part.added", format!(r#"{{"type":"response.content_part.added","item_id":"{id}","output_index":{m},"content_index":0,"part":{{"type":"output_text","annotations":[],"text":""}}}}"#)));
        for word in &words {
            events.push(("response.output_text.delta", format!(r#"{{"type":"response.output_text.delta","item_id":"{id}","output_index":{m},"content_index":0,"delta":"{word}","logprobs":[]}}"#)));
        }
        events.push(("response.output_text.done", format!(r#"{{"type":"response.output_text.done","item_id":"{id}","output_index":{m},"content_index":0,"text":"{text}"}}"#)));
        events.push(("response.content_part.done", format!(r#"{{"type":"response.content_part.done","item_id":"{id}","output_index":{m},"content_index":0,"part":{{"type":"output_text","annotations":[],"text":"{text}"}}}}"#)));
        events.push((
            "response.output_item.done",
            format!(
                r#"{{"type":"response.output_item.done","output_index":{m},"item":{}}}"#,
                message(m)
            ),
        ));
    }
    let output: Vec<String> = std::iter::once(reasoning.clone())
        .chain((1..=14).map(message))
        .collect();
    events.push(("response.completed", format!(r#"{{"type":"response.completed","response":{{"id":"resp_1","object":"response","status":"completed","store":true,"previous_response_id":null,"output":[{}],"usage":{{"input_tokens":12,"output_tokens":400}}}}}}"#, output.join(","))));
    let mut out = String::new();
    for (name, data) in events {
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    out.into_bytes()
}

/// `stream` without its `event:` lines.
fn unnamed(stream: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8(stream).unwrap();
    let lines: Vec<&str> = text
        .split('\n')
        .filter(|l| !l.starts_with("event: "))
        .collect();
    lines.join("\n").into_bytes()
}

fn capture(c: &mut Criterion) {
    let mut group = c.benchmark_group("capture");
    for (name, content_type, body) in [
        ("json_image_1.5MB", "application/json", image_response()),
        ("sse_2000_events", "text/event-stream", long_stream()),
        ("sse_w3_14_messages", "text/event-stream", messages_stream()),
        // The same events unnamed, as a server that writes no `event:` lines sends them (and as
        // WebSocket frames come): capture tells a delta from its leading `type`.
        (
            "sse_2000_events_unnamed",
            "text/event-stream",
            unnamed(long_stream()),
        ),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| {
                let mut capture = Capture::new(Some(content_type), None, LIMITS).unwrap();
                for chunk in body.chunks(16 * 1024) {
                    capture.feed(chunk).unwrap();
                }
                capture.finish().unwrap().unwrap()
            })
        });
    }
    group.finish();
}

fn turns() -> Vec<Arc<Turn>> {
    (0..3)
        .map(|t| {
            let item = |p: &str, ty| TurnItem {
                id: format!("{p}_{t}{}", "a".repeat(46)).into(),
                ty,
                call_id: None,
                full: None,
                digest: None,
            };
            Arc::new(Turn {
                stored: true,
                items: vec![
                    item("rs", ItemType::Reasoning),
                    item("ig", ItemType::ImageGenerationCall),
                    item("msg", ItemType::Message),
                ]
                .into(),
                link: None,
            })
        })
        .collect()
}

fn repair(c: &mut Criterion) {
    let turns = turns();
    let ig = &turns[1].items[1].id;
    let small = Bytes::from(format!(
        r#"{{"model":"gpt-5","input":[{{"role":"user","content":[{{"type":"input_text","text":"Now make it look realistic"}}]}},{{"type":"image_generation_call","id":"{ig}"}}],"tools":[{{"type":"image_generation"}}]}}"#
    ));
    let image = format!("data:image/png;base64,{}", "QUJD".repeat(5 << 20 >> 2));
    let large = Bytes::from(format!(
        r#"{{"model":"gpt-5","input":[{{"role":"user","content":[{{"type":"input_image","image_url":"{image}"}}]}},{{"type":"image_generation_call","id":"{ig}"}}]}}"#
    ));
    let mut group = c.benchmark_group("repair");
    for (name, body) in [
        ("image_followup", small),
        ("image_followup_with_5MB_input_image", large),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| {
                let view = parse(body).unwrap();
                let planned = plan(&view, &turns, RestorePolicy::Group, true);
                assert_eq!(planned.insertions.len(), 2);
                splice(
                    body,
                    view.input.as_ref().unwrap(),
                    &planned.insertions,
                    &planned.replacements,
                )
            })
        });
    }
    group.finish();
}

/// What a response pays as it ends: its turn recorded in memory that already holds many (whose
/// oldest is looked at for retention on every insert).
fn ledger(c: &mut Criterion) {
    use rethread::ledger::memory::{FullItemBudget, MemoryLedger};
    use rethread::ledger::Ledger;
    use rethread::repair::items::tests::api_image_turn;
    use rethread::tenant::TenantKey;
    let budget = FullItemBudget {
        total: 1 << 30,
        per_tenant: 1 << 30,
    };
    let memory = MemoryLedger::new(Duration::from_secs(86_400), 1 << 20, budget);
    let tenant = |n: u64| TenantKey([(n % 251) as u8; 16]);
    let mut n = 0u64;
    for _ in 0..100_000 {
        n += 1;
        drop(memory.record(tenant(n), api_image_turn(n)));
    }
    let mut group = c.benchmark_group("ledger");
    group.bench_function("record_image_turn", |b| {
        b.iter_batched(
            || {
                n += 1;
                (tenant(n), api_image_turn(n))
            },
            |(tenant, turn)| drop(memory.record(tenant, turn)),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, capture, repair, ledger);
criterion_main!(benches);
