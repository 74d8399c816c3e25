//! The strict checks of `POST /responses` input, in this order, first failure wins:
//!
//! 1. the schema (shared/reference/wild-failures-2026.md, rows N3, N4, N5, N12): first
//!    `previous_response_id` longer than 64 characters (N5), then each item in input order, and
//!    for one item: `id` longer than 64 (N5), `call_id` longer than 64 (N5), E16 (a full
//!    reasoning item without `summary`), a reasoning item with a non-empty `content` (N3),
//!    `status: null` (N4), a `web_search_call` whose `action.type` the API does not know (N12);
//! 2. E14: `include:["reasoning.encrypted_content"]` for a model that does not reason;
//! 3. E9, E7, E4 (previous response, id prefixes, duplicates), each over the whole input;
//! 4. E15: a reasoning item (typed, or a reference to a remembered one) for a model that does
//!    not reason;
//! 5. E3/E3b (lookups), E8 (encrypted content);
//! 6. E1 (or E1b, Azure's wording, for the models of `FakeOptions::azure_wording_models`), then
//!    E2 with its cases E12 (back-to-back reasoning) and E13 (nothing after the reasoning in its
//!    turn) — both only for reasoning models: a model that does not reason pairs nothing;
//! 7. E5, E6 (call/output pairing), for every call type with its own wording (N2): function,
//!    custom tool, local shell, shell, apply patch and tool search calls. E5 first for the
//!    calls in the previous response's own output (N1 chained: each needs its output somewhere
//!    in this input; older turns of the chain are not checked), then for the calls in input.
//!
//! The order inside the schema step is our choice: the reports show one violation at a time.
//! Of the output-only keys a client replays as `null` (`model_dump()`), only `status` is
//! refused: the reported request (openai/openai-python#3008) also carried
//! `encrypted_content: null`, and the API named only `status`. A non-null `status` is accepted
//! (only the ChatGPT Codex backend refuses it).
//!
//! The E5/E6 words are the type's name with spaces; reports confirm the function, custom tool,
//! apply patch, tool search and local shell calls and the custom tool call and tool search
//! outputs, the rest follow the pattern. A tool search the server executed
//! (`execution: "server"`) is answered by the server: no E5 for its call, and no E6 for its
//! output when that carries no `call_id`.
//!
//! The pairing rules (E1, E2) are our model of what the real validator enforces
//! (shared/reference/responses-api.md §3.2): an item replayed with its id must sit right after its
//! reasoning item (with only members of its group between them), and a replayed reasoning item
//! must be followed by a member of its group — the items after it in its turn up to the next
//! reasoning item. A reasoning item whose group is empty (the next item of its turn is another
//! reasoning item, or there is none) can never be replayed (E12, E13). One exception (§10 item 3,
//! a recorded 200): under `store:false` a full reasoning item carrying `encrypted_content` may be
//! followed by any item that is not a reasoning item.
//!
//! A server-side `conversation` (resolved by the caller, `turn`) counts like a
//! `previous_response_id` chain for E4 and E6: an item whose id it holds is a duplicate, and an
//! output may answer a call it holds. E5 for its pending calls is not modelled.
//!
//! A `previous_response_id` resolves when its turn is stored and not deleted, or (N6) when it is
//! a `store:false` turn made earlier on the same WebSocket: the API keeps those in the socket's
//! memory only, so another socket, or HTTP, gets E9 for them.

use std::collections::HashSet;

use serde_json::Value;

use crate::encrypted;
use crate::errors::{ApiError, MAX_ID_LEN};
use crate::input::InItem;
use crate::kinds;
use crate::state::{Tenant, Turn};

/// What the validator needs from the request besides the items.
pub(crate) struct Request<'a> {
    pub tenant_key: &'a str,
    pub previous_response_id: Option<&'a str>,
    pub store: bool,
    /// Whether the model reasons; when not: E14, E15, and no E1/E2.
    pub reasons: bool,
    /// Whether `include` asks for `reasoning.encrypted_content`.
    pub include_encrypted: bool,
    /// Answer E1 in Azure's wording (E1b).
    pub azure_wording: bool,
    /// The response ids made on this WebSocket (`None` over HTTP): its `store:false` turns
    /// chain here only (N6).
    pub local: Option<&'a HashSet<String>>,
    /// The items the request's `conversation` already holds (`None` without one).
    pub conversation: Option<&'a [Value]>,
}

/// Validate `items` (the flattened input) for `tenant`.
pub(crate) fn validate(
    req: &Request<'_>,
    values: &[Value],
    tenant: &Tenant,
) -> Result<(), ApiError> {
    let items: Vec<InItem<'_>> = values.iter().map(InItem::new).collect();
    check_schema(req, &items)?;
    check_include(req)?;
    check_previous(req, tenant)?;
    check_prefixes(&items)?;
    check_duplicates(req, &items, tenant)?;
    check_reasoning_allowed(req, &items, tenant)?;
    check_lookups(req, &items, tenant)?;
    check_encrypted(req, &items)?;
    if req.reasons {
        check_reasoning_before(req, &items, tenant)?;
        check_followers(req, &items, tenant)?;
    }
    check_pending(req, &items, tenant)?;
    check_outputs(&items, tenant)?;
    check_calls(req, &items, tenant)
}

/// The schema step: `previous_response_id`, then each item in input order under every rule of
/// [`ITEM_RULES`].
fn check_schema(req: &Request<'_>, items: &[InItem<'_>]) -> Result<(), ApiError> {
    if let Some(prev) = req.previous_response_id {
        check_length("previous_response_id", prev)?;
    }
    for (n, it) in items.iter().enumerate() {
        for rule in ITEM_RULES {
            rule(n, it)?;
        }
    }
    Ok(())
}

/// A schema rule of one input item: its index in the flattened input, the item.
type ItemRule = fn(usize, &InItem<'_>) -> Result<(), ApiError>;

/// The schema rules of one input item, in the order they are checked.
const ITEM_RULES: &[ItemRule] = &[
    check_id_length,
    check_call_id_length,
    check_summary,
    check_reasoning_content,
    check_null_status,
    check_web_search_action,
];

/// N5, for one string parameter.
fn check_length(param: &str, value: &str) -> Result<(), ApiError> {
    let len = value.chars().count();
    if len > MAX_ID_LEN {
        return Err(ApiError::string_too_long(param, len));
    }
    Ok(())
}

/// N5: `input[n].id`
fn check_id_length(n: usize, it: &InItem<'_>) -> Result<(), ApiError> {
    match it.id {
        Some(id) => check_length(&format!("input[{n}].id"), id),
        None => Ok(()),
    }
}

/// N5: `input[n].call_id`
fn check_call_id_length(n: usize, it: &InItem<'_>) -> Result<(), ApiError> {
    match it.call_id {
        Some(call_id) => check_length(&format!("input[{n}].call_id"), call_id),
        None => Ok(()),
    }
}

/// E16
fn check_summary(n: usize, it: &InItem<'_>) -> Result<(), ApiError> {
    if it.is_type("reasoning") && it.value.get("summary").is_none() {
        return Err(ApiError::missing_parameter(&format!("input[{n}].summary")));
    }
    Ok(())
}

/// N3: reasoning input takes no `content` (`null` and `[]` are fine).
fn check_reasoning_content(n: usize, it: &InItem<'_>) -> Result<(), ApiError> {
    if !it.is_type("reasoning") {
        return Ok(());
    }
    match it.value.get("content").and_then(Value::as_array) {
        Some(content) if !content.is_empty() => Err(ApiError::array_too_long(
            &format!("input[{n}].content"),
            0,
            content.len(),
        )),
        _ => Ok(()),
    }
}

/// N4: `status: null` on any item.
fn check_null_status(n: usize, it: &InItem<'_>) -> Result<(), ApiError> {
    if it.value.get("status").is_some_and(Value::is_null) {
        return Err(ApiError::unknown_parameter(&format!("input[{n}].status")));
    }
    Ok(())
}

/// The `action.type` values of a `web_search_call` the API accepts.
const WEB_SEARCH_ACTIONS: &[&str] = &["search", "open_page", "find_in_page"];

/// N12: a `web_search_call` whose `action.type` is a string the API does not know (`other`,
/// `find`). A missing action or type is left alone: no report shows what the API says.
fn check_web_search_action(n: usize, it: &InItem<'_>) -> Result<(), ApiError> {
    if !it.is_type("web_search_call") {
        return Ok(());
    }
    let action = it.value.get("action").and_then(|a| a.get("type"));
    match action.and_then(Value::as_str) {
        Some(t) if !WEB_SEARCH_ACTIONS.contains(&t) => Err(ApiError::invalid_enum_value(
            &format!("input[{n}].action.type"),
            t,
            WEB_SEARCH_ACTIONS,
        )),
        _ => Ok(()),
    }
}

/// E14
fn check_include(req: &Request<'_>) -> Result<(), ApiError> {
    if !req.reasons && req.include_encrypted {
        return Err(ApiError::encrypted_unsupported());
    }
    Ok(())
}

/// Whether an input item is a reasoning item: typed `reasoning`, or a reference (typed or
/// id-only) naming a remembered reasoning item.
fn is_reasoning(it: &InItem<'_>, tenant: &Tenant) -> bool {
    it.is_type("reasoning")
        || (it.is_reference
            && it
                .id
                .and_then(|id| tenant.item(id))
                .is_some_and(|(rec, _)| rec.kind == "reasoning"))
}

/// E15
fn check_reasoning_allowed(
    req: &Request<'_>,
    items: &[InItem<'_>],
    tenant: &Tenant,
) -> Result<(), ApiError> {
    if !req.reasons && items.iter().any(|it| is_reasoning(it, tenant)) {
        return Err(ApiError::reasoning_unsupported());
    }
    Ok(())
}

/// The turn `previous_response_id` names, when the request may chain to it: a visible one, or a
/// `store:false` one made on this WebSocket (N6).
fn previous_turn<'t>(req: &Request<'_>, tenant: &'t Tenant) -> Option<&'t Turn> {
    let id = req.previous_response_id?;
    let turn = tenant.turns.get(id)?;
    let local = !turn.stored && req.local.is_some_and(|ids| ids.contains(id));
    (turn.visible() || local).then_some(turn)
}

/// E9
fn check_previous(req: &Request<'_>, tenant: &Tenant) -> Result<(), ApiError> {
    match req.previous_response_id {
        Some(id) if previous_turn(req, tenant).is_none() => Err(ApiError::previous_not_found(id)),
        _ => Ok(()),
    }
}

/// E7
fn check_prefixes(items: &[InItem<'_>]) -> Result<(), ApiError> {
    for (n, it) in items.iter().enumerate() {
        let (Some(t), Some(id)) = (it.effective_type(), it.id) else {
            continue;
        };
        let Some(prefix) = kinds::prefix_for_type(t) else {
            continue;
        };
        if !id.starts_with(&format!("{prefix}_")) {
            return Err(ApiError::bad_prefix(n, id, prefix));
        }
    }
    Ok(())
}

/// The items the server already holds for this request: those of the `previous_response_id`
/// chain, or of the `conversation`.
fn history<'a>(req: &Request<'a>, tenant: &'a Tenant) -> Vec<&'a Value> {
    let mut out = match req.previous_response_id {
        Some(prev) => tenant.chain_items(prev),
        None => Vec::new(),
    };
    out.extend(req.conversation.unwrap_or_default());
    out
}

/// E4
fn check_duplicates(
    req: &Request<'_>,
    items: &[InItem<'_>],
    tenant: &Tenant,
) -> Result<(), ApiError> {
    let held: HashSet<&str> = history(req, tenant)
        .into_iter()
        .filter_map(|v| v.get("id").and_then(Value::as_str))
        .collect();
    let mut seen = HashSet::new();
    for id in items.iter().filter_map(|it| it.id) {
        if held.contains(id) || !seen.insert(id) {
            return Err(ApiError::duplicate(id));
        }
    }
    Ok(())
}

/// E3 / E3b
fn check_lookups(req: &Request<'_>, items: &[InItem<'_>], tenant: &Tenant) -> Result<(), ApiError> {
    for it in items.iter().filter(|it| it.needs_lookup()) {
        let Some(id) = it.id else { continue };
        let reference_like = it.is_reference || it.is_type("reasoning");
        if !req.store && reference_like {
            return Err(ApiError::not_persisted(id));
        }
        match tenant.item(id) {
            Some((_, turn)) if turn.visible() => {}
            Some((_, turn)) if !turn.stored => return Err(ApiError::not_persisted(id)),
            _ => return Err(ApiError::item_not_found(id)),
        }
    }
    Ok(())
}

/// E8
fn check_encrypted(req: &Request<'_>, items: &[InItem<'_>]) -> Result<(), ApiError> {
    for it in items.iter().filter(|it| it.is_type("reasoning")) {
        if let Some(blob) = it.encrypted_content() {
            encrypted::verify(req.tenant_key, it.id, blob)?;
        }
    }
    Ok(())
}

/// The reasoning group of the remembered item an input item stands for.
fn group_of<'a>(it: &InItem<'a>, tenant: &'a Tenant) -> Option<&'a str> {
    let (rec, _) = tenant.item(it.identity(tenant)?)?;
    rec.group.as_deref()
}

/// E1 / E1b
fn check_reasoning_before(
    req: &Request<'_>,
    items: &[InItem<'_>],
    tenant: &Tenant,
) -> Result<(), ApiError> {
    for (i, it) in items.iter().enumerate() {
        let Some(id) = it.id else { continue };
        let Some((rec, _)) = tenant.item(id) else {
            continue;
        };
        let Some(rs) = rec.group.as_deref() else {
            continue;
        };
        let mut j = i;
        while j > 0 && group_of(&items[j - 1], tenant) == Some(rs) {
            j -= 1;
        }
        let attached = j > 0 && items[j - 1].id == Some(rs);
        if !attached && req.azure_wording {
            return Err(ApiError::missing_preceding_reasoning(id, &rec.kind));
        }
        if !attached {
            return Err(ApiError::missing_reasoning(id, &rec.kind, rs));
        }
    }
    Ok(())
}

/// E2, including E12 (the next item of its turn is another reasoning item) and E13 (nothing
/// follows it in its turn): in both its group is empty, so nothing can follow it.
fn check_followers(
    req: &Request<'_>,
    items: &[InItem<'_>],
    tenant: &Tenant,
) -> Result<(), ApiError> {
    for (i, it) in items.iter().enumerate() {
        let Some(id) = it.id else { continue };
        let Some((rec, turn)) = tenant.item(id) else {
            continue;
        };
        if rec.kind != "reasoning" || !(it.is_reference || it.is_type("reasoning")) {
            continue;
        }
        let next = items.get(i + 1);
        let stateless = !req.store && it.is_type("reasoning") && it.encrypted_content().is_some();
        if stateless && next.is_some_and(|n| !is_reasoning(n, tenant)) {
            continue;
        }
        let group: Vec<&str> = turn
            .items
            .iter()
            .skip(rec.position + 1)
            .take_while(|r| r.kind != "reasoning")
            .map(|r| r.id.as_str())
            .collect();
        let next = next.and_then(|n| n.identity(tenant));
        if !next.is_some_and(|n| group.contains(&n)) {
            return Err(ApiError::missing_follower(id));
        }
    }
    Ok(())
}

/// Every call type with the type of its output and the words E5 and E6 name them with (N2:
/// the type's name with spaces, e.g. `No tool output found for local shell call call_….`).
const PAIRS: &[(&str, &str, &str, &str)] = &[
    (
        "function_call",
        "function_call_output",
        "function call",
        "function call output",
    ),
    (
        "custom_tool_call",
        "custom_tool_call_output",
        "custom tool call",
        "custom tool call output",
    ),
    (
        "local_shell_call",
        "local_shell_call_output",
        "local shell call",
        "local shell call output",
    ),
    (
        "shell_call",
        "shell_call_output",
        "shell call",
        "shell call output",
    ),
    (
        "apply_patch_call",
        "apply_patch_call_output",
        "apply patch call",
        "apply patch call output",
    ),
    (
        "tool_search_call",
        "tool_search_output",
        "tool search call",
        "tool search output",
    ),
];

/// Whether a call was executed by the server (a hosted tool search), which answers it itself.
fn server_executed(it: &InItem<'_>) -> bool {
    it.value.get("execution").and_then(Value::as_str) == Some("server")
}

/// E5 for one item: a client call with no output of its type and `call_id` among `answers`.
fn check_answered<'a>(
    call: &InItem<'a>,
    answers: &[InItem<'_>],
    tenant: &'a Tenant,
) -> Result<(), ApiError> {
    for (call_type, output, call_name, _) in PAIRS {
        if !call.is_type(call_type) || server_executed(call) {
            continue;
        }
        let Some(call_id) = call.resolved_call_id(tenant) else {
            continue;
        };
        if !answers
            .iter()
            .any(|o| o.is_type(output) && o.call_id == Some(call_id))
        {
            return Err(ApiError::no_tool_output(call_name, call_id));
        }
    }
    Ok(())
}

/// E5 for the previous response (N1 chained): the calls of its own output are still pending,
/// so this input must answer each of them.
fn check_pending(req: &Request<'_>, items: &[InItem<'_>], tenant: &Tenant) -> Result<(), ApiError> {
    let Some(prev) = previous_turn(req, tenant) else {
        return Ok(());
    };
    for call in prev.output.iter().map(InItem::new) {
        check_answered(&call, items, tenant)?;
    }
    Ok(())
}

/// E5: a call in input must be answered after it.
fn check_outputs(items: &[InItem<'_>], tenant: &Tenant) -> Result<(), ApiError> {
    for (i, it) in items.iter().enumerate() {
        check_answered(it, &items[i + 1..], tenant)?;
    }
    Ok(())
}

/// E6
fn check_calls(req: &Request<'_>, items: &[InItem<'_>], tenant: &Tenant) -> Result<(), ApiError> {
    let held: Vec<InItem<'_>> = history(req, tenant).into_iter().map(InItem::new).collect();
    for (i, it) in items.iter().enumerate() {
        for (call, output, _, output_name) in PAIRS {
            if !it.is_type(output) || (it.call_id.is_none() && server_executed(it)) {
                continue;
            }
            let call_id = it.call_id.unwrap_or("");
            let matches =
                |c: &InItem<'_>| c.is_type(call) && c.resolved_call_id(tenant) == Some(call_id);
            if !items[..i].iter().any(matches) && !held.iter().any(matches) {
                return Err(ApiError::no_tool_call(output_name, call_id));
            }
        }
    }
    Ok(())
}
