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

/// Both protocols, and the version the fake then reports.
const BOTH: [(Alpn, &str); 2] = [(Alpn::H2AndHttp1, "HTTP/2.0"), (Alpn::Http1, "HTTP/1.1")];

fn header<'a>(echoed: &'a Value, name: &str) -> Vec<&'a str> {
    echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn image_followup_gets_its_reasoning_back_over_both_protocols() {
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&["--fallback-retries", "0"]);
        let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
        assert_eq!(first.status, 200, "{version}: {}", first.text);
        let ig = output_id(&first.body, "image_generation_call");
        let followup = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
        assert_eq!(followup.status, 200, "{version}: {}", followup.text);
        assert_eq!(followup.inserted(), Some(2), "{version}");
        let sent: Value =
            serde_json::from_slice(&upstream.fake.last_request_body().unwrap()).unwrap();
        assert_eq!(sent["input"][1]["id"], output_id(&first.body, "reasoning"));
        assert_eq!(
            upstream.fake.http2_requests() == 2,
            alpn == Alpn::H2AndHttp1,
            "{version}"
        );
    }
}

#[tokio::test]
async fn a_streamed_turn_over_both_protocols_teaches_the_followup() {
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&["--fallback-retries", "0"]);
        let mut request = image_request();
        request["stream"] = serde_json::json!(true);
        let first = post(&proxy.url("/v1/responses"), KEY, &request, &[]).await;
        assert_eq!(first.status, 200, "{version}: {}", first.text);
        let ig = streamed_id(&first.text, "image_generation_call");
        let followup = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
        assert_eq!(followup.status, 200, "{version}: {}", followup.text);
        assert_eq!(followup.inserted(), Some(2), "{version}");
    }
}

#[tokio::test]
async fn the_authority_travels_as_http2_wants_and_http1_needs() {
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&[]);
        let resp = client()
            .get(proxy.url("/v1/echo"))
            .header("x-request-id", "mine")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{version}");
        let echoed: Value = resp.json().await.unwrap();
        assert_eq!(echoed["version"], version);
        let authority = upstream.fake.addr().to_string();
        if alpn == Alpn::Http1 {
            assert_eq!(header(&echoed, "host"), [authority.as_str()], "{echoed}");
        } else {
            // RFC 9113 §8.3.1: the authority in `:authority`, and no `host` beside it.
            assert_eq!(echoed["authority"], authority.as_str(), "{echoed}");
            assert!(header(&echoed, "host").is_empty(), "{echoed}");
        }
        assert_eq!(header(&echoed, "x-request-id"), ["mine"]);
    }
}

#[tokio::test]
async fn websocket_mode_is_repaired_through_an_upstream_that_offers_http2() {
    for (alpn, version) in BOTH {
        let upstream = HttpsFake::start(alpn).await;
        let proxy = upstream.proxy(&["--fallback-retries", "0"]);
        // An HTTP/2 connection is pooled first: the upgrade must not be sent on it.
        let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
        assert_eq!(first.status, 200, "{version}: {}", first.text);
        let mut socket = ws_connect(&format!("ws://{}/v1/responses", proxy.addr), KEY).await;
        let events = ws_create(&mut socket, image_request()).await;
        assert_eq!(
            events.last().unwrap()["type"],
            "response.completed",
            "{version}"
        );
        let ig = events
            .iter()
            .find(|e| {
                e["type"] == "response.output_item.done"
                    && e["item"]["type"] == "image_generation_call"
            })
            .unwrap()["item"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let followup = ws_create(&mut socket, image_followup(&ig)).await;
        assert_eq!(
            followup.last().unwrap()["type"],
            "response.completed",
            "{version}: {followup:?}"
        );
    }
}
