//! A second opinion on HTTP/2: real nginx (`listen … ssl http2`) as the upstream, proxying to the
//! fake, as the issue's user had it. nginx refuses a `host` header beside `:authority` ("client
//! sent duplicate host header"). Skipped, with the reason printed, when nginx is not installed;
//! under `CI=true` (where `.ci/run` installs it) a missing nginx fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rethread_fake::TestCa;
use serde_json::{json, Value};

use crate::common::*;

/// nginx serving HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with a test CA's certificate, proxying to
/// `backend`; stopped on drop.
pub(crate) struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    /// `None` (with the reason printed) when nginx is not installed, outside CI.
    pub(crate) fn start(backend: std::net::SocketAddr, ca: &TestCa) -> Option<Nginx> {
        Self::start_with(backend, ca, "")
    }

    /// `start`, with more directives for the `server` block (e.g. `keepalive_requests 50;`).
    pub(crate) fn start_with(
        backend: std::net::SocketAddr,
        ca: &TestCa,
        server: &str,
    ) -> Option<Nginx> {
        if Command::new("nginx").arg("-v").output().is_err() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "nginx is not installed; .ci/run installs it"
            );
            eprintln!("skipped: nginx is not installed (apt-get install -y nginx)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("rethread-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let (cert, key) = ca.server_pem();
        std::fs::write(dir.join("server.pem"), cert).unwrap();
        std::fs::write(dir.join("server.key"), key).unwrap();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        // As root, workers would otherwise run as `nobody`, who cannot reach the temp dir.
        let user = if root { "user root root;" } else { "" };
        let d = dir.display();
        let conf = format!(
            "{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        client_max_body_size 0;
        {server}
        location / {{
            proxy_pass http://{backend};
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .args(["-p", &d.to_string(), "-e", &format!("{d}/error.log")])
            .args(["-c", &format!("{d}/nginx.conf"), "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let nginx = Nginx { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(nginx)
    }

    pub(crate) fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Writes `ca`'s certificate beside nginx's files; the path, for `--upstream-ca`.
    pub(crate) fn write_ca(&self, ca: &TestCa) -> String {
        let file = self.dir.join("ca.pem");
        std::fs::write(&file, ca.ca_pem()).unwrap();
        file.to_str().unwrap().to_owned()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT to the master lets it stop its worker too (a killed master leaves it behind).
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_over_http2_accepts_what_rethread_sends() {
    let fake = fake().await;
    let ca = TestCa::new().unwrap();
    let Some(nginx) = Nginx::start(fake.addr(), &ca) else {
        return;
    };
    let ca_path = nginx.write_ca(&ca);

    let check = {
        let (url, ca_path) = (nginx.url(), ca_path.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_rethread"))
                .args(["--upstream", &url, "--upstream-ca", &ca_path, "check"])
                .env_remove("RUST_LOG")
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains(", TLS, HTTP/2)"), "{out}");

    let proxy = Rethread::start(
        &nginx.url(),
        &["--upstream-ca", &ca_path, "--fallback-retries", "0"],
    );
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    assert_eq!(first.status, 200, "{}\n{}", first.text, nginx.error_log());
    let ig = output_id(&first.body, "image_generation_call");
    let followup = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
    assert_eq!(followup.status, 200, "{}\n{}", followup.text, proxy.logs());
    assert_eq!(followup.inserted(), Some(2));

    let mut streamed = image_request();
    streamed["stream"] = json!(true);
    let answer = post(&proxy.url("/v1/responses"), KEY, &streamed, &[]).await;
    assert_eq!(answer.status, 200);
    assert!(answer.text.contains("response.completed"));

    let resp = client()
        .post(proxy.url("/v1/echo"))
        .body(vec![7u8; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(echoed["body_len"], 3 << 20);
    let hosts: Vec<_> = echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "host")
        .collect();
    assert_eq!(hosts.len(), 1, "{echoed}");
    assert!(
        !nginx.error_log().contains("client sent"),
        "{}",
        nginx.error_log()
    );
}
