//! From the layers to `Settings`: each setting takes the highest layer that gives it (flags and
//! environment, then the file, then its default), one function per group of `Settings`, and the
//! values no type can check (the upstream URL, the store URL, a shared store's secret) are
//! checked here, before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The layers above the defaults: flags and environment (`top`, as clap merged them) over the
/// file.
struct Layers {
    top: SettingsArgs,
    file: SettingsArgs,
}

/// The highest layer's value of a setting, taken out of both.
macro_rules! pick {
    ($layers:ident . $field:ident) => {
        $layers
            .top
            .$field
            .take()
            .or_else(|| $layers.file.$field.take())
    };
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

    /// `top` over `file` over the defaults; the upstream is checked first, then the store and
    /// its tenant secret.
    pub(super) fn resolve(top: SettingsArgs, file: SettingsArgs) -> Result<Settings, ConfigError> {
        let layers = &mut Layers { top, file };
        let upstream = upstream(layers)?;
        let store = store(layers)?;
        let tenant_secret = tenant_secret(layers, &store.kind)?;
        Ok(Settings {
            server: server(layers),
            upstream,
            store,
            capture: capture(layers),
            repair: repair(layers),
            tenant_secret,
        })
    }
}

pub(super) fn read_file(path: &Path) -> Result<SettingsArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn server(layers: &mut Layers) -> ServerSettings {
    ServerSettings {
        listen: pick!(layers.listen).unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
        admin_listen: pick!(layers.admin_listen),
        header_timeout: duration(pick!(layers.header_timeout), Duration::from_secs(30)),
        drain_timeout: duration(pick!(layers.drain_timeout), Duration::from_secs(30)),
        workers: pick!(layers.workers).unwrap_or(0),
        otel: pick!(layers.otel).unwrap_or(false),
        log_format: pick!(layers.log_format).unwrap_or(LogFormat::Pretty),
        log: pick!(layers.log)
            .or_else(|| std::env::var("RUST_LOG").ok())
            .unwrap_or_else(|| "info".to_owned()),
    }
}

fn upstream(layers: &mut Layers) -> Result<UpstreamSettings, ConfigError> {
    let url = pick!(layers.upstream).unwrap_or_else(|| "https://api.openai.com".to_owned());
    Ok(UpstreamSettings {
        url: upstream_url(&url)?,
        ca: pick!(layers.upstream_ca),
        connect_timeout: duration(pick!(layers.connect_timeout), Duration::from_secs(10)),
        idle_timeout: duration(pick!(layers.idle_timeout), Duration::from_secs(600)),
    })
}

/// An absolute `http://` or `https://` URL with neither userinfo nor a query.
fn upstream_url(text: &str) -> Result<http::Uri, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: "upstream",
        message,
    };
    let url: http::Uri = text.parse().map_err(|e| invalid(format!("{e}")))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
        return Err(invalid(
            "must be an absolute http:// or https:// URL".into(),
        ));
    }
    // RFC 9113 §8.3.1 and RFC 9110 §4.2.4: the authority sent (`:authority`, `Host`) never
    // carries userinfo, and a password in the URL would be printed with the settings.
    if url.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid(
            "must not carry user:password@; credentials travel as request headers".into(),
        ));
    }
    if url.query().is_some() {
        return Err(invalid("must not carry a query string".into()));
    }
    Ok(url)
}

fn store(layers: &mut Layers) -> Result<StoreSettings, ConfigError> {
    Ok(StoreSettings {
        kind: store_kind(pick!(layers.store))?,
        prefix: pick!(layers.store_prefix).unwrap_or_else(|| "rethread".to_owned()),
        timeout: duration(pick!(layers.store_timeout), Duration::from_millis(20)),
        sync: duration(pick!(layers.store_sync), Duration::from_secs(1)),
        retention: duration(pick!(layers.retention), Duration::from_secs(30 * 86_400)),
        capacity: pick!(layers.capacity).unwrap_or(1_000_000),
        full_items_budget: bytes(pick!(layers.full_items_budget), 512 << 20),
        tenant_full_items_budget: bytes(pick!(layers.tenant_full_items_budget), 64 << 20),
        stateless_image_budget: bytes(pick!(layers.stateless_image_budget), 64 << 20),
        tenant_stateless_image_budget: bytes(pick!(layers.tenant_stateless_image_budget), 32 << 20),
    })
}

/// `memory`, `file:DIR`, or a Redis URL of one of the four schemes.
fn store_kind(url: Option<Secret>) -> Result<StoreKind, ConfigError> {
    const REDIS: [&str; 4] = [
        "redis://",
        "rediss://",
        "redis+cluster://",
        "rediss+cluster://",
    ];
    let Some(url) = url else {
        return Ok(StoreKind::Memory);
    };
    let text = url.expose();
    if text == "memory" {
        Ok(StoreKind::Memory)
    } else if let Some(dir) = text.strip_prefix("file:").filter(|dir| !dir.is_empty()) {
        Ok(StoreKind::File(PathBuf::from(dir)))
    } else if REDIS.iter().any(|scheme| text.starts_with(scheme)) {
        Ok(StoreKind::Redis(url))
    } else {
        Err(ConfigError::Invalid {
            key: "store",
            message: format!(
                "unsupported store {:?}; use `memory`, `file:DIR`, `redis://…`, `rediss://…`, `redis+cluster://host:port,host:port,…` or `rediss+cluster://…`",
                redact_url(text)
            ),
        })
    }
}

/// The tenant secret, which a shared store requires: every replica must hash tenants alike.
fn tenant_secret(layers: &mut Layers, store: &StoreKind) -> Result<Option<Secret>, ConfigError> {
    let secret = pick!(layers.tenant_secret);
    if matches!(store, StoreKind::Redis(_)) && secret.is_none() {
        return Err(ConfigError::Invalid {
            key: "tenant_secret",
            message: "a shared store needs the same tenant secret on every replica: set RETHREAD_TENANT_SECRET".into(),
        });
    }
    Ok(secret)
}

fn capture(layers: &mut Layers) -> CaptureSettings {
    CaptureSettings {
        body_limit: bytes(pick!(layers.body_limit), 64 << 20),
        full_item_max: bytes(pick!(layers.full_item_max), 256 << 10),
    }
}

fn repair(layers: &mut Layers) -> RepairSettings {
    let output =
        pick!(layers.unanswered_call_output).unwrap_or_else(|| UNANSWERED_CALL_OUTPUT.to_owned());
    RepairSettings {
        policy: pick!(layers.repair).unwrap_or(RestorePolicy::Group),
        mode: pick!(layers.mode).unwrap_or(Mode::Repair),
        fallback_retries: pick!(layers.fallback_retries).unwrap_or(2),
        stateless_include: pick!(layers.stateless_include).unwrap_or(true),
        non_reasoning_models: pick!(layers.non_reasoning_models)
            .unwrap_or_else(ModelPatterns::non_reasoning),
        rewrites: rewrites(layers),
        unanswered_calls: pick!(layers.unanswered_calls).unwrap_or(UnansweredCalls::Refuse),
        unanswered_call_output: Box::leak(output.into_boxed_str()),
    }
}

/// The rewrites of the client's own items: all on unless switched off.
fn rewrites(layers: &mut Layers) -> Switches {
    Switches {
        moves: pick!(layers.rewrite_move).unwrap_or(true),
        drops: pick!(layers.rewrite_drop).unwrap_or(true),
        adopt: pick!(layers.rewrite_adopt).unwrap_or(true),
        complete: pick!(layers.rewrite_complete).unwrap_or(true),
        exclude: pick!(layers.rewrite_exclude).unwrap_or(true),
        sanitise: pick!(layers.rewrite_sanitise).unwrap_or(true),
        alias: pick!(layers.rewrite_alias).unwrap_or(true),
        restore: pick!(layers.rewrite_restore).unwrap_or(true),
        dedupe: pick!(layers.rewrite_dedupe).unwrap_or(true),
        expand: pick!(layers.rewrite_expand).unwrap_or(true),
    }
}

fn duration(value: Option<HumanDuration>, default: Duration) -> Duration {
    value.map_or(default, |d| d.0)
}

fn bytes(value: Option<ByteSize>, default: u64) -> usize {
    value.map_or(default, |size| size.0) as usize
}
