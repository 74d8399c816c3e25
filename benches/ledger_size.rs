//! Bytes per remembered turn, in both stores:
//! - the memory ledger: 1,000,000 turns across 10,000 tenants, measured with a counting allocator
//!   (live heap bytes after the inserts, divided by turns);
//! - the Redis ledger: 100,000 turns across 1,000 tenants written through `RedisLedger` to a
//!   `redis-server` the bench starts on a free port (or `REDIS_URL`), measured as the growth of
//!   `used_memory` (`INFO memory`) divided by turns; with Redis's own CPU time per write and per
//!   lookup script (`INFO commandstats`), the figures the README's sizing table is built from.
//!
//! Run: `cargo bench --bench ledger_size`. TURNS / TENANTS and REDIS_TURNS / REDIS_TENANTS
//! override the counts; REDIS=0 skips Redis (it is skipped with a message when `redis-server` is
//! not installed). CHAINED=1 gives every turn the link a chained response carries (its own id
//! and its parent's), CHAINED=root its own id only (a turn that starts a chain), so the
//! difference of two runs is what a turn's link costs.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

use std::time::{Duration, Instant};

use rethread::ledger::memory::{FullItemBudget, MemoryLedger};
use rethread::ledger::redis::RedisLedger;
use rethread::ledger::Ledger;
use rethread::repair::items::tests::{api_id, api_image_turn};
use rethread::repair::items::{Link, Turn};
use rethread::tenant::TenantKey;

#[global_allocator]
static GLOBAL: count_alloc::Counting = count_alloc::Counting;

/// The classic image turn, `[rs, ig, msg]`, with ids shaped like the API's, and the link
/// CHAINED asks for.
fn image_turn(n: u64) -> Turn {
    Turn {
        link: linked().then(|| {
            Box::new(Link {
                response: api_id("resp", n, 4),
                parent: chained().then(|| api_id("resp", n.wrapping_sub(1), 4)),
                input: None,
                complete: true,
                conversation: None,
            })
        }),
        ..api_image_turn(n)
    }
}

/// `CHAINED=1`: every turn continues a chain; `CHAINED=root`: every turn has its response id
/// only (it starts a chain).
fn chained() -> bool {
    std::env::var("CHAINED").as_deref() == Ok("1")
}

fn linked() -> bool {
    chained() || std::env::var("CHAINED").as_deref() == Ok("root")
}

/// What the turns carry, for the report.
fn shape() -> &'static str {
    if chained() {
        ", chained"
    } else if linked() {
        ", with response ids"
    } else {
        ""
    }
}

/// Looks up existing ids, one request's worth at a time: the time taken, the hits, the probes.
fn probe(ledger: &dyn Ledger, turns: u64, tenants: u64) -> (Duration, usize, u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let probes = 200_000u64;
    let started = Instant::now();
    let mut hits = 0;
    for n in 0..probes {
        let t = (n * 7919) % turns;
        let id = api_id("ig", t, 2);
        let keys = [&*id];
        hits += runtime
            .block_on(ledger.lookup(tenant(t, tenants), &keys, rethread::ledger::ITEM_KEYS))
            .unwrap()
            .len();
    }
    (started.elapsed(), hits, probes)
}

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tenant(n: u64, tenants: u64) -> TenantKey {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&(n % tenants).to_le_bytes());
    key[8..].copy_from_slice(&0x5eed_u64.to_le_bytes());
    TenantKey(key)
}

fn main() {
    memory();
    if std::env::var("FILE").as_deref() != Ok("0") {
        file();
    }
    if std::env::var("REDIS").as_deref() != Ok("0") {
        redis();
    }
}

/// The file store: TURNS turns written through it into a temp directory, its bytes on disk,
/// then a restart: the time to read them back and the live heap after it (the memory store's
/// figure is the one to compare with).
fn file() {
    use rethread::ledger::file::FileLedger;
    let turns = env_count("TURNS", 1_000_000);
    let tenants = env_count("TENANTS", 10_000);
    let budget = FullItemBudget {
        total: 1 << 30,
        per_tenant: 1 << 30,
    };
    let retention = Duration::from_secs(86_400);
    let dir = std::env::temp_dir().join(format!("rethread-bench-file-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let open = || {
        let memory = std::sync::Arc::new(MemoryLedger::new(retention, turns as usize, budget));
        FileLedger::open(
            &dir,
            memory,
            retention,
            turns as usize,
            Duration::from_secs(1),
        )
        .unwrap()
    };
    let ledger = open();
    let started = Instant::now();
    for n in 0..turns {
        drop(ledger.record(tenant(n, tenants), image_turn(n)));
    }
    let written = started.elapsed();
    ledger.sync();
    let disk = ledger.disk();
    drop(ledger);
    let before = count_alloc::live();
    let started = Instant::now();
    let ledger = open();
    let reopened = started.elapsed();
    let heap = count_alloc::live() - before;
    let (looked, hits, probes) = probe(&ledger, turns, tenants);
    println!(
        "file store: {turns} turns ([rs, ig, msg], API-shaped ids{}) across {tenants} tenants",
        shape()
    );
    println!(
        "  on disk: {:.1} MiB in {} segments = {:.0} bytes per turn (target <= 160)",
        disk.bytes as f64 / 1048576.0,
        disk.segments,
        disk.bytes as f64 / turns as f64
    );
    println!(
        "  write: {:.0} ns per turn (memory store and one write syscall)",
        written.as_nanos() as f64 / turns as f64
    );
    println!(
        "  start-up with {turns} turns: {:.2} s (target <= 2 s); live heap after it {:.1} MiB = {:.0} bytes per turn",
        reopened.as_secs_f64(),
        heap as f64 / 1048576.0,
        heap as f64 / turns as f64
    );
    println!(
        "  lookup: {:.0} ns per request ({hits}/{probes} hits)",
        looked.as_nanos() as f64 / probes as f64
    );
    drop(ledger);
    let _ = std::fs::remove_dir_all(&dir);
}

fn memory() {
    let turns = env_count("TURNS", 1_000_000);
    let tenants = env_count("TENANTS", 10_000);
    let budget = FullItemBudget {
        total: 1 << 30,
        per_tenant: 1 << 30,
    };
    let before = count_alloc::live();
    let ledger = MemoryLedger::new(Duration::from_secs(86_400), turns as usize, budget);
    let started = Instant::now();
    for n in 0..turns {
        drop(ledger.record(tenant(n, tenants), image_turn(n)));
    }
    let inserted = started.elapsed();
    let bytes = count_alloc::live() - before;
    let (looked, hits, probes) = probe(&ledger, turns, tenants);
    println!(
        "memory store: {turns} turns ([rs, ig, msg], API-shaped ids{}) across {tenants} tenants",
        shape()
    );
    println!(
        "  live heap: {:.1} MiB = {:.0} bytes per turn (target <= 128)",
        bytes as f64 / 1048576.0,
        bytes as f64 / turns as f64
    );
    println!(
        "  insert: {:.0} ns per turn",
        inserted.as_nanos() as f64 / turns as f64
    );
    println!(
        "  lookup: {:.0} ns per request ({hits}/{probes} hits)",
        looked.as_nanos() as f64 / probes as f64
    );
    drop(ledger);
}

/// A `redis-server` on a free port in a temp dir, stopped on drop.
struct Server {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_redis() -> Result<(Server, String), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let dir = std::env::temp_dir().join(format!("rethread-ledger-size-{port}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server is not installed ({e})"))?;
    let server = Server { child, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("redis-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((server, format!("redis://127.0.0.1:{port}/0")))
}

/// One `INFO` field, as a number.
fn info(conn: &mut redis::Connection, section: &str, field: &str) -> f64 {
    let text: String = redis::cmd("INFO").arg(section).query(conn).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Microseconds of Redis CPU per `EVALSHA` since the last `CONFIG RESETSTAT`.
fn script_usec(conn: &mut redis::Connection) -> (f64, f64) {
    let text: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .unwrap_or("");
    let get = |key: &str| {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (get("calls"), get("usec_per_call"))
}

fn redis() {
    let turns = env_count("REDIS_TURNS", 100_000);
    let tenants = env_count("REDIS_TENANTS", 1_000);
    let (_server, url) = match std::env::var("REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => match start_redis() {
            Ok((server, url)) => (Some(server), url),
            Err(why) => {
                println!("redis store: skipped: {why}");
                return;
            }
        },
    };
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .expect("connect to redis");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let prefix = format!("rethread-bench-{}", std::process::id());
    let ledger = runtime.block_on(async {
        RedisLedger::new(
            &url,
            &prefix,
            Duration::from_secs(30 * 86_400),
            Duration::from_secs(5),
        )
        .unwrap()
    });
    // Connect and load the scripts before measuring.
    runtime.block_on(async {
        ledger
            .record(tenant(0, 1), image_turn(u64::MAX))
            .await
            .unwrap();
        ledger
            .lookup(tenant(0, 1), &["none"], rethread::ledger::ITEM_KEYS)
            .await
            .unwrap();
    });
    let before = info(&mut admin, "memory", "used_memory");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin)
        .unwrap();
    let started = Instant::now();
    runtime.block_on(async {
        let mut n = 0;
        while n < turns {
            let batch: Vec<_> = (n..turns.min(n + 256))
                .map(|n| ledger.record(tenant(n, tenants), image_turn(n)))
                .collect();
            for done in futures_util::future::join_all(batch).await {
                done.unwrap();
            }
            n += 256;
        }
    });
    let inserted = started.elapsed();
    let after = info(&mut admin, "memory", "used_memory");
    let (writes, write_usec) = script_usec(&mut admin);
    let keys: f64 = redis::cmd("DBSIZE").query(&mut admin).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin)
        .unwrap();
    let probes = 20_000u64.min(turns);
    let started = Instant::now();
    let hits: usize = runtime.block_on(async {
        let mut hits = 0;
        for n in 0..probes {
            let t = (n * 7919) % turns;
            let id = api_id("ig", t, 2);
            // A follow-up names its user message and the image call: two ids, four fields.
            let keys = [&*id, "msg_user_message_without_a_turn"];
            hits += ledger
                .lookup(tenant(t, tenants), &keys, rethread::ledger::ITEM_KEYS)
                .await
                .unwrap()
                .len();
        }
        hits
    });
    let looked = started.elapsed();
    let (lookups, lookup_usec) = script_usec(&mut admin);
    println!(
        "redis store: {turns} turns ([rs, ig, msg], API-shaped ids{}) across {tenants} tenants, redis {}",
        if chained() { ", chained" } else if linked() { ", with response ids" } else { "" },
        info_text(&mut admin, "server", "redis_version")
    );
    println!(
        "  used_memory: +{:.1} MiB = {:.0} bytes per turn (target <= 400); {keys} keys",
        (after - before) / 1048576.0,
        (after - before) / turns as f64
    );
    println!(
        "  write: {:.1} us of Redis CPU per turn ({writes} scripts); {:.0} turns/s from one connection",
        write_usec,
        turns as f64 / inserted.as_secs_f64()
    );
    println!(
        "  lookup: {:.1} us of Redis CPU per request ({lookups} scripts, 10 buckets); {:.0} us per round trip ({hits}/{probes} hits)",
        lookup_usec,
        looked.as_micros() as f64 / probes as f64
    );
}

fn info_text(conn: &mut redis::Connection, section: &str, field: &str) -> String {
    let text: String = redis::cmd("INFO").arg(section).query(conn).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or("?")
        .trim()
        .to_owned()
}
