//! Settings: built-in defaults < config file < environment < flags.
//!
//! One struct describes every setting for both the command line (with its environment variable)
//! and the TOML file, so the three forms cannot drift apart (`args.rs`); its doc comments are the
//! settings' documentation, read back by `catalogue.rs` for `rethread check` and the README (`readme.rs`).
//! Unknown file keys are an error that names the key. `resolve.rs` layers the sources into
//! `Settings`, grouped by the part of rethread that reads them; `describe.rs` prints them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::repair::plan::RestorePolicy;
use crate::repair::rewrite::Switches;

mod args;
mod catalogue;
mod describe;
#[cfg(test)]
mod readme;
mod resolve;
mod values;

pub use self::args::{Cli, Command, SettingsArgs};
pub use self::values::{
    redact_url, ByteSize, HumanDuration, LogFormat, Mode, ModelPatterns, Secret, UnansweredCalls,
};

/// Where turns are remembered.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    /// The memory store kept on disk in this directory (`ledger/file.rs`).
    File(PathBuf),
    /// A Redis URL — one node (`redis://`, `rediss://`) or a cluster's seed nodes
    /// (`redis+cluster://`, `rediss+cluster://`); it may hold a password, so it prints redacted.
    Redis(Secret),
}

impl fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::File(dir) => write!(f, "file:{}", dir.display()),
            Self::Redis(url) => f.write_str(&redact_url(url.expose())),
        }
    }
}

/// The effective settings, grouped by the part of rethread that reads them (the flags, the
/// environment and the file stay flat: `SettingsArgs`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub store: StoreSettings,
    pub capture: CaptureSettings,
    pub repair: RepairSettings,
    pub tenant_secret: Option<Secret>,
}

/// The listener, its clients' time limits, the runtime and logging.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Where the own endpoints answer, when not on `listen`.
    pub admin_listen: Option<SocketAddr>,
    pub header_timeout: Duration,
    pub drain_timeout: Duration,
    /// Runtime worker threads; `0`: one per CPU core.
    pub workers: usize,
    /// OpenTelemetry traces exported (`otel/`).
    pub otel: bool,
    pub log_format: LogFormat,
    pub log: String,
}

/// Where requests go and how long rethread waits for it.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub url: http::Uri,
    /// CA certificates (PEM) trusted beside the system roots.
    pub ca: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Where turns are remembered, for how long, and how much.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub kind: StoreKind,
    pub prefix: String,
    pub timeout: Duration,
    /// How often the file store syncs to the disk.
    pub sync: Duration,
    pub retention: Duration,
    pub capacity: usize,
    pub full_items_budget: usize,
    pub tenant_full_items_budget: usize,
    pub stateless_image_budget: usize,
    pub tenant_stateless_image_budget: usize,
}

/// How much of a request and of a response rethread reads.
#[derive(Clone, Copy, Debug)]
pub struct CaptureSettings {
    pub body_limit: usize,
    pub full_item_max: usize,
}

/// What rethread may change in a request, and how hard it tries.
#[derive(Clone, Debug)]
pub struct RepairSettings {
    pub policy: RestorePolicy,
    pub mode: Mode,
    pub fallback_retries: u32,
    pub stateless_include: bool,
    pub non_reasoning_models: ModelPatterns,
    /// Which rewrites of the client's own items apply.
    pub rewrites: Switches,
    pub unanswered_calls: UnansweredCalls,
    /// Leaked once at start-up: every request's `Rules` (which are `Copy`) refer to it.
    pub unanswered_call_output: &'static str,
}

impl RepairSettings {
    /// The output text for unanswered calls, when they are to be answered.
    pub fn answer_calls(&self) -> Option<&'static str> {
        (self.unanswered_calls == UnansweredCalls::Answer).then_some(self.unanswered_call_output)
    }
}

/// The default text of an added output.
pub const UNANSWERED_CALL_OUTPUT: &str = "The call was interrupted and returned no result.";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("setting `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
