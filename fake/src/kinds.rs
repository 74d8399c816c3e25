//! The output item kinds the fake can produce, with their type names and id prefixes.
//!
//! One table serves three purposes: parsing `x-fake-shape`, building items, and checking id
//! prefixes of replayed items (E7), so the three can never disagree.

/// One producible kind: short code (as in `x-fake-shape`), item `type`, id prefix, and whether
/// the item carries a `call_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kind {
    pub code: &'static str,
    pub item_type: &'static str,
    pub prefix: &'static str,
    pub has_call_id: bool,
}

const fn k(
    code: &'static str,
    item_type: &'static str,
    prefix: &'static str,
    has_call_id: bool,
) -> Kind {
    Kind {
        code,
        item_type,
        prefix,
        has_call_id,
    }
}

pub(crate) const REASONING: Kind = k("rs", "reasoning", "rs", false);
pub(crate) const MESSAGE: Kind = k("msg", "message", "msg", false);
pub(crate) const FUNCTION_CALL: Kind = k("fc", "function_call", "fc", true);
pub(crate) const IMAGE: Kind = k("ig", "image_generation_call", "ig", false);
pub(crate) const WEB_SEARCH: Kind = k("ws", "web_search_call", "ws", false);

/// Every kind the fake produces.
pub(crate) const KINDS: &[Kind] = &[
    REASONING,
    MESSAGE,
    FUNCTION_CALL,
    k("ct", "custom_tool_call", "ctc", true),
    IMAGE,
    WEB_SEARCH,
    k("fs", "file_search_call", "fs", false),
    k("ci", "code_interpreter_call", "ci", false),
    k("mcpl", "mcp_list_tools", "mcpl", false),
    k("mcp", "mcp_call", "mcp", false),
    k("mcpr", "mcp_approval_request", "mcpr", false),
    k("lsh", "local_shell_call", "lsh", true),
    k("sh", "shell_call", "sh", true),
    k("apc", "apply_patch_call", "apc", true),
    k("tsc", "tool_search_call", "tsc", true),
];

/// The kind for a shape code (`rs`, `ig`, …).
pub(crate) fn by_code(code: &str) -> Option<Kind> {
    KINDS.iter().copied().find(|k| k.code == code)
}

/// The id prefix an input item of `item_type` must carry (E7), without the underscore.
pub(crate) fn prefix_for_type(item_type: &str) -> Option<&'static str> {
    if item_type == "compaction" {
        return Some("cmp");
    }
    KINDS
        .iter()
        .find(|k| k.item_type == item_type)
        .map(|k| k.prefix)
}

/// Item types whose `call_id` identifies them when they come without an `id`.
pub(crate) fn is_call_type(item_type: &str) -> bool {
    KINDS
        .iter()
        .any(|k| k.item_type == item_type && k.has_call_id)
}

/// Parse an `x-fake-shape` value such as `rs,ig,msg`.
pub(crate) fn parse_shape(value: &str) -> Result<Vec<Kind>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|code| by_code(code).ok_or_else(|| format!("x-fake-shape: unknown kind '{code}'")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse() {
        let s = parse_shape("rs, ig,msg").unwrap_or_default();
        assert_eq!(s, vec![REASONING, IMAGE, MESSAGE]);
        assert!(parse_shape("rs,zz").is_err());
        assert_eq!(prefix_for_type("custom_tool_call"), Some("ctc"));
        assert_eq!(prefix_for_type("compaction"), Some("cmp"));
        assert!(is_call_type("shell_call"));
        assert_eq!(prefix_for_type("tool_search_call"), Some("tsc"));
        assert!(!is_call_type("reasoning"));
    }
}
