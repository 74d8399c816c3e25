//! Operating rethread: health, shutdown, settings, metrics, logs and the offline tools.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

fn rethread(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rethread"));
    cmd.args(args).env_remove("RUST_LOG");
    for var in [
        "RETHREAD_LISTEN",
        "RETHREAD_UPSTREAM",
        "RETHREAD_CAPACITY",
        "RETHREAD_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn health_answers_for_a_live_instance_and_fails_for_a_dead_one() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let live = rethread(&["health", "--url", &format!("http://{}", proxy.addr)], &[]);
    assert!(live.status.success(), "{live:?}");
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = rethread(&["--listen", &dead_port.to_string(), "health"], &[]);
    assert!(!dead.status.success());
    let ready = client().get(proxy.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_in_flight_finish_then_exits_zero() {
    let fake = fake().await;
    let mut proxy = Rethread::start(&fake.url(), &[]);
    let mut resp = client()
        .get(proxy.url("/v1/sse?events=10&delay_ms=100"))
        .send()
        .await
        .unwrap();
    let _first = resp.chunk().await.unwrap().unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert!(
        String::from_utf8_lossy(&rest).contains("\"i\":9"),
        "the stream completed"
    );
    let status = proxy
        .wait(Duration::from_secs(10))
        .expect("rethread exited");
    assert!(status.success(), "{status:?}");
    // No new connections once draining has begun.
    assert!(client().get(proxy.url("/healthz")).send().await.is_err());
}

#[test]
fn settings_come_from_flags_then_env_then_file_then_defaults() {
    let dir = std::env::temp_dir().join(format!("rethread-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("r.toml");
    std::fs::write(&file, "capacity = 11\nretention = \"3s\"\nfallback_retries = 5\nupstream = \"http://127.0.0.1:9\"\n").unwrap();
    let file = file.to_str().unwrap();
    let out = rethread(
        &["--config", file, "--capacity", "33", "check"],
        &[("RETHREAD_CAPACITY", "22"), ("RETHREAD_RETENTION", "4s")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("capacity = 33"), "flag beats env: {text}");
    assert!(text.contains("retention = 4s"), "env beats file: {text}");
    assert!(
        text.contains("fallback_retries = 5"),
        "file beats default: {text}"
    );
    assert!(text.contains("body_limit = 67108864"), "default: {text}");
    assert!(
        !out.status.success(),
        "the upstream in the file is unreachable"
    );
    let via_env = rethread(
        &["check"],
        &[("RETHREAD_CONFIG", file), ("RETHREAD_CAPACITY", "22")],
    );
    assert!(String::from_utf8_lossy(&via_env.stdout).contains("capacity = 22"));
}

#[test]
fn workers_sets_how_many_threads_serve_connections() {
    // The upstream is never reached: rethread connects on the first request.
    let upstream = "http://127.0.0.1:9";
    let one = Rethread::start(upstream, &["--workers", "1"]);
    one.wait_for_log("workers=1");
    let three = Rethread::start_env(upstream, &[], &[("RETHREAD_WORKERS", "3")]);
    three.wait_for_log("workers=3");
    // Each worker is a thread with an event loop of its own (Linux names them in /proc); the
    // log line can come before the last thread has named itself, so wait a little for it.
    let named = || {
        std::fs::read_dir(format!("/proc/{}/task", three.pid()))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
            .filter(|comm| comm.starts_with("rethread-worker"))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while named() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(named(), 3);
    let cores = std::thread::available_parallelism().unwrap().get();
    let default = Rethread::start(upstream, &[]);
    default.wait_for_log(&format!("workers={cores}"));
}

#[test]
fn an_unknown_config_key_is_an_error_naming_it() {
    let path = std::env::temp_dir().join(format!("rethread-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "capacity = 1\nretension = \"3s\"\n").unwrap();
    let out = rethread(&["--config", path.to_str().unwrap(), "check"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retension"), "{err}");
}

#[test]
fn check_redacts_the_tenant_secret() {
    let out = rethread(
        &["check"],
        &[
            ("RETHREAD_TENANT_SECRET", "super-secret-value"),
            ("RETHREAD_UPSTREAM", "http://127.0.0.1:9"),
        ],
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("super-secret-value"));
    assert!(all.contains("tenant_secret = *****"));
}

#[tokio::test]
async fn metrics_move_after_a_repaired_request() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &["--fallback-retries", "0"]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let ig = output_id(&first.body, "image_generation_call");
    let answer = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
    assert_eq!(answer.inserted(), Some(2));
    let metrics = metrics_text(&proxy).await;
    for family in [
        "rethread_requests_total{route=\"responses_create\",status=\"2xx\"} 2",
        "rethread_repairs_total{item_type=\"reasoning\"} 1",
        "rethread_repairs_total{item_type=\"message\"} 1",
        "rethread_repaired_requests_total 1",
        "rethread_turns_learned_total 2",
        "rethread_ledger_turns 2",
        "rethread_upstream_seconds_bucket",
        "rethread_overhead_seconds_bucket",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn no_api_key_ever_reaches_logs_metrics_or_errors() {
    let fake = fake().await;
    let proxy = Rethread::start_env(&fake.url(), &["--log", "trace"], &[]);
    let azure_key = "azure-key-0123456789abcdef";
    // A repair, a cold fallback, an upstream error, an oversized body, a passthrough, Azure auth.
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let ig = output_id(&first.body, "image_generation_call");
    post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
    cold_image_followup(&fake, &proxy, |_| {}).await;
    post(
        &proxy.url("/v1/responses"),
        KEY,
        &json!({"input": [{"type": "item_reference", "id": "rs_unknown"}]}),
        &[],
    )
    .await;
    client()
        .get(proxy.url("/v1/status/429"))
        .header("authorization", KEY)
        .send()
        .await
        .unwrap();
    client()
        .post(proxy.url("/openai/v1/responses"))
        .header("api-key", azure_key)
        .json(&image_request())
        .send()
        .await
        .unwrap();
    let metrics = metrics_text(&proxy).await;
    let dead = Rethread::start_env("http://127.0.0.1:9", &["--log", "trace"], &[]);
    let failed = post(&dead.url("/v1/responses"), KEY, &image_request(), &[]).await;
    assert_eq!(failed.status, 502);
    std::thread::sleep(Duration::from_millis(200));
    let secret = KEY.trim_start_matches("Bearer ");
    for (what, text) in [
        ("logs", proxy.logs() + &dead.logs()),
        ("metrics", metrics),
        ("error", failed.text),
    ] {
        assert!(!text.contains(secret), "the key leaked into {what}");
        assert!(
            !text.contains(azure_key),
            "the Azure key leaked into {what}"
        );
    }
    assert!(
        proxy.logs().contains("TRACE") || proxy.logs().contains("DEBUG"),
        "trace logging was on"
    );
}

#[test]
fn explain_prints_the_repaired_request_offline() {
    let dir = std::env::temp_dir().join(format!("rethread-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let turn = dir.join("turn.json");
    let request = dir.join("request.json");
    std::fs::write(&turn, r#"{"id":"resp_1","store":true,"output":[{"id":"rs_1","type":"reasoning","summary":[]},{"id":"ig_1","type":"image_generation_call","result":"QUFB"},{"id":"msg_1","type":"message","role":"assistant","content":[]}]}"#).unwrap();
    std::fs::write(&request, r#"{"model":"gpt-5","input":[{"role":"user","content":"again"},{"type":"image_generation_call","id":"ig_1"}]}"#).unwrap();
    let started = Instant::now();
    let out = rethread(
        &[
            "explain",
            "--turn",
            turn.to_str().unwrap(),
            request.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# insert rs_1 (reasoning) before input item 1"),
        "{text}"
    );
    assert!(text.contains(r#"{"type":"item_reference","id":"rs_1"},{"type":"image_generation_call","id":"ig_1"},{"type":"item_reference","id":"msg_1"}"#), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn explain_prints_the_body_the_proxy_would_send() {
    // A stateless follow-up: the proxy adds encrypted reasoning to `include` and rehydrates the
    // reference; explain must show both, as the proxy sends them (B3).
    let dir = std::env::temp_dir().join(format!("rethread-explain-b3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let turn = dir.join("turn.json");
    let request = dir.join("request.json");
    std::fs::write(&turn, r#"{"id":"resp_1","store":false,"output":[{"id":"rs_1","type":"reasoning","summary":[],"encrypted_content":"enc"},{"id":"msg_1","type":"message","role":"assistant","content":[]}]}"#).unwrap();
    std::fs::write(&request, r#"{"model":"gpt-5","store":false,"input":[{"type":"item_reference","id":"rs_1"},{"type":"item_reference","id":"msg_1"}]}"#).unwrap();
    let args = [
        "explain",
        "--turn",
        turn.to_str().unwrap(),
        request.to_str().unwrap(),
    ];
    let out = rethread(&args, &[]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let body = text.lines().last().unwrap();
    let sent: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        sent["include"],
        json!(["reasoning.encrypted_content"]),
        "{text}"
    );
    assert_eq!(sent["input"][0]["encrypted_content"], "enc", "{text}");
    // A model that does not reason gets no include edit, as in the proxy.
    std::fs::write(
        &request,
        r#"{"model":"gpt-4.1","store":false,"input":"hi"}"#,
    )
    .unwrap();
    let out = rethread(&args, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("# unchanged"), "{text}");
}

#[test]
fn global_flags_work_after_a_subcommand() {
    let out = rethread(
        &[
            "check",
            "--upstream",
            "http://127.0.0.1:9",
            "--capacity",
            "7",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("capacity = 7"), "{out:?}");
    assert!(text.contains("upstream = http://127.0.0.1:9"), "{out:?}");
}

#[tokio::test]
async fn every_metric_family_is_exported_from_start_up() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let metrics = metrics_text(&proxy).await;
    for series in [
        r#"rethread_reverts_total{reason="encrypted_unsupported"} 0"#,
        r#"rethread_repairs_total{item_type="image_generation_call"} 0"#,
        r#"rethread_requests_total{route="responses_create",status="4xx"} 0"#,
        r#"rethread_fallback_retries_total{outcome="retried"} 0"#,
        r#"rethread_store_errors_total{op="lookup"} 0"#,
        "rethread_turns_learned_total 0",
        "rethread_full_items_over_budget_total 0",
        "rethread_ledger_turns 0",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_metrics_that_exist() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/grafana/rethread.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("rethread_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name)
                    .to_owned();
                queried.insert(family);
            }
        }
    }
    assert!(queried.len() >= 12, "{queried:?}");
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let metrics = metrics_text(&proxy).await;
    for family in &queried {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {family}, which rethread does not export"
        );
    }
}

#[tokio::test]
async fn check_reports_the_turns_and_memory_of_the_running_memory_store() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    assert_eq!(first.status, 200);
    let (addr, upstream) = (proxy.addr.clone(), fake.url());
    let out = tokio::task::spawn_blocking(move || {
        rethread(&["--listen", &addr, "--upstream", &upstream, "check"], &[])
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "store: the rethread on http://{} holds 1 turns in ",
            proxy.addr
        )),
        "{text}"
    );
}

#[tokio::test]
async fn with_admin_listen_the_own_endpoints_answer_there_and_the_proxy_port_forwards_them() {
    let fake = fake().await;
    let admin = format!("127.0.0.1:{}", crate::redis::free_port());
    let proxy = Rethread::start(&fake.url(), &["--admin-listen", &admin]);
    proxy.wait_for_log(&format!("health, readiness and metrics on http://{admin}"));
    let get = |url: String| async move {
        let answer = client().get(url).send().await.unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    };
    let (status, body) = get(format!("http://{admin}/metrics")).await;
    assert_eq!(status, 200);
    assert!(body.contains("rethread_requests_total"), "{body}");
    assert_eq!(
        get(format!("http://{admin}/healthz")).await,
        (200, "ok".into())
    );
    assert_eq!(get(format!("http://{admin}/readyz")).await.0, 200);
    let before = fake.requests_total();
    let (_, body) = get(proxy.url("/metrics")).await;
    assert!(
        !body.contains("rethread_"),
        "the proxy port forwards /metrics: {body}"
    );
    get(proxy.url("/healthz")).await;
    assert_eq!(fake.requests_total() - before, 2, "both went upstream");
    // The health tool asks the admin port.
    let out = rethread(&["--admin-listen", &admin, "health"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
