//! The file store (`--store file:DIR`) through the real binary: a restart between a turn and its
//! follow-up (SIGTERM, and SIGKILL) forgets nothing, a damaged tail is cut off, and one
//! directory serves one process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::redis::temp_dir;

/// Starts rethread on `dir` in front of `fake`.
fn start(fake: &FakeHandle, dir: &Path) -> Rethread {
    let store = format!("file:{}", dir.display());
    Rethread::start(&fake.url(), &["--store", &store, "--fallback-retries", "0"])
}

fn signal(proxy: &mut Rethread, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        proxy.wait(Duration::from_secs(20)).is_some(),
        "rethread did not stop on {name}"
    );
}

fn tools() -> Value {
    json!([{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}])
}

/// A turn, then the follow-up that needs memory of it: the classic image follow-up for
/// `store: true`; for `store: false`, the call and its output without the reasoning item.
async fn turn(proxy: &Rethread, stored: bool) -> Value {
    let url = proxy.url("/v1/responses");
    if stored {
        let first = post(&url, KEY, &image_request(), &[]).await;
        return image_followup(&output_id(&first.body, "image_generation_call"));
    }
    let body = json!({"model": "gpt-5", "store": false, "input": "weather?", "tools": tools()});
    let first = post(&url, KEY, &body, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let call = first.body["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap()
        .clone();
    let output =
        json!({"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"});
    json!({"model": "gpt-5", "store": false, "tools": tools(), "input": [user("weather?"), call, output]})
}

/// Sends `followup` and asserts it was repaired from memory with one upstream request.
async fn repaired_from_memory(fake: &FakeHandle, proxy: &Rethread, followup: &Value) {
    let posts = fake.responses_posts();
    let answer = post(&proxy.url("/v1/responses"), KEY, followup, &[]).await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.text, proxy.logs());
    assert!(answer.inserted().unwrap_or(0) >= 1, "{:?}", answer.headers);
    assert_eq!(
        fake.responses_posts() - posts,
        1,
        "no cold fallback: memory answered"
    );
}

#[tokio::test]
async fn a_restart_between_a_turn_and_its_followup_forgets_nothing() {
    let fake = fake().await;
    for (signal_name, stored) in [
        ("TERM", true),
        ("KILL", true),
        ("TERM", false),
        ("KILL", false),
    ] {
        let dir = temp_dir("file-restart");
        let mut proxy = start(&fake, &dir);
        let followup = turn(&proxy, stored).await;
        let direct = post(&direct_url(&fake), KEY, &followup, &[]).await;
        assert_eq!(
            direct.status, 400,
            "the follow-up needs repair: {}",
            direct.text
        );
        signal(&mut proxy, signal_name);
        let proxy = start(&fake, &dir);
        proxy.wait_for_log("turns restored from disk");
        repaired_from_memory(&fake, &proxy, &followup).await;
        // Another tenant finds nothing of it.
        let other = post(&proxy.url("/v1/responses"), OTHER_KEY, &followup, &[]).await;
        assert_eq!(other.inserted().unwrap_or(0), 0, "{signal_name} {stored}");
        drop(proxy);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[tokio::test]
async fn garbage_over_the_last_segments_tail_is_cut_off_with_one_warning() {
    let fake = fake().await;
    let dir = temp_dir("file-torn");
    let mut proxy = start(&fake, &dir);
    let followup = turn(&proxy, true).await;
    let _later = turn(&proxy, true).await;
    signal(&mut proxy, "TERM");
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let len = bytes.len();
    // The last record's last 40 bytes overwritten, and garbage after it.
    for b in &mut bytes[len - 40..] {
        *b = 0xAB;
    }
    bytes.extend_from_slice(&[0x55; 300]);
    std::fs::write(&segment, &bytes).unwrap();
    let proxy = start(&fake, &dir);
    proxy.wait_for_log("turns restored from disk");
    let warnings = proxy.logs().matches("torn or damaged record").count();
    assert_eq!(warnings, 1, "{}", proxy.logs());
    repaired_from_memory(&fake, &proxy, &followup).await;
    drop(proxy);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_second_rethread_on_one_directory_refuses_to_start_naming_the_first() {
    let fake = fake().await;
    let dir = temp_dir("file-lock");
    let first = start(&fake, &dir);
    let out = Command::new(env!("CARGO_BIN_EXE_rethread"))
        .args(["--listen", "127.0.0.1:0", "--upstream", &fake.url()])
        .args(["--store", &format!("file:{}", dir.display())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("in use by process {}", first.pid())),
        "{stderr}"
    );
    drop(first);
    std::fs::remove_dir_all(&dir).unwrap();
}
