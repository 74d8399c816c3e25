//! Operator tools: `rethread health`, `rethread check`, `rethread explain`.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::capture::{Capture, CaptureLimits};
use crate::config::Settings;
use crate::repair::change::{self, Rules};
use crate::repair::{request, splice};

/// The address a local client should use for the own endpoints: `admin_listen` when set, else
/// `listen` (a wildcard means this host).
fn local_url(settings: &Settings) -> String {
    let mut addr = settings
        .server
        .admin_listen
        .unwrap_or(settings.server.listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

/// Exit 0 when `/healthz` answers 200 within two seconds.
pub async fn health(settings: &Settings, url: Option<&str>) -> ExitCode {
    let base = url.map_or_else(
        || local_url(settings),
        |u| u.trim_end_matches('/').to_owned(),
    );
    let uri: http::Uri = match format!("{base}/healthz").parse() {
        Ok(uri) => uri,
        Err(e) => {
            eprintln!("unhealthy: bad url: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    match tokio::time::timeout(Duration::from_secs(2), client.get(uri)).await {
        Ok(Ok(response)) if response.status().is_success() => {
            println!("healthy");
            ExitCode::SUCCESS
        }
        Ok(Ok(response)) => {
            eprintln!("unhealthy: status {}", response.status());
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("unhealthy: no answer within 2s");
            ExitCode::FAILURE
        }
    }
}

/// Print the effective settings, connect to the upstream (TLS included) and say which protocol
/// it agreed on, and test the store.
pub async fn check(settings: &Settings) -> ExitCode {
    print!("{}", settings.describe());
    let upstream_ok = check_upstream(settings).await;
    let store_ok = match &settings.store.kind {
        crate::config::StoreKind::Memory => check_memory(settings).await,
        crate::config::StoreKind::File(dir) => check_file(dir),
        crate::config::StoreKind::Redis(url) => check_redis(settings, url.expose()).await,
    };
    if upstream_ok && store_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Whether the upstream answers, with the protocol agreed on.
async fn check_upstream(settings: &Settings) -> bool {
    let host = settings.upstream.url.host().unwrap_or("");
    let port = settings.upstream.url.port_u16().unwrap_or(
        if settings.upstream.url.scheme_str() == Some("https") {
            443
        } else {
            80
        },
    );
    // The same client a request would use: same trust (system roots and `upstream_ca`), same
    // ALPN, so the protocol printed is the one requests will speak.
    match crate::forward::Upstream::from_settings(&settings.upstream) {
        Err(e) => {
            println!("upstream: UNUSABLE: {e}");
            false
        }
        Ok(upstream) => match upstream.probe().await {
            Ok(protocol) => {
                println!("upstream: reachable ({host}:{port}, {protocol})");
                true
            }
            Err(e) => {
                println!("upstream: UNREACHABLE ({host}:{port}): {e}");
                false
            }
        },
    }
}

/// The memory store is always reachable; a running rethread reports what it holds.
async fn check_memory(settings: &Settings) -> bool {
    println!("store: memory (always reachable)");
    match memory_usage(settings).await {
        Some((turns, bytes)) => println!(
            "store: the rethread on {} holds {turns} turns in {} ({} bytes per turn)",
            local_url(settings),
            mib(bytes),
            bytes.checked_div(turns).unwrap_or(0)
        ),
        None => println!(
            "store: no rethread answers on {} to report its turns and memory",
            local_url(settings)
        ),
    }
    true
}

/// The file store's directory, read as a start would read it.
fn check_file(dir: &std::path::Path) -> bool {
    match crate::ledger::file::usage(dir) {
        Ok(usage) => {
            println!(
                "store: file {}: {} turns in {} segments, {} on disk ({} bytes per turn)",
                dir.display(),
                usage.turns,
                usage.segments,
                mib(usage.bytes),
                usage.bytes.checked_div(usage.turns).unwrap_or(0)
            );
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("store: file {} (empty: created at start)", dir.display());
            true
        }
        Err(e) => {
            println!("store: file {}: UNREADABLE: {e}", dir.display());
            false
        }
    }
}

/// Whether Redis answers (its URL printed without its password), and what it holds.
async fn check_redis(settings: &Settings, url: &str) -> bool {
    let redis = crate::ledger::redis::RedisLedger::new(
        url,
        &settings.store.prefix,
        settings.store.retention,
        settings.store.timeout,
    );
    let reachable = match &redis {
        Ok(redis) => crate::ledger::Ledger::ready(redis).await,
        Err(e) => {
            println!("store: {e}{}", crate::error::causes(e));
            false
        }
    };
    let shown = crate::config::redact_url(url);
    let state = if reachable {
        "reachable"
    } else {
        "UNREACHABLE"
    };
    println!("store: {state} ({shown})");
    if let (true, Ok(redis)) = (reachable, &redis) {
        match tokio::time::timeout(Duration::from_secs(60), redis.usage()).await {
            Ok(Ok(usage)) => print_usage(&usage),
            Ok(Err(e)) => println!("store: turn count and memory unavailable: {e}"),
            Err(_) => println!("store: turn count and memory: no answer within 60s"),
        }
    }
    reachable
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

fn print_usage(usage: &crate::ledger::redis::Usage) {
    let nodes = if usage.nodes == 1 {
        "1 node".to_owned()
    } else {
        format!("{} masters", usage.nodes)
    };
    let max = if usage.maxmemory == 0 {
        "no maxmemory".to_owned()
    } else {
        format!("maxmemory {}", mib(usage.maxmemory))
    };
    println!(
        "store: {} turns in {} bucket keys on {nodes}; used_memory {} ({max}; everything on the node{}, not only rethread's turns)",
        usage.turns,
        usage.keys,
        mib(usage.used_memory),
        if usage.nodes == 1 { "" } else { "s" }
    );
}

/// The turns and bytes a running rethread's memory store reports on `/metrics`.
async fn memory_usage(settings: &Settings) -> Option<(u64, u64)> {
    let uri: http::Uri = format!("{}/metrics", local_url(settings)).parse().ok()?;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let response = tokio::time::timeout(Duration::from_secs(2), client.get(uri))
        .await
        .ok()?
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .ok()?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    let gauge = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    Some((
        gauge(crate::metrics::LEDGER_TURNS)?,
        gauge(crate::metrics::LEDGER_BYTES)?,
    ))
}

/// Print the repaired request for recorded responses and a follow-up, offline.
pub fn explain(settings: &Settings, turns: &[PathBuf], request_path: &PathBuf) -> ExitCode {
    match explain_text(settings, turns, request_path) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rethread explain: {e}");
            ExitCode::FAILURE
        }
    }
}

fn explain_text(
    settings: &Settings,
    turn_paths: &[PathBuf],
    request_path: &PathBuf,
) -> Result<String, String> {
    // Offline, a recorded response of any size is read.
    let limits = CaptureLimits {
        max_body: usize::MAX / 32,
        ..CaptureLimits::from_settings(settings)
    };
    let mut turns = Vec::new();
    for path in turn_paths {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let is_json = text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let content_type = if is_json {
            "application/json"
        } else {
            "text/event-stream"
        };
        let mut capture =
            Capture::new(Some(content_type), None, limits).map_err(|e| e.to_string())?;
        capture
            .feed(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        match capture
            .finish()
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            Some(turn) => turns.push(Arc::new(turn)),
            None => return Err(format!("{}: no output items found", path.display())),
        }
    }
    let body = Bytes::from(
        std::fs::read(request_path).map_err(|e| format!("{}: {e}", request_path.display()))?,
    );
    let view = request::parse(&body)
        .map_err(|e| format!("the request would be forwarded unchanged: {e}"))?;
    // The same decision and splice as the proxy's; offline, only the configured patterns say
    // which models do not reason.
    let rules = Rules {
        policy: settings.repair.policy,
        stateless_include: settings.repair.stateless_include,
        model_may_reason: view
            .model
            .as_deref()
            .is_none_or(|m| !settings.repair.non_reasoning_models.matches(m)),
        switches: settings.repair.rewrites,
        exclude_encrypted: false,
        answer_calls: settings.repair.answer_calls(),
        upstream_unstored: false,
    };
    let (change, unrepairable) = change::decide(&body, &view, &turns, rules, &Default::default());
    let mut out = String::new();
    if let Some(why) = &unrepairable {
        out.push_str(&format!("# not repaired: {} ({why:?})\n", why.reason()));
    }
    if change.is_empty() {
        out.push_str("# unchanged\n");
        out.push_str(&String::from_utf8_lossy(&body));
        return Ok(out);
    }
    out.push_str(&format!("# rules: {}\n", change.rules_text()));
    for id in change.dropped_ids() {
        out.push_str(&format!("# drop {id}\n"));
    }
    if change.include {
        out.push_str("# add \"reasoning.encrypted_content\" to include\n");
    }
    if change.exclude {
        out.push_str("# remove \"reasoning.encrypted_content\" from include\n");
    }
    if change.flatten {
        out.push_str("# flatten the nested input into one list\n");
    }
    for rep in &change.replacements {
        out.push_str(&format!(
            "# replace input item {} with the full recorded {} ({})\n",
            rep.index,
            rep.id,
            rep.ty.as_str()
        ));
    }
    for ins in &change.insertions {
        out.push_str(&format!(
            "# insert {} ({}) before input item {}\n",
            ins.id,
            ins.ty.as_str(),
            ins.gap
        ));
    }
    let sent = splice::concat(&change.apply(&body, &view));
    out.push_str(&String::from_utf8_lossy(&sent));
    Ok(out)
}
