//! Capture from recorded and hand-written responses, at every chunk boundary.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;

use super::*;

pub(super) const LIMITS: CaptureLimits = CaptureLimits {
    max_body: 1 << 24,
    keep: KeepPolicy {
        full_item_max: 1 << 16,
        image_max: 0,
    },
    stateless: false,
};

fn capture(content_type: &str, encoding: Option<&str>, body: &[u8], split: usize) -> Option<Turn> {
    let mut c = Capture::new(Some(content_type), encoding, LIMITS).unwrap();
    for chunk in body.chunks(split.max(1)) {
        c.feed(chunk).unwrap();
    }
    c.finish().unwrap()
}

fn shape(turn: &Turn) -> Vec<(&str, &str)> {
    turn.items.iter().map(|i| (i.ty.as_str(), &*i.id)).collect()
}

fn event(ty: &str, json: &str) -> String {
    format!("event: {ty}\ndata: {json}\n\n")
}

/// A stream shaped like the gpt-5 image recording, written by hand.
fn image_stream(rotate: bool) -> String {
    let ig_early = if rotate { "ig_early" } else { "ig_A" };
    [
        event("response.created", r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_A","store":true,"output":[]}}"#),
        event("response.output_item.added", r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"rs_A","type":"reasoning","summary":[]}}"#),
        event("response.output_item.done", r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"rs_A","type":"reasoning","summary":[]}}"#),
        event("response.output_item.added", &format!(r#"{{"type":"response.output_item.added","output_index":1,"item":{{"id":"{ig_early}","type":"image_generation_call","status":"in_progress"}}}}"#)),
        event("response.image_generation_call.partial_image", &format!(r#"{{"type":"response.image_generation_call.partial_image","output_index":1,"item_id":"{ig_early}","partial_image_b64":"{}"}}"#, "QUFB".repeat(10_000))),
        event("response.output_item.done", &format!(r#"{{"type":"response.output_item.done","output_index":1,"item":{{"id":"ig_A","type":"image_generation_call","status":"completed","result":"{}"}}}}"#, "QUFB".repeat(10_000))),
        event("response.output_item.done", r#"{"type":"response.output_item.done","output_index":2,"item":{"id":"msg_A","type":"message","role":"assistant","content":[]}}"#),
    ]
    .concat()
}

/// `image_stream` closed by a `response.completed` carrying `completed`.
fn image_stream_ending_with(completed: &str) -> String {
    let terminal = format!(r#"{{"type":"response.completed","response":{completed}}}"#);
    format!(
        "{}{}",
        image_stream(false),
        event("response.completed", &terminal)
    )
}

#[test]
fn a_streamed_image_turn_is_learned_at_any_chunk_boundary() {
    let body = image_stream(false);
    for split in [1, 2, 3, 7, 64, 1000, body.len()] {
        let turn = capture(
            "text/event-stream; charset=utf-8",
            None,
            body.as_bytes(),
            split,
        )
        .unwrap();
        assert_eq!(
            shape(&turn),
            vec![
                ("reasoning", "rs_A"),
                ("image_generation_call", "ig_A"),
                ("message", "msg_A")
            ]
        );
        assert!(turn.stored);
        assert!(
            turn.items.iter().all(|i| i.full.is_none()),
            "stored turns keep no payloads"
        );
    }
}

#[test]
fn rotating_ids_are_settled_by_output_index() {
    let turn = capture("text/event-stream", None, image_stream(true).as_bytes(), 5).unwrap();
    assert_eq!(turn.items[1].id.as_ref(), "ig_A");
}

#[test]
fn a_terminal_event_that_repeats_the_items_read_gives_the_same_turn_as_reading_it_whole() {
    let completed = r#"{"id":"resp_A","store":true,"output":[{"id":"rs_A","type":"reasoning","summary":[]},{"id":"ig_A","type":"image_generation_call","status":"completed","result":"QUFB"},{"id":"msg_A","type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}]}"#;
    let body = image_stream_ending_with(completed);
    let streamed = capture("text/event-stream", None, body.as_bytes(), 100).unwrap();
    let whole = turn_from_response(completed.as_bytes(), LIMITS.keep)
        .unwrap()
        .unwrap();
    assert_eq!(shape(&streamed), shape(&whole));
    assert_eq!(streamed.link, whole.link);
    assert_eq!(streamed.stored, whole.stored);
}

#[test]
fn a_terminal_event_whose_items_differ_from_those_read_is_read_whole() {
    // As many items as were read, but not the same ones: the terminal event wins.
    let completed = r#"{"id":"resp_A","store":true,"output":[{"id":"rs_A","type":"reasoning","summary":[]},{"id":"ig_A","type":"image_generation_call","status":"completed","result":"QUFB"},{"id":"msg_Z","type":"message","role":"assistant","content":[]}]}"#;
    let body = image_stream_ending_with(completed);
    let streamed = capture("text/event-stream", None, body.as_bytes(), 100).unwrap();
    assert_eq!(streamed.items[2].id.as_ref(), "msg_Z");
}

#[test]
fn a_terminal_items_id_is_compared_whole_in_either_key_order() {
    // The API writes `id` first, which is read without parsing the item; another order is
    // parsed. Either way a longer id that starts with the one read is another item.
    for msg in [
        r#"{"id":"msg_AB","type":"message","role":"assistant","content":[]}"#,
        r#"{"type":"message","id":"msg_AB","role":"assistant","content":[]}"#,
        r#"{"type":"message","id":"msg_\u0041B","role":"assistant","content":[]}"#,
    ] {
        let completed = format!(
            r#"{{"id":"resp_A","store":true,"output":[{{"id":"rs_A","type":"reasoning","summary":[]}},{{"id":"ig_A","type":"image_generation_call","status":"completed","result":"QUFB"}},{msg}]}}"#
        );
        let body = image_stream_ending_with(&completed);
        let streamed = capture("text/event-stream", None, body.as_bytes(), 100).unwrap();
        assert_eq!(streamed.items[2].id.as_ref(), "msg_AB", "{msg}");
    }
    let same = r#"{"type":"message","id":"msg_A","role":"assistant","content":[]}"#;
    let completed = format!(
        r#"{{"id":"resp_A","store":true,"output":[{{"id":"rs_A","type":"reasoning","summary":[]}},{{"id":"ig_A","type":"image_generation_call","status":"completed","result":"QUFB"}},{same}]}}"#
    );
    let body = image_stream_ending_with(&completed);
    let streamed = capture("text/event-stream", None, body.as_bytes(), 100).unwrap();
    assert_eq!(streamed.items[2].id.as_ref(), "msg_A");
}

/// What capture read of the response itself from `body` of `content_type`, facts `asked` or
/// not.
fn facts_of(content_type: &str, body: &str, asked: bool) -> Option<ResponseFacts> {
    let mut c = Capture::new(Some(content_type), None, LIMITS).unwrap();
    if asked {
        c = c.with_facts();
    }
    c.feed(body.as_bytes()).unwrap();
    c.finish_with_facts().1
}

#[test]
fn what_a_response_says_of_itself_is_read_only_when_a_trace_asks() {
    let completed = r#"{"id":"resp_A","model":"gpt-5","store":true,"usage":{"input_tokens":3,"output_tokens":5},"output":[]}"#;
    let stream = image_stream_ending_with(completed);
    assert!(facts_of("text/event-stream", &stream, false).is_none());
    let facts = facts_of("text/event-stream", &stream, true).unwrap();
    assert_eq!(facts.id.as_deref(), Some("resp_A"));
    assert_eq!(facts.model.as_deref(), Some("gpt-5"));
    assert!(facts.usage.is_some());
    assert!(facts_of("application/json", completed, false).is_none());
    let facts = facts_of("application/json", completed, true).unwrap();
    assert_eq!(facts.model.as_deref(), Some("gpt-5"));
}

#[test]
fn the_terminal_event_is_authoritative() {
    let body = format!(
        "{}{}",
        image_stream(false),
        event(
            "response.completed",
            r#"{"type":"response.completed","response":{"id":"resp_A","store":true,"output":[{"id":"rs_A","type":"reasoning","summary":[]},{"id":"fc_A","type":"function_call","call_id":"call_A","name":"f","arguments":"{}"}]}}"#
        )
    );
    let turn = capture("text/event-stream", None, body.as_bytes(), 100).unwrap();
    assert_eq!(
        shape(&turn),
        vec![("reasoning", "rs_A"), ("function_call", "fc_A")]
    );
    assert_eq!(turn.items[1].call_id.as_deref(), Some("call_A"));
    assert!(turn.items[1].full.is_some(), "calls are kept in full");
}

#[test]
fn unstored_turns_keep_full_items_and_images_only_within_the_image_bound() {
    let image = "QUFB".repeat(2000);
    let body = format!(
        r#"{{"id":"resp_B","object":"response","store":false,"output":[{{"id":"rs_B","type":"reasoning","summary":[],"encrypted_content":"enc"}},{{"id":"ig_B","type":"image_generation_call","result":"{image}"}},{{"id":"msg_B","type":"message","role":"assistant","content":[]}}]}}"#
    );
    let stateless = CaptureLimits {
        keep: KeepPolicy {
            image_max: 1 << 16,
            ..LIMITS.keep
        },
        stateless: true,
        ..LIMITS
    };
    for (limits, kept) in [
        (LIMITS, false),
        // A stored request's body drops the result as it streams by.
        (
            CaptureLimits {
                stateless: false,
                ..stateless
            },
            false,
        ),
        (stateless, true),
    ] {
        for content_type in ["application/json", "text/event-stream"] {
            let text = if content_type == "application/json" {
                body.clone()
            } else {
                format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{body}}}\n\n")
            };
            let mut c = Capture::new(Some(content_type), None, limits).unwrap();
            for chunk in text.as_bytes().chunks(997) {
                c.feed(chunk).unwrap();
            }
            let turn = c.finish().unwrap().unwrap();
            assert!(!turn.stored);
            assert!(turn.items[0]
                .full
                .as_ref()
                .unwrap()
                .starts_with(br#"{"id":"rs_B""#));
            let full = turn.items[1].full.as_ref();
            assert_eq!(full.is_some(), kept, "{content_type} {limits:?}");
            if kept {
                assert!(full.unwrap().len() > image.len(), "the whole result");
            }
            assert!(turn.items[2].full.is_some());
        }
    }
}

#[test]
fn a_stateless_reasoning_item_without_its_encrypted_content_is_not_kept_to_be_inserted() {
    // Inserted under store:false, it would draw the API's 404 (E3): rethread must insert nothing.
    for rs in [
        r#"{"id":"rs_D","type":"reasoning","summary":[]}"#,
        r#"{"id":"rs_D","type":"reasoning","summary":[],"encrypted_content":null}"#,
    ] {
        let body =
            format!(r#"{{"store":false,"output":[{rs},{{"id":"msg_D","type":"message"}}]}}"#);
        let turn = capture("application/json", None, body.as_bytes(), 7).unwrap();
        assert!(turn.items[0].full.is_none(), "{rs}");
        assert!(turn.items[1].full.is_some());
    }
}

#[test]
fn compressed_bodies_are_decoded_for_capture() {
    let body = r#"{"store":true,"output":[{"id":"rs_C","type":"reasoning","summary":[]},{"id":"msg_C","type":"message"}]}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let turn = capture("application/json", Some("gzip"), &gz.finish().unwrap(), 3).unwrap();
    assert_eq!(
        shape(&turn),
        vec![("reasoning", "rs_C"), ("message", "msg_C")]
    );
    let packed = zstd::encode_all(image_stream(false).as_bytes(), 3).unwrap();
    assert_eq!(
        capture("text/event-stream", Some("zstd"), &packed, 11)
            .unwrap()
            .items
            .len(),
        3
    );
}

#[test]
fn unreadable_responses_teach_nothing_and_say_why() {
    assert_eq!(
        Capture::new(Some("text/html"), None, LIMITS)
            .err()
            .unwrap()
            .reason(),
        "content_type"
    );
    assert_eq!(
        Capture::new(Some("application/json"), Some("lzma"), LIMITS)
            .err()
            .unwrap()
            .reason(),
        "encoding"
    );
    let mut c = Capture::new(Some("application/json"), None, LIMITS).unwrap();
    c.feed(b"{\"output\":[{\"id\":").unwrap();
    assert_eq!(c.finish().err().unwrap().reason(), "json");
    let mut c = Capture::new(Some("application/json"), Some("gzip"), LIMITS).unwrap();
    let lied = c
        .feed(b"plain text, not gzip")
        .and_then(|_| c.finish().map(|_| ()));
    assert_eq!(lied.err().unwrap().reason(), "decode");
}

#[test]
fn a_broken_stream_keeps_the_items_it_completed() {
    let body = image_stream(false);
    let cut = body.find("event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"output_index\":2").unwrap();
    let turn = capture("text/event-stream", None, &body.as_bytes()[..cut], 50).unwrap();
    assert_eq!(turn.items.len(), 2);
}

fn shared_fixture(name: &str) -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/responses")
        .join(name);
    std::fs::read_to_string(path).ok()
}

/// The vercel recordings hold one event's data per line; frame them as the API sends them.
fn framed(lines: &str) -> String {
    lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("data: {l}\n\n"))
        .collect()
}

#[test]
fn recorded_streams_are_learned_when_the_shared_fixtures_exist() {
    for (name, expected) in [
        (
            "vercel-ai__openai-image-generation-tool.1.chunks.txt",
            vec!["reasoning", "image_generation_call", "message"],
        ),
        (
            "vercel-ai__openai-local-shell-tool.1.chunks.txt",
            vec!["reasoning", "local_shell_call"],
        ),
        (
            "vercel-ai__openai-file-search-tool.1.chunks.txt",
            vec!["reasoning", "file_search_call", "reasoning", "message"],
        ),
        (
            "vercel-ai__openai-mcp-tool-approval.1.chunks.txt",
            vec!["mcp_list_tools", "reasoning", "mcp_approval_request"],
        ),
    ] {
        let Some(lines) = shared_fixture(name) else {
            eprintln!("skipping {name}: ../shared is not beside this checkout");
            continue;
        };
        let turn = capture("text/event-stream", None, framed(&lines).as_bytes(), 333).unwrap();
        let types: Vec<_> = turn.items.iter().map(|i| i.ty.as_str()).collect();
        assert_eq!(types, expected, "{name}");
    }
    if let Some(sse) =
        shared_fixture("pydantic-ai__test_openai_responses_thinking_part_iter.response1.sse")
    {
        let turn = capture("text/event-stream", None, sse.as_bytes(), 17).unwrap();
        assert_eq!(turn.items[0].ty, ItemType::Reasoning);
    }
}

#[test]
fn recorded_json_bodies_are_learned_when_the_shared_fixtures_exist() {
    for (name, first) in [
        ("vercel-ai__openai-web-search-tool.1.json", "reasoning"),
        (
            "vercel-ai__openai-code-interpreter-tool.1.json",
            "reasoning",
        ),
        ("vercel-ai__openai-mcp-tool.1.json", "mcp_list_tools"),
        ("vercel-ai__openai-custom-tool.1.json", "custom_tool_call"),
    ] {
        let Some(body) = shared_fixture(name) else {
            continue;
        };
        let turn = capture("application/json", None, body.as_bytes(), 4096).unwrap();
        assert_eq!(turn.items[0].ty.as_str(), first, "{name}");
    }
}

#[test]
fn an_event_capture_does_not_read_is_passed_over_unparsed() {
    // A WebSocket frame (or an unnamed SSE event) whose JSON breaks after its leading `type`:
    // a delta is never parsed, so it spoils nothing; an event capture reads still is.
    let mut builder = TurnBuilder::new(LIMITS.keep);
    let delta = br#"{"type":"response.output_text.delta","delta":"a"#;
    assert!(matches!(builder.on_event(delta), Ok(false)));
    let done = br#"{"type":"response.output_item.done","item":{"#;
    assert!(builder.on_event(done).is_err());
    // An event capture reads is parsed whatever its key order.
    let created = br#"{"sequence_number":0,"response":{"id":"resp_A","store":false,"output":[]},"type":"response.created"}"#;
    let item = br#"{"output_index":0,"item":{"id":"msg_A","type":"message","role":"assistant","content":[]},"type":"response.output_item.done"}"#;
    assert!(matches!(builder.on_event(created), Ok(false)));
    assert!(matches!(builder.on_event(item), Ok(false)));
    let turn = builder.finish().unwrap();
    assert_eq!(shape(&turn), vec![("message", "msg_A")]);
    assert!(!turn.stored);
}
