//! Whether the upstream keeps what a tenant asks it to store (N8 of
//! shared/reference/wild-failures-2026.md).
//!
//! A hop behind rethread (a gateway that forces `store: false`, the ChatGPT Codex backend) may
//! answer `"store": false` to a request that asked to store. Its items then cannot be looked up:
//! an `item_reference` to them is refused (E3), and only full items work. The response object
//! says what the upstream did, so rethread learns it per tenant: a response with `"store":
//! false` to a request that asked to store marks the tenant, one with `"store": true` clears
//! it. A marked tenant's requests are repaired as `store: false` ones (full items, image results
//! kept, `include` asking for encrypted reasoning).

use dashmap::DashMap;

use crate::tenant::TenantKey;

/// Tenants remembered at most; past it nothing new is learned.
const MAX_TENANTS: usize = 100_000;

/// Tenants whose upstream did not store what they asked it to.
#[derive(Default)]
pub(crate) struct UpstreamStore {
    unstored: DashMap<TenantKey, ()>,
}

impl UpstreamStore {
    /// Whether the tenant's last response to a request that asked to store was not stored.
    pub(crate) fn drops_store(&self, tenant: TenantKey) -> bool {
        !self.unstored.is_empty() && self.unstored.contains_key(&tenant)
    }

    /// Records what the upstream did with a request that asked to store.
    pub(crate) fn learn(&self, tenant: TenantKey, stored: bool) {
        if stored {
            if self.unstored.remove(&tenant).is_some() {
                tracing::info!("the upstream stores this tenant's responses again");
            }
        } else if !self.drops_store(tenant) && self.unstored.len() < MAX_TENANTS {
            self.unstored.insert(tenant, ());
            tracing::info!(
                "the upstream answered store:false to a request that asked to store; repairing this tenant's requests as stateless"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_that_was_not_stored_marks_its_tenant_until_one_is() {
        let s = UpstreamStore::default();
        let (a, b) = (TenantKey([1; 16]), TenantKey([2; 16]));
        s.learn(a, false);
        assert!(s.drops_store(a));
        assert!(!s.drops_store(b));
        s.learn(a, true);
        assert!(!s.drops_store(a));
    }
}
