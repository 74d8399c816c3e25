//! The pure core: what an item, a turn and a request are, which of the API's refusals an error
//! is, and what to change in a request. Nothing here does I/O or knows about HTTP; everything
//! above it (capture, the ledger, the proxy) uses these types.

pub mod chain;
pub mod change;
pub mod content;
pub mod fields;
pub mod items;
pub mod plan;
pub mod request;
pub mod rewrite;
pub mod splice;
pub mod unanswered;
pub mod upstream_error;

pub use plan::{
    cold_insertion, plan, with_insertion, Insertion, Plan, Replacement, RestorePolicy, Unrepairable,
};
