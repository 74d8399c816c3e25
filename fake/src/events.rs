//! The SSE event sequence of one turn, in the order real streams use
//! (shared/reference/responses-api.md §6): created, in_progress, per output item added → item
//! events → done, then completed (or error + failed).

use serde_json::{json, Value};

use crate::encrypted;
use crate::ids::new_id;
use crate::state::StoredEvent;

/// How to distort the stream.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamOptions {
    /// Use a new id in every event before `output_item.done` (as some compatible servers do).
    pub rotate_ids: bool,
    /// End with `error` + `response.failed` after the second item.
    pub fail: bool,
}

/// The message of the `error` event of a failed stream.
pub(crate) const FAIL_MESSAGE: &str =
    "The fake was asked to fail this stream (x-fake-fail-stream).";

/// How many output items a failed stream emits before failing.
pub(crate) fn items_before_failure(total: usize) -> usize {
    total.min(2)
}

struct Builder {
    events: Vec<Value>,
}

impl Builder {
    fn push(&mut self, mut event: Value) {
        event["sequence_number"] = json!(self.events.len());
        self.events.push(event);
    }
}

fn prefix_of(id: &str) -> &str {
    id.split('_').next().unwrap_or("item")
}

/// The `output_item.added` copy of an item: in progress, without its results.
fn partial_item(item: &Value, id: &str) -> Value {
    let t = item.get("type").and_then(Value::as_str).unwrap_or("");
    let mut p = item.clone();
    p["id"] = json!(id);
    match t {
        "reasoning" => {
            if let Some(blob) = item.get("encrypted_content").and_then(Value::as_str) {
                p["encrypted_content"] = json!(encrypted::truncated(blob));
            }
            return p;
        }
        "message" => p["content"] = json!([]),
        "function_call" => p["arguments"] = json!(""),
        "image_generation_call" => {
            return json!({"id": id, "type": t, "status": "in_progress"});
        }
        _ => {}
    }
    if p.get("status").is_some() {
        p["status"] = json!("in_progress");
    }
    p
}

/// Item-specific events between `added` and `done`; `id` yields the id to use per event.
fn item_events(b: &mut Builder, index: usize, item: &Value, id: &mut dyn FnMut() -> String) {
    let t = item.get("type").and_then(Value::as_str).unwrap_or("");
    match t {
        "message" => {
            let part_full = item.pointer("/content/0").cloned().unwrap_or(json!({}));
            let text = part_full
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let empty =
                json!({"type": "output_text", "annotations": [], "logprobs": [], "text": ""});
            b.push(json!({"type": "response.content_part.added", "item_id": id(), "output_index": index, "content_index": 0, "part": empty}));
            for word in text.split_inclusive(' ') {
                b.push(json!({"type": "response.output_text.delta", "item_id": id(), "output_index": index, "content_index": 0, "delta": word, "logprobs": []}));
            }
            b.push(json!({"type": "response.output_text.done", "item_id": id(), "output_index": index, "content_index": 0, "text": text, "logprobs": []}));
            b.push(json!({"type": "response.content_part.done", "item_id": id(), "output_index": index, "content_index": 0, "part": part_full}));
        }
        "image_generation_call" => {
            b.push(json!({"type": "response.image_generation_call.in_progress", "output_index": index, "item_id": id()}));
            b.push(json!({"type": "response.image_generation_call.generating", "output_index": index, "item_id": id()}));
            b.push(json!({
                "type": "response.image_generation_call.partial_image", "output_index": index, "item_id": id(),
                "partial_image_index": 0, "partial_image_b64": item.get("result").cloned().unwrap_or(json!("")),
                "size": item.get("size"), "quality": item.get("quality"),
                "background": item.get("background"), "output_format": item.get("output_format"),
            }));
            b.push(json!({"type": "response.image_generation_call.completed", "output_index": index, "item_id": id()}));
        }
        "function_call" => {
            let args = item.get("arguments").cloned().unwrap_or(json!(""));
            b.push(json!({"type": "response.function_call_arguments.delta", "item_id": id(), "output_index": index, "delta": args}));
            b.push(json!({"type": "response.function_call_arguments.done", "item_id": id(), "output_index": index, "arguments": args, "name": item.get("name")}));
        }
        "web_search_call" => {
            for phase in ["in_progress", "searching", "completed"] {
                b.push(json!({"type": format!("response.web_search_call.{phase}"), "output_index": index, "item_id": id()}));
            }
        }
        _ => {}
    }
}

/// All events of a streamed turn. `response` is the final Response object (completed, or
/// failed with partial output when `opts.fail`).
pub(crate) fn turn_events(response: &Value, opts: StreamOptions) -> Vec<StoredEvent> {
    let mut b = Builder { events: Vec::new() };
    let mut start = response.clone();
    start["status"] = json!("in_progress");
    start["output"] = json!([]);
    start["usage"] = Value::Null;
    start["error"] = Value::Null;
    b.push(json!({"type": "response.created", "response": start}));
    b.push(json!({"type": "response.in_progress", "response": start}));
    let output = response
        .get("output")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (index, item) in output.iter().enumerate() {
        let final_id = item
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut id = || {
            if opts.rotate_ids {
                new_id(prefix_of(&final_id))
            } else {
                final_id.clone()
            }
        };
        let added_id = id();
        b.push(json!({"type": "response.output_item.added", "output_index": index, "item": partial_item(item, &added_id)}));
        item_events(&mut b, index, item, &mut id);
        b.push(json!({"type": "response.output_item.done", "output_index": index, "item": item}));
    }
    if opts.fail {
        b.push(json!({"type": "error", "error": {"type": "server_error", "code": "server_error", "message": FAIL_MESSAGE, "param": null}}));
        b.push(json!({"type": "response.failed", "response": response}));
    } else {
        b.push(json!({"type": "response.completed", "response": response}));
    }
    b.events.into_iter().map(stored).collect()
}

/// An event's leading keys in the order the API writes them (most recordings in
/// `../shared/fixtures`: `{"type":…,"sequence_number":…,"item_id":…,"output_index":…,
/// "content_index":…,"delta":…}`, `{"type":…,"sequence_number":…,"output_index":…,"item":…}`;
/// one recording, a background stream resumed with `starting_after`, has `type` first and the
/// rest in another order); its payload follows.
const EVENT_KEY_ORDER: [&str; 8] = [
    "type",
    "sequence_number",
    "item_id",
    "output_index",
    "content_index",
    "summary_index",
    "annotation_index",
    "partial_image_index",
];

/// Serialize an event in the API's key order (`EVENT_KEY_ORDER`).
fn stored(e: Value) -> StoredEvent {
    let sequence_number = e
        .get("sequence_number")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let event_type = e
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut data = String::new();
    match &e {
        Value::Object(map) => write_object(map, &EVENT_KEY_ORDER, &mut data),
        other => write_in_api_order(other, &mut data),
    }
    StoredEvent {
        sequence_number,
        event_type,
        data,
    }
}

/// `value` as JSON with each object's `id` and `type` first, as the API writes a response and
/// its items (`{"id":"msg_…","type":"message",…}`).
fn write_in_api_order(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => write_object(map, &["id", "type"], out),
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_in_api_order(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// An object with the members `first` names first, in that order, then the others in the
/// map's order; its values as `write_in_api_order` writes them.
fn write_object(map: &serde_json::Map<String, Value>, first: &[&str], out: &mut String) {
    let leading = first.iter().filter_map(|k| map.get_key_value(*k));
    let rest = map.iter().filter(|(k, _)| !first.contains(&k.as_str()));
    out.push('{');
    for (n, (k, v)) in leading.chain(rest).enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(k.as_str()).to_string());
        out.push(':');
        write_in_api_order(v, out);
    }
    out.push('}');
}

/// SSE framing of one event.
pub(crate) fn frame(e: &StoredEvent) -> String {
    format!("event: {}\ndata: {}\n\n", e.event_type, e.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_and_order() {
        let resp = json!({"id": "resp_1", "status": "completed", "output": [
            {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "abcdefgh"},
            {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "a b"}]},
        ]});
        let ev = turn_events(&resp, StreamOptions::default());
        let types: Vec<&str> = ev.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types[0], "response.created");
        assert_eq!(types[2], "response.output_item.added");
        assert!(ev[2].data.contains("\"encrypted_content\":\"abcd\""));
        assert_eq!(types.last().copied(), Some("response.completed"));
        assert!(ev
            .iter()
            .enumerate()
            .all(|(i, e)| e.sequence_number == i as u64));
        assert!(ev[1]
            .data
            .starts_with(r#"{"type":"response.in_progress","sequence_number":1,"#));
        assert!(ev
            .iter()
            .all(|e| serde_json::from_str::<Value>(&e.data).is_ok()));
        // An event's ids and indexes come before its payload, as the API writes them.
        let data_of = |ty: &str| {
            ev.iter()
                .find(|e| e.event_type == ty)
                .map(|e| e.data.as_str())
                .unwrap_or_default()
        };
        let done = data_of("response.output_item.done");
        assert!(
            done.starts_with(
                r#"{"type":"response.output_item.done","sequence_number":3,"output_index":0,"item":{"id":"rs_1","#
            ),
            "{done}"
        );
        let delta = data_of("response.output_text.delta");
        assert!(
            delta.contains(r#","item_id":"msg_1","output_index":1,"content_index":0,"delta":"#),
            "{delta}"
        );
        // Objects open with `id` and `type`, as the API writes them.
        let completed = &ev[ev.len() - 1].data;
        assert!(
            completed.contains(r#""response":{"id":"resp_1","#),
            "{completed}"
        );
        assert!(
            completed.contains(r#"[{"id":"rs_1","type":"reasoning","#),
            "{completed}"
        );
        assert!(
            completed.contains(r#"{"type":"output_text","#),
            "{completed}"
        );
        assert_eq!(
            types
                .iter()
                .filter(|t| **t == "response.output_text.delta")
                .count(),
            2
        );
    }

    #[test]
    fn rotation_changes_ids_before_done() {
        let resp = json!({"id": "resp_1", "output": [{"id": "fc_final", "type": "function_call", "status": "completed", "call_id": "call_1", "name": "f", "arguments": "{}"}]});
        let ev = turn_events(
            &resp,
            StreamOptions {
                rotate_ids: true,
                fail: false,
            },
        );
        assert!(!ev[2].data.contains("fc_final"));
        assert!(ev[3].data.contains("\"item_id\":\"fc_"));
        assert!(!ev[3].data.contains("fc_final"));
        let done = ev
            .iter()
            .find(|e| e.event_type == "response.output_item.done");
        assert!(done.is_some_and(|d| d.data.contains("fc_final")));
    }
}
