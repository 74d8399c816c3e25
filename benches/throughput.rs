//! Micro-benchmarks of the hot pure paths: capture throughput (MB/s) on a 1.5 MB image response
//! and on a long SSE stream, and repair planning + splicing, small and with a 5 MB image input.
//! Run: `cargo bench --bench throughput`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

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

criterion_group!(benches, capture, repair);
criterion_main!(benches);
