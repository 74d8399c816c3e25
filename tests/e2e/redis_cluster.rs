//! The shared ledger on a real Redis Cluster (3 masters, 3 replicas) the tests start themselves:
//! `redis-server --cluster-enabled yes` on free ports in a temp dir, joined by
//! `redis-cli --cluster create`. Without `redis-server` or `redis-cli` these tests skip with a
//! reason, except under `CI=true`, where they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::redis::{check, cli, free_port, start_on_a_free_port, temp_dir};

const SECRET: &str = "shared-tenant-secret-for-tests";

struct Node {
    child: Option<Child>,
    port: u16,
}

struct Cluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl Cluster {
    /// Six nodes, joined as three masters with a replica each; waits until every node sees the
    /// cluster as `ok`.
    fn start() -> Option<Cluster> {
        if let Err(e) = Command::new("redis-cli").arg("--version").output() {
            let reason =
                format!("redis-cli is not installed ({e}); `apt-get install -y redis-tools`");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{reason}: the Redis tests must run in CI");
            }
            eprintln!("skipping: {reason}");
            return None;
        }
        let dir = temp_dir("cluster");
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
        };
        for n in 0..6 {
            let node_dir = cluster.dir.join(n.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let dir = node_dir.to_str().unwrap().to_owned();
            let (child, port) = start_on_a_free_port(&node_dir, |port| {
                // The cluster bus needs a port of its own: port + 10000 may not exist.
                let (port, bus) = (port.to_string(), free_port().to_string());
                [
                    "--port",
                    &port,
                    "--cluster-port",
                    &bus,
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &dir,
                ]
                .map(String::from)
                .to_vec()
            })?;
            cluster.nodes.push(Node {
                child: Some(child),
                port,
            });
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &cluster.nodes {
            while !cli(node.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster never became ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(cluster)
    }

    /// The seed nodes: three of the six, as an operator would list them.
    fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes[..3]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    fn alive(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// `CLUSTER NODES` as a live node sees it: (port, flags, master id or `-`, id).
    fn topology(&self) -> Vec<(u16, String, String, String)> {
        let node = self.alive().next().unwrap();
        cli(node.port, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let port = f.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                Some((port, f[2].to_owned(), f[3].to_owned(), f[0].to_owned()))
            })
            .collect()
    }

    /// The ports of the nodes holding keys (rethread's, here), masters and replicas alike.
    fn holding_keys(&self) -> Vec<u16> {
        self.alive()
            .filter(|n| !cli(n.port, &["KEYS", "*"]).is_empty())
            .map(|n| n.port)
            .collect()
    }

    fn is_master(&self, port: u16) -> bool {
        self.topology().iter().any(|(p, flags, _, _)| {
            *p == port && flags.contains("master") && !flags.contains("fail")
        })
    }

    /// The replica of the master on `port`.
    fn replica_of(&self, port: u16) -> u16 {
        let topology = self.topology();
        let id = &topology.iter().find(|(p, ..)| *p == port).unwrap().3;
        topology
            .iter()
            .find(|(_, _, master, _)| master == id)
            .unwrap()
            .0
    }

    fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap();
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn replica(upstream: &str, cluster: &Cluster, extra: &[&str]) -> Rethread {
    let url = cluster.url();
    let mut args = vec!["--store", &url, "--store-timeout", "500ms"];
    args.extend_from_slice(extra);
    Rethread::start_env(upstream, &args, &[("RETHREAD_TENANT_SECRET", SECRET)])
}

/// Waits until the bucket holding `count` turns is on some node (replicas included when
/// `copies` is 2).
fn wait_keys(cluster: &Cluster, copies: usize) -> Vec<u16> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let holding = cluster.holding_keys();
        if holding.len() >= copies {
            return holding;
        }
        assert!(Instant::now() < deadline, "no node holds the turn");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn replicas_share_turns_through_a_cluster_one_slot_per_tenant() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let fake = fake().await;
    let a = replica(&fake.url(), &cluster, &["--fallback-retries", "0"]);
    let b = replica(&fake.url(), &cluster, &["--fallback-retries", "0"]);
    for key in [KEY, OTHER_KEY] {
        let first = post(&a.url("/v1/responses"), key, &image_request(), &[]).await;
        assert_eq!(first.status, 200, "{}", first.text);
        let ig = output_id(&first.body, "image_generation_call");
        let followup = {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let before = fake.responses_posts();
                let followup = post(&b.url("/v1/responses"), key, &image_followup(&ig), &[]).await;
                if followup.inserted() == Some(2) {
                    assert_eq!(fake.responses_posts() - before, 1);
                    break followup;
                }
                assert!(
                    Instant::now() < deadline,
                    "never repaired: {}",
                    followup.text
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        assert_eq!(followup.status, 200);
    }
    // Each tenant's keys sit in one slot: every key names its tenant's hash tag, and the keys
    // of one tenant hash to one slot.
    let mut slots = std::collections::BTreeMap::new();
    for node in cluster.alive() {
        if !cluster.is_master(node.port) {
            continue;
        }
        for key in cli(node.port, &["KEYS", "*"]).lines() {
            let tag = key.split(':').nth(1).unwrap().to_owned();
            assert!(tag.starts_with('{') && tag.ends_with('}'), "{key}");
            let slot = cli(node.port, &["CLUSTER", "KEYSLOT", key]);
            slots.entry(tag).or_insert_with(Vec::new).push(slot);
        }
    }
    assert_eq!(slots.len(), 2, "two tenants: {slots:?}");
    for (tag, slots) in &slots {
        assert!(slots.windows(2).all(|w| w[0] == w[1]), "{tag}: {slots:?}");
    }
    let ready = client().get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    // `rethread check` counts the turns on every master (a turn and a follow-up per tenant).
    let text = check(&cluster.url(), &fake.url()).await;
    assert!(
        text.contains("store: 4 turns in 2 bucket keys on 3 masters; used_memory "),
        "{text}"
    );
}

#[tokio::test]
async fn a_master_failing_over_never_fails_a_client_and_memory_returns_once_its_replica_is_promoted(
) {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let fake = fake().await;
    let proxy = replica(&fake.url(), &cluster, &[]);
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    let ig = output_id(&first.body, "image_generation_call");
    // The tenant's master and its replica both hold the turn.
    let holding = wait_keys(&cluster, 2);
    let master = *holding
        .iter()
        .find(|port| cluster.is_master(**port))
        .unwrap();
    let promoted = cluster.replica_of(master);
    assert!(holding.contains(&promoted), "{holding:?}");

    cluster.kill(master);
    let killed = Instant::now();
    // Until the replica is promoted, and after: every request is answered as without rethread.
    let mut memory_back = None;
    let mut rounds = 0;
    while memory_back.is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "memory never came back; topology {:?}\n{}",
            cluster.topology(),
            proxy.logs()
        );
        rounds += 1;
        let turn = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
        assert_eq!(turn.status, 200, "{}", turn.text);
        let new_ig = output_id(&turn.body, "image_generation_call");
        let before = fake.responses_posts();
        let followup = post(
            &proxy.url("/v1/responses"),
            KEY,
            &image_followup(&new_ig),
            &[],
        )
        .await;
        assert_eq!(
            followup.status, 200,
            "repaired, by the fallback if need be: {}",
            followup.text
        );
        let posts = fake.responses_posts() - before;
        if cluster.is_master(promoted) && followup.inserted() == Some(2) && posts == 1 {
            memory_back = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The outage was real: lookups or writes failed meanwhile, and no client saw it.
    assert!(
        family_sum(&metrics_text(&proxy).await, "rethread_store_errors_total") > 0.0,
        "no store error during the failover"
    );
    // The turn learned before the failover was replicated: still repaired from memory.
    let before = fake.responses_posts();
    let old = post(&proxy.url("/v1/responses"), KEY, &image_followup(&ig), &[]).await;
    assert_eq!(old.inserted(), Some(2), "{}", old.text);
    assert_eq!(fake.responses_posts() - before, 1);
    let ready = client().get(proxy.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    eprintln!(
        "failover: memory back {:?} after the master was killed ({rounds} rounds of turn + follow-up, all 200)",
        memory_back.unwrap()
    );
}
