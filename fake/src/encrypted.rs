//! `encrypted_content` of reasoning items: issued per tenant and reasoning id, verified on replay.
//!
//! Real blobs are bound to the organization that produced them (E8). The fake's blob is readable
//! on purpose — `enc1.<tenant hash>.<rs id>.<padding>` — so tests can tell which tenant and item
//! it belongs to.

use crate::errors::ApiError;
use crate::ids::{fnv1a64, fnv_hex};

/// The blob for reasoning item `rs_id` issued to `tenant`.
pub fn issue(tenant: &str, rs_id: &str) -> String {
    let seed = format!("{tenant}\n{rs_id}");
    let mut pad = String::with_capacity(64);
    let mut h = fnv1a64(seed.as_bytes());
    while pad.len() < 64 {
        pad.push_str(&format!("{h:016x}"));
        h = fnv1a64(&h.to_le_bytes());
    }
    format!("enc1.{}.{rs_id}.{pad}", fnv_hex(tenant.as_bytes()))
}

/// The copy carried by `output_item.added`: the first half.
pub(crate) fn truncated(blob: &str) -> String {
    blob.chars().take(blob.chars().count() / 2).collect()
}

/// Check a replayed blob; `item_id` is the reasoning item's id if it has one.
pub(crate) fn verify(
    tenant: &str,
    item_id: Option<&str>,
    blob: &serde_json::Value,
) -> Result<(), ApiError> {
    let text = blob.as_str().unwrap_or("");
    let parts: Vec<&str> = text.split('.').collect();
    let shown = item_id.or_else(|| parts.get(2).copied()).unwrap_or("");
    let [magic, tenant_hash, rs, pad] = parts.as_slice() else {
        return Err(ApiError::undecryptable(shown));
    };
    if *magic != "enc1" || tenant_hash.len() != 16 || pad.len() != 64 || !rs.starts_with("rs_") {
        return Err(ApiError::undecryptable(shown));
    }
    if *tenant_hash != fnv_hex(tenant.as_bytes()) {
        return Err(ApiError::foreign_encrypted(shown));
    }
    if item_id.is_some_and(|id| id != *rs) {
        return Err(ApiError::undecryptable(shown));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_mismatches() {
        let blob = issue("Bearer a", "rs_1");
        assert!(verify("Bearer a", Some("rs_1"), &json!(blob)).is_ok());
        assert!(verify("Bearer a", None, &json!(blob)).is_ok());
        let foreign = verify("Bearer b", Some("rs_1"), &json!(blob));
        assert!(foreign.is_err_and(|e| e.message.contains("organization_id")));
        let other = verify("Bearer a", Some("rs_2"), &json!(blob));
        assert!(other.is_err_and(|e| e.message.contains("decrypted or parsed")));
        assert!(verify("Bearer a", Some("rs_1"), &json!("gAAAA")).is_err());
        assert!(verify("Bearer a", Some("rs_1"), &json!(truncated(&blob))).is_err());
    }
}
