//! rethread: a reverse proxy for the OpenAI Responses API that restores the items a follow-up
//! request left out. See `ARCHITECTURE.md` for the map.

pub mod app;
pub mod capture;
pub mod config;
pub mod error;
pub mod forward;
pub mod ledger;
pub mod metrics;
pub mod models;
pub mod proxy;
pub mod repair;
pub mod server;
pub mod tenant;
pub mod tools;
