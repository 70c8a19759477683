//! The container cluster test: PostgreSQL, Redis, 3 nodes and 2 routers as
//! containers of the `deploy/image` image on a podman network of the test's
//! own, clients chatting through the routers' published ports while
//!
//! 1. every node is rolled, one at a time and highest ordinal first, as a
//!    StatefulSet rollout does it: SIGTERM with the pod's grace period, the
//!    node leaves, its successor (same id, new address) starts and is
//!    ready, it is back on every router's ring;
//! 2. one node is killed (`podman kill`), declared down, then replaced.
//!
//! Checks from the clients' side that no acked message is lost, every
//! message is stored once and delivered in order, and prints the longest
//! time with no ack during each step. `deploy/tests/container-cluster.sh`
//! builds the images and runs this; it removes every container and the
//! network it made, also when it fails.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::FutureExt;
use harness::containers::{ClusterError, ContainerCluster, Images, Settings};
use harness::workload::{Shape, Traffic};

/// Runs the container cluster test.
#[derive(Debug, Parser)]
#[command(name = "turbochat-container-test")]
struct Args {
    /// The turbochat image (deploy/image/build.sh).
    #[arg(long)]
    image: String,
    /// A PostgreSQL server image (its database `turbochat`, user
    /// `turbochat`, trust auth on the network).
    #[arg(long)]
    postgres_image: String,
    /// A Redis server image.
    #[arg(long)]
    redis_image: String,
    /// Names the containers and network and labels them.
    #[arg(long)]
    run_id: String,
    /// The test network's /24, as its first three octets.
    #[arg(long, default_value = "10.213.57")]
    subnet: String,
    /// The config file mounted as the ConfigMap is.
    #[arg(long)]
    config: PathBuf,
    /// Nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Routers.
    #[arg(long, default_value_t = 2)]
    routers: usize,
    /// Leave containers and network in place (debugging).
    #[arg(long)]
    keep: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
}

/// One step of the scenario and what clients saw during it.
struct Step {
    name: String,
    took: Duration,
    /// No ack at all, in any conversation.
    longest_ack_pause: Duration,
    /// No ack in one conversation (whose sender kept sending).
    longest_conversation_pause: Duration,
    detail: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let settings = Settings {
        run_id: args.run_id.clone(),
        subnet: args.subnet.clone(),
        images: Images {
            turbochat: args.image.clone(),
            postgres: args.postgres_image.clone(),
            redis: args.redis_image.clone(),
        },
        config: args.config.clone(),
        nodes: args.nodes,
        routers: args.routers,
        keep: args.keep,
    };
    let started = Instant::now();
    let mut cluster = match ContainerCluster::start(settings).await {
        Ok(cluster) => cluster,
        Err(err) => {
            eprintln!("[container] cannot start the cluster: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "[container] {} nodes and {} routers up in {:?}; clients at {}",
        args.nodes,
        args.routers,
        started.elapsed(),
        cluster.router_urls().join(" ")
    );
    let timeout = Duration::from_secs(args.timeout_secs);
    let outcome = std::panic::AssertUnwindSafe(tokio::time::timeout(
        timeout,
        scenario(&mut cluster, args.nodes),
    ))
    .catch_unwind()
    .await;
    let failure = match outcome {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(err))) => Some(err.to_string()),
        Ok(Err(_)) => Some(format!("the scenario did not finish within {timeout:?}")),
        Err(panic) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into()),
        ),
    };
    match failure {
        None => {
            println!("[container] passed in {:?}", started.elapsed());
            ExitCode::SUCCESS
        }
        Some(reason) => {
            eprintln!("[container] FAILED: {reason}");
            eprintln!("{}", cluster.log_tails(40).await);
            ExitCode::FAILURE
        }
    }
}

async fn scenario(cluster: &mut ContainerCluster, nodes: usize) -> Result<(), ClusterError> {
    let shape = Shape {
        conversations: 8,
        interval: Duration::from_millis(100),
        ack_timeout: Duration::from_secs(2),
        ..Shape::default()
    };
    let traffic = Traffic::start(&cluster.router_urls(), shape).await;
    traffic.wait_for_acks(100, Duration::from_secs(30)).await;
    let mut steps = Vec::new();

    let t = Instant::now();
    traffic.wait_for_acks(100, Duration::from_secs(30)).await;
    steps.push(Step {
        name: "steady traffic".into(),
        took: t.elapsed(),
        longest_ack_pause: traffic.longest_ack_pause_since(t),
        longest_conversation_pause: traffic.longest_conversation_pause_since(t),
        detail: String::new(),
    });

    // A StatefulSet rolls from the highest ordinal down, one pod at a time,
    // the next only once the last is Ready.
    for ordinal in (0..nodes).rev() {
        let id = cluster.nodes[ordinal].id.clone();
        let t = Instant::now();
        let container = cluster.nodes[ordinal].container.clone();
        let (drained, code) = cluster.stop_node(ordinal).await?;
        if code != 0 || drained > Duration::from_secs(5) {
            eprintln!(
                "[container] {id} took {drained:?} to exit with {code}; its log:\n{}",
                cluster.podman().logs_tail(&container, 40).await
            );
        }
        assert_eq!(code, 0, "{id} exits cleanly on SIGTERM");
        let left = cluster
            .wait_ring(nodes - 1, Duration::from_secs(30))
            .await?;
        cluster.replace_node(ordinal).await?;
        let ready = cluster
            .wait_node_ready(ordinal, Duration::from_secs(60))
            .await?;
        let rejoined = cluster.wait_ring(nodes, Duration::from_secs(30)).await?;
        // Routers are ready again only with every node of the ring linked.
        cluster.wait_routers_ready(Duration::from_secs(30)).await?;
        traffic.wait_for_acks(50, Duration::from_secs(30)).await;
        steps.push(Step {
            name: format!("roll {id}"),
            took: t.elapsed(),
            longest_ack_pause: traffic.longest_ack_pause_since(t),
        longest_conversation_pause: traffic.longest_conversation_pause_since(t),
            detail: format!(
                "exited 0 after {drained:.1?}, off the rings {left:.1?} later; successor at {} ready after {ready:.1?}, on every ring {rejoined:.1?} later",
                cluster.nodes[ordinal].ip
            ),
        });
    }

    let victim = nodes / 2;
    let id = cluster.nodes[victim].id.clone();
    let t = Instant::now();
    cluster.kill_node(victim).await?;
    let detected = cluster
        .wait_ring(nodes - 1, Duration::from_secs(30))
        .await?;
    traffic.wait_for_acks(50, Duration::from_secs(30)).await;
    let resumed = t.elapsed();
    cluster.replace_node(victim).await?;
    let ready = cluster
        .wait_node_ready(victim, Duration::from_secs(60))
        .await?;
    let rejoined = cluster.wait_ring(nodes, Duration::from_secs(30)).await?;
    cluster.wait_routers_ready(Duration::from_secs(30)).await?;
    traffic.wait_for_acks(50, Duration::from_secs(30)).await;
    steps.push(Step {
        name: format!("podman kill {id}"),
        took: t.elapsed(),
        longest_ack_pause: traffic.longest_ack_pause_since(t),
        longest_conversation_pause: traffic.longest_conversation_pause_since(t),
        detail: format!(
            "declared down after {detected:.1?}, 50 acks again {resumed:.1?} after the kill; successor ready after {ready:.1?}, on every ring {rejoined:.1?} later"
        ),
    });

    let figures = traffic.finish(Duration::from_secs(90)).await;
    for step in &steps {
        println!(
            "[container] step {:<30} took {:>7.1?}  longest ack pause: all {:>7.1?}, one conversation {:>7.1?}  {}",
            step.name, step.took, step.longest_ack_pause, step.longest_conversation_pause, step.detail
        );
    }
    println!("[container] {figures}");
    assert_eq!(figures.lost, 0, "lost acked messages");
    assert_eq!(figures.acked, figures.sent, "every sent message acked");
    assert_eq!(figures.stored, figures.acked, "stored exactly once");
    assert_eq!(figures.delivered, figures.stored, "delivered all");
    Ok(())
}
