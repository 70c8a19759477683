//! The systems under test, started and stopped one at a time: the floor
//! (our own process) and turbochat clusters (through the cluster-tests
//! harness, on a fresh PostgreSQL database each).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use harness::cluster::{Cluster, Options};
use harness::store::TestStore;

/// Which system to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// The bare broadcast server of [`crate::floor`].
    Floor,
    /// turbochat on PostgreSQL.
    Turbochat {
        /// Nodes.
        nodes: usize,
        /// Routers.
        routers: usize,
        /// SWIM gossip membership (else a static node list).
        gossip: bool,
    },
}

impl Target {
    /// Short name used in tables and file names.
    pub fn name(&self) -> String {
        match self {
            Target::Floor => "floor".into(),
            Target::Turbochat { nodes, routers, .. } => format!("turbochat-{nodes}n{routers}r"),
        }
    }

    /// Parses `floor`, `1n1r`, `3n2r` (or `turbochat-3n2r`). Clusters with
    /// more than one node use gossip.
    pub fn parse(text: &str) -> anyhow::Result<Target> {
        let text = text.trim().trim_start_matches("turbochat-");
        if text == "floor" {
            return Ok(Target::Floor);
        }
        let (nodes, routers) = text
            .strip_suffix('r')
            .and_then(|rest| rest.split_once('n'))
            .ok_or_else(|| anyhow!("unknown target {text:?} (floor, 1n1r, 3n2r, ...)"))?;
        let nodes: usize = nodes.parse().context("node count")?;
        let routers: usize = routers.parse().context("router count")?;
        if nodes == 0 || routers == 0 {
            bail!("a cluster needs at least one node and one router");
        }
        Ok(Target::Turbochat {
            nodes,
            routers,
            gossip: nodes > 1 || routers > 1,
        })
    }
}

/// A running system: where clients connect, and its processes.
pub struct System {
    /// What was started.
    pub target: Target,
    /// `ip:port` of each WebSocket endpoint (routers, or the floor).
    pub endpoints: Vec<String>,
    /// `(label, pid)` of every server process (PostgreSQL not included).
    pub processes: Vec<(String, u32)>,
    running: Running,
}

/// Held only so dropping the system stops its processes.
enum Running {
    Floor { _process: FloorProcess },
    Turbochat { _cluster: Box<Cluster> },
}

impl System {
    /// Starts `target` and waits until it accepts clients. `router_env` is
    /// extra environment for turbochat routers (e.g. raised limits).
    pub async fn start(
        target: &Target,
        router_env: &BTreeMap<String, String>,
    ) -> anyhow::Result<System> {
        match target {
            Target::Floor => {
                let floor = tokio::task::spawn_blocking(FloorProcess::start).await??;
                Ok(System {
                    target: target.clone(),
                    endpoints: vec![floor.addr.clone()],
                    processes: vec![("floor".into(), floor.child.id())],
                    running: Running::Floor { _process: floor },
                })
            }
            Target::Turbochat {
                nodes,
                routers,
                gossip,
            } => {
                let store = TestStore::postgres().await;
                let options = Options {
                    nodes: *nodes,
                    routers: *routers,
                    gossip: *gossip,
                    router_env: router_env.clone(),
                    ..Options::default()
                };
                let cluster = Cluster::start(store, options).await;
                let endpoints = cluster.routers.iter().map(|r| r.addr("http")).collect();
                let processes = cluster
                    .nodes
                    .iter()
                    .chain(cluster.routers.iter())
                    .filter_map(|p| p.pid().map(|pid| (p.id.clone(), pid)))
                    .collect();
                Ok(System {
                    target: target.clone(),
                    endpoints,
                    processes,
                    running: Running::Turbochat {
                        _cluster: Box::new(cluster),
                    },
                })
            }
        }
    }

    /// The WebSocket URL for `user` on endpoint `i % endpoints`.
    pub fn ws_url(&self, i: usize, user: &str) -> String {
        let addr = &self.endpoints[i % self.endpoints.len()];
        match self.running {
            Running::Floor { .. } => format!("ws://{addr}/ws?user={user}"),
            Running::Turbochat { .. } => {
                format!("ws://{addr}/ws?token={}", harness::tokens::valid(user))
            }
        }
    }

    /// Creates one conversation per group of users (the first user creates
    /// it); returns their ids in order. The floor's rooms need no creating.
    pub async fn create_conversations(
        &self,
        groups: &[Vec<String>],
    ) -> anyhow::Result<Vec<String>> {
        if let Running::Floor { .. } = self.running {
            return Ok((0..groups.len()).map(|i| format!("room-{i}")).collect());
        }
        let http = reqwest::Client::new();
        let base = format!("http://{}", self.endpoints[0]);
        let created: Vec<anyhow::Result<String>> =
            futures::stream::iter(groups.iter().enumerate().map(|(i, group)| {
                let http = http.clone();
                let base = base.clone();
                async move {
                    let body = if group.len() == 2 {
                        json!({"kind": "direct", "peer_id": group[1], "listing_id": format!("bench-{i}")})
                    } else {
                        json!({"kind": "group", "participants": group[1..], "title": format!("bench {i}")})
                    };
                    let response = http
                        .post(format!("{base}/conversations"))
                        .bearer_auth(harness::tokens::valid(&group[0]))
                        .json(&body)
                        .send()
                        .await?;
                    let status = response.status();
                    let value: serde_json::Value = response.json().await.unwrap_or_default();
                    if !status.is_success() {
                        bail!("create conversation {i}: {status} {value}");
                    }
                    value["conversation_id"]
                        .as_str()
                        .map(String::from)
                        .ok_or_else(|| anyhow!("no conversation_id in {value}"))
                }
            }))
            .buffered(32)
            .collect()
            .await;
        created.into_iter().collect()
    }

    /// Where the node and router binaries came from (None for the floor).
    pub fn bin_dir(&self) -> Option<String> {
        match self.running {
            Running::Floor { .. } => None,
            Running::Turbochat { .. } => Some(harness::bins::bin_dir().display().to_string()),
        }
    }

    /// Stops every process (and drops the turbochat database).
    pub async fn stop(self) {
        // Dropping kills the children and drops the database; both block.
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}

/// The floor as a child process: this same binary with `floor`.
struct FloorProcess {
    child: Child,
    addr: String,
}

impl FloorProcess {
    fn start() -> anyhow::Result<FloorProcess> {
        let exe = std::env::current_exe().context("own executable")?;
        let mut child = Command::new(exe)
            .args(["floor", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the floor")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let started = Instant::now();
        let line = loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                break line;
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("the floor exited with {status} before ready");
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                bail!("the floor was not ready after 10 s");
            }
        };
        let ready: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("floor ready line {line:?}"))?;
        let addr = ready["http"]
            .as_str()
            .ok_or_else(|| anyhow!("no http in {ready}"))?
            .to_string();
        Ok(FloorProcess { child, addr })
    }
}

impl Drop for FloorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(Target::parse("floor").unwrap(), Target::Floor);
        assert_eq!(
            Target::parse("1n1r").unwrap(),
            Target::Turbochat {
                nodes: 1,
                routers: 1,
                gossip: false
            }
        );
        assert_eq!(
            Target::parse("turbochat-3n2r").unwrap(),
            Target::Turbochat {
                nodes: 3,
                routers: 2,
                gossip: true
            }
        );
        assert_eq!(Target::parse("3n2r").unwrap().name(), "turbochat-3n2r");
        assert!(Target::parse("socketio").is_err());
        assert!(Target::parse("0n1r").is_err());
    }
}
