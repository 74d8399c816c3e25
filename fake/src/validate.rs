//! The strict checks of `POST /responses` input, in this order, each over the whole input,
//! first failure wins:
//!
//! 1. E16: a full reasoning item (`"type":"reasoning"`) without `summary` (schema comes first);
//! 2. E14: `include:["reasoning.encrypted_content"]` for a model that does not reason;
//! 3. E9, E7, E4 (previous response, id prefixes, duplicates);
//! 4. E15: a reasoning item (typed, or a reference to a remembered one) for a model that does
//!    not reason;
//! 5. E3/E3b (lookups), E8 (encrypted content);
//! 6. E1 (or E1b, Azure's wording, for the models of `FakeOptions::azure_wording_models`), then
//!    E2 with its cases E12 (back-to-back reasoning) and E13 (nothing after the reasoning in its
//!    turn) — both only for reasoning models: a model that does not reason pairs nothing;
//! 7. E5, E6 (call/output pairing).
//!
//! The pairing rules (E1, E2) are our model of what the real validator enforces
//! (shared/reference/responses-api.md §3.2): an item replayed with its id must sit right after its
//! reasoning item (with only members of its group between them), and a replayed reasoning item
//! must be followed by a member of its group — the items after it in its turn up to the next
//! reasoning item. A reasoning item whose group is empty (the next item of its turn is another
//! reasoning item, or there is none) can never be replayed (E12, E13). One exception (§10 item 3,
//! a recorded 200): under `store:false` a full reasoning item carrying `encrypted_content` may be
//! followed by any item that is not a reasoning item.

use std::collections::HashSet;

use serde_json::Value;

use crate::encrypted;
use crate::errors::ApiError;
use crate::input::InItem;
use crate::kinds;
use crate::state::Tenant;

/// What the validator needs from the request besides the items.
pub struct Request<'a> {
    pub tenant_key: &'a str,
    pub previous_response_id: Option<&'a str>,
    pub store: bool,
    /// Whether the model reasons; when not: E14, E15, and no E1/E2.
    pub reasons: bool,
    /// Whether `include` asks for `reasoning.encrypted_content`.
    pub include_encrypted: bool,
    /// Answer E1 in Azure's wording (E1b).
    pub azure_wording: bool,
}

/// Validate `items` (the flattened input) for `tenant`.
pub fn validate(req: &Request<'_>, values: &[Value], tenant: &Tenant) -> Result<(), ApiError> {
    let items: Vec<InItem<'_>> = values.iter().map(InItem::new).collect();
    check_schema(&items)?;
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
    check_outputs(&items, tenant)?;
    check_calls(req, &items, tenant)
}

/// E16
fn check_schema(items: &[InItem<'_>]) -> Result<(), ApiError> {
    for (n, it) in items.iter().enumerate() {
        if it.is_type("reasoning") && it.value.get("summary").is_none() {
            return Err(ApiError::missing_parameter(&format!("input[{n}].summary")));
        }
    }
    Ok(())
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

/// E9
fn check_previous(req: &Request<'_>, tenant: &Tenant) -> Result<(), ApiError> {
    match req.previous_response_id {
        Some(id) if tenant.visible_turn(id).is_none() => Err(ApiError::previous_not_found(id)),
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

/// E4
fn check_duplicates(
    req: &Request<'_>,
    items: &[InItem<'_>],
    tenant: &Tenant,
) -> Result<(), ApiError> {
    let chain: HashSet<&str> = match req.previous_response_id {
        Some(prev) => tenant
            .chain_items(prev)
            .into_iter()
            .filter_map(|v| v.get("id").and_then(Value::as_str))
            .collect(),
        None => HashSet::new(),
    };
    let mut seen = HashSet::new();
    for id in items.iter().filter_map(|it| it.id) {
        if chain.contains(id) || !seen.insert(id) {
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
];

/// E5
fn check_outputs(items: &[InItem<'_>], tenant: &Tenant) -> Result<(), ApiError> {
    for (i, it) in items.iter().enumerate() {
        for (call, output, call_name, _) in PAIRS {
            if !it.is_type(call) {
                continue;
            }
            let Some(call_id) = it.resolved_call_id(tenant) else {
                continue;
            };
            let answered = items[i + 1..]
                .iter()
                .any(|o| o.is_type(output) && o.call_id == Some(call_id));
            if !answered {
                return Err(ApiError::no_tool_output(call_name, call_id));
            }
        }
    }
    Ok(())
}

/// E6
fn check_calls(req: &Request<'_>, items: &[InItem<'_>], tenant: &Tenant) -> Result<(), ApiError> {
    let chain: Vec<InItem<'_>> = match req.previous_response_id {
        Some(prev) => tenant
            .chain_items(prev)
            .into_iter()
            .map(InItem::new)
            .collect(),
        None => Vec::new(),
    };
    for (i, it) in items.iter().enumerate() {
        for (call, output, _, output_name) in PAIRS {
            if !it.is_type(output) {
                continue;
            }
            let call_id = it.call_id.unwrap_or("");
            let matches =
                |c: &InItem<'_>| c.is_type(call) && c.resolved_call_id(tenant) == Some(call_id);
            if !items[..i].iter().any(matches) && !chain.iter().any(matches) {
                return Err(ApiError::no_tool_call(output_name, call_id));
            }
        }
    }
    Ok(())
}
