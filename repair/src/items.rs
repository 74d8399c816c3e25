//! Turns, groups and item types: the vocabulary of repair.
//!
//! A *turn* is the `output` list of one response, in order. A reasoning item and the items after
//! it, up to the next reasoning item, form a *group*; the API checks that a group travels together
//! (see `ARCHITECTURE.md`). Everything here is plain data, with no I/O, so repair can be tested
//! exhaustively without sockets.

use bytes::Bytes;

/// One table of the item types the API defines: the enum, its names and its order all come
/// from here (the memory ledger stores a type as its index in `ItemType::KNOWN`).
macro_rules! item_types {
    ($($variant:ident => $name:literal,)*) => {
        /// The type of an output item.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum ItemType {
            $($variant,)*
            /// A type this version does not know, by name.
            Other(Box<str>),
        }

        impl ItemType {
            /// Every known type, in a fixed order.
            pub const KNOWN: &'static [ItemType] = &[$(ItemType::$variant,)*];

            pub fn parse(ty: &str) -> Self {
                match ty {
                    $($name => Self::$variant,)*
                    other => Self::Other(other.into()),
                }
            }

            /// The API's name of the type.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Other(s) => s,
                }
            }

            /// A metric label: the API's name, or `other` (names rethread does not know never
            /// become labels).
            pub fn label(&self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Other(_) => "other",
                }
            }
        }
    };
}

item_types! {
    Reasoning => "reasoning",
    Message => "message",
    FunctionCall => "function_call",
    CustomToolCall => "custom_tool_call",
    ComputerCall => "computer_call",
    LocalShellCall => "local_shell_call",
    ShellCall => "shell_call",
    ApplyPatchCall => "apply_patch_call",
    ImageGenerationCall => "image_generation_call",
    WebSearchCall => "web_search_call",
    FileSearchCall => "file_search_call",
    CodeInterpreterCall => "code_interpreter_call",
    McpListTools => "mcp_list_tools",
    McpCall => "mcp_call",
    McpApprovalRequest => "mcp_approval_request",
    ToolSearchCall => "tool_search_call",
    ToolSearchOutput => "tool_search_output",
    Compaction => "compaction",
}

impl ItemType {
    /// Calls the client executes and answers with a `<type>_output` item of the same `call_id`.
    /// They are identified by `call_id` as well as by id, must be replayed in full (an
    /// `item_reference` breaks the call/output pairing), and may only be inserted when their
    /// output is in the request (else the API answers "No tool output found").
    pub fn is_client_call(&self) -> bool {
        matches!(
            self,
            Self::FunctionCall
                | Self::CustomToolCall
                | Self::ComputerCall
                | Self::LocalShellCall
                | Self::ShellCall
                | Self::ApplyPatchCall
        )
    }

    /// Items whose full form carries a payload too large to keep (base64 images).
    pub fn has_bulky_payload(&self) -> bool {
        matches!(self, Self::ImageGenerationCall)
    }
}

/// The `<type>_output` item type that answers a client call of type `call_type`.
pub fn is_output_of_call(item_type: &str) -> bool {
    item_type
        .strip_suffix("_output")
        .is_some_and(|call| ItemType::parse(call).is_client_call())
}

/// One remembered output item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnItem {
    pub id: Box<str>,
    pub ty: ItemType,
    pub call_id: Option<Box<str>>,
    /// The item's original JSON, kept only where repair must insert it in full.
    pub full: Option<Bytes>,
    /// The digest of what the item says (reasoning: its encrypted content; assistant message:
    /// its text), to recognise an id-less copy of it, or an edit.
    pub digest: Option<crate::content::Digest>,
}

/// One response's output, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    /// Whether the upstream stored the response (`store` was not false): only then can its
    /// items be inserted as `item_reference`s.
    pub stored: bool,
    pub items: Box<[TurnItem]>,
    /// Where the response sits in a chain the server holds (`previous_response_id`); `None`
    /// when its id was not seen.
    pub link: Option<Box<Link>>,
}

/// A response's place in its chain, as the client's request made it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// The response's own id.
    pub response: Box<str>,
    /// The request's `previous_response_id`: the chain this response continues.
    pub parent: Option<Box<str>>,
    /// The request's own input items in full, as one JSON array: kept for a `store: false`
    /// chain only, whose history nothing else holds once its socket is gone.
    pub input: Option<Bytes>,
    /// The output was read whole: the response ended and every item had an id (only then is
    /// it part of a history rethread may send in the chain's place).
    pub complete: bool,
    /// The request's `conversation`: the server appended this turn to it.
    pub conversation: Option<Box<str>>,
}

/// The group an item belongs to, as positions in its turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    /// The reasoning item heading the group; `None` for items before a turn's first reasoning.
    pub reasoning: Option<usize>,
    /// First position of the group (the reasoning item when there is one).
    pub start: usize,
    /// One past the last position.
    pub end: usize,
}

impl Group {
    /// Positions of the items that follow the reasoning item.
    pub fn members(&self) -> std::ops::Range<usize> {
        match self.reasoning {
            Some(r) => r + 1..self.end,
            None => self.start..self.end,
        }
    }
}

impl Turn {
    fn is_reasoning(&self, pos: usize) -> bool {
        self.items
            .get(pos)
            .is_some_and(|i| i.ty == ItemType::Reasoning)
    }

    /// The group holding position `pos`.
    pub fn group(&self, pos: usize) -> Group {
        let next_reasoning_from = |from: usize| {
            (from..self.items.len())
                .find(|&p| self.is_reasoning(p))
                .unwrap_or(self.items.len())
        };
        match (0..=pos).rev().find(|&p| self.is_reasoning(p)) {
            Some(r) => Group {
                reasoning: Some(r),
                start: r,
                end: next_reasoning_from(r + 1),
            },
            None => Group {
                reasoning: None,
                start: 0,
                end: next_reasoning_from(0),
            },
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod tests {
    use super::*;

    /// A turn from a compact shape such as `"rs ig msg"` (aliases or full type names); ids are
    /// `<kind>_<position>`, client calls get `call_<id>`; full forms are kept for calls, and for
    /// everything when the turn was not stored.
    pub fn turn(shape: &str, stored: bool) -> Turn {
        let items = shape
            .split_whitespace()
            .enumerate()
            .map(|(n, kind)| {
                let ty = ItemType::parse(match kind {
                    "rs" => "reasoning",
                    "msg" => "message",
                    "fc" => "function_call",
                    "ctc" => "custom_tool_call",
                    "cc" => "computer_call",
                    "lsh" => "local_shell_call",
                    "sh" => "shell_call",
                    "apc" => "apply_patch_call",
                    "ig" => "image_generation_call",
                    "ws" => "web_search_call",
                    "fs" => "file_search_call",
                    "ci" => "code_interpreter_call",
                    "mcpl" => "mcp_list_tools",
                    "mcp" => "mcp_call",
                    "mcpr" => "mcp_approval_request",
                    other => other,
                });
                let id: Box<str> = format!("{kind}_{n}").into();
                let call_id: Option<Box<str>> =
                    ty.is_client_call().then(|| format!("call_{id}").into());
                let full = (ty.is_client_call() || !stored).then(|| {
                    Bytes::from(match &call_id {
                        Some(c) => format!(
                            r#"{{"type":"{}","id":"{id}","call_id":"{c}","name":"f","arguments":"{{}}","full":true}}"#,
                            ty.as_str()
                        ),
                        None => format!(r#"{{"type":"{}","id":"{id}","full":true}}"#, ty.as_str()),
                    })
                });
                TurnItem {
                    digest: matches!(ty, ItemType::Reasoning | ItemType::Message)
                        .then(|| crate::content::test_digest(&id)),
                    id,
                    ty,
                    call_id,
                    full,
                }
            })
            .collect();
        Turn {
            stored,
            items,
            link: None,
        }
    }

    /// An id shaped like the API's (`prefix`, `_`, 48 hex digits), distinct for each `n` and
    /// `salt`, so that sizes and lookups measured on it hold for real ids.
    pub fn api_id(prefix: &str, n: u64, salt: u64) -> Box<str> {
        format!(
            "{prefix}_{:016x}{:016x}{:016x}",
            n,
            n.wrapping_mul(0x9e3779b97f4a7c15) ^ salt,
            salt
        )
        .into()
    }

    /// The classic image turn number `n`, `[rs, ig, msg]`, with ids from `api_id` (salts 1, 2,
    /// 3) and unlinked: the turn most stores hold, for tests and benches of their size.
    pub fn api_image_turn(n: u64) -> Turn {
        let item = |prefix: &str, ty: ItemType, salt: u64| TurnItem {
            id: api_id(prefix, n, salt),
            // Each item carries a digest of its content, as a stored turn's captured items do
            // (reasoning and messages of what they say, the image call whole).
            digest: Some((n ^ salt) as u32),
            ty,
            call_id: None,
            full: None,
        };
        Turn {
            stored: true,
            items: vec![
                item("rs", ItemType::Reasoning, 1),
                item("ig", ItemType::ImageGenerationCall, 2),
                item("msg", ItemType::Message, 3),
            ]
            .into(),
            link: None,
        }
    }

    #[test]
    fn groups_split_at_each_reasoning_item() {
        let t = turn("mcpl rs mcp rs msg", true);
        assert_eq!(
            t.group(0),
            Group {
                reasoning: None,
                start: 0,
                end: 1
            }
        );
        assert_eq!(t.group(2).reasoning, Some(1));
        assert_eq!(t.group(2).end, 3);
        assert_eq!(t.group(4).reasoning, Some(3));
        assert_eq!(t.group(3).members(), 4..5);
    }

    #[test]
    fn back_to_back_reasoning_makes_an_empty_group() {
        let t = turn("rs rs fc", true);
        assert!(t.group(0).members().is_empty());
        assert_eq!(t.group(2).reasoning, Some(1));
    }

    #[test]
    fn client_calls_pair_with_their_outputs() {
        assert!(is_output_of_call("function_call_output"));
        assert!(is_output_of_call("custom_tool_call_output"));
        assert!(!is_output_of_call("mcp_call_output"));
        assert!(ItemType::parse("shell_call").is_client_call());
        assert!(!ItemType::parse("web_search_call").is_client_call());
        assert_eq!(ItemType::parse("new_kind").as_str(), "new_kind");
    }
}
