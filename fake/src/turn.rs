//! Creating one turn from a `response.create` body: validate, generate, remember.
//!
//! Shared by `POST …/responses` and WebSocket mode, so both are exactly as strict. The turn is
//! recorded before anything is sent, so a follow-up racing the end of a stream still finds it —
//! unless its answer is to be cut (`Faults::reset_rate`): then it is never recorded, as if the
//! server had failed.
//! A model that does not reason (`FakeOptions::reasons`) gets its shape without reasoning items.
//! With `FakeOptions::force_store_false` every request is taken as `store:false`, whatever it
//! says, as behind a gateway that forces it (wild-failures-2026.md N8).
//!
//! A request may name a server-side `conversation` (a string id or `{"id": …}`) of its tenant,
//! not together with `previous_response_id`; both are checked before the input. Its items count
//! as already sent (`validate`), and a recorded turn's input and output are appended to it, so
//! re-sending them is E4 (wild-failures-2026.md N7 (c)). A cut turn is never appended.

use std::collections::HashSet;

use axum::http::HeaderMap;
use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::events::{self, StreamOptions};
use crate::generate::{self, TurnRequest};
use crate::ids::new_id;
use crate::input::flatten;
use crate::kinds;
use crate::state::{Shared, StoredEvent, Tenant, Turn};
use crate::validate::{self, Request};

/// A created turn, ready to be sent.
pub(crate) struct Created {
    /// The new response's id.
    pub id: String,
    pub response: Value,
    pub events: Vec<StoredEvent>,
    pub stream: bool,
}

/// The tenant key of a request: credentials plus organization and project.
pub(crate) fn tenant_key(headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let key = get("authorization")
        .or_else(|| get("api-key"))
        .filter(|k| !k.trim().is_empty())?;
    let org = get("openai-organization").unwrap_or_default();
    let project = get("openai-project").unwrap_or_default();
    Some(format!("{key}|{org}|{project}"))
}

/// How the API names a JSON value's type in `invalid_type` errors.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The request's input as a flat item list (a string becomes one user message).
fn input_items(body: &Value) -> Result<Vec<Value>, ApiError> {
    match body.get("input") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"role": "user", "content": s})]),
        Some(v @ Value::Array(_)) => {
            let mut out = Vec::new();
            flatten(v, &mut out);
            Ok(out)
        }
        Some(other) => Err(ApiError::invalid_type(
            "input",
            "one of a string or array of input items",
            json_kind(other),
        )),
    }
}

fn header_flag(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

/// The id the request's `conversation` names: a string, or an object with a string `id`. The
/// wording of the type errors follows the other parameters'; it is the fake's assumption.
fn conversation_id(body: &Value) -> Result<Option<&str>, ApiError> {
    match body.get("conversation") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => Ok(Some(id)),
        Some(Value::Object(conv)) => match conv.get("id") {
            Some(Value::String(id)) => Ok(Some(id)),
            None | Some(Value::Null) => Err(ApiError::missing_parameter("conversation.id")),
            Some(other) => Err(ApiError::invalid_type(
                "conversation.id",
                "a string",
                json_kind(other),
            )),
        },
        Some(other) => Err(ApiError::invalid_type(
            "conversation",
            "one of a string or an object",
            json_kind(other),
        )),
    }
}

/// The items conversation `id` holds, when it is one of `tenant`'s.
fn conversation_items<'t>(tenant: &'t Tenant, id: &str) -> Result<&'t [Value], ApiError> {
    tenant
        .conversation(id)
        .ok_or_else(|| ApiError::conversation_not_found(id))
}

/// A validated, generated turn not yet recorded.
pub(crate) struct Prepared {
    pub created: Created,
    turn: Turn,
    /// The conversation the turn is appended to when recorded.
    conversation: Option<String>,
}

impl Prepared {
    /// Record the turn for `tenant`, so lookups and follow-ups find it, and append it to its
    /// conversation.
    pub(crate) fn remember(self, shared: &Shared, tenant: &str) -> Created {
        let mut tenants = shared.tenants();
        let state = tenants.entry(tenant.to_string()).or_default();
        if let Some(conversation) = &self.conversation {
            state.extend_conversation(conversation, &self.turn);
        }
        state.remember(self.created.id.clone(), self.turn);
        self.created
    }
}

/// Validate, generate and record a turn for `tenant`. `local` holds the response ids made earlier
/// on the same WebSocket (`None` over HTTP), whose `store:false` turns may be chained there (N6).
pub(crate) fn create(
    shared: &Shared,
    tenant: &str,
    headers: &HeaderMap,
    body: &Value,
    local: Option<&HashSet<String>>,
) -> Result<Created, ApiError> {
    prepare(shared, tenant, headers, body, local).map(|p| p.remember(shared, tenant))
}

/// Validate and generate a turn for `tenant` without recording it (see [`create`]).
pub(crate) fn prepare(
    shared: &Shared,
    tenant: &str,
    headers: &HeaderMap,
    body: &Value,
    local: Option<&HashSet<String>>,
) -> Result<Prepared, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_json());
    }
    let items = input_items(body)?;
    let previous = match body.get("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(ApiError::invalid_type(
                "previous_response_id",
                "a string",
                json_kind(other),
            ))
        }
    };
    let conversation = conversation_id(body)?;
    if conversation.is_some() && previous.is_some() {
        return Err(ApiError::conversation_with_previous());
    }
    let req = TurnRequest {
        body,
        tenant_key: tenant,
        image_bytes: shared.opts.image_bytes,
        force_store_false: shared.opts.force_store_false,
        input_len: body.get("input").map(|v| v.to_string().len()).unwrap_or(0),
        conversation,
    };
    let shape = match headers.get("x-fake-shape").and_then(|v| v.to_str().ok()) {
        Some(s) => kinds::parse_shape(s).map_err(ApiError::fake_usage)?,
        None => {
            let last = items
                .last()
                .and_then(|v| v.get("type"))
                .and_then(Value::as_str);
            generate::default_shape(&req, last)
        }
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let reasons = shared.opts.reasons(model);
    let shape = match reasons {
        true => shape,
        false => generate::without_reasoning(shape),
    };
    let stream_opts = StreamOptions {
        rotate_ids: header_flag(headers, "x-fake-rotate-ids"),
        fail: header_flag(headers, "x-fake-fail-stream"),
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);

    // Validate under the lock, generate outside it (images can be large), then record.
    {
        let mut tenants = shared.tenants();
        let state: &Tenant = tenants.entry(tenant.to_string()).or_default();
        let held = conversation
            .map(|id| conversation_items(state, id))
            .transpose()?;
        let vreq = Request {
            tenant_key: tenant,
            previous_response_id: previous,
            store: req.store(),
            reasons,
            include_encrypted: req.includes_encrypted(),
            azure_wording: shared.opts.azure_wording(model),
            local,
            conversation: held,
        };
        validate::validate(&vreq, &items, state)?;
    }

    let id = new_id("resp");
    let mut output = generate::build_output(&shape, &req);
    let mut response = generate::response_object(&id, &req, &output);
    let failed = stream && stream_opts.fail;
    if failed {
        output.truncate(events::items_before_failure(output.len()));
        response["output"] = json!(output);
        response["status"] = json!("failed");
        response["error"] = json!({"code": "server_error", "message": events::FAIL_MESSAGE});
    }
    let events = events::turn_events(
        &response,
        StreamOptions {
            fail: failed,
            ..stream_opts
        },
    );
    let turn = Turn {
        response: response.clone(),
        stored: req.store(),
        deleted: false,
        previous_response_id: previous.map(str::to_string),
        input: items,
        items: generate::records(&output),
        output,
        events: events.clone(),
    };
    Ok(Prepared {
        created: Created {
            id,
            response,
            events,
            stream,
        },
        turn,
        conversation: conversation.map(str::to_string),
    })
}
