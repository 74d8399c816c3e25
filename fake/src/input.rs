//! A view of `input` items as the validator sees them.
//!
//! The API accepts several spellings of the same thing (typed items, easy messages, item
//! references with or without `type`, calls identified only by `call_id`); this module turns each
//! into one `InItem` so the checks in `validate` stay short.

use serde_json::Value;

use crate::kinds;
use crate::state::Tenant;

/// Flatten `input` (an array, possibly with nested arrays) into a list of items.
pub(crate) fn flatten(input: &Value, out: &mut Vec<Value>) {
    match input {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other.clone()),
    }
}

/// One input item, classified.
#[derive(Debug, Clone)]
pub(crate) struct InItem<'a> {
    pub value: &'a Value,
    pub item_type: Option<&'a str>,
    pub id: Option<&'a str>,
    pub call_id: Option<&'a str>,
    pub is_reference: bool,
}

impl<'a> InItem<'a> {
    pub(crate) fn new(value: &'a Value) -> Self {
        let str_field = |k: &str| value.get(k).and_then(Value::as_str);
        let item_type = str_field("type");
        let id = str_field("id");
        let has_role = value.get("role").is_some_and(|r| !r.is_null());
        let type_missing = value.get("type").is_none_or(Value::is_null);
        let is_reference =
            item_type == Some("item_reference") || (id.is_some() && type_missing && !has_role);
        InItem {
            value,
            item_type,
            id,
            call_id: str_field("call_id"),
            is_reference,
        }
    }

    /// The type used for prefix checks: `message` for easy messages with a role.
    pub(crate) fn effective_type(&self) -> Option<&'a str> {
        match self.item_type {
            Some(t) => Some(t),
            None if self.value.get("role").is_some() => Some("message"),
            None => None,
        }
    }

    pub(crate) fn is_type(&self, t: &str) -> bool {
        self.item_type == Some(t)
    }

    /// Encrypted content, when present and not null.
    pub(crate) fn encrypted_content(&self) -> Option<&'a Value> {
        self.value.get("encrypted_content").filter(|v| !v.is_null())
    }

    /// A bare `{type, id}` (optionally `status`) that only names a stored item.
    pub(crate) fn is_bare(&self) -> bool {
        let Some(obj) = self.value.as_object() else {
            return false;
        };
        self.item_type.is_some()
            && self.id.is_some()
            && obj
                .keys()
                .all(|k| k == "type" || k == "id" || k == "status")
    }

    /// Whether the server has to look this item up by id (E3/E3b).
    pub(crate) fn needs_lookup(&self) -> bool {
        if self.id.is_none() {
            return false;
        }
        self.is_reference
            || (self.is_type("reasoning") && self.encrypted_content().is_none())
            || self.is_bare()
    }

    /// The remembered item this input item stands for: its id, or for an id-less call the id of
    /// the remembered call with the same `call_id`.
    pub(crate) fn identity(&self, tenant: &'a Tenant) -> Option<&'a str> {
        if let Some(id) = self.id {
            return Some(id);
        }
        let t = self.item_type?;
        if !kinds::is_call_type(t) {
            return None;
        }
        tenant.item_id_for_call(self.call_id?)
    }

    /// The call id of a call item, from the item or (for a bare call) from memory.
    pub(crate) fn resolved_call_id(&self, tenant: &'a Tenant) -> Option<&'a str> {
        if let Some(c) = self.call_id {
            return Some(c);
        }
        let (rec, _) = tenant.item(self.id?)?;
        rec.call_id.as_deref()
    }
}
