//! The strict checks of `POST /responses` input, in the order the brief fixes:
//! E9, E7, E4, E3/E3b, E8, E1, E2, E5, E6 — each over the whole input, first failure wins.
//!
//! The pairing rules (E1, E2) are our model of what the real validator enforces
//! (shared/reference/responses-api.md §3.2): an item replayed with its id must sit right after its
//! reasoning item (with only members of its group between them), and a replayed reasoning item
//! must be followed by a member of its group.

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
}

/// Validate `items` (the flattened input) for `tenant`.
pub fn validate(req: &Request<'_>, values: &[Value], tenant: &Tenant) -> Result<(), ApiError> {
    let items: Vec<InItem<'_>> = values.iter().map(InItem::new).collect();
    check_previous(req, tenant)?;
    check_prefixes(&items)?;
    check_duplicates(req, &items, tenant)?;
    check_lookups(req, &items, tenant)?;
    check_encrypted(req, &items)?;
    check_reasoning_before(&items, tenant)?;
    check_followers(&items, tenant)?;
    check_outputs(&items, tenant)?;
    check_calls(req, &items, tenant)
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

/// E1
fn check_reasoning_before(items: &[InItem<'_>], tenant: &Tenant) -> Result<(), ApiError> {
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
        if !attached {
            return Err(ApiError::missing_reasoning(id, &rec.kind, rs));
        }
    }
    Ok(())
}

/// E2
fn check_followers(items: &[InItem<'_>], tenant: &Tenant) -> Result<(), ApiError> {
    for (i, it) in items.iter().enumerate() {
        let Some(id) = it.id else { continue };
        let Some((rec, turn)) = tenant.item(id) else {
            continue;
        };
        if rec.kind != "reasoning" || !(it.is_reference || it.is_type("reasoning")) {
            continue;
        }
        let after = turn.items.iter().skip(rec.position + 1);
        let mut allowed: Vec<&str> = after
            .clone()
            .take_while(|r| r.kind != "reasoning")
            .map(|r| r.id.as_str())
            .collect();
        if allowed.is_empty() {
            match after.clone().next() {
                Some(next) => allowed.push(&next.id),
                None => continue,
            }
        }
        let next = items.get(i + 1).and_then(|n| n.identity(tenant));
        if !next.is_some_and(|n| allowed.contains(&n)) {
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
