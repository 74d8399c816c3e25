//! HTTPS: the fake's own test CA, HTTP/2 or HTTP/1.1 by ALPN, and HTTP/2 as strict as nginx.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rethread_fake::{spawn, Alpn, FakeHandle, FakeOptions};
use serde_json::{json, Value};

async fn https_fake(alpn: Alpn) -> FakeHandle {
    spawn(FakeOptions {
        tls: Some(alpn),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A client that trusts only the fake's CA and offers h2 and http/1.1 by ALPN.
fn trusting(fake: &FakeHandle) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(fake.ca_pem().unwrap().as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

async fn echo(client: &reqwest::Client, url: String, host: Option<&str>) -> (u16, Value) {
    let mut request = client.get(url);
    if let Some(host) = host {
        request = request.header("host", host);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn alpn_chooses_http2_or_http1_and_the_test_ca_is_trusted() {
    for (alpn, version) in [
        (Alpn::H2AndHttp1, "HTTP/2.0"),
        (Alpn::H2, "HTTP/2.0"),
        (Alpn::Http1, "HTTP/1.1"),
    ] {
        let fake = https_fake(alpn).await;
        assert!(fake.url().starts_with("https://127.0.0.1:"));
        let (status, echoed) =
            echo(&trusting(&fake), format!("{}/v1/echo", fake.url()), None).await;
        assert_eq!(status, 200, "{alpn:?}");
        assert_eq!(echoed["version"], version, "{alpn:?}");
        let turn = trusting(&fake)
            .post(format!("{}/v1/responses", fake.url()))
            .header("authorization", "Bearer k")
            .json(&json!({"model": "gpt-5", "input": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(turn.status(), 200, "{alpn:?}");
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_test_ca_is_refused() {
    let fake = https_fake(Alpn::H2AndHttp1).await;
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let err = untrusting
        .get(format!("{}/v1/echo", fake.url()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn over_http2_a_host_header_beside_the_authority_is_refused_like_nginx() {
    let fake = https_fake(Alpn::H2AndHttp1).await;
    let authority = fake.addr().to_string();
    let url = format!("{}/v1/echo", fake.url());
    let (status, body) = echo(&trusting(&fake), url.clone(), Some(&authority)).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("client sent duplicate host header"),
        "{message}"
    );
    // The authority alone is what HTTP/2 wants.
    let (status, echoed) = echo(&trusting(&fake), url, None).await;
    assert_eq!(status, 200);
    assert_eq!(echoed["authority"], authority);
    assert!(echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h[0] != "host"));
    assert_eq!(fake.http2_requests(), 2);
}

#[tokio::test]
async fn over_http1_the_host_header_is_what_it_should_be() {
    let fake = https_fake(Alpn::Http1).await;
    let authority = fake.addr().to_string();
    let (status, echoed) = echo(
        &trusting(&fake),
        format!("{}/v1/echo", fake.url()),
        Some(&authority),
    )
    .await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(echoed["version"], "HTTP/1.1");
    assert_eq!(fake.http2_requests(), 0);
}
