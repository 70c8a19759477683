//! `memory`: idle clients held open; resident memory per connection of
//! each server process (added over its idle baseline, and total).
//!
//! One process can hold only as many sockets as its file limit allows
//! (~20,000 here, a hard limit). Beyond that the clients are split over
//! `hold` child processes (this binary again), each opening its share of
//! one [`Plan`], and a turbochat target needs enough routers
//! (`--targets 1n6r`) for each to stay under the limit too.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::AsyncReadExt;

use crate::load::{Fleet, FleetShape, Plan};
use crate::report::{Memory, Report, SystemFigures};
use crate::system::{ChildProcess, ServerEnv, System, Target};

/// What `memory` does.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Systems, in order.
    pub targets: Vec<Target>,
    /// Clients (each subscribed to one 1:1 conversation).
    pub shape: FleetShape,
    /// How long to hold them before sampling (lets allocators settle).
    pub hold: Duration,
    /// Where the JSON goes.
    pub results_dir: PathBuf,
    /// The command line, recorded in the JSON.
    pub recorded: serde_json::Value,
    /// The file limit in force.
    pub nofile_limit: u64,
    /// Extra environment for turbochat's processes.
    pub env: ServerEnv,
    /// Processes holding the clients (0: as few as the file limit allows).
    pub processes: usize,
}

/// Issue 16's targets: added RSS per idle connection, router and node
/// together, and the set-up time of 100,000 idle clients.
const TARGET_KIB_PER_CONNECTION: f64 = 12.0;
const TARGET_SETUP_SECS_100K: f64 = 60.0;

/// How long a `hold` share may take to connect its clients.
const HOLD_READY_TIMEOUT: Duration = Duration::from_secs(600);

/// File descriptors a process needs besides its connections.
const FD_HEADROOM: u64 = 256;

/// Sockets one process may hold.
fn per_process(nofile_limit: u64) -> usize {
    nofile_limit.saturating_sub(FD_HEADROOM).max(1) as usize
}

/// Client processes to use: as asked, else as few as the limit allows.
fn client_processes(settings: &Settings) -> anyhow::Result<usize> {
    let clients = settings.shape.clients;
    let fit = per_process(settings.nofile_limit);
    let processes = match settings.processes {
        0 => clients.div_ceil(fit),
        n => n,
    };
    if clients.div_ceil(processes) > fit {
        bail!(
            "{clients} clients over {processes} processes is more than {fit} sockets each, the most RLIMIT_NOFILE ({}) allows here (a hard limit; raising it needs CAP_SYS_RESOURCE); use --processes {} or more",
            settings.nofile_limit,
            clients.div_ceil(fit)
        );
    }
    Ok(processes)
}

/// Refuses a target one of whose server processes would need more sockets
/// than the file limit allows.
fn check_fits(target: &Target, clients: usize, nofile_limit: u64) -> anyhow::Result<()> {
    let fit = per_process(nofile_limit);
    let (servers, hint) = match target {
        Target::Turbochat { routers, nodes, .. } => (
            *routers,
            format!(
                "use --targets {nodes}n{}r (more routers)",
                clients.div_ceil(fit)
            ),
        ),
        Target::SeedGo => (crate::seedgo::INSTANCES, "use fewer --clients".to_string()),
        _ => (1, "it is one process; use fewer --clients".to_string()),
    };
    if clients.div_ceil(servers) > fit {
        bail!(
            "{}: {clients} connections over {servers} server process(es) is more than the {fit} sockets RLIMIT_NOFILE ({nofile_limit}) allows each; {hint}",
            target.name()
        );
    }
    Ok(())
}

/// What [`Holders::connect`] did: clients connected, conversations made
/// for them and how long making those took (the rest is connecting).
struct Seated {
    connected: usize,
    conversations: usize,
    conversations_took: Duration,
}

/// The clients of one target, held by this process or by `hold` children.
enum Holders {
    Here(Fleet),
    Children(Vec<ChildProcess>),
}

impl Holders {
    /// Seats the clients on `system` and connects them, in `processes`
    /// processes (1: this one). Returns them with how many are connected.
    async fn connect(
        system: &System,
        shape: &FleetShape,
        processes: usize,
    ) -> anyhow::Result<(Holders, Seated)> {
        let started = Instant::now();
        let plan = Plan::make(system, shape).await?;
        let conversations_took = started.elapsed();
        eprintln!(
            "== {} conversations created in {:.1} s",
            plan.conversations,
            conversations_took.as_secs_f64()
        );
        let seated = |connected| Seated {
            connected,
            conversations: plan.conversations,
            conversations_took,
        };
        if processes <= 1 {
            let fleet = Fleet::open(&plan).await?;
            let connected = fleet.len();
            return Ok((Holders::Here(fleet), seated(connected)));
        }
        let dir = tempfile::tempdir().context("temp dir for the plans")?;
        let exe = std::env::current_exe().context("own executable")?;
        let shares = plan.split(processes);
        let mut started = Vec::new();
        for (i, share) in shares.iter().enumerate() {
            let path = dir.path().join(format!("plan-{i}.json"));
            std::fs::write(&path, serde_json::to_vec(share)?)?;
            let mut command = std::process::Command::new(&exe);
            command.arg("hold").arg("--plan").arg(&path);
            let name = format!("hold share {i} ({} clients)", share.seats.len());
            started.push(tokio::task::spawn_blocking(move || {
                ChildProcess::start(&name, command, HOLD_READY_TIMEOUT)
            }));
        }
        let mut children = Vec::new();
        let mut connected = 0;
        for child in started {
            let child = child.await??;
            connected += child.ready["connected"].as_u64().unwrap_or(0) as usize;
            children.push(child);
        }
        Ok((Holders::Children(children), seated(connected)))
    }

    /// `(label, pid)` of the child processes (none when held here).
    fn processes(&self) -> Vec<(String, u32)> {
        match self {
            Holders::Here(_) => Vec::new(),
            Holders::Children(children) => children
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("bench-hold-{i}"), c.child.id()))
                .collect(),
        }
    }

    async fn close(self) {
        match self {
            Holders::Here(fleet) => fleet.close().await,
            Holders::Children(children) => {
                let _ = tokio::task::spawn_blocking(move || drop(children)).await;
            }
        }
    }
}

/// The `hold` child: opens the clients of the plan in `path`, prints
/// `{"connected": n}`, and keeps them until its stdin closes.
pub async fn hold(path: &std::path::Path) -> anyhow::Result<()> {
    let plan: Plan = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let started = Instant::now();
    let fleet = Fleet::open(&plan).await?;
    println!(
        "{}",
        serde_json::json!({"connected": fleet.len(), "secs": started.elapsed().as_secs_f64()})
    );
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while stdin.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    fleet.close().await;
    Ok(())
}

/// Holds the clients against each target and writes the JSON.
pub async fn run(settings: &Settings) -> anyhow::Result<(Report, PathBuf)> {
    let processes = client_processes(settings)?;
    for target in &settings.targets {
        check_fits(target, settings.shape.clients, settings.nofile_limit)?;
    }
    let mut notes = vec![
        "RSS per connection: each client is subscribed to one 1:1 conversation and idle"
            .to_string(),
    ];
    if processes > 1 {
        notes.push(format!(
            "clients held by {processes} bench processes (file limit {} each)",
            settings.nofile_limit
        ));
    }
    let mut systems = Vec::new();
    for target in &settings.targets {
        eprintln!("== {}: starting", target.name());
        let system = System::start(target, &settings.env).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let baseline = crate::rss::sample(&system.processes);
        let started = Instant::now();
        let (holders, seated) = Holders::connect(&system, &settings.shape, processes).await?;
        let setup = started.elapsed();
        let Seated {
            connected,
            conversations,
            conversations_took,
        } = seated;
        let connecting = setup.saturating_sub(conversations_took);
        eprintln!(
            "== {}: {connected} idle clients connected in {:.1} s; holding {:.0} s",
            target.name(),
            connecting.as_secs_f64(),
            settings.hold.as_secs_f64()
        );
        if connected < settings.shape.clients {
            bail!(
                "{}: only {connected} of {} clients connected",
                target.name(),
                settings.shape.clients
            );
        }
        tokio::time::sleep(settings.hold).await;
        let memory = Memory::new(crate::rss::sample(&system.processes), baseline, connected);
        let client_rss: u64 = crate::rss::sample(&holders.processes())
            .iter()
            .map(|p| p.rss_kib)
            .sum();
        if client_rss > 0 {
            eprintln!(
                "== {}: bench client processes {:.0} MiB RSS in all",
                target.name(),
                client_rss as f64 / 1024.0
            );
        }
        if let (Some(router), Some(node)) = (
            memory.per_connection("router"),
            memory.per_connection("node"),
        ) {
            let kib = (router + node) / 1024.0;
            notes.push(format!(
                "{}: router + node {kib:.1} KiB per idle connection ({}; issue 16's target ≤ {TARGET_KIB_PER_CONNECTION} KiB)",
                target.name(),
                if kib <= TARGET_KIB_PER_CONNECTION { "met" } else { "missed" }
            ));
        }
        // The target is about connections: the conversations are the
        // bench's fixture (a real deployment has them already), timed apart.
        notes.push(format!(
            "{}: {connected} clients connected in {:.1} s ({}; issue 16's target ≤ {TARGET_SETUP_SECS_100K} s for 100,000), after {conversations} conversations created in {:.1} s",
            target.name(),
            connecting.as_secs_f64(),
            match connected {
                100_000.. if connecting.as_secs_f64() <= TARGET_SETUP_SECS_100K => "met",
                100_000.. => "missed",
                _ => "fewer clients than the target's",
            },
            conversations_took.as_secs_f64(),
        ));
        systems.push(SystemFigures {
            system: target.name(),
            target: target.clone(),
            bin_dir: system.bin_dir(),
            connections: connected,
            conversations,
            setup_secs: setup.as_secs_f64(),
            connect_secs: Some(connecting.as_secs_f64()),
            phases: Vec::new(),
            memory,
        });
        holders.close().await;
        system.stop().await;
    }
    let report = Report {
        mode: "memory".into(),
        timestamp: crate::report::timestamp(),
        machine: crate::report::Machine::current(settings.nofile_limit),
        settings: settings.recorded.clone(),
        systems,
        notes,
    };
    let path = report.write(&settings.results_dir)?;
    Ok((report, path))
}
