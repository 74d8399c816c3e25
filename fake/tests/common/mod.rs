//! Shared helpers for the fake's integration tests: a small reqwest wrapper and a WebSocket
//! client for `response.create` frames.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use futures_util::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use rethread_fake::{spawn, FakeHandle, FakeOptions};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket to the fake's `/v1/responses`.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) struct Fake {
    pub handle: FakeHandle,
    pub http: reqwest::Client,
}

pub(crate) async fn start() -> Fake {
    start_with(FakeOptions::default()).await
}

pub(crate) async fn start_with(opts: FakeOptions) -> Fake {
    let handle = spawn(opts).await.unwrap();
    Fake {
        handle,
        http: reqwest::Client::new(),
    }
}

pub(crate) const KEY: &str = "Bearer sk-test-a";
pub(crate) const OTHER_KEY: &str = "Bearer sk-test-b";

impl Fake {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.handle.url(), path)
    }

    /// POST /v1/responses as tenant KEY with extra headers; returns status and JSON body.
    pub(crate) async fn post(&self, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
        self.post_as(KEY, body, headers).await
    }

    pub(crate) async fn post_as(
        &self,
        key: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        self.post_to(key, "/v1/responses", body, headers).await
    }

    /// POST `body` to `path` as tenant `key`; returns status and JSON body.
    pub(crate) async fn post_to(
        &self,
        key: &str,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url(path))
            .header("authorization", key)
            .json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let value = resp.json::<Value>().await.unwrap();
        (status, value)
    }

    /// A successful first turn; returns the response.
    pub(crate) async fn turn(&self, body: Value, headers: &[(&str, &str)]) -> Value {
        let (status, value) = self.post(body, headers).await;
        assert_eq!(status, 200, "{value}");
        value
    }

    /// A new conversation of tenant KEY seeded with `items`; returns its id.
    pub(crate) async fn conversation(&self, items: Value) -> String {
        let (status, conv) = self
            .post_to(KEY, "/v1/conversations", json!({"items": items}), &[])
            .await;
        assert_eq!(status, 200, "{conv}");
        conv["id"].as_str().unwrap().to_string()
    }

    /// A new WebSocket to `/v1/responses` as tenant KEY.
    pub(crate) async fn ws(&self) -> Socket {
        let url = format!("ws://{}/v1/responses", self.handle.addr());
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", KEY.parse().unwrap());
        tokio_tungstenite::connect_async(req).await.unwrap().0
    }
}

/// The `rethread-fake` binary itself, run with `args` on a free port; killed on drop.
pub(crate) struct Binary {
    child: Child,
    pub url: String,
}

impl Binary {
    /// Starts it and reads the address it prints, as a script driving it would.
    pub(crate) fn start(args: &[&str]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rethread-fake"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_string();
        Binary { child, url }
    }

    /// POST `body` to its `/v1/responses` as tenant KEY.
    pub(crate) async fn post(&self, body: &Value) -> reqwest::Result<reqwest::Response> {
        reqwest::Client::new()
            .post(format!("{}/v1/responses", self.url))
            .header("authorization", KEY)
            .json(body)
            .send()
            .await
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send `body` as a `response.create` frame; returns the frame that ends the answer: a
/// `response.completed` event or an `error` frame.
pub(crate) async fn ws_create(socket: &mut Socket, mut body: Value) -> Value {
    body["type"] = json!("response.create");
    socket
        .send(Message::Text(body.to_string().into()))
        .await
        .unwrap();
    while let Some(msg) = socket.next().await {
        let Message::Text(text) = msg.unwrap() else {
            continue;
        };
        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
        if frame["type"] == "response.completed" || frame["type"] == "error" {
            return frame;
        }
    }
    panic!("the socket closed before the answer ended")
}

/// A successful `response.create` over `socket`; returns the response.
pub(crate) async fn ws_turn(socket: &mut Socket, body: Value) -> Value {
    let frame = ws_create(socket, body).await;
    assert_eq!(frame["type"], "response.completed", "{frame}");
    frame["response"].clone()
}

/// The ids of a response's output items.
pub(crate) fn ids(resp: &Value) -> Vec<String> {
    resp["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn user(text: &str) -> Value {
    json!({"role": "user", "content": [{"type": "input_text", "text": text}]})
}

pub(crate) fn item_ref(id: &str) -> Value {
    json!({"type": "item_reference", "id": id})
}

/// Assert an exact error body.
pub(crate) fn assert_error(
    got: (u16, Value),
    status: u16,
    message: &str,
    param: Value,
    code: Value,
) {
    let (s, body) = got;
    assert_eq!(s, status, "{body}");
    let expected = json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}});
    assert_eq!(body, expected);
}

/// Assert a 400/404 pairing error with param `input` and code null.
pub(crate) fn assert_input_error(got: (u16, Value), status: u16, message: &str) {
    assert_error(got, status, message, json!("input"), Value::Null);
}

pub(crate) fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

/// The `error` frame of WebSocket mode for a 400.
pub(crate) fn error_frame(message: &str, param: Value, code: Value) -> Value {
    json!({"type": "error", "status": 400, "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})
}
