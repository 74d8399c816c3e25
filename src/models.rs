//! Which models reason, per tenant: what decides whether rethread may add encrypted reasoning to
//! `include` or insert reasoning items at all.
//!
//! A model that does not reason refuses both (`Encrypted content is not supported with this
//! model.`, `Reasoning input items can only be provided to a reasoning or computer use model.`),
//! so a repair that assumed otherwise would break a request the API accepts. What traffic shows
//! wins: a response with reasoning items, or an accepted request with a `reasoning` parameter,
//! says the model reasons; the upstream's refusal of either says it does not. Otherwise the
//! configured patterns decide, and a model matching none of them is taken to reason (the refusal
//! then teaches otherwise, at the cost of one revert). Learned per tenant, because one tenant's
//! "model" may be an Azure deployment name another tenant uses for something else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::config::ModelPatterns;
use crate::tenant::TenantKey;

/// Learned entries kept at most; past it nothing new is learned (the patterns still apply).
const MAX_LEARNED: usize = 100_000;
/// Model names longer than this are not learned.
const MAX_MODEL_LEN: usize = 256;

/// What rethread knows about models.
pub(crate) struct Models {
    non_reasoning: ModelPatterns,
    /// By tenant, then by model name: looked up with the request's `&str`, no allocation.
    learned: DashMap<TenantKey, HashMap<Box<str>, bool>>,
    entries: AtomicUsize,
}

impl Models {
    pub(crate) fn new(non_reasoning: ModelPatterns) -> Self {
        Models {
            non_reasoning,
            learned: DashMap::new(),
            entries: AtomicUsize::new(0),
        }
    }

    fn known(&self, tenant: TenantKey, model: &str) -> Option<bool> {
        self.learned.get(&tenant)?.get(model).copied()
    }

    /// Whether `model` reasons, or is not known not to. A request without a model is left to
    /// the rules for models that reason (the upstream picks its default).
    pub(crate) fn may_reason(&self, tenant: TenantKey, model: Option<&str>) -> bool {
        let Some(model) = model else { return true };
        self.known(tenant, model)
            .unwrap_or_else(|| !self.non_reasoning.matches(model))
    }

    /// Whether traffic showed that `model` does not reason (the upstream refused reasoning or
    /// encrypted reasoning for it), as opposed to a pattern's guess.
    pub(crate) fn refused_reasoning(&self, tenant: TenantKey, model: Option<&str>) -> bool {
        model.is_some_and(|model| self.known(tenant, model) == Some(false))
    }

    /// Records what traffic showed about `model`. What is already known costs a read lock.
    pub(crate) fn learn(&self, tenant: TenantKey, model: &str, reasons: bool) {
        if model.is_empty() || model.len() > MAX_MODEL_LEN {
            return;
        }
        if self.known(tenant, model) == Some(reasons) {
            return;
        }
        let mut models = self.learned.entry(tenant).or_default();
        if let Some(known) = models.get_mut(model) {
            *known = reasons;
        } else if self.entries.load(Ordering::Relaxed) < MAX_LEARNED {
            self.entries.fetch_add(1, Ordering::Relaxed);
            models.insert(model.into(), reasons);
        } else {
            return;
        }
        tracing::info!(model, reasons, "learned whether a model reasons");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TenantKey = TenantKey([1; 16]);
    const B: TenantKey = TenantKey([2; 16]);

    #[test]
    fn patterns_decide_until_traffic_says_otherwise() {
        let models = Models::new(ModelPatterns::non_reasoning());
        assert!(models.may_reason(A, Some("gpt-5")));
        assert!(!models.may_reason(A, Some("gpt-4.1")));
        assert!(models.may_reason(A, None));
        models.learn(A, "gpt-4.1", true);
        models.learn(A, "my-deployment", false);
        assert!(models.may_reason(A, Some("gpt-4.1")));
        assert!(!models.may_reason(A, Some("my-deployment")));
        assert!(models.refused_reasoning(A, Some("my-deployment")));
        // A pattern's guess is not traffic's word.
        assert!(!models.refused_reasoning(B, Some("gpt-4.1")));
        // Another tenant's deployment of the same name is its own.
        assert!(models.may_reason(B, Some("my-deployment")));
        assert!(!models.may_reason(B, Some("gpt-4.1")));
    }
}
