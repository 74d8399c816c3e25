//! Test harness: the real `rethread` binary on port 0, in front of the project's strict fake.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub(crate) use rethread_fake::{spawn as spawn_fake, FakeHandle, FakeOptions};

pub(crate) const KEY: &str = "Bearer sk-test-tenant-a-0123456789";
pub(crate) const OTHER_KEY: &str = "Bearer sk-test-tenant-b-9876543210";

/// An Azure-style deployment name that does not reason, known to `strict_fake` but not to
/// rethread.
pub(crate) const DEPLOYMENT: &str = "contoso-gpt41";

/// The fake, refusing reasoning and encrypted reasoning for `DEPLOYMENT` too.
pub(crate) async fn strict_fake() -> FakeHandle {
    spawn_fake(FakeOptions {
        non_reasoning_models: vec![DEPLOYMENT.into()],
        ..FakeOptions::default()
    })
    .await
    .unwrap()
}

/// The body of the last Responses request the fake got.
pub(crate) fn sent_body(fake: &FakeHandle) -> Value {
    serde_json::from_slice(&fake.last_request_body().unwrap()).unwrap()
}

/// A running rethread process; killed on drop.
pub(crate) struct Rethread {
    child: Child,
    pub addr: String,
    logs: Arc<Mutex<String>>,
}

impl Rethread {
    pub(crate) fn start(upstream: &str, args: &[&str]) -> Rethread {
        Self::start_env(upstream, args, &[])
    }

    pub(crate) fn start_env(upstream: &str, args: &[&str], env: &[(&str, &str)]) -> Rethread {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rethread"));
        cmd.args(["--listen", "127.0.0.1:0", "--upstream", upstream])
            .args(args)
            .env_remove("RUST_LOG")
            .env("RETHREAD_LOG", "info,rethread=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start rethread");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on http://") {
                    let addr = line[at + "listening on http://".len()..]
                        .split(|c: char| c.is_whitespace() || c == '"')
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("rethread did not start: {}", logs.lock().unwrap()));
        Rethread { child, addr, logs }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What has been read from the proxy's stderr so far. A line logged just before a response
    /// can still be in the pipe when the response arrives: assert a line that must come with
    /// `wait_for_log`.
    pub(crate) fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until the logs contain `needle` (capture and ledger writes finish after the body).
    pub(crate) fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("log line {needle:?} never came:\n{}", self.logs());
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Rethread {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn fake() -> FakeHandle {
    spawn_fake(FakeOptions::default()).await.unwrap()
}

/// A client like the SDKs: asks for compressed bodies and decodes them.
/// A scripted upstream's reading of one HTTP/1.1 request head: its request line and its
/// `Content-Length`; `None` once the connection has ended.
pub(crate) fn read_request_head<R: BufRead>(reader: &mut R) -> Option<(String, Option<usize>)> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return None;
    }
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some((request_line, length));
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            }
        }
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// A client that sees the bytes on the wire.
pub(crate) fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate()
        .build()
        .unwrap()
}

pub(crate) fn user(text: &str) -> Value {
    json!({"role": "user", "content": [{"type": "input_text", "text": text}]})
}

/// The first turn of the example: gpt-5 with the image tool.
pub(crate) fn image_request() -> Value {
    json!({
        "model": "gpt-5",
        "input": "Generate an image of gray tabby cat hugging an otter with an orange scarf",
        "tools": [{"type": "image_generation"}]
    })
}

/// The example's follow-up: the image call by id only.
pub(crate) fn image_followup(ig: &str) -> Value {
    json!({
        "model": "gpt-5",
        "input": [user("Now make it look realistic"), {"type": "image_generation_call", "id": ig}],
        "tools": [{"type": "image_generation"}]
    })
}

/// `/v1/responses` on the fake itself: a request sent there bypasses rethread.
pub(crate) fn direct_url(fake: &FakeHandle) -> String {
    format!("{}/v1/responses", fake.url())
}

/// The image example's first turn at `path` on the fake itself as `key`: rethread never sees
/// it, so its memory of the turn is cold.
pub(crate) async fn unseen_image_turn(fake: &FakeHandle, path: &str, key: &str) -> Answer {
    post(&format!("{}{path}", fake.url()), key, &image_request(), &[]).await
}

/// The image example's first turn, streamed through `proxy` with `headers` (which steer the
/// fake).
pub(crate) async fn streamed_image_turn(proxy: &Rethread, headers: &[(&str, &str)]) -> Answer {
    let mut request = image_request();
    request["stream"] = json!(true);
    post(&proxy.url("/v1/responses"), KEY, &request, headers).await
}

/// The image example's follow-up naming the image call `ig`, through `proxy` as `KEY`.
pub(crate) async fn image_followup_through(proxy: &Rethread, ig: &str) -> Answer {
    post(&proxy.url("/v1/responses"), KEY, &image_followup(ig), &[]).await
}

/// A follow-up with memory cold: its answer through rethread, and how many Responses requests
/// the fake got for it (retries included).
pub(crate) struct ColdFollowup {
    pub answer: Answer,
    pub posts: u64,
}

/// The image example with memory cold: its first turn straight to `fake`, then its follow-up
/// (as `edit` leaves it) through `proxy`.
pub(crate) async fn cold_image_followup(
    fake: &FakeHandle,
    proxy: &Rethread,
    edit: impl FnOnce(&mut Value),
) -> ColdFollowup {
    let first = unseen_image_turn(fake, "/v1/responses", KEY).await;
    let mut followup = image_followup(&output_id(&first.body, "image_generation_call"));
    edit(&mut followup);
    let before = fake.responses_posts();
    let answer = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    ColdFollowup {
        posts: fake.responses_posts() - before,
        answer,
    }
}

/// A turn rethread never saw, retrieved through `proxy` (`GET {path}/{id}{query}` as `key`),
/// teaches it enough to repair the follow-up: the reasoning item and the message go back in.
pub(crate) async fn a_retrieval_teaches_its_turn(
    fake: &FakeHandle,
    proxy: &Rethread,
    path: &str,
    query: &str,
    key: &str,
) {
    let first = unseen_image_turn(fake, path, key).await;
    let id = first.body["id"].as_str().unwrap();
    let got = client()
        .get(proxy.url(&format!("{path}/{id}{query}")))
        .header("authorization", key)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let _ = got.bytes().await.unwrap();
    let ig = output_id(&first.body, "image_generation_call");
    let answer = post(
        &proxy.url(&format!("{path}{query}")),
        key,
        &image_followup(&ig),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.inserted(), Some(2));
}

/// Clients leave, `rounds` times, a Responses stream the fake holds back `delay_ms` and a plain
/// SSE stream, each after its first chunk: rethread (over `label`) goes on serving.
pub(crate) async fn clients_leave_mid_stream(
    proxy: &Rethread,
    rounds: usize,
    delay_ms: &str,
    label: &str,
) {
    for _ in 0..rounds {
        let mut request = image_request();
        request["stream"] = json!(true);
        let mut resp = client()
            .post(proxy.url("/v1/responses"))
            .header("authorization", KEY)
            .header("x-fake-delay-ms", delay_ms)
            .json(&request)
            .send()
            .await
            .unwrap();
        let _first = resp.chunk().await.unwrap();
        drop(resp);
        let mut other = client()
            .get(proxy.url("/v1/sse?events=100&delay_ms=20"))
            .send()
            .await
            .unwrap();
        let _ = other.chunk().await.unwrap();
        drop(other);
    }
    let answer = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    assert_eq!(answer.status, 200, "{label}: {}", answer.text);
    let health = client().get(proxy.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "{label}");
}

/// The upstream's response headers reach the client through `proxy` (over `label`): repeated
/// `set-cookie` headers in their order, the request id, processing time and rate limits.
pub(crate) async fn response_headers_pass(proxy: &Rethread, label: &str) {
    let resp = raw_client()
        .get(proxy.url("/v1/headers"))
        .send()
        .await
        .unwrap();
    let cookies: Vec<_> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies, ["a=1", "b=2"], "{label}");
    assert_eq!(resp.headers()["x-request-id"], "req_fake", "{label}");
    assert_eq!(resp.headers()["openai-processing-ms"], "5", "{label}");
    assert_eq!(
        resp.headers()["x-ratelimit-remaining-requests"],
        "99",
        "{label}"
    );
}

pub(crate) struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub(crate) fn inserted(&self) -> Option<u64> {
        self.headers
            .get("x-rethread-inserted")
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }
}

pub(crate) async fn post(url: &str, key: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
    let mut req = client().post(url).header("authorization", key).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// The id of the first output item of `ty`.
pub(crate) fn output_id(response: &Value, ty: &str) -> String {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == ty)
        .unwrap_or_else(|| panic!("no {ty} in {response}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The id of the first streamed item of `ty`, as an SDK collects it from `output_item.done`.
pub(crate) fn streamed_id(sse: &str, ty: &str) -> String {
    streamed_items(sse)
        .iter()
        .find(|i| i["type"] == ty)
        .unwrap_or_else(|| panic!("no streamed {ty}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Collects a streamed response's completed output like the SDKs do, from `output_item.done`.
pub(crate) fn streamed_items(sse: &str) -> Vec<Value> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["type"] == "response.output_item.done")
        .map(|e| e["item"].clone())
        .collect()
}

/// rethread's `/metrics` page.
pub(crate) async fn metrics_text(proxy: &Rethread) -> String {
    client()
        .get(proxy.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A WebSocket-mode client connection.
pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the Responses API's WebSocket mode at `url` with credentials `key`.
pub(crate) async fn ws_connect(url: &str, key: &str) -> Socket {
    ws_connect_with(url, key, &[]).await
}

/// The same, with more headers on the upgrade request (the fake reads `x-fake-shape` there).
pub(crate) async fn ws_connect_with(url: &str, key: &str, headers: &[(&str, &str)]) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderName;
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", key.parse().unwrap());
    for (name, value) in headers {
        let name: HeaderName = name.parse().unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    socket
}

/// Sends `body` as a `response.create` and returns the events up to the terminal one (or an
/// error).
pub(crate) async fn ws_create(socket: &mut Socket, body: Value) -> Vec<Value> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut frame = body;
    frame["type"] = json!("response.create");
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message.unwrap() else {
            continue;
        };
        let event: Value = serde_json::from_str(text.as_str()).unwrap();
        let done = matches!(
            event["type"].as_str(),
            Some("response.completed" | "response.failed" | "error")
        );
        events.push(event);
        if done {
            break;
        }
    }
    events
}

/// A fake serving HTTPS with its own test CA, whose PEM is written to a file for
/// `--upstream-ca` (removed on drop).
pub(crate) struct HttpsFake {
    pub fake: FakeHandle,
    pub ca: std::path::PathBuf,
}

impl HttpsFake {
    pub(crate) async fn start(alpn: rethread_fake::Alpn) -> HttpsFake {
        Self::start_with(FakeOptions {
            tls: Some(alpn),
            ..FakeOptions::default()
        })
        .await
    }

    pub(crate) async fn start_with(opts: FakeOptions) -> HttpsFake {
        let fake = spawn_fake(opts).await.unwrap();
        let ca = std::env::temp_dir().join(format!(
            "rethread-test-ca-{}-{}.pem",
            std::process::id(),
            fake.addr().port()
        ));
        std::fs::write(&ca, fake.ca_pem().unwrap()).unwrap();
        HttpsFake { fake, ca }
    }

    pub(crate) fn url(&self) -> String {
        self.fake.url()
    }

    pub(crate) fn ca(&self) -> &str {
        self.ca.to_str().unwrap()
    }

    /// rethread in front of it, trusting its CA.
    pub(crate) fn proxy(&self, args: &[&str]) -> Rethread {
        let mut all = vec!["--upstream-ca", self.ca()];
        all.extend_from_slice(args);
        Rethread::start(&self.url(), &all)
    }
}

impl Drop for HttpsFake {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca);
    }
}

/// The value of one series of a metric family with one label (`family{label="value"}`), 0 when
/// the page does not have it.
pub(crate) fn series(metrics: &str, family: &str, label: &str, value: &str) -> f64 {
    let line = format!("{family}{{{label}=\"{value}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The sum of every series of a metric family in a `/metrics` page.
pub(crate) fn family_sum(metrics: &str, family: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends a request to the fake's `/v1/echo` (through whatever URL it names) and returns what the
/// fake saw; the answer must be 200.
pub(crate) async fn echo(req: reqwest::RequestBuilder) -> Value {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Every value of header `name` the echo endpoint saw, in order.
pub(crate) fn echoed_header<'a>(echoed: &'a Value, name: &str) -> Vec<&'a str> {
    echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

/// FNV-1a 64 of `data` in hex, as the fake's echo reports a body (`body_fnv64`).
pub(crate) fn fnv(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}
