//! Credentials → tenant key.
//!
//! Remembered turns belong to the credentials that produced them. The key is a keyed BLAKE3
//! hash of the `Authorization` / `api-key` header with `OpenAI-Organization` / `OpenAI-Project`,
//! so raw keys are never stored, and two replicas sharing a secret agree on every tenant.

use std::fmt;

use http::HeaderMap;

/// A tenant's identity: a keyed hash of its credentials, never the credentials themselves.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantKey(pub [u8; 16]);

impl fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenant:")?;
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl TenantKey {
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The headers that make up a tenant, in hashing order.
const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "api-key",
    "openai-organization",
    "openai-project",
];

/// Hashes credentials into tenant keys.
#[derive(Clone)]
pub struct Tenants {
    key: [u8; 32],
}

impl fmt::Debug for Tenants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tenants(*****)")
    }
}

impl Tenants {
    /// Keys derived from a shared secret: the same on every replica.
    pub fn from_secret(secret: &str) -> Self {
        Tenants {
            key: blake3::derive_key("rethread 2026 tenant key", secret.as_bytes()),
        }
    }

    /// A random key for this process only (the in-memory store).
    pub fn random() -> std::io::Result<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Tenants { key })
    }

    pub fn key_for(&self, headers: &HeaderMap) -> TenantKey {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        for name in CREDENTIAL_HEADERS {
            // Length-prefixed, so no two header sets hash alike by shifting bytes between them.
            for value in headers.get_all(name) {
                hasher.update(&(value.len() as u64).to_le_bytes());
                hasher.update(value.as_bytes());
            }
            hasher.update(&[0xff]);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        TenantKey(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn different_keys_projects_and_secrets_make_different_tenants() {
        let t = Tenants::from_secret("s");
        let a = t.key_for(&headers(&[("authorization", "Bearer sk-a")]));
        assert_eq!(a, t.key_for(&headers(&[("authorization", "Bearer sk-a")])));
        assert_ne!(a, t.key_for(&headers(&[("authorization", "Bearer sk-b")])));
        assert_ne!(
            a,
            t.key_for(&headers(&[
                ("authorization", "Bearer sk-a"),
                ("openai-project", "p")
            ]))
        );
        assert_ne!(a, t.key_for(&headers(&[("api-key", "Bearer sk-a")])));
        assert_ne!(
            a,
            Tenants::from_secret("other").key_for(&headers(&[("authorization", "Bearer sk-a")]))
        );
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let t = Tenants::from_secret("s");
        let k = t.key_for(&headers(&[("authorization", "Bearer sk-secret")]));
        assert!(!format!("{k:?}{t:?}").contains("sk-secret"));
    }
}
