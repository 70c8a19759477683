//! `turbochat-bench`: command line wiring only; see the library for what
//! each mode measures.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use bench::load::{FleetShape, Load};
use bench::system::{ServerEnv, Target};

#[derive(Parser)]
#[command(
    name = "turbochat-bench",
    about = "Latency, throughput and memory of turbochat against a Socket.IO peer, the seed's Go server and the floor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Worker threads of the load generator (the servers get the rest of the machine).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
}

#[derive(Subcommand)]
enum Command {
    /// One fixed load against the floor, Socket.IO, the seed's Go server, turbochat 1 node + 1 router and 3 nodes + 2 routers.
    Run(LoadArgs),
    /// The same with tiny numbers (seconds), against the floor, Socket.IO, the seed's Go server and turbochat 1+1; fails on loss.
    Smoke(LoadArgs),
    /// Idle connections held open; RSS per connection of each process.
    Memory(MemoryArgs),
    /// Raise the load until p99 passes the bound; report the highest load under it and an SVG.
    Sweep(SweepArgs),
    /// A moderation hook answering every message "allow", to measure the node's call to one: run it, then `run --node-env TURBOCHAT_MODERATION__HOOK__URL=http://ADDR/check`.
    Hook {
        #[arg(long, default_value = "127.0.0.1:7999")]
        listen: String,
    },
    /// A share of `memory`'s clients, held by a child process (started by `memory`).
    #[command(hide = true)]
    Hold {
        #[arg(long)]
        plan: PathBuf,
    },
    /// The floor server itself (started by the other modes as a child process).
    #[command(hide = true)]
    Floor {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        #[arg(long = "server-threads", default_value_t = 2)]
        server_threads: usize,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Systems, comma separated: floor, socketio, seedgo, 1n1r, 3n2r, ... (NnMr = N nodes, M routers; gossip when N or M > 1).
    #[arg(long)]
    targets: Option<String>,
    /// WebSocket clients.
    #[arg(long)]
    clients: Option<usize>,
    /// Members per conversation (2 = 1:1).
    #[arg(long)]
    group_size: Option<usize>,
    /// Bytes of filler in each message body.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    /// Loopback source addresses (127.0.0.2 ...) to spread clients over.
    #[arg(long, default_value_t = 8)]
    source_ips: u8,
    /// Connections opened at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Directory for the JSON (and SVG) results.
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// Extra environment for every turbochat node, KEY=VALUE (repeatable),
    /// e.g. TURBOCHAT_STORE__WRITER__MAX_BATCH_MESSAGES=64 or
    /// TOKIO_WORKER_THREADS=1, to measure a setting.
    #[arg(long = "node-env", value_parser = key_value)]
    node_env: Vec<(String, String)>,
    /// Extra environment for every turbochat router, KEY=VALUE (repeatable).
    #[arg(long = "router-env", value_parser = key_value)]
    router_env: Vec<(String, String)>,
}

/// `NAME=VALUE` with an environment variable name (`A-Z`, `0-9`, `_`).
fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value))
            if !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
        {
            Ok((key.into(), value.into()))
        }
        _ => Err(format!(
            "{text:?} is not NAME=VALUE (an environment variable)"
        )),
    }
}

#[derive(Args, Clone)]
struct LoadArgs {
    #[command(flatten)]
    common: Common,
    /// Offered load, messages per second (all senders together).
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Unmeasured seconds of the same load first.
    #[arg(long)]
    warmup: Option<f64>,
    /// Seconds to wait for missing acks/deliveries after the last send.
    #[arg(long)]
    drain: Option<f64>,
}

#[derive(Args, Clone)]
struct MemoryArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds to hold the connections before sampling RSS.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// Bench processes holding the clients (default: as few as the file limit allows).
    #[arg(long, default_value_t = 0)]
    processes: usize,
}

#[derive(Args, Clone)]
struct SweepArgs {
    #[command(flatten)]
    common: Common,
    /// First offered load, msg/s.
    #[arg(long, default_value_t = 500.0)]
    from: f64,
    /// Each step multiplies the load by this.
    #[arg(long, default_value_t = 1.5)]
    factor: f64,
    /// Highest load tried, msg/s.
    #[arg(long, default_value_t = 50_000.0)]
    max_rate: f64,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 8.0)]
    step_duration: f64,
    /// Unmeasured seconds before each step.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to wait for stragglers after each step.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// The p99 bound, ms.
    #[arg(long, default_value_t = 100.0)]
    bound_ms: f64,
}

/// Per-mode defaults for the flags left out.
struct Defaults {
    targets: &'static str,
    clients: usize,
    rate: f64,
    duration: f64,
    warmup: f64,
    drain: f64,
}

const RUN: Defaults = Defaults {
    targets: "floor,socketio,seedgo,1c,1n1r,3n2r",
    clients: 2000,
    rate: 1000.0,
    duration: 20.0,
    warmup: 5.0,
    drain: 10.0,
};

const SMOKE: Defaults = Defaults {
    targets: "floor,socketio,seedgo,1c,1n1r",
    clients: 20,
    rate: 200.0,
    duration: 3.0,
    warmup: 1.0,
    drain: 5.0,
};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Floor {
        listen,
        server_threads,
    } = &cli.command
    {
        return bench::floor::run_process(listen, *server_threads);
    }
    let nofile_limit = bench::dial::raise_file_limit(1 << 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .thread_name("bench-worker")
        .enable_all()
        .build()?;
    runtime.block_on(dispatch(cli.command, nofile_limit))
}

async fn dispatch(command: Command, nofile_limit: u64) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => load_mode("run", &RUN, args, nofile_limit).await,
        Command::Smoke(args) => load_mode("smoke", &SMOKE, args, nofile_limit).await,
        Command::Memory(args) => memory_mode(args, nofile_limit).await,
        Command::Sweep(args) => sweep_mode(args, nofile_limit).await,
        Command::Hold { plan } => bench::memory::hold(&plan).await,
        Command::Hook { listen } => bench::hook::serve(&listen).await,
        Command::Floor { .. } => unreachable!("handled before the runtime"),
    }
}

fn targets(list: &str) -> anyhow::Result<Vec<Target>> {
    list.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(Target::parse)
        .collect()
}

fn server_env(common: &Common) -> ServerEnv {
    ServerEnv {
        node: common.node_env.iter().cloned().collect(),
        router: common.router_env.iter().cloned().collect(),
    }
}

fn results_dir(common: &Common) -> PathBuf {
    common
        .results_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results")))
}

fn shape(common: &Common, clients: usize, group_size: usize) -> FleetShape {
    FleetShape {
        clients: common.clients.unwrap_or(clients),
        group_size: common.group_size.unwrap_or(group_size),
        body_bytes: common.body_bytes,
        source_ips: common.source_ips,
        connect_concurrency: common.connect_concurrency,
    }
}

/// A finite number above zero (NaN is not).
fn positive(value: f64) -> bool {
    value.is_finite() && value > 0.0
}

fn secs(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("--{flag} must be seconds ≥ 0"))
}

async fn load_mode(
    mode: &str,
    defaults: &Defaults,
    args: LoadArgs,
    nofile_limit: u64,
) -> anyhow::Result<()> {
    let shape = shape(&args.common, defaults.clients, 2);
    let env = server_env(&args.common);
    let load = Load {
        rate: args.rate.unwrap_or(defaults.rate),
        duration: secs(args.duration.unwrap_or(defaults.duration), "duration")?,
        warmup: secs(args.warmup.unwrap_or(defaults.warmup), "warmup")?,
        drain: secs(args.drain.unwrap_or(defaults.drain), "drain")?,
    };
    if !positive(load.rate) {
        bail!("--rate must be > 0");
    }
    let target_list = args.common.targets.as_deref().unwrap_or(defaults.targets);
    let settings = bench::run::Settings {
        mode: mode.into(),
        targets: targets(target_list)?,
        recorded: json!({"targets": target_list, "shape": shape, "load": load, "env": env}),
        shape,
        load,
        results_dir: results_dir(&args.common),
        nofile_limit,
        env,
    };
    let (report, path) = bench::run::run(&settings).await?;
    println!("{}", bench::report::table(&report.systems));
    for note in &report.notes {
        println!("note: {note}");
    }
    println!("results: {}", path.display());
    if mode == "smoke" {
        for system in &report.systems {
            let phase = system.phases.last().context("a phase ran")?;
            if phase.delivered == 0 || phase.lost > 0 || phase.duplicated > 0 {
                bail!(
                    "smoke failed for {}: delivered {}, lost {}, duplicated {}",
                    system.system,
                    phase.delivered,
                    phase.lost,
                    phase.duplicated
                );
            }
        }
    }
    Ok(())
}

async fn memory_mode(args: MemoryArgs, nofile_limit: u64) -> anyhow::Result<()> {
    let shape = shape(&args.common, 10_000, 2);
    let env = server_env(&args.common);
    let target_list = args
        .common
        .targets
        .as_deref()
        .unwrap_or("floor,socketio,seedgo,1n1r");
    let settings = bench::memory::Settings {
        targets: targets(target_list)?,
        recorded: json!({"targets": target_list, "shape": shape, "hold_secs": args.hold, "env": env}),
        shape,
        hold: secs(args.hold, "hold")?,
        results_dir: results_dir(&args.common),
        nofile_limit,
        processes: args.processes,
        env,
    };
    let (report, path) = bench::memory::run(&settings).await?;
    println!("{}", bench::report::table(&report.systems));
    for note in &report.notes {
        println!("note: {note}");
    }
    println!("results: {}", path.display());
    Ok(())
}

async fn sweep_mode(args: SweepArgs, nofile_limit: u64) -> anyhow::Result<()> {
    if !positive(args.from) || !positive(args.factor - 1.0) {
        bail!("--from must be > 0 and --factor > 1");
    }
    let shape = shape(&args.common, 2000, 2);
    let env = server_env(&args.common);
    let target_list = args
        .common
        .targets
        .as_deref()
        .unwrap_or("floor,socketio,seedgo,1c,1n1r,3n2r");
    let first = Load {
        rate: args.from,
        duration: secs(args.step_duration, "step-duration")?,
        warmup: secs(args.warmup, "warmup")?,
        drain: secs(args.drain, "drain")?,
    };
    let settings = bench::sweep::Settings {
        targets: targets(target_list)?,
        recorded: json!({
            "targets": target_list, "shape": shape, "first": first,
            "factor": args.factor, "max_rate": args.max_rate, "bound_ms": args.bound_ms,
            "env": env,
        }),
        shape,
        first,
        factor: args.factor,
        max_rate: args.max_rate,
        bound_ms: args.bound_ms,
        results_dir: results_dir(&args.common),
        nofile_limit,
        env,
    };
    let (report, path, capacities) = bench::sweep::run(&settings).await?;
    println!("{}", bench::report::sweep_table(&report.systems));
    for capacity in &capacities {
        println!(
            "{}: highest load with p99 < {} ms: {} ({})",
            capacity.system,
            args.bound_ms,
            capacity
                .highest_rate_under_bound
                .map(|r| format!("{r:.0} msg/s"))
                .unwrap_or_else(|| "none".into()),
            capacity.stopped_because
        );
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    println!("results: {}", path.display());
    println!("chart: {}", path.with_extension("svg").display());
    Ok(())
}
