//! A cluster of real processes: N nodes and M routers on one store, with
//! static routing or SWIM gossip, and optionally the Redis fallback bus.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::process::{Process, Role};
use crate::store::TestStore;

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of nodes.
    pub nodes: usize,
    /// Number of routers.
    pub routers: usize,
    /// SWIM gossip (else routers get a static node list).
    pub gossip: bool,
    /// Redis fallback bus with this channel prefix.
    pub redis_prefix: Option<String>,
    /// Extra environment for every node.
    pub node_env: BTreeMap<String, String>,
    /// Extra environment for every router.
    pub router_env: BTreeMap<String, String>,
    /// Route gossip through this switch (to partition the cluster).
    pub gossip_net: Option<crate::gossip_net::GossipNet>,
    /// Put a cuttable TCP proxy in front of every node's gRPC listener
    /// (what routers and other nodes connect to): see [`Cluster::grpc_proxy`].
    pub proxied_grpc: bool,
    /// Co-located mode: `nodes` processes of `turbochat-colocated`, each a
    /// node and a router (`routers` is ignored). They are in `routers`
    /// (clients connect there); `nodes` stays empty; the node's addresses
    /// are under `node` in each one's ready line ([`Cluster::node_http`]).
    pub colocated: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 1,
            routers: 1,
            gossip: false,
            redis_prefix: None,
            node_env: BTreeMap::new(),
            router_env: BTreeMap::new(),
            gossip_net: None,
            proxied_grpc: false,
            colocated: false,
        }
    }
}

/// Running processes and their store.
pub struct Cluster {
    /// Nodes, `node-1`...
    pub nodes: Vec<Process>,
    /// Routers, `router-1`...
    pub routers: Vec<Process>,
    /// Options it was started with.
    pub options: Options,
    next_node: usize,
    seed: Option<String>,
    ports: Vec<crate::gossip_net::Port>,
    grpc_proxies: BTreeMap<String, crate::proxy::Proxy>,
    /// The store (kept last: dropped after the processes).
    pub store: TestStore,
}

fn env(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

impl Cluster {
    /// Starts nodes, then routers, and waits until every router is ready.
    pub async fn start(store: TestStore, options: Options) -> Self {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            routers: Vec::new(),
            options: options.clone(),
            next_node: 1,
            seed: None,
            ports: Vec::new(),
            grpc_proxies: BTreeMap::new(),
            store,
        };
        if options.colocated {
            cluster.add_colocated();
        } else {
            for _ in 0..options.nodes {
                cluster.add_node();
            }
            for i in 1..=options.routers {
                cluster.add_router(i);
            }
        }
        cluster.wait_ready().await;
        cluster
    }

    fn bus_env(&self, env: &mut BTreeMap<String, String>) {
        if let Some(prefix) = &self.options.redis_prefix {
            env.insert("TURBOCHAT_BUS__REDIS_URL".into(), redis_url());
            env.insert("TURBOCHAT_BUS__CHANNEL_PREFIX".into(), prefix.clone());
            env.insert("TURBOCHAT_BUS__CLUSTER_ID".into(), "test".into());
        }
    }

    /// Starts one more node (`node-{n}`); with gossip it joins through the
    /// first node. Returns its index in `nodes`.
    pub fn add_node(&mut self) -> usize {
        let id = format!("node-{}", self.next_node);
        self.next_node += 1;
        let mut node_env = self.node_env(&id, "127.0.0.1:0");
        if self.options.gossip {
            node_env.insert("TURBOCHAT_CLUSTER__ENABLED".into(), "true".into());
            node_env.insert(
                "TURBOCHAT_CLUSTER__GOSSIP_LISTEN".into(),
                "127.0.0.1:0".into(),
            );
            if let Some(seed) = &self.seed {
                node_env.insert("TURBOCHAT_CLUSTER__SEEDS".into(), format!("[\"{seed}\"]"));
            }
        }
        self.bus_env(&mut node_env);
        node_env.extend(self.options.node_env.clone());
        let port = self.switch_port(&id, &mut node_env);
        if self.options.proxied_grpc {
            // The node listens on a port chosen here, so the proxy in front
            // of it exists before the node advertises it.
            let listen = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port");
            let proxy = crate::proxy::Proxy::spawn(listen);
            node_env.insert("TURBOCHAT_NODE__GRPC_LISTEN".into(), listen.to_string());
            node_env.insert(
                "TURBOCHAT_NODE__GRPC_ADVERTISE".into(),
                format!("http://{}", proxy.addr),
            );
            self.grpc_proxies.insert(id.clone(), proxy);
        }
        let mut node = Process::start(Role::Node, &id, node_env, self.store.dir.path());
        // Pin the ports so a restart comes back where routers expect it.
        node.pin("TURBOCHAT_NODE__GRPC_LISTEN", node.addr("grpc"));
        node.pin("TURBOCHAT_NODE__HTTP_LISTEN", node.addr("http"));
        if self.options.gossip {
            let gossip = node.addr("gossip");
            node.pin("TURBOCHAT_CLUSTER__GOSSIP_LISTEN", gossip.clone());
            let seed = match port {
                Some(port) => {
                    port.attach(gossip.parse().expect("gossip address"));
                    let advertised = port.addr.to_string();
                    self.ports.push(port);
                    advertised
                }
                None => gossip,
            };
            self.seed.get_or_insert(seed);
        }
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// A node's own settings: its id, listeners (HTTP on port 0), this
    /// cluster's store and a push file of its own.
    fn node_env(&self, id: &str, grpc_listen: &str) -> BTreeMap<String, String> {
        env(&[
            ("TURBOCHAT_NODE__ID", id.to_string()),
            ("TURBOCHAT_NODE__GRPC_LISTEN", grpc_listen.to_string()),
            ("TURBOCHAT_NODE__HTTP_LISTEN", "127.0.0.1:0".into()),
            ("TURBOCHAT_STORE__URL", self.store.url.clone()),
            (
                "TURBOCHAT_PUSH__FILE__PATH",
                self.store
                    .dir
                    .path()
                    .join(format!("{id}-push.jsonl"))
                    .to_string_lossy()
                    .into_owned(),
            ),
        ])
    }

    /// A router's own settings: its id, listeners on port 0 and this
    /// cluster's media directory.
    fn router_env(&self, id: &str) -> BTreeMap<String, String> {
        env(&[
            ("TURBOCHAT_ROUTER__ID", id.to_string()),
            ("TURBOCHAT_ROUTER__LISTEN", "127.0.0.1:0".into()),
            ("TURBOCHAT_ROUTER__OPS_LISTEN", "127.0.0.1:0".into()),
            (
                "TURBOCHAT_MEDIA__DIR",
                self.media_dir().to_string_lossy().into_owned(),
            ),
        ])
    }

    /// Starts the co-located processes (`Options::colocated`): process i
    /// runs `node-i` and `router-i`. Without gossip every router names
    /// every node, on gRPC ports chosen here.
    fn add_colocated(&mut self) {
        let count = self.options.nodes;
        let grpc: Vec<String> = (0..count)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("free port")
                    .to_string()
            })
            .collect();
        let static_nodes: Vec<String> = grpc
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{{id=\"node-{}\",grpc=\"http://{addr}\"}}", i + 1))
            .collect();
        for (i, grpc) in grpc.iter().enumerate() {
            let n = i + 1;
            let id = format!("node-{n}");
            let mut env = self.node_env(&id, grpc);
            env.extend(self.router_env(&format!("router-{n}")));
            if self.options.gossip {
                env.insert("TURBOCHAT_ROUTER__NODES".into(), "[]".into());
                env.insert("TURBOCHAT_CLUSTER__ENABLED".into(), "true".into());
                env.insert(
                    "TURBOCHAT_CLUSTER__GOSSIP_LISTEN".into(),
                    "127.0.0.1:0".into(),
                );
                if let Some(seed) = &self.seed {
                    env.insert("TURBOCHAT_CLUSTER__SEEDS".into(), format!("[\"{seed}\"]"));
                }
            } else {
                env.insert(
                    "TURBOCHAT_ROUTER__NODES".into(),
                    format!("[{}]", static_nodes.join(",")),
                );
            }
            self.bus_env(&mut env);
            env.extend(self.options.node_env.clone());
            env.extend(self.options.router_env.clone());
            let mut process = Process::start(Role::Colocated, &id, env, self.store.dir.path());
            process.pin("TURBOCHAT_ROUTER__LISTEN", process.addr("http"));
            process.pin("TURBOCHAT_ROUTER__OPS_LISTEN", process.addr("ops"));
            let node_http = process.ready["node"]["http"]
                .as_str()
                .expect("ready line names the node's http")
                .to_string();
            process.pin("TURBOCHAT_NODE__HTTP_LISTEN", node_http);
            if self.options.gossip {
                let gossip = process.ready["node"]["gossip"]
                    .as_str()
                    .expect("ready line names the node's gossip")
                    .to_string();
                process.pin("TURBOCHAT_CLUSTER__GOSSIP_LISTEN", gossip.clone());
                self.seed.get_or_insert(gossip);
            }
            self.routers.push(process);
        }
    }

    /// The node's HTTP address (`/metrics`) of a co-located process.
    pub fn node_http(process: &Process) -> String {
        match process.role {
            Role::Colocated => process.ready["node"]["http"]
                .as_str()
                .expect("ready line names the node's http")
                .to_string(),
            _ => process.addr("http"),
        }
    }

    /// With a gossip switch: a port for `member`, advertised instead of
    /// its own socket.
    fn switch_port(
        &self,
        member: &str,
        env: &mut BTreeMap<String, String>,
    ) -> Option<crate::gossip_net::Port> {
        let net = self
            .options
            .gossip_net
            .as_ref()
            .filter(|_| self.options.gossip)?;
        let port = net.port(member);
        env.insert(
            "TURBOCHAT_CLUSTER__GOSSIP_ADVERTISE".into(),
            port.addr.to_string(),
        );
        Some(port)
    }

    /// The proxy in front of a node's gRPC listener (with
    /// `Options::proxied_grpc`).
    pub fn grpc_proxy(&self, node: &str) -> &crate::proxy::Proxy {
        self.grpc_proxies
            .get(node)
            .expect("started with proxied_grpc")
    }

    /// Where routers of this cluster keep media (local backend).
    pub fn media_dir(&self) -> std::path::PathBuf {
        self.store.dir.path().join("media")
    }

    fn add_router(&mut self, index: usize) {
        self.add_router_with(index, BTreeMap::new());
    }

    /// Starts router `router-{index}` with extra environment (e.g. a node
    /// list that goes through a proxy). Returns its index in `routers`.
    pub fn add_router_with(&mut self, index: usize, extra: BTreeMap<String, String>) -> usize {
        let id = format!("router-{index}");
        let mut router_env = self.router_env(&id);
        if self.options.gossip {
            router_env.insert("TURBOCHAT_ROUTER__NODES".into(), "[]".into());
            router_env.insert("TURBOCHAT_CLUSTER__ENABLED".into(), "true".into());
            router_env.insert(
                "TURBOCHAT_CLUSTER__GOSSIP_LISTEN".into(),
                "127.0.0.1:0".into(),
            );
            let seed = self.seed.clone().expect("a node starts first");
            router_env.insert("TURBOCHAT_CLUSTER__SEEDS".into(), format!("[\"{seed}\"]"));
        } else {
            let nodes: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("{{id=\"{}\",grpc=\"http://{}\"}}", n.id, n.addr("grpc")))
                .collect();
            router_env.insert(
                "TURBOCHAT_ROUTER__NODES".into(),
                format!("[{}]", nodes.join(",")),
            );
        }
        self.bus_env(&mut router_env);
        router_env.extend(self.options.router_env.clone());
        router_env.extend(extra);
        let port = self.switch_port(&id, &mut router_env);
        let mut router = Process::start(Role::Router, &id, router_env, self.store.dir.path());
        router.pin("TURBOCHAT_ROUTER__LISTEN", router.addr("http"));
        router.pin("TURBOCHAT_ROUTER__OPS_LISTEN", router.addr("ops"));
        if self.options.gossip {
            router.pin("TURBOCHAT_CLUSTER__GOSSIP_LISTEN", router.addr("gossip"));
            if let Some(port) = port {
                port.attach(router.addr("gossip").parse().expect("gossip address"));
                self.ports.push(port);
            }
        }
        self.routers.push(router);
        self.routers.len() - 1
    }

    /// `http://host:port` of router `i`.
    pub fn router_url(&self, i: usize) -> String {
        format!("http://{}", self.routers[i].addr("http"))
    }

    /// `http://host:port` of router `i`'s operator listener (`/metrics`,
    /// `/cluster`).
    pub fn router_ops_url(&self, i: usize) -> String {
        format!("http://{}", self.routers[i].addr("ops"))
    }

    /// Waits until every router answers `/readyz` with 200 and (with
    /// gossip) sees every node on its ring. On timeout it fails with what
    /// the router last answered and every process's log tail: a cluster
    /// that does not come up is otherwise undiagnosable (the logs live in
    /// the test's temporary directory).
    pub async fn wait_ready(&self) {
        const DEADLINE: Duration = Duration::from_secs(30);
        let http = reqwest::Client::new();
        for i in 0..self.routers.len() {
            let url = self.router_ops_url(i);
            let expected = if self.options.colocated {
                self.options.nodes
            } else {
                self.nodes.len()
            };
            let started = std::time::Instant::now();
            loop {
                let Err(last) = self.readiness(&http, &url, expected).await else {
                    break;
                };
                if started.elapsed() >= DEADLINE {
                    panic!(
                        "timed out after {DEADLINE:?} waiting for {url} ready; it last said: {last}\n{}",
                        self.log_tails()
                    );
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }

    /// Whether the router at `url` is ready and (with gossip) has
    /// `expected` nodes on its ring; if not, what it said.
    async fn readiness(
        &self,
        http: &reqwest::Client,
        url: &str,
        expected: usize,
    ) -> Result<(), String> {
        let ready = http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .map_err(|e| format!("/readyz: {e}"))?;
        if !ready.status().is_success() {
            return Err(format!("/readyz: {}", ready.status()));
        }
        if !self.options.gossip {
            return Ok(());
        }
        let cluster: serde_json::Value = http
            .get(format!("{url}/cluster"))
            .send()
            .await
            .map_err(|e| format!("/cluster: {e}"))?
            .json()
            .await
            .map_err(|e| format!("/cluster: {e}"))?;
        match cluster["ring"].as_array() {
            Some(ring) if ring.len() == expected => Ok(()),
            _ => Err(format!("/cluster: {cluster}")),
        }
    }

    /// The last lines of every process's log, each under its id.
    pub fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .chain(&self.routers)
            .map(|p| format!("== {} ==\n{}", p.id, p.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The ring as router `i` sees it (node ids).
    pub async fn ring(&self, i: usize) -> Vec<String> {
        let cluster: serde_json::Value =
            reqwest::get(format!("{}/cluster", self.router_ops_url(i)))
                .await
                .expect("cluster endpoint")
                .json()
                .await
                .expect("cluster json");
        cluster["ring"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("TURBOCHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}
