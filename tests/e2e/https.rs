//! HTTPS upstreams, HTTP/2 and HTTP/1.1 by ALPN: the repair and passthrough paths over both, a
//! private CA trusted through `--upstream-ca`, and `rethread check` naming the protocol.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::process::Command;

use rethread_fake::Alpn;
use serde_json::Value;

use crate::common::*;

/// `rethread check` against `upstream`, off the runtime (the fake serves on it).
async fn check(upstream: String, ca: Option<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rethread"));
        cmd.args(["--upstream", &upstream, "--connect-timeout", "5s"]);
        if let Some(ca) = &ca {
            cmd.args(["--upstream-ca", ca]);
        }
        let out = cmd
            .arg("check")
            .env_remove("RETHREAD_UPSTREAM_CA")
            .env_remove("RETHREAD_CONFIG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn check_names_the_protocol_agreed_with_the_upstream() {
    for (alpn, protocol) in [
        (Alpn::H2AndHttp1, "TLS, HTTP/2"),
        (Alpn::Http1, "TLS, HTTP/1.1"),
    ] {
        let upstream = HttpsFake::start(alpn).await;
        let (ok, out) = check(upstream.url(), Some(upstream.ca().to_owned())).await;
        let port = upstream.fake.addr().port();
        assert!(
            out.contains(&format!(
                "upstream: reachable (127.0.0.1:{port}, {protocol})"
            )),
            "{out}"
        );
        assert!(ok, "{out}");
        assert!(
            out.contains(&format!("upstream_ca = {}", upstream.ca())),
            "{out}"
        );
    }
    let plain = fake().await;
    let (ok, out) = check(plain.url(), None).await;
    assert!(ok && out.contains(", HTTP/1.1)"), "{out}");
}

#[tokio::test]
async fn a_private_ca_is_needed_and_trusted_beside_the_system_roots() {
    let upstream = HttpsFake::start(Alpn::Http1).await;
    let (ok, out) = check(upstream.url(), None).await;
    assert!(!ok, "{out}");
    assert!(out.contains("UNREACHABLE"), "{out}");
    assert!(out.contains("certificate"), "the reason is named: {out}");

    let proxy = upstream.proxy(&[]);
    let resp = client().get(proxy.url("/v1/echo")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(echoed["version"], "HTTP/1.1");
}

#[test]
fn an_unreadable_upstream_ca_stops_rethread_at_start_naming_the_file() {
    let missing =
        std::env::temp_dir().join(format!("rethread-no-such-ca-{}.pem", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_rethread"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "https://127.0.0.1:9",
        ])
        .env("RETHREAD_UPSTREAM_CA", &missing)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(err.contains(&missing.display().to_string()), "{err}");
}
