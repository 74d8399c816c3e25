//! The command line: the subcommands, and every setting as a flag, an environment variable and
//! a file key at once (`SettingsArgs`, one flat struct the three sources share).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use super::values::{
    ByteSize, HumanDuration, LogFormat, Mode, ModelPatterns, Secret, UnansweredCalls,
};
use crate::repair::plan::RestorePolicy;

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

// The one place a setting is written: its flag, its environment variable and its file key (the
// field's name) are declared here, and its doc comment is its meaning and `[default: …]` (in
// Markdown), which `--help`, the README's settings table (`readme.rs`) and `rethread check` (the
// order of its lines) all read (`catalogue.rs`). Grouped as `Settings` is, by the part of
// rethread that reads them. (A second paragraph of doc comment here would become the command's
// `--help` text.)
/// Every setting, each optional so that the sources can be layered.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsArgs {
    /// The TOML file to read (see `config/rethread.toml`) [default: none]
    #[arg(long, env = "RETHREAD_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    // The listener, its clients, the runtime and logging (`ServerSettings`).
    /// Where to accept clients [default: `127.0.0.1:8080`]
    #[arg(long, env = "RETHREAD_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Where `/healthz`, `/readyz` and `/metrics` answer instead of `listen`, which then forwards
    /// those paths upstream like any other (a gateway shared by many clients, who should not read
    /// its metrics); `rethread health` and `check` ask there [default: none]
    #[arg(long, env = "RETHREAD_ADMIN_LISTEN", global = true)]
    pub admin_listen: Option<SocketAddr>,
    /// Time a client has to send its request headers; also the longest pause in a Responses
    /// request body [default: `30s`]
    #[arg(long, env = "RETHREAD_HEADER_TIMEOUT", global = true)]
    pub header_timeout: Option<HumanDuration>,
    /// Time in-flight requests and streams get to finish on shutdown [default: `30s`]
    #[arg(long, env = "RETHREAD_DRAIN_TIMEOUT", global = true)]
    pub drain_timeout: Option<HumanDuration>,
    /// Threads serving connections, each with an event loop of its own (as nginx's worker
    /// processes); accepted connections are handed to them in turn. `1` suits a sidecar on a
    /// small machine shared with its application [default: `0` (one per CPU core)]
    #[arg(long, env = "RETHREAD_WORKERS", global = true)]
    pub workers: Option<usize>,
    /// Export OpenTelemetry traces (a span per request and per upstream attempt, with the GenAI
    /// conventions) to the collector the standard `OTEL_EXPORTER_OTLP_*` variables name (see
    /// "Traces") [default: `false`]
    #[arg(long, env = "RETHREAD_OTEL", global = true)]
    pub otel: Option<bool>,
    /// Log line format: `pretty` or `json` [default: `pretty`]
    #[arg(long, env = "RETHREAD_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
    /// Log filter in RUST_LOG syntax, e.g. `info,rethread=debug` [default: `$RUST_LOG` or
    /// `info`]
    #[arg(long, env = "RETHREAD_LOG", global = true)]
    pub log: Option<String>,
    /// Secret keying the tenant hashes; required with a shared store. Prefer the environment
    /// variable: flags show in process listings [default: random per process]
    #[arg(
        long,
        env = "RETHREAD_TENANT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub tenant_secret: Option<Secret>,

    // Where requests go (`UpstreamSettings`).
    /// Where to forward; the request's path and query are appended to its path (no
    /// `user:password@`: credentials travel as the client's headers) [default:
    /// `https://api.openai.com`]
    #[arg(long, env = "RETHREAD_UPSTREAM", global = true)]
    pub upstream: Option<String>,
    /// A PEM file of CA certificates to trust for an HTTPS upstream, beside the system roots (a
    /// private CA, a company gateway) [default: none]
    #[arg(long, env = "RETHREAD_UPSTREAM_CA", global = true)]
    pub upstream_ca: Option<PathBuf>,
    /// Time allowed to connect to the upstream [default: `10s`]
    #[arg(long, env = "RETHREAD_CONNECT_TIMEOUT", global = true)]
    pub connect_timeout: Option<HumanDuration>,
    /// Longest silence from the upstream: before its headers (counted from the request body's
    /// last chunk) or between body chunks; never cuts a live stream or an upload that is still
    /// moving [default: `10m`]
    #[arg(long, env = "RETHREAD_IDLE_TIMEOUT", global = true)]
    pub idle_timeout: Option<HumanDuration>,

    // Where turns are remembered, for how long, and how much (`StoreSettings`).
    /// Where turns are remembered: `memory`; `file:DIR`, the memory store kept on disk in DIR, so
    /// a restart forgets nothing (see "Memory that survives a restart"); or shared by replicas,
    /// one Redis node `redis://[user:pass@]host:port[/db]` (`rediss://` for TLS) or a Redis
    /// Cluster (or cluster-mode Valkey) by seed nodes
    /// `redis+cluster://[user:pass@]host:port,host:port,…` (`rediss+cluster://` for TLS)
    /// [default: `memory`]
    #[arg(long, env = "RETHREAD_STORE", hide_env_values = true, global = true)]
    pub store: Option<Secret>,
    /// Prefix of every key rethread writes to a shared store [default: `rethread`]
    #[arg(long, env = "RETHREAD_STORE_PREFIX", global = true)]
    pub store_prefix: Option<String>,
    /// Longest wait for a shared store's lookup; past it the request goes on without memory
    /// [default: `20ms`]
    #[arg(long, env = "RETHREAD_STORE_TIMEOUT", global = true)]
    pub store_timeout: Option<HumanDuration>,
    /// How often the file store syncs its writes to the disk: what a power loss may lose (a
    /// killed process loses nothing) [default: `1s`]
    #[arg(long, env = "RETHREAD_STORE_SYNC", global = true)]
    pub store_sync: Option<HumanDuration>,
    /// How long a turn is remembered, e.g. `30d`, `12h`, `90s` [default: `30d`]
    #[arg(long, env = "RETHREAD_RETENTION", global = true)]
    pub retention: Option<HumanDuration>,
    /// How many turns are remembered before the oldest are evicted [default: `1000000`]
    #[arg(long, env = "RETHREAD_CAPACITY", global = true)]
    pub capacity: Option<usize>,
    /// Memory all remembered full items may take, in the memory store [default: `512MiB`]
    #[arg(long, env = "RETHREAD_FULL_ITEMS_BUDGET", global = true)]
    pub full_items_budget: Option<ByteSize>,
    /// Memory one tenant's remembered full items may take, in the memory store [default:
    /// `64MiB`]
    #[arg(long, env = "RETHREAD_TENANT_FULL_ITEMS_BUDGET", global = true)]
    pub tenant_full_items_budget: Option<ByteSize>,
    /// Memory the image results of `store: false` turns may take, kept in RAM, oldest evicted
    /// first (see "`store: false`") [default: `64MiB`]
    #[arg(long, env = "RETHREAD_STATELESS_IMAGE_BUDGET", global = true)]
    pub stateless_image_budget: Option<ByteSize>,
    /// Memory one tenant's image results of `store: false` turns may take; an image larger than
    /// this is not kept [default: `32MiB`]
    #[arg(long, env = "RETHREAD_TENANT_STATELESS_IMAGE_BUDGET", global = true)]
    pub tenant_stateless_image_budget: Option<ByteSize>,

    // How much of a request and of a response rethread reads (`CaptureSettings`).
    /// Largest Responses request body read for repair, e.g. `64MiB`; larger ones get 413
    /// [default: `64MiB`]
    #[arg(long, env = "RETHREAD_BODY_LIMIT", global = true)]
    pub body_limit: Option<ByteSize>,
    /// Largest item remembered in full (client calls; items of unstored responses) [default:
    /// `256KiB`]
    #[arg(long, env = "RETHREAD_FULL_ITEM_MAX", global = true)]
    pub full_item_max: Option<ByteSize>,

    // What rethread may change in a request, and how hard it tries (`RepairSettings`).
    /// How much of a group to restore: `group` the whole group, `minimal` only what the API
    /// requires [default: `group`]
    #[arg(long, env = "RETHREAD_REPAIR", global = true)]
    pub repair: Option<RestorePolicy>,
    /// `repair` changes requests; `observe` only learns and reports what it would change (the
    /// rules and ids), changing nothing [default: `repair`]
    #[arg(long, env = "RETHREAD_MODE", global = true)]
    pub mode: Option<Mode>,
    /// Retries per request after an upstream refusal that names what to change (a missing
    /// reasoning item memory lacked; E2, E6, E15) [default: `2`]
    #[arg(long, env = "RETHREAD_FALLBACK_RETRIES", global = true)]
    pub fallback_retries: Option<u32>,
    /// Add `reasoning.encrypted_content` to the `include` of a `store: false` request to a model
    /// that reasons, when it lacks it, so its turn can be replayed [default: `true`]
    #[arg(long, env = "RETHREAD_STATELESS_INCLUDE", global = true)]
    pub stateless_include: Option<bool>,
    /// Models that do not reason, as comma-separated patterns (`*` matches any text; case is
    /// ignored; a list in the file): rethread neither adds `include` nor inserts reasoning for
    /// them. What traffic shows overrides it [default: `gpt-4*,gpt-3.5*,chatgpt-*,*-chat*`]
    #[arg(long, env = "RETHREAD_NON_REASONING_MODELS", global = true)]
    pub non_reasoning_models: Option<ModelPatterns>,
    /// Move items that split a remembered group (tool outputs answered right after their calls)
    /// after it, and a group's items back to their turn's order (see "The rewrites") [default:
    /// `true`]
    #[arg(long, env = "RETHREAD_REWRITE_MOVE", global = true)]
    pub rewrite_move: Option<bool>,
    /// Drop exact duplicates, reasoning that can never be valid, and reasoning whose message the
    /// client edited [default: `true`]
    #[arg(long, env = "RETHREAD_REWRITE_DROP", global = true)]
    pub rewrite_drop: Option<bool>,
    /// Give an id-less copy of a remembered reasoning item or message its id [default: `true`]
    #[arg(long, env = "RETHREAD_REWRITE_ADOPT", global = true)]
    pub rewrite_adopt: Option<bool>,
    /// Complete a reasoning item sent without `summary`, and, on E6, a call sent by reference
    /// [default: `true`]
    #[arg(long, env = "RETHREAD_REWRITE_COMPLETE", global = true)]
    pub rewrite_complete: Option<bool>,
    /// Remove `reasoning.encrypted_content` from the client's `include` for a model that refused
    /// it [default: `true`]
    #[arg(long, env = "RETHREAD_REWRITE_EXCLUDE", global = true)]
    pub rewrite_exclude: Option<bool>,
    /// On the upstream's refusal, leave out reasoning text and output-only keys sent as `null`
    /// [default: `true`]
    #[arg(long, env = "RETHREAD_REWRITE_SANITISE", global = true)]
    pub rewrite_sanitise: Option<bool>,
    /// On the upstream's refusal, shorten call ids over 64 characters to one alias; leave out
    /// over-long item ids [default: `true`]
    #[arg(long, env = "RETHREAD_REWRITE_ALIAS", global = true)]
    pub rewrite_alias: Option<bool>,
    /// Pair an output that carries its call's id in `id`; on the upstream's refusal, put back a
    /// remembered item the client mangled (a `web_search_call`'s action) [default: `true`]
    #[arg(long, env = "RETHREAD_REWRITE_RESTORE", global = true)]
    pub rewrite_restore: Option<bool>,
    /// Leave out of a request that continues a chain (`previous_response_id`) the items rethread
    /// saw that chain hold (see "Chains") [default: `true`]
    #[arg(long, env = "RETHREAD_REWRITE_DEDUPE", global = true)]
    pub rewrite_dedupe: Option<bool>,
    /// When the upstream lost a `store: false` chain (another socket, another replica), send the
    /// chain's whole history in its place, if rethread holds all of it (see "Chains") [default:
    /// `true`]
    #[arg(long, env = "RETHREAD_REWRITE_EXPAND", global = true)]
    pub rewrite_expand: Option<bool>,
    /// Calls the request leaves without output: `refuse` forwards them as they are; `answer` adds
    /// an output saying the call was interrupted (opt-in: see "The rewrites") [default:
    /// `refuse`]
    #[arg(long, env = "RETHREAD_UNANSWERED_CALLS", global = true)]
    pub unanswered_calls: Option<UnansweredCalls>,
    /// The output text `unanswered_calls = answer` gives an unanswered call [default: `The call
    /// was interrupted and returned no result.`]
    #[arg(long, env = "RETHREAD_UNANSWERED_CALL_OUTPUT", global = true)]
    pub unanswered_call_output: Option<String>,
}
