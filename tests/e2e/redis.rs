//! The shared ledger against a real `redis-server`, started by the tests on a free port.
//! Without `redis-server` these tests skip with a reason, except under `CI=true`, where they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const SECRET: &str = "shared-tenant-secret-for-tests";

/// A free port on the loopback interface.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory for a server's files, removed by its owner.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rethread-e2e-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `redis-server` with `args` in `dir`; `None` (the tests skip, with the reason printed)
/// when it is not installed, except under `CI=true`, where that fails the test.
pub(crate) fn spawn_redis(args: &[&str], dir: &Path) -> Option<Child> {
    let spawned = Command::new("redis-server")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => Some(child),
        Err(e) => {
            let reason =
                format!("redis-server is not installed ({e}); `apt-get install -y redis-server`");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{reason}: the Redis tests must run in CI");
            }
            eprintln!("skipping: {reason}");
            None
        }
    }
}

/// `redis-cli -p port args…`, its output trimmed.
pub(crate) fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--raw"])
        .args(args)
        .output()
        .expect("redis-cli (apt-get install -y redis-tools)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until the server `child` started on `port` answers PING (after loading its data);
/// `false` when it exited first (the port was taken meanwhile: free ports are only free when
/// asked).
pub(crate) fn wait_started(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && cli(port, &["PING"]) == "PONG"
        {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a server with `args(port)` until one binds its port (up to five ports); `None` when
/// `redis-server` is not installed (see `spawn_redis`).
pub(crate) fn start_on_a_free_port(
    dir: &Path,
    mut args: impl FnMut(u16) -> Vec<String>,
) -> Option<(Child, u16)> {
    for _ in 0..5 {
        let port = free_port();
        let args = args(port);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = spawn_redis(&args, dir)?;
        if wait_started(&mut child, port) {
            return Some((child, port));
        }
    }
    panic!("redis-server found no free port in five tries");
}

struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let dir = temp_dir("redis");
        let (child, port) = start_on_a_free_port(&dir, |port| Self::args(port, &dir))?;
        Some(RedisServer {
            child: Some(child),
            port,
            dir,
        })
    }

    /// A server on `port` keeping its snapshot in `dir` (saved only when asked: `SAVE`).
    fn args(port: u16, dir: &Path) -> Vec<String> {
        let port = port.to_string();
        let dir = dir.to_str().unwrap();
        [
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir,
        ]
        .map(String::from)
        .to_vec()
    }

    /// A server on the port another one used, with that one's files.
    fn start_in(port: u16, dir: PathBuf) -> Option<RedisServer> {
        let args = Self::args(port, &dir);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = spawn_redis(&args, &dir)?;
        assert!(wait_started(&mut child, port), "port {port} was taken");
        Some(RedisServer {
            child: Some(child),
            port,
            dir,
        })
    }

    fn start_on(port: u16) -> Option<RedisServer> {
        Self::start_in(port, temp_dir("redis"))
    }

    /// Saves the data, stops the server and starts it again on the same port, with the data.
    fn restart(mut self) -> RedisServer {
        assert_eq!(cli(self.port, &["SAVE"]), "OK");
        self.stop();
        let dir = std::mem::take(&mut self.dir);
        Self::start_in(self.port, dir).unwrap()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn keys(&self) -> Vec<String> {
        cli(self.port, &["KEYS", "*"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Turns written: the sum of the buckets' `#` counters.
    fn turns(&self) -> usize {
        let count = "local n = 0 for _, k in ipairs(redis.call('KEYS', '*')) do \
                     n = n + tonumber(redis.call('HGET', k, '#') or 0) end return n";
        cli(self.port, &["EVAL", count, "0"]).parse().unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `rethread check` against `store`: its output, after asserting it succeeded.
pub(crate) async fn check(store: &str, upstream: &str) -> String {
    let (store, upstream) = (store.to_owned(), upstream.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_rethread"))
            .args(["--store", &store, "--upstream", &upstream, "check"])
            .env("RETHREAD_TENANT_SECRET", SECRET)
            .env_remove("RETHREAD_LISTEN")
            .env_remove("RETHREAD_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn replica(upstream: &str, redis: &RedisServer, extra: &[&str]) -> Rethread {
    let url = redis.url();
    let mut args = vec![
        "--store",
        &url,
        "--fallback-retries",
        "0",
        "--store-timeout",
        "500ms",
    ];
    args.extend_from_slice(extra);
    Rethread::start_env(upstream, &args, &[("RETHREAD_TENANT_SECRET", SECRET)])
}

async fn ready(proxy: &Rethread) -> u16 {
    client()
        .get(proxy.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn wait_ready(proxy: &Rethread, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while ready(proxy).await != want {
        assert!(Instant::now() < deadline, "/readyz never answered {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the replica's ledger write has landed.
fn wait_written(redis: &RedisServer, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.turns() < count {
        assert!(
            Instant::now() < deadline,
            "turn never written: {:?}",
            redis.keys()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fake and two replicas in front of it sharing `redis`, as a fleet behind a load balancer.
async fn two_replicas(redis: &RedisServer) -> (FakeHandle, Rethread, Rethread) {
    let fake = fake().await;
    let a = replica(&fake.url(), redis, &[]);
    let b = replica(&fake.url(), redis, &[]);
    (fake, a, b)
}

/// The image example's first turn through `proxy`, once its write (the store's `count`th turn)
/// has landed in `redis`; returns the id of its image call.
async fn learned_image_turn(proxy: &Rethread, redis: &RedisServer, count: usize) -> String {
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let ig = output_id(&first.body, "image_generation_call");
    wait_written(redis, count);
    ig
}

#[tokio::test]
async fn a_turn_learned_by_one_replica_repairs_a_followup_on_another() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (fake, a, b) = two_replicas(&redis).await;
    let ig = learned_image_turn(&a, &redis, 1).await;
    let followup = image_followup_through(&b, &ig).await;
    assert_eq!(followup.status, 200, "{}", followup.text);
    assert_eq!(followup.inserted(), Some(2));
    // One hash per tenant and time bucket, the tenant hash in braces (the cluster hash tag).
    let keys = redis.keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let parts: Vec<&str> = keys[0].split(':').collect();
    assert_eq!(parts[0], "rethread", "{keys:?}");
    assert!(
        parts[1].len() == 34 && parts[1].starts_with('{') && parts[1].ends_with('}'),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .all(|k| !k.contains("sk-test") && !k.contains(&ig)),
        "no key and no id in the keyspace"
    );
    // `rethread check` counts the store's turns (the turn and its follow-up) and reads its
    // memory.
    let text = check(&redis.url(), &fake.url()).await;
    assert!(
        text.contains("store: 2 turns in 1 bucket keys on 1 node; used_memory "),
        "{text}"
    );
}

#[tokio::test]
async fn a_websocket_session_moves_to_another_replica_after_a_reconnect() {
    use crate::chains::{a_closed_session, assert_whole_history, completed, request, ws_url};
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (fake, a, b) = two_replicas(&redis).await;
    let (id, ids) = a_closed_session(&format!("http://{}", a.addr)).await;
    wait_written(&redis, 2);
    let mut socket = ws_connect(&ws_url(&format!("http://{}", b.addr)), KEY).await;
    let next = request(false, Some(&id), serde_json::json!("and tomorrow?"));
    completed(&ws_create(&mut socket, next).await);
    assert_whole_history(&fake, &ids);
}

#[tokio::test]
async fn redis_going_down_never_fails_a_client_and_repair_resumes_when_it_is_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let port = redis.port;
    let fake = fake().await;
    let proxy = Rethread::start_env(
        &fake.url(),
        &["--store", &redis.url(), "--store-timeout", "200ms"],
        &[("RETHREAD_TENANT_SECRET", SECRET)],
    );
    wait_ready(&proxy, 200).await;
    redis.stop();
    wait_ready(&proxy, 503).await;
    // Redis down: turns pass, and the cold fallback still repairs the follow-up.
    for _ in 0..3 {
        let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
        assert_eq!(first.status, 200, "{}", first.text);
        let ig = output_id(&first.body, "image_generation_call");
        let followup = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
        assert_eq!(followup.status, 200, "{}", followup.text);
    }
    let metrics = metrics_text(&proxy).await;
    assert!(
        family_sum(&metrics, "rethread_store_errors_total") > 0.0,
        "{metrics}"
    );
    let back = RedisServer::start_on(port).unwrap();
    wait_ready(&proxy, 200).await;
    let ig = learned_image_turn(&proxy, &back, 1).await;
    let before = fake.responses_posts();
    let followup = image_followup_through(&proxy, &ig).await;
    assert_eq!(followup.status, 200);
    assert_eq!(followup.inserted(), Some(2), "repaired from memory again");
    assert_eq!(
        fake.responses_posts() - before,
        1,
        "without a fallback retry"
    );
}

#[tokio::test]
async fn turns_expire_after_retention_in_redis_and_in_memory() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let fake = fake().await;
    let shared = replica(&fake.url(), &redis, &["--retention", "2s"]);
    let memory = Rethread::start(
        &fake.url(),
        &["--retention", "2s", "--fallback-retries", "0"],
    );
    for proxy in [&shared, &memory] {
        let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
        let ig = output_id(&first.body, "image_generation_call");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fresh = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
        assert_eq!(fresh.inserted(), Some(2));
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let stale = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
        assert_eq!(stale.inserted(), None, "forgotten after retention");
        assert_eq!(stale.status, 400);
    }
    assert!(
        redis.keys().is_empty(),
        "every key carries the retention as its TTL: {:?}",
        redis.keys()
    );
}

#[tokio::test]
async fn tenants_stay_separate_in_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (_fake, a, b) = two_replicas(&redis).await;
    let ig = learned_image_turn(&a, &redis, 1).await;
    let other = post(
        &b.url("/v1/responses"),
        OTHER_KEY,
        &image_followup(&ig),
        &[],
    )
    .await;
    assert_eq!(other.inserted(), None);
    // The same item id under two tenants: two separate keys.
    let _ = post(&b.url("/v1/responses"), OTHER_KEY, &image_request(), &[]).await;
    wait_written(&redis, 2);
    let tenants: std::collections::BTreeSet<String> = redis
        .keys()
        .iter()
        .map(|k| k.split(':').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(tenants.len(), 2, "{:?}", redis.keys());
}

#[test]
fn a_shared_store_without_a_tenant_secret_refuses_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_rethread"))
        .args([
            "--store",
            "redis://127.0.0.1:1/0",
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("RETHREAD_TENANT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RETHREAD_TENANT_SECRET"));
}

#[tokio::test]
async fn the_first_requests_after_redis_restarts_use_it() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (fake, a, b) = two_replicas(&redis).await;
    // Both replicas have a connection: b's lookup, a's write.
    let ig = learned_image_turn(&a, &redis, 1).await;
    let known = image_followup_through(&b, &ig).await;
    assert_eq!(known.inserted(), Some(2));

    // Between the turn and its follow-up, Redis restarts (keeping its data).
    let redis = redis.restart();
    let before = fake.responses_posts();
    let followup = image_followup_through(&b, &ig).await;
    assert_eq!(followup.status, 200, "{}", followup.text);
    assert_eq!(followup.inserted(), Some(2), "repaired from Redis");
    assert_eq!(
        fake.responses_posts() - before,
        1,
        "one upstream request: no fallback retry"
    );

    // The first turn a replica learns after the restart is not lost.
    let ig2 = learned_image_turn(&a, &redis, 2).await;
    let before = fake.responses_posts();
    let followup = image_followup_through(&b, &ig2).await;
    assert_eq!(followup.inserted(), Some(2));
    assert_eq!(fake.responses_posts() - before, 1);
    for proxy in [&a, &b] {
        let metrics = metrics_text(proxy).await;
        assert_eq!(
            family_sum(&metrics, "rethread_store_errors_total"),
            0.0,
            "no store error: {}",
            proxy.logs()
        );
    }

    // Without any request, both replicas connect again on their own after a restart.
    let redis = redis.restart();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let clients = cli(redis.port, &["CLIENT", "LIST"])
            .lines()
            .filter(|l| !l.contains("cmd=client|list"))
            .count();
        if clients >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas did not reconnect before traffic needed it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
