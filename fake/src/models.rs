//! Which models reason.
//!
//! A non-reasoning model returns no reasoning items, refuses `include:["reasoning.encrypted_content"]`
//! (E14) and refuses reasoning items in `input` (E15); see shared/reference/responses-api.md §3.1
//! and §8 item 6.

/// Whether `model` is a reasoning model, by name alone.
///
/// Non-reasoning: names starting with `gpt-4` (gpt-4o, gpt-4o-mini, gpt-4.1, …), `gpt-3.5` or
/// `chatgpt-`, and any name containing `-chat` (gpt-5-chat-latest, …). Everything else reasons
/// (o-series, gpt-5*, and the fake's own default model). Compared case-insensitively. Other
/// non-reasoning names (an Azure deployment of gpt-4.1, say) are listed in
/// `FakeOptions::non_reasoning_models`.
pub fn reasons(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    !(m.starts_with("gpt-4")
        || m.starts_with("gpt-3.5")
        || m.starts_with("chatgpt-")
        || m.contains("-chat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for m in [
            "gpt-5",
            "gpt-5-mini",
            "o3",
            "o4-mini",
            "gpt-5.1-codex-max",
            "gpt-fake",
        ] {
            assert!(reasons(m), "{m}");
        }
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "GPT-4.1-nano",
            "gpt-3.5-turbo",
            "chatgpt-4o-latest",
            "gpt-5-chat-latest",
        ] {
            assert!(!reasons(m), "{m}");
        }
    }
}
