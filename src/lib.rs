//! rethread: a reverse proxy for the OpenAI Responses API that restores the items a follow-up
//! request left out. See `ARCHITECTURE.md` for the map.
//!
//! Public modules are what the binary, the fuzz targets and the benches use; the request glue
//! and the shared state stay private.

mod app;
pub mod capture;
pub mod config;
mod error;
mod forward;
pub mod ledger;
mod metrics;
mod models;
mod otel;
mod proxy;
pub use rethread_repair as repair;
pub mod server;
mod sync;
pub mod tenant;
pub mod tools;
#[doc(hidden)]
pub use forward::decode_chunked;
mod upstream_store;
