//! The systems under test, started and stopped one at a time: the floor
//! (our own process), the Socket.IO peer (`peers/socketio`, Node.js), the
//! seed's Go server (`peers/seedgo`, [`crate::seedgo`]) and turbochat
//! clusters (through the cluster-tests harness); the last two on a fresh
//! PostgreSQL database each.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use harness::cluster::{Cluster, Options};
use harness::process::Role;
use harness::store::TestStore;

/// Which system to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// The bare broadcast server of [`crate::floor`].
    Floor,
    /// A Socket.IO 4 server with rooms, no persistence (`peers/socketio`).
    SocketIo,
    /// The seed's Go server (`peers/seedgo`): two instances, every message
    /// stored in PostgreSQL, then fanned out over Redis pub/sub.
    #[serde(rename = "seedgo")]
    SeedGo,
    /// turbochat on PostgreSQL.
    Turbochat {
        /// Nodes.
        nodes: usize,
        /// Routers.
        routers: usize,
        /// SWIM gossip membership (else a static node list).
        gossip: bool,
        /// Co-located mode: `nodes` processes, each a node and a router
        /// linked in process (`turbochat-colocated`).
        colocated: bool,
    },
}

impl Target {
    /// Short name used in tables and file names.
    pub fn name(&self) -> String {
        match self {
            Target::Floor => "floor".into(),
            Target::SocketIo => "socketio".into(),
            Target::SeedGo => "seedgo".into(),
            Target::Turbochat {
                nodes,
                colocated: true,
                ..
            } => format!("turbochat-{nodes}c"),
            Target::Turbochat { nodes, routers, .. } => format!("turbochat-{nodes}n{routers}r"),
        }
    }

    /// Parses `floor`, `socketio`, `seedgo`, `1n1r`, `3n2r` (or
    /// `turbochat-3n2r`), and `1c`, `3c` (co-located processes).
    /// Clusters with more than one process use gossip.
    pub fn parse(text: &str) -> anyhow::Result<Target> {
        let text = text.trim().trim_start_matches("turbochat-");
        match text {
            "floor" => return Ok(Target::Floor),
            "socketio" | "socket.io" => return Ok(Target::SocketIo),
            "seedgo" => return Ok(Target::SeedGo),
            _ => {}
        }
        if let Some(count) = text.strip_suffix('c') {
            let nodes: usize = count.parse().context("co-located process count")?;
            if nodes == 0 {
                bail!("a co-located cluster needs at least one process");
            }
            return Ok(Target::Turbochat {
                nodes,
                routers: nodes,
                gossip: nodes > 1,
                colocated: true,
            });
        }
        let (nodes, routers) = text
            .strip_suffix('r')
            .and_then(|rest| rest.split_once('n'))
            .ok_or_else(|| {
                anyhow!("unknown target {text:?} (floor, socketio, seedgo, 1n1r, 3n2r, ...)")
            })?;
        let nodes: usize = nodes.parse().context("node count")?;
        let routers: usize = routers.parse().context("router count")?;
        if nodes == 0 || routers == 0 {
            bail!("a cluster needs at least one node and one router");
        }
        Ok(Target::Turbochat {
            nodes,
            routers,
            gossip: nodes > 1 || routers > 1,
            colocated: false,
        })
    }
}

/// Extra environment for turbochat's processes (`--node-env`,
/// `--router-env`), to measure a setting; the peers ignore it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerEnv {
    /// For every node.
    pub node: BTreeMap<String, String>,
    /// For every router.
    pub router: BTreeMap<String, String>,
}

impl ServerEnv {
    /// This environment on top of `router_defaults` (what the bench sets for
    /// routers itself): a value given here wins.
    pub fn over_router_defaults(&self, router_defaults: BTreeMap<String, String>) -> ServerEnv {
        let mut router = router_defaults;
        router.extend(self.router.clone());
        ServerEnv {
            node: self.node.clone(),
            router,
        }
    }
}

/// A running system: where clients connect, and its processes.
pub struct System {
    /// What was started.
    pub target: Target,
    /// `ip:port` of each WebSocket endpoint (routers, seedgo's instances,
    /// or the one peer process).
    pub endpoints: Vec<String>,
    /// `(label, pid)` of every server process (PostgreSQL and Redis not
    /// included: see [`System::shared_services`]).
    pub processes: Vec<(String, u32)>,
    /// `ip:port` of each turbochat node's HTTP listener (`/metrics`); empty
    /// for the peers.
    pub node_metrics: Vec<String>,
    running: Running,
}

/// Held only so dropping the system stops its processes.
enum Running {
    Peer { _process: ChildProcess },
    SeedGo { _seed: Box<crate::seedgo::SeedGo> },
    Turbochat { _cluster: Box<Cluster> },
}

/// How clients talk to a system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Wire {
    /// turbochat's JSON frames (`{"type": ...}`), also spoken by the floor.
    Frames,
    /// The same frames as Socket.IO events (Engine.IO 4 over WebSocket).
    SocketIo,
}

impl System {
    /// Starts `target` and waits until it accepts clients, turbochat's
    /// processes with `env` added to theirs.
    pub async fn start(target: &Target, env: &ServerEnv) -> anyhow::Result<System> {
        match target {
            Target::Floor | Target::SocketIo => {
                let command = match target {
                    Target::Floor => floor_command()?,
                    _ => socketio_command()?,
                };
                let name = target.name();
                let peer = tokio::task::spawn_blocking(move || {
                    ChildProcess::start(&name, command, PEER_READY_TIMEOUT)
                })
                .await??;
                let addr = peer.ready["http"]
                    .as_str()
                    .ok_or_else(|| anyhow!("no http in {}", peer.ready))?
                    .to_string();
                Ok(System {
                    target: target.clone(),
                    endpoints: vec![addr],
                    processes: vec![(target.name(), peer.child.id())],
                    node_metrics: Vec::new(),
                    running: Running::Peer { _process: peer },
                })
            }
            Target::SeedGo => {
                let seed = crate::seedgo::SeedGo::start().await?;
                Ok(System {
                    target: target.clone(),
                    endpoints: seed.endpoints()?,
                    processes: seed.processes(),
                    node_metrics: Vec::new(),
                    running: Running::SeedGo {
                        _seed: Box::new(seed),
                    },
                })
            }
            Target::Turbochat {
                nodes,
                routers,
                gossip,
                colocated,
            } => {
                let store = TestStore::postgres().await;
                let options = Options {
                    nodes: *nodes,
                    routers: *routers,
                    gossip: *gossip,
                    router_env: env.router.clone(),
                    node_env: env.node.clone(),
                    colocated: *colocated,
                    ..Options::default()
                };
                let cluster = Cluster::start(store, options).await;
                let endpoints = cluster.routers.iter().map(|r| r.addr("http")).collect();
                let node_metrics = cluster
                    .nodes
                    .iter()
                    .chain(cluster.routers.iter().filter(|r| r.role == Role::Colocated))
                    .map(Cluster::node_http)
                    .collect();
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
                    node_metrics,
                    running: Running::Turbochat {
                        _cluster: Box::new(cluster),
                    },
                })
            }
        }
    }

    /// How clients talk to this system.
    pub fn wire(&self) -> Wire {
        match self.target {
            Target::SocketIo => Wire::SocketIo,
            _ => Wire::Frames,
        }
    }

    /// The WebSocket URL for `user` on endpoint `i % endpoints`.
    pub fn ws_url(&self, i: usize, user: &str) -> String {
        let addr = &self.endpoints[i % self.endpoints.len()];
        match self.target {
            Target::Floor => format!("ws://{addr}/ws?user={user}"),
            Target::SocketIo => {
                format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&user={user}")
            }
            Target::SeedGo | Target::Turbochat { .. } => {
                format!("ws://{addr}/ws?token={}", harness::tokens::valid(user))
            }
        }
    }

    /// Creates one conversation per group of users (the first user creates
    /// it, with `POST /conversations` as turbochat's router and seedgo take
    /// it); returns their ids in order. The floor's and Socket.IO's rooms
    /// need no creating.
    pub async fn create_conversations(
        &self,
        groups: &[Vec<String>],
    ) -> anyhow::Result<Vec<String>> {
        if let Running::Peer { .. } = self.running {
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

    /// Where the node and router binaries came from (None for the peers).
    pub fn bin_dir(&self) -> Option<String> {
        match self.running {
            Running::Peer { .. } | Running::SeedGo { .. } => None,
            Running::Turbochat { .. } => Some(harness::bins::bin_dir().display().to_string()),
        }
    }

    /// Processes outside [`System::processes`] whose CPU counts as this
    /// system's, by process name, each summed under its name: PostgreSQL
    /// for all (the peers without a database use none of it), and Redis
    /// for seedgo, whose every message goes through it.
    pub fn shared_services(&self) -> &'static [&'static str] {
        match self.target {
            Target::SeedGo => &[crate::cpu::POSTGRES, crate::cpu::REDIS],
            _ => &[crate::cpu::POSTGRES],
        }
    }

    /// Stops every process (and drops the database).
    pub async fn stop(self) {
        // Dropping kills the children and drops the database; both block.
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}

/// The floor: this same binary with `floor`.
fn floor_command() -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("own executable")?;
    let mut command = Command::new(exe);
    command.args(["floor", "--listen", "127.0.0.1:0"]);
    Ok(command)
}

/// Where the Socket.IO peer lives.
pub fn socketio_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/peers/socketio"))
}

/// The Socket.IO peer: `node server.js` in [`socketio_dir`], after
/// `npm ci` there if its dependencies are not installed yet.
fn socketio_command() -> anyhow::Result<Command> {
    let dir = socketio_dir();
    if !dir.join("node_modules/socket.io").is_dir() {
        npm_ci(&dir)?;
    }
    let mut command = Command::new("node");
    command.arg("server.js").current_dir(&dir);
    Ok(command)
}

fn npm_ci(dir: &Path) -> anyhow::Result<()> {
    eprintln!("== socketio: npm ci in {}", dir.display());
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("running npm (the Socket.IO peer needs Node.js and npm on PATH)")?;
    if !status.success() {
        bail!("npm ci in {} failed with {status}", dir.display());
    }
    Ok(())
}

/// How long a peer server may take to print its ready line.
const PEER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A child process that prints one JSON line once ready (a peer server:
/// `{"http": "ip:port"}`; a `hold` share: `{"connected": n}`). Its stdin
/// is a pipe: a child that watches it exits when this handle (or the
/// bench) goes away. Dropping kills it.
pub struct ChildProcess {
    /// The process.
    pub child: Child,
    /// Its ready line.
    pub ready: serde_json::Value,
}

impl ChildProcess {
    /// Starts `command` and waits up to `timeout` for its ready line.
    pub fn start(name: &str, mut command: Command, timeout: Duration) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {name}"))?;
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
                bail!("{name} exited with {status} before ready");
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{name} was not ready after {timeout:?}");
            }
        };
        let ready =
            serde_json::from_str(&line).with_context(|| format!("{name} ready line {line:?}"));
        match ready {
            Ok(ready) => Ok(ChildProcess { child, ready }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_router_env_wins_over_the_bench_defaults() {
        let given = ServerEnv {
            node: BTreeMap::from([("N".to_string(), "1".to_string())]),
            router: BTreeMap::from([("A".to_string(), "mine".to_string())]),
        };
        let defaults = BTreeMap::from([
            ("A".to_string(), "bench".to_string()),
            ("B".to_string(), "bench".to_string()),
        ]);
        let env = given.over_router_defaults(defaults);
        assert_eq!(env.router["A"], "mine");
        assert_eq!(env.router["B"], "bench");
        assert_eq!(env.node, given.node);
    }

    #[test]
    fn parses_targets() {
        assert_eq!(Target::parse("floor").unwrap(), Target::Floor);
        assert_eq!(
            Target::parse("1n1r").unwrap(),
            Target::Turbochat {
                nodes: 1,
                routers: 1,
                gossip: false,
                colocated: false,
            }
        );
        assert_eq!(
            Target::parse("turbochat-3n2r").unwrap(),
            Target::Turbochat {
                nodes: 3,
                routers: 2,
                gossip: true,
                colocated: false,
            }
        );
        assert_eq!(
            Target::parse("1c").unwrap(),
            Target::Turbochat {
                nodes: 1,
                routers: 1,
                gossip: false,
                colocated: true,
            }
        );
        assert_eq!(Target::parse("2c").unwrap().name(), "turbochat-2c");
        assert!(Target::parse("0c").is_err());
        assert_eq!(Target::parse("3n2r").unwrap().name(), "turbochat-3n2r");
        assert_eq!(Target::parse("socketio").unwrap(), Target::SocketIo);
        assert_eq!(Target::parse("seedgo").unwrap(), Target::SeedGo);
        assert_eq!(Target::SeedGo.name(), "seedgo");
        assert!(Target::parse("nats").is_err());
        assert!(Target::parse("0n1r").is_err());
    }
}
