//! Builds one turn: the output items for a shape and the Response object around them.
//!
//! Shapes follow real recordings (shared/reference/responses-api.md §2.3); each item carries the
//! fields real clients read, with fresh ids of the right prefix.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};

use crate::encrypted;
use crate::ids::{new_call_id, new_id};
use crate::kinds::{self, Kind};
use crate::state::ItemRecord;

/// The assistant text of every generated message.
pub(crate) const MESSAGE_TEXT: &str = "This is a fake answer from the strict fake.";

/// Inputs of generation taken from the request.
pub(crate) struct TurnRequest<'a> {
    pub body: &'a Value,
    pub tenant_key: &'a str,
    pub image_bytes: usize,
    pub input_len: usize,
    /// Take the request as `store:false` whatever it says (`FakeOptions::force_store_false`).
    pub force_store_false: bool,
    /// The id of the request's `conversation`, echoed as `{"id": …}`.
    pub conversation: Option<&'a str>,
}

impl TurnRequest<'_> {
    /// The effective `store`: the request's (default true), unless forced to false.
    pub(crate) fn store(&self) -> bool {
        !self.force_store_false
            && self
                .body
                .get("store")
                .and_then(Value::as_bool)
                .unwrap_or(true)
    }

    /// Whether `include` asks for `reasoning.encrypted_content`.
    pub(crate) fn includes_encrypted(&self) -> bool {
        self.body
            .get("include")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .any(|v| v.as_str() == Some("reasoning.encrypted_content"))
            })
    }

    fn wants_encrypted(&self) -> bool {
        self.includes_encrypted() || !self.store()
    }

    fn tools(&self) -> &[Value] {
        self.body
            .get("tools")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn has_tool(&self, types: &[&str]) -> bool {
        self.tools().iter().any(|t| {
            t.get("type")
                .and_then(Value::as_str)
                .is_some_and(|ty| types.contains(&ty))
        })
    }

    fn tool_name(&self, tool_type: &str, fallback: &str) -> String {
        self.tools()
            .iter()
            .filter(|t| t.get("type").and_then(Value::as_str) == Some(tool_type))
            .find_map(|t| t.get("name").and_then(Value::as_str))
            .unwrap_or(fallback)
            .to_string()
    }
}

/// Tools the client executes and the call kind (`x-fake-shape` code) a turn answers them with,
/// in order of preference. A `tool_search` tool counts only with `execution: "client"`.
const CLIENT_TOOLS: &[(&str, &str)] = &[
    ("function", "fc"),
    ("custom", "ct"),
    ("local_shell", "lsh"),
    ("shell", "sh"),
    ("apply_patch", "apc"),
    ("tool_search", "tsc"),
];

/// The call kind for the first client-executed tool of the request.
fn client_call(req: &TurnRequest<'_>) -> Option<&'static str> {
    CLIENT_TOOLS.iter().find_map(|(tool, code)| {
        let offered = req.tools().iter().any(|t| {
            t.get("type").and_then(Value::as_str) == Some(*tool)
                && (*tool != "tool_search"
                    || t.get("execution").and_then(Value::as_str) == Some("client"))
        });
        offered.then_some(*code)
    })
}

/// The shape used when the request has no `x-fake-shape` header: a call of the first
/// client-executed tool, unless the input ends with a tool's output (then a message).
pub(crate) fn default_shape(req: &TurnRequest<'_>, last_input_type: Option<&str>) -> Vec<Kind> {
    let answered = last_input_type.is_some_and(|t| t.ends_with("_output"));
    let call = client_call(req).filter(|_| !answered);
    let codes: Vec<&str> = if req.has_tool(&["image_generation"]) {
        vec!["rs", "ig", "msg"]
    } else if let Some(code) = call {
        vec!["rs", code]
    } else if req.has_tool(&["web_search", "web_search_preview"]) {
        vec!["rs", "ws", "rs", "msg"]
    } else {
        vec!["rs", "msg"]
    };
    codes.iter().filter_map(|c| kinds::by_code(c)).collect()
}

/// `shape` as a model that does not reason produces it: without reasoning items, and a message
/// when nothing else is left.
pub(crate) fn without_reasoning(shape: Vec<Kind>) -> Vec<Kind> {
    let rest: Vec<Kind> = shape
        .into_iter()
        .filter(|k| *k != kinds::REASONING)
        .collect();
    if rest.is_empty() {
        vec![kinds::MESSAGE]
    } else {
        rest
    }
}

/// Raw bytes of the fake image: a PNG signature followed by a pattern.
fn image_base64(len: usize) -> String {
    let mut raw: Vec<u8> = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a].to_vec();
    raw.extend((0..len).map(|i| (i % 251) as u8));
    raw.truncate(len);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// One complete output item of `kind`.
fn build_item(kind: Kind, req: &TurnRequest<'_>) -> Value {
    let id = new_id(kind.prefix);
    let call_id = new_call_id();
    match kind.code {
        "rs" => {
            let mut item = json!({"id": id, "type": "reasoning", "summary": []});
            if req.wants_encrypted() {
                item["encrypted_content"] = json!(encrypted::issue(req.tenant_key, &id));
            }
            item
        }
        "msg" => json!({
            "id": id, "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": MESSAGE_TEXT}],
        }),
        "fc" => json!({
            "id": id, "type": "function_call", "status": "completed", "call_id": call_id,
            "name": req.tool_name("function", "get_weather"), "arguments": "{}",
        }),
        "ct" => json!({
            "id": id, "type": "custom_tool_call", "status": "completed", "call_id": call_id,
            "name": req.tool_name("custom", "fake_tool"), "input": "fake input",
        }),
        "ig" => json!({
            "id": id, "type": "image_generation_call", "status": "completed",
            "result": image_base64(req.image_bytes), "revised_prompt": "A fake image.",
            "size": "1024x1024", "quality": "low", "background": "opaque", "output_format": "png",
        }),
        "ws" => json!({
            "id": id, "type": "web_search_call", "status": "completed",
            "action": {"type": "search", "query": "fake query"},
        }),
        "fs" => {
            json!({"id": id, "type": "file_search_call", "status": "completed", "queries": [], "results": null})
        }
        "ci" => json!({
            "id": id, "type": "code_interpreter_call", "status": "completed", "code": "print(1)",
            "container_id": new_id("cntr"), "outputs": [],
        }),
        "mcpl" => json!({
            "id": id, "type": "mcp_list_tools", "server_label": "fake", "error": null,
            "tools": [{"name": "echo", "description": null, "annotations": null, "input_schema": {"type": "object"}}],
        }),
        "mcp" => json!({
            "id": id, "type": "mcp_call", "status": "completed", "approval_request_id": null,
            "arguments": "{}", "error": null, "name": "echo", "output": "ok", "server_label": "fake",
        }),
        "mcpr" => {
            json!({"id": id, "type": "mcp_approval_request", "arguments": "{}", "name": "echo", "server_label": "fake"})
        }
        "lsh" => json!({
            "id": id, "type": "local_shell_call", "status": "completed", "call_id": call_id,
            "action": {"type": "exec", "command": ["ls"], "env": {}, "timeout_ms": null, "user": null, "working_directory": null},
        }),
        "sh" => json!({
            "id": id, "type": "shell_call", "status": "completed", "call_id": call_id,
            "action": {"commands": ["ls"], "timeout_ms": null, "max_output_length": null},
        }),
        "tsc" => json!({
            "id": id, "type": "tool_search_call", "status": "completed", "call_id": call_id,
            "execution": "client", "arguments": {"query": "fake tools"},
        }),
        _ => json!({
            "id": id, "type": "apply_patch_call", "status": "completed", "call_id": call_id,
            "operation": {"type": "create_file", "path": "fake.txt", "diff": "+fake\n"},
        }),
    }
}

/// Output items for `shape`.
pub(crate) fn build_output(shape: &[Kind], req: &TurnRequest<'_>) -> Vec<Value> {
    shape.iter().map(|k| build_item(*k, req)).collect()
}

/// Position, group and call id of each output item.
pub(crate) fn records(output: &[Value]) -> Vec<ItemRecord> {
    let mut group: Option<String> = None;
    let mut out = Vec::new();
    for (position, item) in output.iter().enumerate() {
        let s = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
        let id = s("id").unwrap_or_default();
        let kind = s("type").unwrap_or_default();
        let is_reasoning = kind == "reasoning";
        out.push(ItemRecord {
            id: id.clone(),
            group: if is_reasoning { None } else { group.clone() },
            kind,
            position,
            call_id: s("call_id"),
        });
        if is_reasoning {
            group = Some(id);
        }
    }
    out
}

/// Unix seconds, for `created_at`.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The Response object for `output` (status `completed`); with a `conversation`, it names it
/// (`"conversation": {"id": …}`), else the key is left out.
pub(crate) fn response_object(id: &str, req: &TurnRequest<'_>, output: &[Value]) -> Value {
    let input_tokens = (req.input_len / 4).max(1) as u64;
    let output_tokens = 10 * output.len() as u64 + 1;
    // As the API counts them: reasoning is part of the output, and nothing here is cached.
    let reasoning_tokens = 10
        * output
            .iter()
            .filter(|item| item["type"] == "reasoning")
            .count() as u64;
    let body = req.body;
    let mut response = json!({
        "id": id,
        "object": "response",
        "created_at": now(),
        "status": "completed",
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": body.get("instructions").cloned().unwrap_or(Value::Null),
        "model": body.get("model").cloned().unwrap_or(json!("gpt-fake")),
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": body.get("previous_response_id").cloned().unwrap_or(Value::Null),
        "store": req.store(),
        "tools": body.get("tools").cloned().unwrap_or(json!([])),
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": input_tokens + output_tokens,
        },
        "metadata": {},
    });
    if let Some(conversation) = req.conversation {
        response["conversation"] = json!({"id": conversation});
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_reasoning() {
        let output = vec![
            json!({"id": "mcpl_1", "type": "mcp_list_tools"}),
            json!({"id": "rs_1", "type": "reasoning"}),
            json!({"id": "mcp_1", "type": "mcp_call"}),
            json!({"id": "rs_2", "type": "reasoning"}),
            json!({"id": "msg_1", "type": "message"}),
        ];
        let recs = records(&output);
        let groups: Vec<Option<&str>> = recs.iter().map(|r| r.group.as_deref()).collect();
        assert_eq!(groups, vec![None, None, Some("rs_1"), None, Some("rs_2")]);
    }

    #[test]
    fn image_has_requested_size() {
        let b = image_base64(2048);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b)
            .unwrap_or_default();
        assert_eq!(raw.len(), 2048);
        assert_eq!(&raw[1..4], b"PNG");
    }
}
