//! The connection to Redis: one node, or a cluster (commands go to the node holding their first
//! key's slot; the client follows redirections and failovers), kept alive by a ping every
//! `KEEPALIVE` so a connection Redis dropped is made again before a request needs it.

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo,
};

use std::time::Duration;

/// How often the background task pings, so a dropped connection is re-made before a request
/// needs it.
pub(super) const KEEPALIVE: Duration = Duration::from_millis(250);

/// Routing to the cluster node at `host:port`.
pub(super) fn by_address(host: &str, port: u16) -> SingleNodeRoutingInfo {
    SingleNodeRoutingInfo::ByAddress {
        host: host.to_owned(),
        port,
    }
}

/// A connection that reconnects on its own: to one node, or to a cluster (commands go to the
/// node holding their first key's slot; the client follows redirections and failovers).
#[derive(Clone)]
pub(super) enum Conn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match self.clone() {
            Conn::Node(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }

    /// A command every primary must answer (one node's, on a single node).
    pub(super) async fn on_every_primary(
        &self,
        cmd: redis::Cmd,
    ) -> redis::RedisResult<redis::Value> {
        match self.clone() {
            Conn::Node(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => {
                let all = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                c.route_command(cmd, all).await
            }
        }
    }

    /// The nodes holding data: the one node, or each master of a cluster (by address).
    pub(super) async fn primaries(&self) -> redis::RedisResult<Vec<Option<(String, u16)>>> {
        let Conn::Cluster(_) = self else {
            return Ok(vec![None]);
        };
        let nodes: String = self.query(redis::cmd("CLUSTER").arg("NODES")).await?;
        Ok(nodes
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let serving = f.len() > 8 && f[2].contains("master") && !f[2].contains("fail");
                let address = f.get(1)?.split(['@', ',']).next()?;
                let (host, port) = address.rsplit_once(':')?;
                let port: u16 = port.parse().ok()?;
                serving.then(|| Some((host.to_owned(), port)))
            })
            .collect())
    }

    /// A command to one node (`None`: the single node).
    pub(super) async fn on_node<T: redis::FromRedisValue>(
        &self,
        node: &Option<(String, u16)>,
        cmd: redis::Cmd,
    ) -> redis::RedisResult<T> {
        match (self.clone(), node) {
            (Conn::Cluster(mut c), Some((host, port))) => {
                let route = RoutingInfo::SingleNode(by_address(host, *port));
                Ok(redis::from_redis_value(c.route_command(cmd, route).await?)?)
            }
            _ => self.query(&cmd).await,
        }
    }

    /// A pipeline to one node (`None`: the single node).
    pub(super) async fn pipeline_on_node<T: redis::FromRedisValue>(
        &self,
        node: &Option<(String, u16)>,
        pipe: redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match (self.clone(), node) {
            (Conn::Cluster(mut c), Some((host, port))) => {
                let route = by_address(host, *port);
                let count = pipe.len();
                let values = c.route_pipeline(pipe, 0, count, route).await?;
                Ok(redis::from_redis_value(redis::Value::Array(values))?)
            }
            (Conn::Node(mut c), _) => pipe.query_async(&mut c).await,
            (Conn::Cluster(mut c), None) => pipe.query_async(&mut c).await,
        }
    }

    /// Runs a script; when it failed because the connection was dead, once more on the new one.
    pub(super) async fn script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        body: &str,
        keys: &[Vec<u8>],
        args: &[Vec<u8>],
    ) -> redis::RedisResult<T> {
        match self.script_once(script, body, keys, args).await {
            Err(e) if dead_connection(&e) => {
                tracing::debug!(error = %e, "store connection was dead; sending again");
                self.script_once(script, body, keys, args).await
            }
            other => other,
        }
    }

    /// Runs a script by its hash, sending its body only when the server does not have it (a
    /// restarted or newly promoted node), to the node that holds the script's keys.
    pub(super) async fn script_once<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        body: &str,
        keys: &[Vec<u8>],
        args: &[Vec<u8>],
    ) -> redis::RedisResult<T> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        match self.query(&cmd).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(body).arg(keys.len()).arg(keys).arg(args);
                self.query(&cmd).await
            }
            other => other,
        }
    }
}

/// The node URLs of a `redis+cluster://[user:pass@]host:port,host:port,…[?query]` (or
/// `rediss+cluster://`) store URL, each as `redis://[user:pass@]host:port[?query]`; `None` for a
/// single node's URL.
pub(super) fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(None);
    };
    let scheme = match scheme {
        "redis+cluster" => "redis",
        "rediss+cluster" => "rediss",
        _ => return Ok(None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (rest, String::new()),
    };
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = match hosts.split_once('/') {
        None => hosts,
        Some((hosts, "" | "0")) => hosts,
        Some(_) => return Err("a cluster has only database 0: drop the /db".into()),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|host| format!("{scheme}://{userinfo}{host}{query}"))
        .collect();
    if nodes.is_empty() {
        return Err(
            "a cluster URL names its seed nodes: redis+cluster://host:port,host:port".into(),
        );
    }
    Ok(Some(nodes))
}

/// Whether an error says the connection is gone (the client has begun making a new one), as
/// opposed to Redis answering with an error.
pub(super) fn dead_connection(e: &redis::RedisError) -> bool {
    e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_io_error()
}

/// Pings the store for ever: a failed ping on a dropped connection makes the client connect
/// anew, so the connection is back before the next request needs it.
pub(super) async fn keep_alive(conn: Conn) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = tokio::time::timeout(KEEPALIVE, conn.on_every_primary(redis::cmd("PING"))).await;
    }
}
