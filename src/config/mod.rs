//! Settings: built-in defaults < config file < environment < flags.
//!
//! One struct describes every setting for both the command line (with its environment variable)
//! and the TOML file, so the three forms cannot drift apart. Unknown file keys are an error that
//! names the key.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::repair::plan::RestorePolicy;
use crate::repair::rewrite::Switches;

mod args;
mod values;

pub use self::args::{Cli, Command, SettingsArgs};
pub use self::values::{
    redact_url, ByteSize, LogFormat, Mode, ModelPatterns, Secret, Span, UnansweredCalls,
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

impl Settings {
    /// Layers the file named by `args.config` under `args` (flags and environment).
    pub fn load(args: SettingsArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => SettingsArgs::default(),
        };
        Self::resolve(args, file)
    }

    fn resolve(top: SettingsArgs, file: SettingsArgs) -> Result<Settings, ConfigError> {
        macro_rules! pick {
            ($field:ident, $default:expr) => {
                top.$field.or(file.$field).unwrap_or_else(|| $default)
            };
        }
        let upstream_text = pick!(upstream, "https://api.openai.com".to_owned());
        let upstream: http::Uri = upstream_text.parse().map_err(|e| ConfigError::Invalid {
            key: "upstream",
            message: format!("{e}"),
        })?;
        if !matches!(upstream.scheme_str(), Some("http" | "https"))
            || upstream.authority().is_none()
        {
            return Err(ConfigError::Invalid {
                key: "upstream",
                message: "must be an absolute http:// or https:// URL".into(),
            });
        }
        // RFC 9113 §8.3.1 and RFC 9110 §4.2.4: the authority sent (`:authority`, `Host`) never
        // carries userinfo, and a password in the URL would be printed with the settings.
        if upstream
            .authority()
            .is_some_and(|a| a.as_str().contains('@'))
        {
            return Err(ConfigError::Invalid {
                key: "upstream",
                message: "must not carry user:password@; credentials travel as request headers"
                    .into(),
            });
        }
        if upstream.query().is_some() {
            return Err(ConfigError::Invalid {
                key: "upstream",
                message: "must not carry a query string".into(),
            });
        }
        let store = match top.store.or(file.store) {
            None => StoreKind::Memory,
            Some(url) if url.expose() == "memory" => StoreKind::Memory,
            Some(url) if url.expose().starts_with("file:") && url.expose().len() > 5 => {
                StoreKind::File(PathBuf::from(&url.expose()[5..]))
            }
            Some(url)
                if ["redis://", "rediss://", "redis+cluster://", "rediss+cluster://"]
                    .iter()
                    .any(|scheme| url.expose().starts_with(scheme)) =>
            {
                StoreKind::Redis(url)
            }
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "store",
                    message: format!(
                        "unsupported store {:?}; use `memory`, `file:DIR`, `redis://…`, `rediss://…`, `redis+cluster://host:port,host:port,…` or `rediss+cluster://…`",
                        redact_url(other.expose())
                    ),
                })
            }
        };
        let tenant_secret = top.tenant_secret.or(file.tenant_secret);
        if matches!(store, StoreKind::Redis(_)) && tenant_secret.is_none() {
            return Err(ConfigError::Invalid {
                key: "tenant_secret",
                message: "a shared store needs the same tenant secret on every replica: set RETHREAD_TENANT_SECRET".into(),
            });
        }
        Ok(Settings {
            server: ServerSettings {
                listen: pick!(listen, SocketAddr::from(([127, 0, 0, 1], 8080))),
                admin_listen: top.admin_listen.or(file.admin_listen),
                header_timeout: pick!(header_timeout, Span(Duration::from_secs(30))).0,
                drain_timeout: pick!(drain_timeout, Span(Duration::from_secs(30))).0,
                workers: pick!(workers, 0),
                log_format: pick!(log_format, LogFormat::Pretty),
                log: top
                    .log
                    .or(file.log)
                    .or_else(|| std::env::var("RUST_LOG").ok())
                    .unwrap_or_else(|| "info".to_owned()),
            },
            upstream: UpstreamSettings {
                url: upstream,
                ca: top.upstream_ca.or(file.upstream_ca),
                connect_timeout: pick!(connect_timeout, Span(Duration::from_secs(10))).0,
                idle_timeout: pick!(idle_timeout, Span(Duration::from_secs(600))).0,
            },
            store: StoreSettings {
                kind: store,
                prefix: pick!(store_prefix, "rethread".to_owned()),
                timeout: pick!(store_timeout, Span(Duration::from_millis(20))).0,
                sync: pick!(store_sync, Span(Duration::from_secs(1))).0,
                retention: pick!(retention, Span(Duration::from_secs(30 * 86_400))).0,
                capacity: pick!(capacity, 1_000_000),
                full_items_budget: pick!(full_items_budget, ByteSize(512 << 20)).0 as usize,
                tenant_full_items_budget: pick!(tenant_full_items_budget, ByteSize(64 << 20)).0
                    as usize,
                stateless_image_budget: pick!(stateless_image_budget, ByteSize(64 << 20)).0
                    as usize,
                tenant_stateless_image_budget: pick!(
                    tenant_stateless_image_budget,
                    ByteSize(32 << 20)
                )
                .0 as usize,
            },
            capture: CaptureSettings {
                body_limit: pick!(body_limit, ByteSize(64 << 20)).0 as usize,
                full_item_max: pick!(full_item_max, ByteSize(256 << 10)).0 as usize,
            },
            repair: RepairSettings {
                policy: pick!(repair, RestorePolicy::Group),
                mode: pick!(mode, Mode::Repair),
                fallback_retries: pick!(fallback_retries, 2),
                stateless_include: pick!(stateless_include, true),
                non_reasoning_models: pick!(non_reasoning_models, ModelPatterns::non_reasoning()),
                rewrites: Switches {
                    moves: pick!(rewrite_move, true),
                    drops: pick!(rewrite_drop, true),
                    adopt: pick!(rewrite_adopt, true),
                    complete: pick!(rewrite_complete, true),
                    exclude: pick!(rewrite_exclude, true),
                    sanitise: pick!(rewrite_sanitise, true),
                    alias: pick!(rewrite_alias, true),
                    restore: pick!(rewrite_restore, true),
                    dedupe: pick!(rewrite_dedupe, true),
                    expand: pick!(rewrite_expand, true),
                },
                unanswered_calls: pick!(unanswered_calls, UnansweredCalls::Refuse),
                unanswered_call_output: Box::leak(
                    pick!(unanswered_call_output, UNANSWERED_CALL_OUTPUT.to_owned())
                        .into_boxed_str(),
                ),
            },
            tenant_secret,
        })
    }

    /// The settings as `key = value` lines, secrets redacted.
    pub fn describe(&self) -> String {
        let (server, upstream, store) = (&self.server, &self.upstream, &self.store);
        let (capture, repair) = (&self.capture, &self.repair);
        let secret = if self.tenant_secret.is_some() {
            "*****"
        } else {
            "(random per process)"
        };
        let upstream_ca = upstream.ca.as_ref().map_or_else(
            || "(system roots only)".to_owned(),
            |p| p.display().to_string(),
        );
        // Keys as the file writes them, grouped as the settings are.
        let lines: [(&str, String); 41] = [
            ("listen", server.listen.to_string()),
            (
                "admin_listen",
                server
                    .admin_listen
                    .map_or_else(|| "none (on listen)".to_owned(), |a| a.to_string()),
            ),
            ("header_timeout", format!("{:?}", server.header_timeout)),
            ("drain_timeout", format!("{:?}", server.drain_timeout)),
            ("workers", server.workers.to_string()),
            ("log_format", format!("{:?}", server.log_format)),
            ("log", server.log.clone()),
            ("tenant_secret", secret.to_owned()),
            ("upstream", upstream.url.to_string()),
            ("upstream_ca", upstream_ca),
            ("connect_timeout", format!("{:?}", upstream.connect_timeout)),
            ("idle_timeout", format!("{:?}", upstream.idle_timeout)),
            ("store", format!("{:?}", store.kind)),
            ("store_prefix", store.prefix.clone()),
            ("store_timeout", format!("{:?}", store.timeout)),
            ("store_sync", format!("{:?}", store.sync)),
            ("retention", format!("{:?}", store.retention)),
            ("capacity", store.capacity.to_string()),
            ("full_items_budget", store.full_items_budget.to_string()),
            (
                "tenant_full_items_budget",
                store.tenant_full_items_budget.to_string(),
            ),
            (
                "stateless_image_budget",
                store.stateless_image_budget.to_string(),
            ),
            (
                "tenant_stateless_image_budget",
                store.tenant_stateless_image_budget.to_string(),
            ),
            ("body_limit", capture.body_limit.to_string()),
            ("full_item_max", capture.full_item_max.to_string()),
            ("repair", format!("{:?}", repair.policy)),
            ("mode", format!("{:?}", repair.mode)),
            ("fallback_retries", repair.fallback_retries.to_string()),
            ("stateless_include", repair.stateless_include.to_string()),
            (
                "non_reasoning_models",
                repair.non_reasoning_models.to_string(),
            ),
            ("rewrite_move", repair.rewrites.moves.to_string()),
            ("rewrite_drop", repair.rewrites.drops.to_string()),
            ("rewrite_adopt", repair.rewrites.adopt.to_string()),
            ("rewrite_complete", repair.rewrites.complete.to_string()),
            ("rewrite_exclude", repair.rewrites.exclude.to_string()),
            ("rewrite_sanitise", repair.rewrites.sanitise.to_string()),
            ("rewrite_alias", repair.rewrites.alias.to_string()),
            ("rewrite_restore", repair.rewrites.restore.to_string()),
            ("rewrite_dedupe", repair.rewrites.dedupe.to_string()),
            ("rewrite_expand", repair.rewrites.expand.to_string()),
            (
                "unanswered_calls",
                format!("{:?}", repair.unanswered_calls).to_lowercase(),
            ),
            (
                "unanswered_call_output",
                format!("{:?}", repair.unanswered_call_output),
            ),
        ];
        lines
            .iter()
            .map(|(key, value)| format!("{key} = {value}\n"))
            .collect()
    }
}

fn read_file(path: &PathBuf) -> Result<SettingsArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.clone(),
        message: e.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
