//! `turbochat-colocated`: a node and a router in one process (the
//! co-located mode), for the embedded default and small deployments.
//!
//! Both read the same config file as the separate binaries do (each its own
//! sections). The router attaches to the node of this process in process —
//! its frames are handed over as they are, with no protobuf, HTTP/2 or
//! socket in between — and to any other node over gRPC as always; other
//! routers attach to this node over gRPC. Everything else (ownership,
//! sequencing, the group commit, acks after the commit, fan-out, resume) is
//! the same code as in separate processes.
//!
//! With gossip on, the router gossips on the node's gossip port + 1 (both
//! its listen and its advertised address): one process, two members.
//! Shutdown: the router first (its sessions close with 1001 and it
//! drains), then the node (it leaves the cluster and its owners drain).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use turbochat_protocol::local::LocalNode;

#[global_allocator]
static ALLOC: turbochat_service::Allocator = turbochat_service::Allocator;

/// A turbochat node and router in one process.
#[derive(Debug, Parser)]
#[command(name = "turbochat-colocated", version)]
struct Args {
    /// Config file (TOML) with the node's and the router's sections.
    /// `TURBOCHAT_*` variables override it.
    #[arg(long, short, env = "TURBOCHAT_CONFIG")]
    config: Option<PathBuf>,
}

/// The ready line: the router's addresses (where clients connect) at the
/// top, the node's under `node`.
#[derive(Serialize)]
struct Ready<'a> {
    #[serde(flatten)]
    router: &'a turbochat_router::Listening,
    node: &'a turbochat_node::Listening,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = turbochat_service::telemetry::init_tracing("turbochat-colocated");
    let configs = load(args.config.as_deref());
    let (node_config, router_config) = match configs {
        Ok(configs) => configs,
        Err(err) => {
            eprintln!("turbochat-colocated: {err:#}");
            return ExitCode::from(2);
        }
    };
    if args.config.is_none() {
        tracing::warn!(
            "no --config and no TURBOCHAT_CONFIG: running on the built-in development \
             configuration (configs/dev.toml: SQLite under data/, the public HS256 dev secret)"
        );
    }
    let runtime = match turbochat_service::runtime("colocated") {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("turbochat-colocated: cannot start runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(node_config, router_config));
    // The exporter's blocking client must not run inside the runtime.
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("turbochat-colocated: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Both configs from one file, made to fit one process.
fn load(
    path: Option<&std::path::Path>,
) -> anyhow::Result<(
    turbochat_node::config::Config,
    turbochat_router::config::Config,
)> {
    let node = turbochat_node::config::Config::load(path).context("node config")?;
    let mut router = turbochat_router::config::Config::load(path).context("router config")?;
    if node.cluster.enabled != router.cluster.enabled {
        bail!("cluster.enabled must be the same for the node and the router");
    }
    if node.cluster.enabled {
        // One process, two gossip members: the router takes the next port.
        let gossip = &mut router.cluster.gossip;
        let next = |port: u16| port.checked_add(1).context("gossip port 65535 has no next");
        if gossip.gossip_listen.port() != 0 {
            let port = next(gossip.gossip_listen.port())?;
            gossip.gossip_listen.set_port(port);
        }
        if let Some(advertise) = &mut gossip.gossip_advertise {
            let port = next(advertise.port())?;
            advertise.set_port(port);
        }
    } else if !router.router.nodes.iter().any(|n| n.id == node.node.id) {
        bail!(
            "router.nodes does not name node.id {:?}: the router of this process would not \
             route to its own node",
            node.node.id
        );
    }
    Ok((node, router))
}

async fn run(
    node_config: turbochat_node::config::Config,
    router_config: turbochat_router::config::Config,
) -> anyhow::Result<()> {
    let metrics = turbochat_service::telemetry::init_metrics();
    let signal = turbochat_service::shutdown::on_signal();
    let local = LocalNode::default();
    // The node stops after the router has drained.
    let node_stop = CancellationToken::new();
    let (node_ready_tx, node_ready_rx) = tokio::sync::oneshot::channel();
    let node = tokio::spawn(turbochat_node::run_with_local(
        node_config,
        node_stop.clone(),
        metrics.clone(),
        Some(local.clone()),
        move |listening| {
            let _ = node_ready_tx.send(listening.clone());
        },
    ));
    let node_listening = tokio::select! {
        ready = node_ready_rx => ready.ok(),
        _ = signal.cancelled() => None,
    };
    let Some(node_listening) = node_listening else {
        node_stop.cancel();
        node.await.context("node task")??;
        bail!("the node stopped before it was ready");
    };
    let mut router_config = router_config;
    if let Some(gossip) = node_listening.gossip {
        // The router joins the cluster through its own node first (the
        // first process of a cluster has no other seed).
        router_config
            .cluster
            .gossip
            .seeds
            .insert(0, turbochat_cluster::Seed::addr(gossip));
    }
    let router = turbochat_router::run_with_local(
        router_config,
        signal.clone(),
        metrics,
        Some(local),
        |listening| {
            turbochat_service::announce_ready(
                "colocated",
                &Ready {
                    router: listening,
                    node: &node_listening,
                },
            );
        },
    );
    tokio::pin!(router);
    let mut node = node;
    let router = tokio::select! {
        router = &mut router => router,
        node_ended = &mut node => {
            // The node stopped on its own (an error): the router has no
            // owner left in this process; it drains and stops too.
            tracing::error!("the node stopped; stopping the router");
            signal.cancel();
            let router = router.await;
            node_ended.context("node task")?.context("node")?;
            return router.context("router");
        }
    };
    node_stop.cancel();
    let node = node.await.context("node task")?;
    router.context("router")?;
    node.context("node")?;
    Ok(())
}
