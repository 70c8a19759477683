//! turbochat as containers, configured the way `deploy/k8s` configures pods:
//! PostgreSQL, Redis, nodes and routers on a podman network of the test's
//! own (fixed subnet, fixed addresses), `configs/production.toml` mounted as
//! the ConfigMap is, per-pod values from `TURBOCHAT_*` variables, the nodes
//! sharing one DNS name that the gossip seeds resolve (the headless
//! Service's role), and each router's client port published on 127.0.0.1.
//!
//! A node is replaced the way a StatefulSet replaces a pod: same name (node
//! id), new container, new address.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::podman::{Container, Podman, PodmanError};

/// The DNS name every node container carries (the headless Service's).
pub const NODES_NAME: &str = "turbochat-node";
/// Node gossip port, as in the manifests.
pub const GOSSIP_PORT: u16 = 7200;
/// Node ops port (`/healthz`, `/readyz`, `/metrics`, `/cluster`).
pub const NODE_OPS_PORT: u16 = 7100;
/// Router client port.
pub const ROUTER_PORT: u16 = 8080;
/// Router ops port (`router.ops_listen`).
pub const ROUTER_OPS_PORT: u16 = 9091;
/// The nodes' `terminationGracePeriodSeconds` in `deploy/k8s`.
pub const NODE_GRACE: Duration = Duration::from_secs(45);

/// Images the cluster runs.
#[derive(Debug, Clone)]
pub struct Images {
    /// `deploy/image` (both binaries).
    pub turbochat: String,
    /// PostgreSQL server.
    pub postgres: String,
    /// Redis server.
    pub redis: String,
}

/// How to start the cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names containers and labels everything.
    pub run_id: String,
    /// First three octets of the network's /24, e.g. `10.213.57`.
    pub subnet: String,
    /// The images.
    pub images: Images,
    /// The config file mounted into every turbochat container.
    pub config: PathBuf,
    /// Nodes.
    pub nodes: usize,
    /// Routers.
    pub routers: usize,
    /// Leave everything in place at the end (debugging).
    pub keep: bool,
}

/// Why the cluster could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A podman command failed.
    #[error(transparent)]
    Podman(#[from] PodmanError),
    /// Something did not happen in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// One node's slot, as a StatefulSet ordinal.
#[derive(Debug, Clone)]
pub struct NodeSlot {
    /// `turbochat-node-{ordinal}`: the node id and host name.
    pub id: String,
    /// The current container's name.
    pub container: String,
    /// The current container's address.
    pub ip: String,
    generation: usize,
}

/// One router.
#[derive(Debug, Clone)]
pub struct RouterSlot {
    /// `turbochat-router-{i}`.
    pub id: String,
    /// Container name.
    pub container: String,
    /// Address on the test network.
    pub ip: String,
    /// Host port of its client listener (on 127.0.0.1).
    pub port: u16,
}

/// The running cluster. Dropping it removes every container and the network.
pub struct ContainerCluster {
    settings: Settings,
    network: String,
    /// Nodes by ordinal.
    pub nodes: Vec<NodeSlot>,
    /// Routers.
    pub routers: Vec<RouterSlot>,
    http: reqwest::Client,
    // Last: dropped (cleaned up) after the rest.
    podman: Podman,
}

impl ContainerCluster {
    /// Creates the network, starts PostgreSQL and Redis, then the nodes and
    /// routers, and waits until every router is ready with every node on
    /// its ring.
    pub async fn start(settings: Settings) -> Result<Self, ClusterError> {
        let podman = Podman::new(&settings.run_id, settings.keep);
        let network = format!("tc-{}", settings.run_id);
        let mut cluster = ContainerCluster {
            network: network.clone(),
            nodes: Vec::new(),
            routers: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("http client"),
            podman,
            settings,
        };
        let s = &cluster.settings;
        cluster
            .podman
            .network_create(&network, &format!("{}.0/24", s.subnet), &cluster.ip(1))
            .await?;
        cluster.start_postgres().await?;
        cluster.start_redis().await?;
        for ordinal in 0..cluster.settings.nodes {
            let slot = NodeSlot {
                id: format!("turbochat-node-{ordinal}"),
                container: String::new(),
                ip: String::new(),
                generation: 0,
            };
            cluster.nodes.push(slot);
            cluster.start_node(ordinal).await?;
        }
        for ordinal in 0..cluster.settings.nodes {
            cluster
                .wait_node_ready(ordinal, Duration::from_secs(90))
                .await?;
        }
        for i in 0..cluster.settings.routers {
            cluster.start_router(i).await?;
        }
        let all = cluster.settings.nodes;
        cluster.wait_ring(all, Duration::from_secs(60)).await?;
        cluster.wait_routers_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// The podman layer (to run more commands).
    pub fn podman(&self) -> &Podman {
        &self.podman
    }

    fn ip(&self, host: usize) -> String {
        format!("{}.{host}", self.settings.subnet)
    }

    fn container_name(&self, what: &str) -> String {
        format!("tc-{}-{what}", self.settings.run_id)
    }

    fn postgres_ip(&self) -> String {
        self.ip(10)
    }

    fn redis_ip(&self) -> String {
        self.ip(11)
    }

    async fn start_postgres(&self) -> Result<(), ClusterError> {
        let container = Container {
            name: self.container_name("postgres"),
            image: self.settings.images.postgres.clone(),
            network: self.network.clone(),
            ip: self.postgres_ip(),
            ..Container::default()
        };
        self.podman.run(&container).await?;
        let url = self.store_url();
        self.wait(
            "PostgreSQL to accept connections",
            Duration::from_secs(60),
            || {
                let url = url.clone();
                async move {
                    use sqlx::Connection;
                    let conn = sqlx::PgConnection::connect(&url).await.ok()?;
                    let _ = conn.close().await;
                    Some(())
                }
            },
        )
        .await
    }

    async fn start_redis(&self) -> Result<(), ClusterError> {
        let container = Container {
            name: self.container_name("redis"),
            image: self.settings.images.redis.clone(),
            network: self.network.clone(),
            ip: self.redis_ip(),
            ..Container::default()
        };
        self.podman.run(&container).await?;
        let addr = format!("{}:6379", self.redis_ip());
        self.wait("Redis to answer PING", Duration::from_secs(30), || {
            let addr = addr.clone();
            async move { redis_ping(&addr).await.then_some(()) }
        })
        .await
    }

    fn store_url(&self) -> String {
        format!("postgres://turbochat@{}:5432/turbochat", self.postgres_ip())
    }

    /// What every turbochat container gets: the config file where the
    /// ConfigMap goes, and the settings the test's world needs instead of
    /// production's (the dev HS256 secret the harness mints tokens with, no
    /// FCM, no S3).
    fn common_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("TURBOCHAT_CONFIG", "/etc/turbochat/turbochat.toml".into());
        set("TURBOCHAT_CLUSTER__ENABLED", "true".into());
        set(
            "TURBOCHAT_CLUSTER__GOSSIP_LISTEN",
            format!("0.0.0.0:{GOSSIP_PORT}"),
        );
        set(
            "TURBOCHAT_CLUSTER__SEEDS",
            format!("[\"{NODES_NAME}:{GOSSIP_PORT}\"]"),
        );
        set(
            "TURBOCHAT_BUS__REDIS_URL",
            format!("redis://{}:6379", self.redis_ip()),
        );
        set("TURBOCHAT_BUS__CLUSTER_ID", "container-test".into());
        set("RUST_LOG", "info".into());
        env
    }

    fn config_mount(&self) -> String {
        format!(
            "{}:/etc/turbochat/turbochat.toml:ro",
            self.settings.config.display()
        )
    }

    /// Starts a new container for node `ordinal` (the slot's next
    /// generation, on a new address).
    async fn start_node(&mut self, ordinal: usize) -> Result<(), ClusterError> {
        let generation = self.nodes[ordinal].generation + 1;
        // .21-.29 and .31-.39 in turn: a replaced node comes back elsewhere.
        let ip = self.ip(20 + 10 * ((generation + 1) % 2) + ordinal + 1);
        let id = self.nodes[ordinal].id.clone();
        let name = self.container_name(&format!("node-{ordinal}-g{generation}"));
        let mut env = self.common_env();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("TURBOCHAT_NODE__ID", id.clone());
        set("TURBOCHAT_NODE__GRPC_LISTEN", "0.0.0.0:7101".into());
        set(
            "TURBOCHAT_NODE__GRPC_ADVERTISE",
            format!("http://{ip}:7101"),
        );
        set(
            "TURBOCHAT_NODE__HTTP_LISTEN",
            format!("0.0.0.0:{NODE_OPS_PORT}"),
        );
        set(
            "TURBOCHAT_CLUSTER__GOSSIP_ADVERTISE",
            format!("{ip}:{GOSSIP_PORT}"),
        );
        set("TURBOCHAT_STORE__URL", self.store_url());
        set("TURBOCHAT_PUSH__BACKEND", "file".into());
        set(
            "TURBOCHAT_PUSH__FILE__PATH",
            "/var/lib/turbochat/push.jsonl".into(),
        );
        let container = Container {
            name: name.clone(),
            hostname: Some(id),
            image: self.settings.images.turbochat.clone(),
            network: self.network.clone(),
            ip: ip.clone(),
            aliases: vec![NODES_NAME.into()],
            env,
            mounts: vec![self.config_mount()],
            command: vec!["/usr/local/bin/turbochat-node".into()],
            ..Container::default()
        };
        self.podman.run(&container).await?;
        let slot = &mut self.nodes[ordinal];
        slot.container = name;
        slot.ip = ip;
        slot.generation = generation;
        Ok(())
    }

    async fn start_router(&mut self, i: usize) -> Result<(), ClusterError> {
        let id = format!("turbochat-router-{i}");
        let ip = self.ip(41 + i);
        let name = self.container_name(&format!("router-{i}"));
        let mut env = self.common_env();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("TURBOCHAT_ROUTER__ID", id.clone());
        set("TURBOCHAT_ROUTER__LISTEN", format!("0.0.0.0:{ROUTER_PORT}"));
        set(
            "TURBOCHAT_ROUTER__OPS_LISTEN",
            format!("0.0.0.0:{ROUTER_OPS_PORT}"),
        );
        set("TURBOCHAT_ROUTER__NODES", "[]".into());
        set(
            "TURBOCHAT_CLUSTER__GOSSIP_ADVERTISE",
            format!("{ip}:{GOSSIP_PORT}"),
        );
        set("TURBOCHAT_AUTH__ALGORITHM", "HS256".into());
        set("TURBOCHAT_AUTH__SECRET", crate::tokens::DEV_SECRET.into());
        set("TURBOCHAT_MEDIA__BACKEND", "local".into());
        set("TURBOCHAT_MEDIA__DIR", "/var/lib/turbochat/media".into());
        let container = Container {
            name: name.clone(),
            hostname: Some(id.clone()),
            image: self.settings.images.turbochat.clone(),
            network: self.network.clone(),
            ip: ip.clone(),
            env,
            mounts: vec![self.config_mount()],
            publish: vec![format!("127.0.0.1::{ROUTER_PORT}")],
            command: vec!["/usr/local/bin/turbochat-router".into()],
            ..Container::default()
        };
        self.podman.run(&container).await?;
        let port = self.podman.host_port(&name, ROUTER_PORT).await?;
        self.routers.push(RouterSlot {
            id,
            container: name,
            ip,
            port,
        });
        Ok(())
    }

    /// `http://127.0.0.1:{published port}` of every router: where clients go.
    pub fn router_urls(&self) -> Vec<String> {
        self.routers
            .iter()
            .map(|r| format!("http://127.0.0.1:{}", r.port))
            .collect()
    }

    async fn get_ok(&self, url: &str) -> bool {
        matches!(self.http.get(url).send().await, Ok(r) if r.status().is_success())
    }

    /// Waits until node `ordinal`'s current container answers `/readyz`.
    pub async fn wait_node_ready(
        &self,
        ordinal: usize,
        deadline: Duration,
    ) -> Result<Duration, ClusterError> {
        let started = Instant::now();
        let slot = &self.nodes[ordinal];
        let url = format!("http://{}:{NODE_OPS_PORT}/readyz", slot.ip);
        let what = format!("{} ({}) to be ready", slot.id, slot.container);
        self.wait(&what, deadline, || {
            let url = url.clone();
            async move { self.get_ok(&url).await.then_some(()) }
        })
        .await?;
        Ok(started.elapsed())
    }

    /// Router `i`'s `GET /cluster`: on its ops port, or (before routers
    /// had one) on its client port.
    pub async fn router_cluster(&self, i: usize) -> Option<serde_json::Value> {
        let r = &self.routers[i];
        for url in [
            format!("http://{}:{ROUTER_OPS_PORT}/cluster", r.ip),
            format!("http://127.0.0.1:{}/cluster", r.port),
        ] {
            if let Ok(response) = self.http.get(&url).send().await {
                if response.status().is_success() {
                    if let Ok(value) = response.json().await {
                        return Some(value);
                    }
                }
            }
        }
        None
    }

    /// The node ids on router `i`'s ring.
    pub async fn ring(&self, i: usize) -> Option<Vec<String>> {
        let cluster = self.router_cluster(i).await?;
        Some(
            cluster["ring"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
        )
    }

    /// Waits until every router has `expected` nodes on its ring; returns
    /// how long it took.
    pub async fn wait_ring(
        &self,
        expected: usize,
        deadline: Duration,
    ) -> Result<Duration, ClusterError> {
        let started = Instant::now();
        let what = format!("{expected} nodes on every router's ring");
        self.wait(&what, deadline, || async {
            for i in 0..self.routers.len() {
                if self.ring(i).await?.len() != expected {
                    return None;
                }
            }
            Some(())
        })
        .await?;
        Ok(started.elapsed())
    }

    /// Waits until every router answers `/readyz` (on its client port) with
    /// 200; returns how long it took.
    pub async fn wait_routers_ready(&self, deadline: Duration) -> Result<Duration, ClusterError> {
        let started = Instant::now();
        self.wait("every router ready", deadline, || async {
            for r in &self.routers {
                let ready = format!("http://127.0.0.1:{}/readyz", r.port);
                if !self.get_ok(&ready).await {
                    return None;
                }
            }
            Some(())
        })
        .await?;
        Ok(started.elapsed())
    }

    /// What a StatefulSet rollout does to one pod: SIGTERM with the grace
    /// period; returns how long the node took to exit and its exit code.
    pub async fn stop_node(&self, ordinal: usize) -> Result<(Duration, i64), ClusterError> {
        let name = &self.nodes[ordinal].container;
        let took = self.podman.stop(name, NODE_GRACE).await?;
        let code = self.podman.exit_code(name).await?;
        Ok((took, code))
    }

    /// `podman kill` (SIGKILL) of node `ordinal`'s container.
    pub async fn kill_node(&self, ordinal: usize) -> Result<(), ClusterError> {
        self.podman.kill(&self.nodes[ordinal].container).await?;
        Ok(())
    }

    /// Removes node `ordinal`'s stopped container and starts its successor
    /// (same node id, new address), as the StatefulSet controller does.
    pub async fn replace_node(&mut self, ordinal: usize) -> Result<(), ClusterError> {
        let old = self.nodes[ordinal].container.clone();
        self.podman.rm(&old).await?;
        self.start_node(ordinal).await
    }

    /// The last lines of every turbochat container's log.
    pub async fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let names = self
            .nodes
            .iter()
            .map(|n| n.container.clone())
            .chain(self.routers.iter().map(|r| r.container.clone()));
        for name in names {
            out.push_str(&format!(
                "--- {name}\n{}\n",
                self.podman.logs_tail(&name, lines).await
            ));
        }
        out
    }

    async fn wait<T, F, Fut>(
        &self,
        what: &str,
        deadline: Duration,
        mut check: F,
    ) -> Result<T, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let started = Instant::now();
        loop {
            if let Some(value) = check().await {
                return Ok(value);
            }
            if started.elapsed() > deadline {
                return Err(ClusterError::Timeout(deadline, what.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether a Redis server at `addr` answers `PING`.
async fn redis_ping(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
    else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
    )
}
