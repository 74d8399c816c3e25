//! `POST …/conversations`: server-side conversations, just enough for requests to name them.
//!
//! The API keeps a conversation's items and appends every response made in it
//! (shared/reference/responses-api.md §3.5), so a client that sends that history again gets E4
//! (wild-failures-2026.md N7 (c)). The fake creates conversations, seeded with the body's
//! `items` if any, and keeps them per tenant (`state::Tenant::conversations`); `turn` resolves
//! and grows them. Retrieving, listing items and deleting are not served.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::generate;
use crate::ids::new_id;
use crate::input::flatten;
use crate::reply;
use crate::responses::reply_opts;
use crate::state::Shared;
use crate::turn::{self, json_kind};

/// `POST …/conversations`: `{"id":"conv_…","object":"conversation","created_at":…,"metadata":{}}`
/// (the body's `metadata` is not kept).
pub(crate) async fn create(shared: Arc<Shared>, headers: HeaderMap, body: Body) -> Response {
    let opts = reply_opts(&shared, &headers);
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let Some(tenant) = turn::tenant_key(&headers) else {
        return reply::error(&ApiError::missing_key(), opts).await;
    };
    let items = match seed_items(&bytes) {
        Ok(items) => items,
        Err(e) => return reply::error(&e, opts).await,
    };
    let id = new_id("conv");
    shared
        .tenants()
        .entry(tenant)
        .or_default()
        .conversations
        .insert(id.clone(), items);
    let conversation = json!({
        "id": id,
        "object": "conversation",
        "created_at": generate::now(),
        "metadata": {},
    });
    reply::json(StatusCode::OK, &conversation, opts).await
}

/// The items a creation body seeds its conversation with: `items`, flattened like `input`; none
/// for an empty body or without `items`.
fn seed_items(bytes: &[u8]) -> Result<Vec<Value>, ApiError> {
    if bytes.trim_ascii().is_empty() {
        return Ok(Vec::new());
    }
    let body = serde_json::from_slice::<Value>(bytes).map_err(|_| ApiError::bad_json())?;
    if !body.is_object() {
        return Err(ApiError::bad_json());
    }
    match body.get("items") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(items @ Value::Array(_)) => {
            let mut out = Vec::new();
            flatten(items, &mut out);
            Ok(out)
        }
        Some(other) => Err(ApiError::invalid_type(
            "items",
            "an array",
            json_kind(other),
        )),
    }
}
