//! Settings: built-in defaults < config file < environment < flags.
//!
//! One struct describes every setting for both the command line (with its environment variable)
//! and the TOML file, so the three forms cannot drift apart. Unknown file keys are an error that
//! names the key.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::repair::plan::RestorePolicy;
use crate::repair::rewrite::Switches;

/// `rethread --version`: the crate's version (the wheel's and the npm packages' too) and the
/// commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("RETHREAD_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "rethread",
    version = VERSION,
    about = "A reverse proxy for the OpenAI Responses API that restores the items a follow-up request left out."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve (the default).
    Serve,
    /// Ask a running rethread's /healthz; exit 0 when it answers 200.
    Health {
        /// The address to ask (default: the `listen` setting).
        #[arg(long)]
        url: Option<String>,
    },
    /// Print the effective settings (secrets redacted), test the upstream and store, and print the store's turn count and memory use.
    Check,
    /// Print the repaired request for a recorded response and a follow-up, offline.
    Explain {
        /// A recorded response: a JSON body or an SSE stream.
        #[arg(long)]
        turn: Vec<PathBuf>,
        /// The follow-up request body.
        request: PathBuf,
    },
}

/// Every setting, each optional so that the sources can be layered.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsArgs {
    /// The TOML file to read.
    #[arg(long, env = "RETHREAD_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where to accept clients [default: 127.0.0.1:8080]
    #[arg(long, env = "RETHREAD_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Where /healthz, /readyz and /metrics answer instead of `listen` (which then forwards those paths upstream like any other), so clients of a shared gateway cannot read its metrics [default: none: on `listen`]
    #[arg(long, env = "RETHREAD_ADMIN_LISTEN", global = true)]
    pub admin_listen: Option<SocketAddr>,
    /// Where to forward; the request's path and query are appended [default: https://api.openai.com]
    #[arg(long, env = "RETHREAD_UPSTREAM", global = true)]
    pub upstream: Option<String>,
    /// A PEM file of CA certificates to trust for an HTTPS upstream, beside the system roots (a private CA, a company gateway) [default: none]
    #[arg(long, env = "RETHREAD_UPSTREAM_CA", global = true)]
    pub upstream_ca: Option<PathBuf>,
    /// Where turns are remembered: `memory`; `file:DIR` (the memory store kept on disk in DIR, so a restart forgets nothing); or shared by replicas, `redis://[user:pass@]host:port[/db]` (one node; `rediss://` for TLS) or `redis+cluster://[user:pass@]host:port,host:port,…` (a Redis Cluster or cluster-mode Valkey, by seed nodes; `rediss+cluster://` for TLS) [default: memory]
    #[arg(long, env = "RETHREAD_STORE", hide_env_values = true, global = true)]
    pub store: Option<Secret>,
    /// Prefix of every key rethread writes to a shared store [default: rethread]
    #[arg(long, env = "RETHREAD_STORE_PREFIX", global = true)]
    pub store_prefix: Option<String>,
    /// Longest wait for a shared store's lookup before a request goes on without memory [default: 20ms]
    #[arg(long, env = "RETHREAD_STORE_TIMEOUT", global = true)]
    pub store_timeout: Option<Span>,
    /// How often the file store syncs its writes to the disk: what a power loss may lose (a killed process loses nothing) [default: 1s]
    #[arg(long, env = "RETHREAD_STORE_SYNC", global = true)]
    pub store_sync: Option<Span>,
    /// How long a turn is remembered, e.g. `30d`, `12h`, `90s` [default: 30d]
    #[arg(long, env = "RETHREAD_RETENTION", global = true)]
    pub retention: Option<Span>,
    /// How many turns are remembered before the oldest are evicted [default: 1000000]
    #[arg(long, env = "RETHREAD_CAPACITY", global = true)]
    pub capacity: Option<usize>,
    /// Largest Responses request body read for repair, e.g. `64MiB` [default: 64MiB]
    #[arg(long, env = "RETHREAD_BODY_LIMIT", global = true)]
    pub body_limit: Option<ByteSize>,
    /// Largest item remembered in full (client calls; items of unstored responses) [default: 256KiB]
    #[arg(long, env = "RETHREAD_FULL_ITEM_MAX", global = true)]
    pub full_item_max: Option<ByteSize>,
    /// Memory all remembered full items may take, in the memory store [default: 512MiB]
    #[arg(long, env = "RETHREAD_FULL_ITEMS_BUDGET", global = true)]
    pub full_items_budget: Option<ByteSize>,
    /// Memory one tenant's remembered full items may take, in the memory store [default: 64MiB]
    #[arg(long, env = "RETHREAD_TENANT_FULL_ITEMS_BUDGET", global = true)]
    pub tenant_full_items_budget: Option<ByteSize>,
    /// Memory the image results of store:false turns may take (kept in RAM, oldest evicted first) [default: 64MiB]
    #[arg(long, env = "RETHREAD_STATELESS_IMAGE_BUDGET", global = true)]
    pub stateless_image_budget: Option<ByteSize>,
    /// Memory one tenant's image results of store:false turns may take [default: 32MiB]
    #[arg(long, env = "RETHREAD_TENANT_STATELESS_IMAGE_BUDGET", global = true)]
    pub tenant_stateless_image_budget: Option<ByteSize>,
    /// Time allowed to connect to the upstream [default: 10s]
    #[arg(long, env = "RETHREAD_CONNECT_TIMEOUT", global = true)]
    pub connect_timeout: Option<Span>,
    /// Longest silence from the upstream, before its headers or between body chunks [default: 10m]
    #[arg(long, env = "RETHREAD_IDLE_TIMEOUT", global = true)]
    pub idle_timeout: Option<Span>,
    /// Time a client has to send its request headers, and longest pause in a Responses request body [default: 30s]
    #[arg(long, env = "RETHREAD_HEADER_TIMEOUT", global = true)]
    pub header_timeout: Option<Span>,
    /// How much of a group to restore: `group` or `minimal` [default: group]
    #[arg(long, env = "RETHREAD_REPAIR", global = true)]
    pub repair: Option<RestorePolicy>,
    /// `repair` changes requests; `observe` only learns and reports what it would insert [default: repair]
    #[arg(long, env = "RETHREAD_MODE", global = true)]
    pub mode: Option<Mode>,
    /// Add `reasoning.encrypted_content` to `include` of `store: false` requests that lack it, so their turns can be replayed [default: true]
    #[arg(long, env = "RETHREAD_STATELESS_INCLUDE", global = true)]
    pub stateless_include: Option<bool>,
    /// Models that do not reason, as comma-separated patterns (`*` matches any text; case is ignored): rethread neither adds `include` nor inserts reasoning for them. Learned traffic overrides it [default: gpt-4*,gpt-3.5*,chatgpt-*,*-chat*]
    #[arg(long, env = "RETHREAD_NON_REASONING_MODELS", global = true)]
    pub non_reasoning_models: Option<ModelPatterns>,
    /// Move items that split a remembered group (tool outputs answered right after their calls) after it, and a group's items back to their turn's order [default: true]
    #[arg(long, env = "RETHREAD_REWRITE_MOVE", global = true)]
    pub rewrite_move: Option<bool>,
    /// Drop exact duplicates, reasoning that can never be valid, and reasoning whose message the client edited [default: true]
    #[arg(long, env = "RETHREAD_REWRITE_DROP", global = true)]
    pub rewrite_drop: Option<bool>,
    /// Give an id-less copy of a remembered reasoning item or message its id [default: true]
    #[arg(long, env = "RETHREAD_REWRITE_ADOPT", global = true)]
    pub rewrite_adopt: Option<bool>,
    /// Complete a reasoning item sent without `summary` [default: true]
    #[arg(long, env = "RETHREAD_REWRITE_COMPLETE", global = true)]
    pub rewrite_complete: Option<bool>,
    /// Remove `reasoning.encrypted_content` from the client's `include` for a model that refused it [default: true]
    #[arg(long, env = "RETHREAD_REWRITE_EXCLUDE", global = true)]
    pub rewrite_exclude: Option<bool>,
    /// On the upstream's refusal, empty reasoning `content` and leave out output-only keys sent as null [default: true]
    #[arg(long, env = "RETHREAD_REWRITE_SANITISE", global = true)]
    pub rewrite_sanitise: Option<bool>,
    /// On the upstream's refusal, shorten call ids over 64 characters to one alias, leave out over-long item ids [default: true]
    #[arg(long, env = "RETHREAD_REWRITE_ALIAS", global = true)]
    pub rewrite_alias: Option<bool>,
    /// On the upstream's refusal, put back a remembered item the client mangled (a web_search_call's action) [default: true]
    #[arg(long, env = "RETHREAD_REWRITE_RESTORE", global = true)]
    pub rewrite_restore: Option<bool>,
    /// Leave out of a request that continues a chain (`previous_response_id`) the items rethread saw that chain hold [default: true]
    #[arg(long, env = "RETHREAD_REWRITE_DEDUPE", global = true)]
    pub rewrite_dedupe: Option<bool>,
    /// When the upstream lost a `store: false` chain (another socket, another replica), send the chain's whole history in its place, if rethread holds all of it [default: true]
    #[arg(long, env = "RETHREAD_REWRITE_EXPAND", global = true)]
    pub rewrite_expand: Option<bool>,
    /// Calls without an output: `refuse` (forward as they are) or `answer` (add an output saying the call was interrupted) [default: refuse]
    #[arg(long, env = "RETHREAD_UNANSWERED_CALLS", global = true)]
    pub unanswered_calls: Option<UnansweredCalls>,
    /// The output text `unanswered_calls = answer` gives an unanswered call
    #[arg(long, env = "RETHREAD_UNANSWERED_CALL_OUTPUT", global = true)]
    pub unanswered_call_output: Option<String>,
    /// Retries after an upstream error naming a missing reasoning item rethread did not know [default: 2]
    #[arg(long, env = "RETHREAD_FALLBACK_RETRIES", global = true)]
    pub fallback_retries: Option<u32>,
    /// Log line format: `pretty` or `json` [default: pretty]
    #[arg(long, env = "RETHREAD_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
    /// Log filter in RUST_LOG syntax, e.g. `info,rethread=debug` [default: $RUST_LOG or info]
    #[arg(long, env = "RETHREAD_LOG", global = true)]
    pub log: Option<String>,
    /// Secret keying tenant hashes; required with a shared store [default: random per process]
    #[arg(
        long,
        env = "RETHREAD_TENANT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub tenant_secret: Option<Secret>,
    /// Time in-flight requests and streams get to finish on shutdown [default: 30s]
    #[arg(long, env = "RETHREAD_DRAIN_TIMEOUT", global = true)]
    pub drain_timeout: Option<Span>,
    /// Threads serving requests; `0` is one per CPU core [default: 0]
    #[arg(long, env = "RETHREAD_WORKERS", global = true)]
    pub workers: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Repair,
    Observe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

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

/// What becomes of a call the request gives no output (N1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UnansweredCalls {
    /// Forwarded as it is (the API refuses it: `No tool output found for …`).
    #[default]
    Refuse,
    /// An output saying the call was interrupted is added right after the call's group.
    Answer,
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

/// A URL with its password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:*****{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A duration written `500ms`, `90s`, `10m`, `12h`, `30d`, or a number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("not a duration: {s:?}"))?;
        let ms = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("unknown unit in {s:?}; use ms, s, m, h or d")),
        };
        Ok(Span(Duration::from_millis(n.saturating_mul(ms))))
    }
}

/// A size written `1024`, `64KiB`, `64MiB`, `1GiB` (or KB/MB/GB, read as powers of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
        let mul: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(format!("unknown unit in {s:?}; use B, KiB, MiB or GiB")),
        };
        Ok(ByteSize(n.saturating_mul(mul)))
    }
}

/// Model names as patterns: `*` matches any run of characters, case is ignored. Written as a
/// comma-separated list on the command line, as a list (or the same string) in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelPatterns(Vec<String>);

impl ModelPatterns {
    /// The families that do not reason: they refuse reasoning items and encrypted reasoning.
    pub fn non_reasoning() -> Self {
        Self(
            ["gpt-4*", "gpt-3.5*", "chatgpt-*", "*-chat*"]
                .map(String::from)
                .to_vec(),
        )
    }

    /// Whether `model` matches one of the patterns.
    pub fn matches(&self, model: &str) -> bool {
        self.0.iter().any(|p| glob(p.as_bytes(), model.as_bytes()))
    }
}

/// `*`-only wildcard matching, ASCII case ignored, without recursion blow-up (greedy with backtracking to the last
/// star).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p].eq_ignore_ascii_case(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl fmt::Display for ModelPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl FromStr for ModelPatterns {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Self(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

impl<'de> Deserialize<'de> for ModelPatterns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::List(list) => Ok(Self(list)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A secret: shown as `*****` in every debug and log output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Secret(s.to_owned()))
    }
}

/// Numbers or strings in the file, parsed like the flag.
macro_rules! deserialize_via_from_str {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    N(u64),
                    S(String),
                }
                let text = match Raw::deserialize(d)? {
                    Raw::N(n) => n.to_string(),
                    Raw::S(s) => s,
                };
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
deserialize_via_from_str!(Span);
deserialize_via_from_str!(ByteSize);
deserialize_via_from_str!(Secret);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> SettingsArgs {
        let mut all = vec!["rethread"];
        all.extend_from_slice(list);
        Cli::try_parse_from(all).unwrap().settings
    }

    #[test]
    fn defaults_fill_what_nothing_sets() {
        let s = Settings::resolve(SettingsArgs::default(), SettingsArgs::default()).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.upstream.url.to_string(), "https://api.openai.com/");
        assert_eq!(s.store.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(s.capture.body_limit, 64 << 20);
    }

    #[test]
    fn flags_work_on_either_side_of_a_subcommand() {
        for argv in [
            &["rethread", "check", "--upstream", "http://u:1"][..],
            &["rethread", "--upstream", "http://u:1", "check"],
            &[
                "rethread",
                "explain",
                "--turn",
                "t.json",
                "r.json",
                "--upstream",
                "http://u:1",
            ],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            assert_eq!(
                cli.settings.upstream.as_deref(),
                Some("http://u:1"),
                "{argv:?}"
            );
            assert!(cli.command.is_some());
        }
    }

    #[test]
    fn flags_beat_the_file() {
        let file: SettingsArgs =
            toml::from_str("capacity = 5\nretention = \"2s\"\nlisten = \"127.0.0.1:1\"").unwrap();
        let s = Settings::resolve(args(&["--capacity", "7"]), file).unwrap();
        assert_eq!(s.store.capacity, 7);
        assert_eq!(s.store.retention, Duration::from_secs(2));
        assert_eq!(s.server.listen.port(), 1);
    }

    #[test]
    fn the_documented_config_file_holds_the_defaults() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/rethread.toml");
        let documented =
            Settings::resolve(SettingsArgs::default(), read_file(&path).unwrap()).unwrap();
        let defaults = Settings::resolve(SettingsArgs::default(), SettingsArgs::default()).unwrap();
        assert_eq!(documented.describe(), defaults.describe());
    }

    #[test]
    fn the_azure_example_config_is_valid() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/azure.toml");
        let s = Settings::resolve(SettingsArgs::default(), read_file(&path).unwrap()).unwrap();
        assert_eq!(s.upstream.url.host(), Some("my-resource.openai.azure.com"));
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let err = toml::from_str::<SettingsArgs>("capacty = 5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("capacty"), "{err}");
    }

    #[test]
    fn a_shared_store_needs_a_tenant_secret() {
        let args = |secret: Option<&str>| SettingsArgs {
            store: Some("redis://u:pw@127.0.0.1:6379/0".parse().unwrap()),
            tenant_secret: secret.map(|s| s.parse().unwrap()),
            ..Default::default()
        };
        let err = Settings::resolve(args(None), SettingsArgs::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant_secret"), "{err}");
        let ok = Settings::resolve(args(Some("s")), SettingsArgs::default()).unwrap();
        assert!(!ok.describe().contains("pw@"), "{}", ok.describe());
        let cluster = SettingsArgs {
            store: Some("rediss+cluster://u:pw@h1:7000,h2:7001".parse().unwrap()),
            tenant_secret: Some("s".parse().unwrap()),
            ..Default::default()
        };
        let cluster = Settings::resolve(cluster, SettingsArgs::default()).unwrap();
        assert!(matches!(cluster.store.kind, StoreKind::Redis(_)));
        assert!(!cluster.describe().contains("pw"), "{}", cluster.describe());
        let bad = SettingsArgs {
            store: Some("postgres://x".parse().unwrap()),
            ..Default::default()
        };
        assert!(Settings::resolve(bad, SettingsArgs::default()).is_err());
    }

    #[test]
    fn units_parse() {
        assert_eq!(
            "500ms".parse::<Span>().unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            "30d".parse::<Span>().unwrap().0,
            Duration::from_secs(2_592_000)
        );
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 << 20);
        assert!("5 parsecs".parse::<Span>().is_err());
    }

    #[test]
    fn secrets_and_passwords_are_redacted() {
        let s: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{s:?}"), "*****");
        assert_eq!(
            redact_url("redis://u:pw@h:6379/0"),
            "redis://u:*****@h:6379/0"
        );
    }

    #[test]
    fn model_patterns_match_whole_names_with_stars() {
        let p = ModelPatterns::non_reasoning();
        for model in [
            "gpt-4.1",
            "GPT-4o-mini",
            "gpt-3.5-turbo",
            "chatgpt-4o-latest",
            "gpt-5-chat-latest",
        ] {
            assert!(p.matches(model), "{model}");
        }
        for model in [
            "gpt-5",
            "o4-mini",
            "gpt-5.1-codex",
            "o3",
            "my-gpt4-deployment",
            "",
        ] {
            assert!(!p.matches(model), "{model}");
        }
        let file: SettingsArgs =
            toml::from_str("non_reasoning_models = [\"my-*\", \"x\"]").unwrap();
        assert!(file.non_reasoning_models.unwrap().matches("my-deployment"));
        let flag = args(&["--non-reasoning-models", "a*, b"]);
        assert_eq!(flag.non_reasoning_models.unwrap().to_string(), "a*,b");
        assert!(!"".parse::<ModelPatterns>().unwrap().matches("gpt-4"));
    }

    #[test]
    fn a_bad_upstream_is_refused() {
        for bad in ["ftp://x", "not a url", "http://h/?q=1", "https://user:pw@h"] {
            let a = SettingsArgs {
                upstream: Some(bad.into()),
                ..Default::default()
            };
            assert!(
                Settings::resolve(a, SettingsArgs::default()).is_err(),
                "{bad}"
            );
        }
    }
}
