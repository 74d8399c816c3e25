//! Random ids and small hashes.
//!
//! Real ids are opaque; the fake only needs them unique, with the right prefix, so that the
//! proxy under test cannot rely on anything but what the API promises. FNV-1a is used where a
//! stable, dependency-free hash is enough (tenant binding of encrypted content, echo digests).

use rand::Rng;

/// `n` random bytes as lowercase hex (`2 * n` chars).
pub(crate) fn random_hex(n: usize) -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(n * 2);
    for _ in 0..n {
        let b: u8 = rng.random();
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// An item or response id: `prefix_` + 48 hex chars.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_hex(24))
}

/// A tool call id: `call_` + 24 hex chars.
pub(crate) fn new_call_id() -> String {
    format!("call_{}", random_hex(12))
}

/// FNV-1a 64 of `data`.
pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// FNV-1a 64 as 16 lowercase hex chars.
pub(crate) fn fnv_hex(data: &[u8]) -> String {
    format!("{:016x}", fnv1a64(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_length() {
        let id = new_id("rs");
        assert!(id.starts_with("rs_"));
        assert_eq!(id.len(), 3 + 48);
        assert_eq!(new_call_id().len(), 5 + 24);
    }

    #[test]
    fn fnv_known_value() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv_hex(b"a"), "af63dc4c8601ec8c");
    }
}
