//! Real clients: the official Node and Python SDKs and the OpenAI Agents SDK, running the programs
//! of `tests/sdk/`, against the strict fake binary — once directly, where each must fail with the
//! API's missing-reasoning error, and once through rethread, where each must succeed.
//!
//! The programs' dependencies are installed by `scripts/install-sdk-deps.sh` (`node_modules` and
//! the `.venv` in `tests/sdk/`). Without them the tests print why and skip, except under
//! `CI=true`, where they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::Rethread;

/// The text of the API's error for an item replayed without its reasoning item.
const MISSING_REASONING: &str = "was provided without its required 'reasoning' item";
/// The text of the API's error for an item of a `store: false` turn sent back by id (E3).
const NOT_PERSISTED: &str = "Items are not persisted when `store` is set to false";
/// Raw bytes of a real-size image (1.1 MB, about 1.5 MB of base64).
const REAL_IMAGE_BYTES: &str = "1100000";
/// Longest a program may run; they take a second or two.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(120);

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

// ---------------------------------------------------------------------------------------------
// The fake upstream, as its own binary.

/// `target/<profile>/rethread-fake`, next to the rethread binary under test, built once per run
/// (a no-op when it is fresh, so an edited fake is never tested stale).
fn fake_binary() -> &'static Path {
    static FAKE: OnceLock<PathBuf> = OnceLock::new();
    FAKE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_BIN_EXE_rethread"))
            .parent()
            .expect("binary directory")
            .to_path_buf();
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-p", "rethread-fake", "--bin", "rethread-fake"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build -p rethread-fake");
        assert!(status.success(), "cargo build -p rethread-fake failed");
        let fake = dir.join(format!("rethread-fake{}", std::env::consts::EXE_SUFFIX));
        assert!(fake.exists(), "{} missing after the build", fake.display());
        fake
    })
}

/// A running `rethread-fake`; killed on drop.
struct FakeProcess {
    child: Child,
    url: String,
}

impl FakeProcess {
    fn start(args: &[&str]) -> FakeProcess {
        let mut child = Command::new(fake_binary())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rethread-fake");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            for _ in lines {} // keep the pipe drained
        });
        let first = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let url = first
            .strip_prefix("listening on ")
            .filter(|u| u.starts_with("http://"))
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("rethread-fake did not start; its first line: {first:?}")
            })
            .trim()
            .to_owned();
        FakeProcess { child, url }
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The programs and their runtimes.

#[derive(Clone, Copy)]
enum Runtime {
    Node,
    Python,
}

impl Runtime {
    fn program(self) -> PathBuf {
        match self {
            Runtime::Node => PathBuf::from("node"),
            Runtime::Python => sdk_dir().join(".venv/bin/python"),
        }
    }

    /// Why the programs of this runtime cannot run here, if they cannot.
    fn missing(self) -> Option<String> {
        let dir = sdk_dir();
        match self {
            Runtime::Node => {
                if !dir.join("node_modules/openai/package.json").exists() {
                    return Some(format!(
                        "{} has no openai package",
                        dir.join("node_modules").display()
                    ));
                }
                match Command::new("node").arg("--version").output() {
                    Ok(out) if out.status.success() => None,
                    _ => Some("`node` is not on PATH".into()),
                }
            }
            Runtime::Python => {
                if !self.program().exists() {
                    return Some(format!("{} is missing", self.program().display()));
                }
                let mut site = std::fs::read_dir(dir.join(".venv/lib"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path().join("site-packages"));
                let installed =
                    site.any(|s| s.join("openai").is_dir() && s.join("agents").is_dir());
                (!installed).then(|| {
                    format!(
                        "{} lacks openai or openai-agents",
                        dir.join(".venv").display()
                    )
                })
            }
        }
    }
}

/// Whether the tests of `runtime` can run; prints why not and returns false to skip — but under
/// `CI=true` a missing dependency fails the test, so CI never passes without running them.
fn ready(runtime: Runtime) -> bool {
    let Some(why) = runtime.missing() else {
        return true;
    };
    let msg = format!("SDK programs cannot run: {why}; run scripts/install-sdk-deps.sh");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true: not skipping)");
    }
    // Straight to the process's stderr, past the test harness's capture, so the skip is seen.
    let _ = writeln!(std::io::stderr(), "skipped: {msg}");
    false
}

/// What a program did.
struct Run {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn output(&self) -> String {
        format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            self.status
                .map_or("killed after the timeout".into(), |s| s.to_string()),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `script args` from `tests/sdk/` with the SDKs pointed at `base_url`.
fn run(runtime: Runtime, script: &str, args: &[&str], base_url: &str) -> Run {
    let mut cmd = Command::new(runtime.program());
    cmd.arg(script)
        .args(args)
        .current_dir(sdk_dir())
        .env("OPENAI_BASE_URL", base_url)
        .env("OPENAI_API_KEY", "sk-rethread-sdk-test")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "OPENAI_ORGANIZATION",
        "OPENAI_AGENTS_DISABLE_TRACING",
        "SDK_TRACE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", runtime.program()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + PROGRAM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The logs without terminal colours.
fn plain(logs: &str) -> String {
    let mut out = String::with_capacity(logs.len());
    let mut chars = logs.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `inserted=N` counts of rethread's request log lines.
fn inserted_counts(logs: &str) -> Vec<u64> {
    plain(logs)
        .lines()
        .filter_map(|l| l.split("inserted=").nth(1))
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Waits (briefly: the log line can trail the response) until rethread's `inserted=N` counts
/// satisfy `done`, and returns them.
fn wait_for_counts(proxy: &Rethread, done: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts = inserted_counts(&proxy.logs());
        if done(&counts) || Instant::now() > deadline {
            return counts;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The behaviour under test: directly against the strict fake the program fails with the API's
/// missing-reasoning error; through rethread (memory only, no cold-memory retries, so the repair
/// comes from what rethread learnt from the SDK's own first turn) it succeeds.
fn fails_direct_and_passes_through_rethread(runtime: Runtime, script: &str, args: &[&str]) {
    fails_direct_with(runtime, script, args, &[], MISSING_REASONING);
}

/// `fails_direct_and_passes_through_rethread` against a fake started with `fake_args`, where the
/// direct run fails with `expected`.
fn fails_direct_with(
    runtime: Runtime,
    script: &str,
    args: &[&str],
    fake_args: &[&str],
    expected: &str,
) {
    if !ready(runtime) {
        return;
    }
    let fake = FakeProcess::start(fake_args);
    let direct = run(runtime, script, args, &format!("{}/v1", fake.url));
    assert!(
        !direct.succeeded(),
        "{script} {args:?} passed straight against the strict fake:\n{}",
        direct.output()
    );
    assert!(
        direct.stderr.contains(expected) || direct.stdout.contains(expected),
        "{script} {args:?} failed directly, but not with {expected:?}:\n{}",
        direct.output()
    );

    let proxy = Rethread::start(&fake.url, &["--fallback-retries", "0"]);
    let through = run(runtime, script, args, &proxy.url("/v1"));
    assert!(
        through.succeeded() && through.stdout.lines().any(|l| l == "ok"),
        "{script} {args:?} failed through rethread:\n{}\n--- rethread\n{}",
        through.output(),
        proxy.logs()
    );
    let counts = wait_for_counts(&proxy, |c| c.iter().any(|n| *n > 0));
    assert!(
        counts.iter().any(|n| *n > 0),
        "rethread logged no repair (inserted counts {counts:?}):\n{}",
        proxy.logs()
    );
}

// ---------------------------------------------------------------------------------------------
// Node: the official `openai` package.

#[test]
fn node_image_program_fails_direct_and_passes_through_rethread() {
    fails_direct_and_passes_through_rethread(Runtime::Node, "image.mjs", &[]);
}

#[test]
fn node_streamed_image_program_fails_direct_and_passes_through_rethread() {
    fails_direct_and_passes_through_rethread(Runtime::Node, "image_stream.mjs", &[]);
}

#[test]
fn node_function_loop_without_reasoning_fails_direct_and_passes_through_rethread() {
    fails_direct_and_passes_through_rethread(Runtime::Node, "function_loop.mjs", &[]);
}

/// Issue 27: the seed's program under `store: false` with a real-size image. Directly the API
/// cannot look the image call up (E3); rethread sends it back whole, result included.
#[test]
fn node_image_program_without_store_fails_direct_and_passes_through_rethread() {
    fails_direct_with(
        Runtime::Node,
        "image.mjs",
        &["--no-store"],
        &["--image-bytes", REAL_IMAGE_BYTES],
        NOT_PERSISTED,
    );
}

// ---------------------------------------------------------------------------------------------
// Python: the official `openai` package, sync and async clients.

#[test]
fn python_image_program_without_store_fails_direct_and_passes_through_rethread() {
    fails_direct_with(
        Runtime::Python,
        "image.py",
        &["--no-store"],
        &["--image-bytes", REAL_IMAGE_BYTES],
        NOT_PERSISTED,
    );
}

#[test]
fn python_image_program_fails_direct_and_passes_through_rethread() {
    fails_direct_and_passes_through_rethread(Runtime::Python, "image.py", &[]);
}

#[test]
fn python_async_image_program_fails_direct_and_passes_through_rethread() {
    fails_direct_and_passes_through_rethread(Runtime::Python, "image.py", &["--async"]);
}

#[test]
fn python_image_streamed_with_create_fails_direct_and_passes_through_rethread() {
    fails_direct_and_passes_through_rethread(
        Runtime::Python,
        "image_stream.py",
        &["--variant", "create"],
    );
}

#[test]
fn python_async_image_streamed_with_create_fails_direct_and_passes_through_rethread() {
    fails_direct_and_passes_through_rethread(
        Runtime::Python,
        "image_stream.py",
        &["--variant", "create", "--async"],
    );
}

#[test]
fn python_image_streamed_with_stream_helper_fails_direct_and_passes_through_rethread() {
    fails_direct_and_passes_through_rethread(
        Runtime::Python,
        "image_stream.py",
        &["--variant", "stream"],
    );
}

#[test]
fn python_async_image_streamed_with_stream_helper_fails_direct_and_passes_through_rethread() {
    fails_direct_and_passes_through_rethread(
        Runtime::Python,
        "image_stream.py",
        &["--variant", "stream", "--async"],
    );
}

#[test]
fn python_websocket_image_program_fails_direct_and_passes_through_rethread() {
    // `client.responses.connect()`: the Responses API's WebSocket mode, `response.create` frames.
    fails_direct_and_passes_through_rethread(Runtime::Python, "ws_image.py", &[]);
}

#[test]
fn python_function_loop_without_reasoning_fails_direct_and_passes_through_rethread() {
    fails_direct_and_passes_through_rethread(Runtime::Python, "function_loop.py", &[]);
}

#[test]
fn python_async_function_loop_without_reasoning_fails_direct_and_passes_through_rethread() {
    fails_direct_and_passes_through_rethread(Runtime::Python, "function_loop.py", &["--async"]);
}

// ---------------------------------------------------------------------------------------------
// Python: the OpenAI Agents SDK.

/// The second turn replays `to_input_list()` without its reasoning items, as legacy history
/// stores do (the SDK itself keeps them; see the next test).
#[test]
fn agents_second_turn_without_reasoning_fails_direct_and_passes_through_rethread() {
    fails_direct_and_passes_through_rethread(Runtime::Python, "agents_two_turns.py", &[]);
}

/// The Agents SDK's own replay keeps every reasoning item before its call or message: valid for
/// the strict fake, and forwarded by rethread without a single insertion.
#[test]
fn agents_own_history_passes_direct_and_through_rethread_unchanged() {
    if !ready(Runtime::Python) {
        return;
    }
    let args = ["--keep-reasoning"];
    let fake = FakeProcess::start(&[]);
    let direct = run(
        Runtime::Python,
        "agents_two_turns.py",
        &args,
        &format!("{}/v1", fake.url),
    );
    assert!(direct.succeeded(), "direct:\n{}", direct.output());

    let proxy = Rethread::start(&fake.url, &["--fallback-retries", "0"]);
    let through = run(
        Runtime::Python,
        "agents_two_turns.py",
        &args,
        &proxy.url("/v1"),
    );
    assert!(
        through.succeeded(),
        "through rethread:\n{}\n--- rethread\n{}",
        through.output(),
        proxy.logs()
    );
    let counts = wait_for_counts(&proxy, |c| c.len() >= 4);
    assert_eq!(
        counts,
        [0, 0, 0, 0],
        "four requests (two per turn), none changed:\n{}",
        proxy.logs()
    );
}
