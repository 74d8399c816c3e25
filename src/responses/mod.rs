//! Everything specific to the OpenAI Responses API: what an item is, how a request is read and
//! repaired, and how responses teach rethread new turns.

pub mod capture;
pub mod change;
pub mod create;
pub mod decode;
pub mod elide;
pub mod items;
pub mod repair;
pub mod request;
pub mod socket;
pub mod splice;
pub mod sse;
pub mod tee;
pub mod upstream_error;
