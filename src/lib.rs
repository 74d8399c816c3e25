//! rethread: a reverse proxy for the OpenAI Responses API that restores the items a follow-up
//! request left out. See `ARCHITECTURE.md` for the map.

pub mod responses;
pub mod ledger;
pub mod tenant;
pub mod config;
pub mod error;
pub mod forward;
pub mod metrics;
pub mod app;
pub mod proxy;
pub mod server;
pub mod tools;
