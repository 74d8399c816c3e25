//! Reading an upstream refusal: which of the API's errors it is, and what it names.
//!
//! The texts are the API's own (`fake/src/errors.rs` reproduces them; the E-numbers follow the
//! project's reference of the API's errors). rethread acts on a few of them: a missing reasoning
//! item it can insert (E1), and a refusal of a request it changed, which it answers by sending
//! the client's own bytes (see `create.rs`). The kind is a fixed label for logs and metrics;
//! nothing of the message itself becomes a label.

use std::borrow::Cow;

use serde::Deserialize;

/// Statuses by which the upstream refuses a request for its content: a changed request refused
/// so may be one rethread broke. Others (401, 403, 429, 5xx) say nothing about the content.
pub fn is_content_refusal(status: u16) -> bool {
    matches!(status, 400 | 404 | 409 | 413 | 422)
}

/// Which refusal an error is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// E1: `item` was sent without its reasoning item `reasoning`.
    MissingReasoning { item: String, reasoning: String },
    /// E1b: the same in the wording that names no reasoning item (Azure, newer models).
    MissingReasoningUnnamed,
    /// E2 (and E12, E13): the reasoning item `id` without its following item.
    MissingFollower { id: String },
    /// E3 / E3b: an item the server could not find.
    NotFound,
    /// E4: an id sent twice, or an item the chain or conversation already holds sent again.
    Duplicate { id: String },
    /// E5: a call without its output.
    NoToolOutput,
    /// E6: an output whose call (`call_id`) is not in the request.
    NoToolCall { call_id: String },
    /// E14: `include` asked for encrypted reasoning from a model that does not reason.
    EncryptedUnsupported,
    /// E15: reasoning items sent to a model that does not reason.
    ReasoningUnsupported,
    /// E16: a reasoning item without `summary`.
    MissingSummary,
    /// N3: a reasoning item with a non-empty `content` (`array_above_max_length`).
    ReasoningContent,
    /// N4: an output-only key sent back (`unknown_parameter` on an input item's key).
    UnknownParameter,
    /// N5: an id longer than the API's 64 characters (`string_above_max_length`).
    TooLong { field: LongField },
    /// N12: a value the API does not know in an item's `action.type` (`invalid_value`).
    InvalidAction,
    /// E9 (N6): the server does not hold the request's `previous_response_id` (unknown, expired,
    /// or a `store: false` chain on another socket).
    PreviousNotFound,
    /// Anything else, or a body that is not the API's error.
    Other,
}

/// Which field of an input item was too long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongField {
    CallId,
    Id,
}

impl Refusal {
    /// Every label `label` can return.
    pub const LABELS: [&'static str; 15] = [
        "missing_reasoning",
        "missing_reasoning_unnamed",
        "missing_follower",
        "not_found",
        "duplicate",
        "call_pairing",
        "encrypted_unsupported",
        "reasoning_unsupported",
        "missing_summary",
        "reasoning_content",
        "unknown_parameter",
        "too_long",
        "invalid_action",
        "previous_not_found",
        "other",
    ];

    /// A fixed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MissingReasoning { .. } => "missing_reasoning",
            Self::MissingReasoningUnnamed => "missing_reasoning_unnamed",
            Self::MissingFollower { .. } => "missing_follower",
            Self::NotFound => "not_found",
            Self::Duplicate { .. } => "duplicate",
            Self::NoToolOutput | Self::NoToolCall { .. } => "call_pairing",
            Self::EncryptedUnsupported => "encrypted_unsupported",
            Self::ReasoningUnsupported => "reasoning_unsupported",
            Self::MissingSummary => "missing_summary",
            Self::ReasoningContent => "reasoning_content",
            Self::UnknownParameter => "unknown_parameter",
            Self::TooLong { .. } => "too_long",
            Self::InvalidAction => "invalid_action",
            Self::PreviousNotFound => "previous_not_found",
            Self::Other => "other",
        }
    }

    /// Whether the refusal names an input item's field that `fields.rs` edits (N3, N4, N5, N12).
    pub fn asks_for_field_edit(&self) -> bool {
        matches!(
            self,
            Self::ReasoningContent
                | Self::UnknownParameter
                | Self::TooLong { .. }
                | Self::InvalidAction
        )
    }

    /// Whether the refusal says the request's model does not reason.
    pub fn model_does_not_reason(&self) -> bool {
        matches!(
            self,
            Self::EncryptedUnsupported | Self::ReasoningUnsupported
        )
    }
}

/// An upstream error as rethread reads it: what it is, and its `code` and `param` for the log
/// (never its message, which may quote the request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamError {
    pub refusal: Refusal,
    pub code: Option<String>,
    pub param: Option<String>,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    param: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Body<'a> {
    /// `{"error":{…}}` (HTTP bodies and the real stream's `error` event); absent in the
    /// SPEC's flat `error` event, whose fields are then at the top.
    #[serde(borrow, default)]
    error: Option<Fields<'a>>,
    /// `{"detail":"…"}`, as some Responses servers (the ChatGPT Codex backend) write a refusal:
    /// the message alone. Any other `detail` (a list of validation errors) is not a message.
    #[serde(borrow, default)]
    detail: Option<&'a serde_json::value::RawValue>,
    #[serde(flatten, borrow)]
    flat: Fields<'a>,
}

/// Reads an error body (HTTP) or an `error` event (WebSocket, SSE). Never fails: what is not
/// the API's error is `Refusal::Other`.
pub fn read(body: &[u8]) -> UpstreamError {
    let Ok(parsed) = serde_json::from_slice::<Body<'_>>(body) else {
        return UpstreamError {
            refusal: Refusal::Other,
            code: None,
            param: None,
        };
    };
    let detail = parsed
        .detail
        .and_then(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok());
    let mut fields = parsed.error.unwrap_or(parsed.flat);
    if fields.message.is_none() {
        fields.message = detail;
    }
    let refusal = match (fields.code.as_deref(), fields.param.as_deref()) {
        (Some("previous_response_not_found"), _) => Some(Refusal::PreviousNotFound),
        (Some(code), Some(param)) => by_code(code, param),
        _ => None,
    };
    UpstreamError {
        refusal: refusal
            .or_else(|| fields.message.as_deref().map(classify))
            .unwrap_or(Refusal::Other),
        code: fields.code.map(Cow::into_owned),
        param: fields.param.map(Cow::into_owned),
    }
}

/// The schema refusals, by their `code` and the input item's field in `param`
/// (`input[N].content`, `input[N].call_id`, `input[N].action.type`).
fn by_code(code: &str, param: &str) -> Option<Refusal> {
    let field = param
        .strip_prefix("input[")
        .and_then(|rest| rest.split_once("]."))
        .filter(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()))
        .map(|(_, field)| field)?;
    match (code, field) {
        ("array_above_max_length", "content") => Some(Refusal::ReasoningContent),
        ("unknown_parameter", _) => Some(Refusal::UnknownParameter),
        ("string_above_max_length", "call_id") => Some(Refusal::TooLong {
            field: LongField::CallId,
        }),
        ("string_above_max_length", "id") => Some(Refusal::TooLong {
            field: LongField::Id,
        }),
        ("invalid_value", "action.type") => Some(Refusal::InvalidAction),
        _ => None,
    }
}

fn classify(message: &str) -> Refusal {
    if let Some((item, reasoning)) = missing_reasoning(message) {
        return Refusal::MissingReasoning { item, reasoning };
    }
    let has = |needle: &str| message.contains(needle);
    if message.starts_with("Item '")
        && has("was provided without its required preceding item of type 'reasoning'")
    {
        Refusal::MissingReasoningUnnamed
    } else if let Some(id) = message
        .strip_prefix("Item '")
        .and_then(|rest| {
            rest.split_once(
                "' of type 'reasoning' was provided without its required following item",
            )
        })
        .map(|(id, _)| id.to_owned())
    {
        Refusal::MissingFollower { id }
    } else if message.starts_with("Item with id '") && has("not found") {
        Refusal::NotFound
    } else if (message.starts_with("Previous response with id '") && has("not found"))
        || message == "Invalid previous_response_id."
    {
        Refusal::PreviousNotFound
    } else if let Some(rest) = message.strip_prefix("Duplicate item found with id ") {
        let id = rest
            .split(". ")
            .next()
            .unwrap_or(rest)
            .trim_end_matches('.');
        Refusal::Duplicate { id: id.to_owned() }
    } else if message.starts_with("No tool output found for ") {
        Refusal::NoToolOutput
    } else if let Some(call_id) = message
        .strip_prefix("No tool call found for ")
        .and_then(|rest| rest.rsplit_once(" with call_id "))
        .map(|(_, id)| id.trim_end_matches('.').to_owned())
    {
        Refusal::NoToolCall { call_id }
    } else if message.starts_with("Encrypted content is not supported with this model") {
        Refusal::EncryptedUnsupported
    } else if message.starts_with("Reasoning input items can only be provided to a reasoning") {
        Refusal::ReasoningUnsupported
    } else if message.starts_with("Missing required parameter: 'input[") && has("].summary'") {
        Refusal::MissingSummary
    } else {
        Refusal::Other
    }
}

/// The item and reasoning ids named by
/// `Item '<id>' of type '<type>' was provided without its required 'reasoning' item: '<rs>'.`
fn missing_reasoning(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("Item '")?;
    let (item, rest) = rest.split_once("' of type '")?;
    let (_, rest) = rest.split_once("' was provided without its required 'reasoning' item: '")?;
    let reasoning = rest
        .strip_suffix("'.")
        .or_else(|| rest.strip_suffix('\''))?;
    Some((item.to_owned(), reasoning.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(message: &str) -> Refusal {
        let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": "input", "code": null}});
        read(body.to_string().as_bytes()).refusal
    }

    #[test]
    fn a_detail_body_is_read_like_an_error_body() {
        let body = br#"{"detail":"Item with id 'rs_1' not found. Items are not persisted when `store` is set to false."}"#;
        assert_eq!(read(body).refusal, Refusal::NotFound);
        let list = br#"{"detail":[{"loc":["body"],"msg":"field required"}]}"#;
        assert_eq!(read(list).refusal, Refusal::Other);
    }

    #[test]
    fn schema_refusals_are_read_by_code_and_param() {
        let error = |code: &str, param: &str| {
            let body = serde_json::json!({"error": {"message": "m", "type": "invalid_request_error", "param": param, "code": code}});
            read(body.to_string().as_bytes()).refusal
        };
        assert_eq!(
            error("array_above_max_length", "input[3].content"),
            Refusal::ReasoningContent
        );
        assert_eq!(
            error("unknown_parameter", "input[1].status"),
            Refusal::UnknownParameter
        );
        assert_eq!(
            error("string_above_max_length", "input[2].call_id"),
            Refusal::TooLong {
                field: LongField::CallId
            }
        );
        assert_eq!(
            error("string_above_max_length", "input[0].id"),
            Refusal::TooLong {
                field: LongField::Id
            }
        );
        assert_eq!(
            error("invalid_value", "input[4].action.type"),
            Refusal::InvalidAction
        );
        // Not an input item's field: not one of these.
        assert_eq!(
            error("string_above_max_length", "previous_response_id"),
            Refusal::Other
        );
        assert_eq!(error("unknown_parameter", "temperature"), Refusal::Other);
    }

    #[test]
    fn the_missing_reasoning_error_is_read() {
        let body = br#"{"error":{"message":"Item 'ig_1' of type 'image_generation_call' was provided without its required 'reasoning' item: 'rs_1'.","type":"invalid_request_error","param":"input","code":null}}"#;
        let error = read(body);
        assert_eq!(
            error.refusal,
            Refusal::MissingReasoning {
                item: "ig_1".into(),
                reasoning: "rs_1".into()
            }
        );
        assert_eq!(error.param.as_deref(), Some("input"));
        assert_eq!(error.code, None);
    }

    #[test]
    fn every_error_of_the_catalogue_has_its_kind() {
        let cases = [
            ("Item 'rs_1' of type 'reasoning' was provided without its required following item.", "missing_follower"),
            ("Item 'msg_1' of type 'message' was provided without its required preceding item of type 'reasoning'", "missing_reasoning_unnamed"),
            ("Item with id 'rs_1' not found. Items are not persisted when `store` is set to false. Try again with `store` set to true, or remove this item from your input.", "not_found"),
            ("Item with id 'rs_1' not found.", "not_found"),
            ("Duplicate item found with id rs_1. Remove duplicate items from your input and try again.", "duplicate"),
            ("No tool output found for function call call_1.", "call_pairing"),
            ("No tool call found for function call output with call_id call_1.", "call_pairing"),
            ("Encrypted content is not supported with this model.", "encrypted_unsupported"),
            ("Reasoning input items can only be provided to a reasoning or computer use model. Remove reasoning items from your input and try again.", "reasoning_unsupported"),
            ("Missing required parameter: 'input[3].summary'.", "missing_summary"),
            ("Previous response with id 'resp_1' not found.", "previous_not_found"),
            ("Invalid previous_response_id.", "previous_not_found"),
            ("Rate limit reached", "other"),
        ];
        for (message, label) in cases {
            assert_eq!(refusal(message).label(), label, "{message}");
        }
    }

    #[test]
    fn every_label_is_listed_for_the_metrics() {
        let all = [
            Refusal::MissingReasoning {
                item: String::new(),
                reasoning: String::new(),
            },
            Refusal::MissingReasoningUnnamed,
            Refusal::MissingFollower { id: String::new() },
            Refusal::NotFound,
            Refusal::Duplicate { id: "fc_1".into() },
            Refusal::NoToolCall {
                call_id: String::new(),
            },
            Refusal::EncryptedUnsupported,
            Refusal::ReasoningUnsupported,
            Refusal::MissingSummary,
            Refusal::ReasoningContent,
            Refusal::UnknownParameter,
            Refusal::TooLong {
                field: LongField::Id,
            },
            Refusal::InvalidAction,
            Refusal::PreviousNotFound,
            Refusal::Other,
        ];
        let labels: Vec<&str> = all.iter().map(Refusal::label).collect();
        assert_eq!(labels, Refusal::LABELS);
    }

    #[test]
    fn a_duplicate_names_its_id() {
        assert_eq!(
            refusal("Duplicate item found with id fc_12. Remove duplicate items from your input and try again."),
            Refusal::Duplicate { id: "fc_12".into() }
        );
    }

    #[test]
    fn the_items_an_error_names_are_read() {
        assert_eq!(
            refusal(
                "Item 'rs_1' of type 'reasoning' was provided without its required following item."
            ),
            Refusal::MissingFollower { id: "rs_1".into() }
        );
        assert_eq!(
            refusal("No tool call found for function call output with call_id call_9."),
            Refusal::NoToolCall {
                call_id: "call_9".into()
            }
        );
    }

    #[test]
    fn flat_error_events_and_odd_bodies_are_read() {
        let event = br#"{"type":"error","code":"invalid_request_error","message":"Encrypted content is not supported with this model.","param":"include"}"#;
        let error = read(event);
        assert_eq!(error.refusal, Refusal::EncryptedUnsupported);
        assert_eq!(error.param.as_deref(), Some("include"));
        for body in [&b"not json"[..], b"{}", b"[1]", br#"{"error":"text"}"#] {
            assert_eq!(read(body).refusal, Refusal::Other);
        }
    }
}
