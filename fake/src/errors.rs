//! The API's error bodies, with the exact texts the real service returns.
//!
//! The proxy under test recognises upstream failures by these texts, so they must be byte-exact
//! (see shared/reference/responses-api.md §3.1).

use axum::http::StatusCode;
use serde::Serialize;

/// The inner error object, serialized with the real API's key order.
#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

/// The `{"detail": "…"}` body some Responses servers send instead (the ChatGPT Codex backend;
/// shared/reference/wild-failures-2026.md §3 item 7).
#[derive(Serialize)]
struct DetailBody<'a> {
    detail: &'a str,
}

/// The largest `id`, `call_id` or `previous_response_id` the API accepts, in characters (N5).
pub(crate) const MAX_ID_LEN: usize = 64;

/// `'a'`, `'a' and 'b'`, `'a', 'b', and 'c'`: the API's way of listing values.
fn quoted_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
    }
}

/// One error answer: HTTP status plus the `error` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        message: String,
        param: Option<&str>,
        code: Option<&'static str>,
    ) -> Self {
        ApiError {
            status,
            message,
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code,
        }
    }

    fn object(&self) -> ErrorObject<'_> {
        ErrorObject {
            message: &self.message,
            kind: self.kind,
            param: self.param.as_deref(),
            code: self.code,
        }
    }

    /// The `{"error":{"message","type","param","code"}}` body, keys in the API's order.
    pub(crate) fn body_string(&self) -> String {
        serde_json::to_string(&ErrorBody {
            error: self.object(),
        })
        .unwrap_or_default()
    }

    /// The `{"detail": "<message>"}` body (`FakeOptions::detail_errors`).
    pub(crate) fn detail_string(&self) -> String {
        serde_json::to_string(&DetailBody {
            detail: &self.message,
        })
        .unwrap_or_default()
    }

    /// The inner `{"message","type","param","code"}` object as JSON text.
    pub(crate) fn object_string(&self) -> String {
        serde_json::to_string(&self.object()).unwrap_or_default()
    }

    /// The API's answer when it fails (`Faults::error_rate`): 500, type `server_error`.
    pub(crate) fn server_error() -> Self {
        ApiError {
            kind: "server_error",
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request. Sorry about that!".into(),
                None,
                None,
            )
        }
    }

    pub(crate) fn missing_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key.".into(),
            None,
            None,
        )
    }

    pub(crate) fn bad_json() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)".into(),
            None,
            None,
        )
    }

    pub(crate) fn invalid_type(param: &str, expected: &str, got: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid type for '{param}': expected {expected}, but got {got} instead."),
            Some(param),
            Some("invalid_type"),
        )
    }

    /// A request the fake itself cannot honour (bad `x-fake-*` header).
    pub(crate) fn fake_usage(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, None, None)
    }

    pub(crate) fn not_found_response(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("Response with id '{id}' not found."),
            None,
            None,
        )
    }

    /// A `conversation` the tenant does not have (unknown, or another tenant's). The wording
    /// is the fake's assumption, formed like the response lookup's: no report records it.
    pub(crate) fn conversation_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("Conversation with id '{id}' not found."),
            Some("conversation"),
            None,
        )
    }

    /// `conversation` together with `previous_response_id`, which the API documents as not
    /// combinable. The wording is the fake's assumption: no report records it.
    pub(crate) fn conversation_with_previous() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Mutually exclusive parameters: Ensure you are only providing one of: 'previous_response_id' or 'conversation'.".into(),
            None,
            None,
        )
    }

    /// E1
    pub(crate) fn missing_reasoning(id: &str, kind: &str, rs: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Item '{id}' of type '{kind}' was provided without its required 'reasoning' item: '{rs}'."),
            Some("input"),
            None,
        )
    }

    /// E1b: E1 in Azure's wording (no trailing period, names no reasoning item).
    pub(crate) fn missing_preceding_reasoning(id: &str, kind: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Item '{id}' of type '{kind}' was provided without its required preceding item of type 'reasoning'"),
            Some("input"),
            None,
        )
    }

    /// E2
    pub(crate) fn missing_follower(rs: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Item '{rs}' of type 'reasoning' was provided without its required following item."
            ),
            Some("input"),
            None,
        )
    }

    /// E3
    pub(crate) fn not_persisted(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("Item with id '{id}' not found. Items are not persisted when `store` is set to false. Try again with `store` set to true, or remove this item from your input."),
            Some("input"),
            None,
        )
    }

    /// E3b
    pub(crate) fn item_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("Item with id '{id}' not found."),
            Some("input"),
            None,
        )
    }

    /// E4
    pub(crate) fn duplicate(id: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Duplicate item found with id {id}. Remove duplicate items from your input and try again."),
            Some("input"),
            None,
        )
    }

    /// E5; `what` names the call type in words: "function call", "custom tool call", …
    pub(crate) fn no_tool_output(what: &str, call_id: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("No tool output found for {what} {call_id}."),
            Some("input"),
            None,
        )
    }

    /// E6; `what` names the output type in words: "function call output", …
    pub(crate) fn no_tool_call(what: &str, call_id: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("No tool call found for {what} with call_id {call_id}."),
            Some("input"),
            None,
        )
    }

    /// E7
    pub(crate) fn bad_prefix(index: usize, id: &str, prefix: &str) -> Self {
        let param = format!("input[{index}].id");
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid '{param}': '{id}'. Expected an ID that begins with '{prefix}'."),
            Some(&param),
            Some("invalid_value"),
        )
    }

    /// E8, encrypted content of another tenant.
    pub(crate) fn foreign_encrypted(rs: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("The encrypted content for item {rs} could not be verified. Reason: Encrypted content organization_id did not match the target organization."),
            None,
            Some("invalid_encrypted_content"),
        )
    }

    /// E8, unreadable encrypted content.
    pub(crate) fn undecryptable(rs: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("The encrypted content for item {rs} could not be verified. Reason: Encrypted content could not be decrypted or parsed."),
            None,
            Some("invalid_encrypted_content"),
        )
    }

    /// E14
    pub(crate) fn encrypted_unsupported() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Encrypted content is not supported with this model.".into(),
            Some("include"),
            None,
        )
    }

    /// E15
    pub(crate) fn reasoning_unsupported() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Reasoning input items can only be provided to a reasoning or computer use model. Remove reasoning items from your input and try again.".into(),
            Some("input"),
            None,
        )
    }

    /// E16; `param` is e.g. `input[3].summary`.
    pub(crate) fn missing_parameter(param: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Missing required parameter: '{param}'."),
            Some(param),
            Some("missing_required_parameter"),
        )
    }

    /// E9
    pub(crate) fn previous_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Previous response with id '{id}' not found."),
            Some("previous_response_id"),
            Some("previous_response_not_found"),
        )
    }

    /// N5: an `id`, `call_id` or `previous_response_id` longer than [`MAX_ID_LEN`]; `param` is
    /// e.g. `input[3].call_id`, `len` the length in characters.
    pub(crate) fn string_too_long(param: &str, len: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid '{param}': string too long. Expected a string with maximum length {MAX_ID_LEN}, but got a string with length {len} instead."),
            Some(param),
            Some("string_above_max_length"),
        )
    }

    /// N3: an array longer than `max` (a reasoning item's `content`, `max` 0).
    pub(crate) fn array_too_long(param: &str, max: usize, len: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid '{param}': array too long. Expected an array with maximum length {max}, but got an array with length {len} instead."),
            Some(param),
            Some("array_above_max_length"),
        )
    }

    /// N4: a key the API does not take, e.g. an output-only `status` sent as `null`.
    pub(crate) fn unknown_parameter(param: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Unknown parameter: '{param}'."),
            Some(param),
            Some("unknown_parameter"),
        )
    }

    /// N12 (and E11's form): a value outside an enumeration.
    pub(crate) fn invalid_enum_value(param: &str, value: &str, supported: &[&str]) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Invalid value: '{value}'. Supported values are: {}.",
                quoted_list(supported)
            ),
            Some(param),
            Some("invalid_value"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_quoted_like_the_api() {
        assert_eq!(
            quoted_list(&["output_text", "refusal"]),
            "'output_text' and 'refusal'"
        );
        assert_eq!(
            quoted_list(&["search", "open_page", "find_in_page"]),
            "'search', 'open_page', and 'find_in_page'"
        );
    }

    #[test]
    fn detail_body_carries_the_message_only() {
        let err = ApiError::unknown_parameter("input[1].status");
        assert_eq!(
            err.detail_string(),
            r#"{"detail":"Unknown parameter: 'input[1].status'."}"#
        );
    }
}
