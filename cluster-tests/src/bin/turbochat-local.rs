//! `turbochat-local`: a local cluster of separate node and router processes
//! for development and demos: SQLite (from the config) unless told
//! otherwise, SWIM gossip between them, fixed ports so restarts are stable.
//!
//! While it runs, type commands on stdin: `add` (start one more node),
//! `remove node-N` (SIGTERM: graceful leave), `kill node-N` (SIGKILL),
//! `status`, `quit`. Ctrl-C / SIGTERM stops everything.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use harness::process::{Process, Role};

/// Runs a local turbochat cluster.
#[derive(Debug, Parser)]
#[command(name = "turbochat-local")]
struct Args {
    /// Nodes to start.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Routers to start (router-1 on --router-port, the next ones after it).
    #[arg(long, default_value_t = 1)]
    routers: usize,
    /// Config file every process reads (paths in it are relative to the
    /// working directory).
    #[arg(long, default_value = "configs/dev.toml")]
    config: PathBuf,
    /// Directory for the SQLite store and the logs.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Store URL (default: the SQLite file in --data-dir).
    #[arg(long)]
    store_url: Option<String>,
    /// First node port: node N uses base+10N (HTTP), +1 (gRPC), +2 (gossip).
    #[arg(long, default_value_t = 7100)]
    base_port: u16,
    /// First router's HTTP port.
    #[arg(long, default_value_t = 8080)]
    router_port: u16,
}

struct Local {
    args: Args,
    store_url: String,
    logs: PathBuf,
    nodes: Vec<Process>,
    routers: Vec<Process>,
    next_node: usize,
}

impl Local {
    fn seed(&self) -> String {
        format!("127.0.0.1:{}", self.args.base_port + 12)
    }

    fn add_node(&mut self) -> anyhow::Result<()> {
        let n = self.next_node;
        self.next_node += 1;
        let port = self.args.base_port + 10 * n as u16;
        let id = format!("node-{n}");
        let env: BTreeMap<String, String> = [
            ("TURBOCHAT_NODE__ID", id.clone()),
            ("TURBOCHAT_NODE__HTTP_LISTEN", format!("127.0.0.1:{port}")),
            (
                "TURBOCHAT_NODE__GRPC_LISTEN",
                format!("127.0.0.1:{}", port + 1),
            ),
            ("TURBOCHAT_STORE__URL", self.store_url.clone()),
            ("TURBOCHAT_CLUSTER__ENABLED", "true".into()),
            (
                "TURBOCHAT_CLUSTER__GOSSIP_LISTEN",
                format!("127.0.0.1:{}", port + 2),
            ),
            ("TURBOCHAT_CLUSTER__SEEDS", format!("[\"{}\"]", self.seed())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let node = Process::start_with_config(Role::Node, &id, env, &self.logs, &self.args.config);
        tracing::info!(node = %id, grpc = %node.addr("grpc"), http = %node.addr("http"), "node up");
        self.nodes.push(node);
        Ok(())
    }

    fn add_router(&mut self, index: usize) {
        let id = format!("router-{index}");
        let port = self.args.router_port + index as u16 - 1;
        let env: BTreeMap<String, String> = [
            ("TURBOCHAT_ROUTER__ID", id.clone()),
            ("TURBOCHAT_ROUTER__LISTEN", format!("127.0.0.1:{port}")),
            (
                "TURBOCHAT_ROUTER__OPS_LISTEN",
                format!("127.0.0.1:{}", self.args.base_port + 950 + index as u16),
            ),
            ("TURBOCHAT_ROUTER__NODES", "[]".into()),
            ("TURBOCHAT_CLUSTER__ENABLED", "true".into()),
            (
                "TURBOCHAT_CLUSTER__GOSSIP_LISTEN",
                format!("127.0.0.1:{}", self.args.base_port + 900 + index as u16),
            ),
            ("TURBOCHAT_CLUSTER__SEEDS", format!("[\"{}\"]", self.seed())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let router =
            Process::start_with_config(Role::Router, &id, env, &self.logs, &self.args.config);
        self.routers.push(router);
    }

    fn status(&mut self) {
        for p in self.nodes.iter_mut().chain(self.routers.iter_mut()) {
            let state = match p.exited() {
                None => "running".to_string(),
                Some(status) => format!("exited ({status})"),
            };
            println!("  {:<10} {:<8} log {}", p.id, state, p.log_path().display());
        }
    }

    fn stop(&mut self, id: &str, graceful: bool) -> anyhow::Result<()> {
        let Some(i) = self.nodes.iter().position(|n| n.id == id) else {
            bail!("no node {id}");
        };
        let mut node = self.nodes.remove(i);
        if graceful {
            let code = node.terminate(Duration::from_secs(30));
            println!("{id} left (exit code {code:?})");
        } else {
            node.kill9();
            println!("{id} killed");
        }
        Ok(())
    }

    fn token(&self, user: &str) -> anyhow::Result<String> {
        let output = std::process::Command::new(harness::bins::bin("turbochat-router"))
            .arg("--config")
            .arg(&self.args.config)
            .args(["mint-token", "--sub", user])
            .output()
            .context("running mint-token")?;
        if !output.status.success() {
            bail!("mint-token: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_string())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if args.nodes == 0 || args.routers == 0 {
        bail!("--nodes and --routers must be at least 1");
    }
    if !args.config.exists() {
        bail!(
            "config file {} not found (run from the repository root)",
            args.config.display()
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let logs = args.data_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let store_url = args
        .store_url
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", args.data_dir.join("turbochat.db").display()));
    // The binaries beside this one: the launcher never runs cargo.
    let dir = std::env::current_exe()
        .context("finding turbochat-local's own path")?
        .parent()
        .map(std::path::Path::to_path_buf)
        .context("turbochat-local has no directory")?;
    for name in ["turbochat-node", "turbochat-router"] {
        if !dir.join(name).is_file() {
            bail!(
                "{name} is not beside turbochat-local in {}; build it first: \
                 cargo build --release --bin turbochat-node --bin turbochat-router",
                dir.display()
            );
        }
    }
    harness::bins::use_bin_dir(dir.clone());
    tracing::info!(binaries = %dir.display(), "using the binaries beside turbochat-local");

    let mut local = Local {
        store_url,
        logs,
        nodes: Vec::new(),
        routers: Vec::new(),
        next_node: 1,
        args,
    };
    for _ in 0..local.args.nodes {
        local.add_node()?;
    }
    for i in 1..=local.args.routers {
        local.add_router(i);
    }
    let router = format!("127.0.0.1:{}", local.args.router_port);
    wait_ready(&router).await?;

    println!();
    println!(
        "turbochat is running: {} node(s), {} router(s), store {}",
        local.nodes.len(),
        local.routers.len(),
        local.store_url
    );
    println!();
    println!("  Browser client:  http://{router}/");
    for user in ["alice", "bob"] {
        let token = local.token(user)?;
        println!("    sign in as {user:<6} http://{router}/#/login?token={token}");
    }
    println!("  WebSocket:       ws://{router}/ws?token=<JWT>");
    if let Some(first) = local.routers.first() {
        println!("  Cluster view:    http://{}/cluster", first.addr("ops"));
    }
    println!("  Logs:            {}", local.logs.display());
    println!();
    for user in ["alice", "bob"] {
        println!("  Dev token for {user}: {}", local.token(user)?);
    }
    println!();
    println!(
        "Commands: add | remove node-N | kill node-N | status | quit   (Ctrl-C stops everything)"
    );

    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            Some(line) = lines.recv() => {
                let words: Vec<&str> = line.split_whitespace().collect();
                let result = match words.as_slice() {
                    ["add"] => local.add_node(),
                    ["remove", id] => local.stop(id, true),
                    ["kill", id] => local.stop(id, false),
                    ["status"] => { local.status(); Ok(()) }
                    ["quit"] | ["exit"] => break,
                    [] => Ok(()),
                    _ => { println!("commands: add | remove node-N | kill node-N | status | quit"); Ok(()) }
                };
                if let Err(err) = result {
                    println!("error: {err:#}");
                }
            }
            _ = check.tick() => {
                let mut died = None;
                for p in local.nodes.iter_mut().chain(local.routers.iter_mut()) {
                    if let Some(status) = p.exited() {
                        eprintln!("{} exited unexpectedly ({status}); see {}", p.id, p.log_path().display());
                        eprintln!("{}", p.log_tail());
                        died = Some(p.id.clone());
                        break;
                    }
                }
                if let Some(id) = died {
                    shutdown(&mut local);
                    bail!("{id} died");
                }
            }
        }
    }
    shutdown(&mut local);
    Ok(())
}

fn shutdown(local: &mut Local) {
    println!("stopping...");
    for router in local.routers.iter_mut() {
        router.terminate(Duration::from_secs(10));
    }
    for node in local.nodes.iter_mut() {
        node.terminate(Duration::from_secs(15));
    }
}

async fn wait_ready(router: &str) -> anyhow::Result<()> {
    let url = format!("http://{router}/readyz");
    for _ in 0..300 {
        if let Ok(response) = reqwest::get(&url).await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("router at {router} not ready after 30 s")
}
