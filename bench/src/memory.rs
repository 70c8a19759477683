//! `memory`: idle clients held open; resident memory per connection of
//! each server process (added over its idle baseline, and total).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::load::{Fleet, FleetShape};
use crate::report::{Memory, Report, SystemFigures};
use crate::system::{System, Target};

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
}

/// File descriptors a process needs besides its connections.
const FD_HEADROOM: u64 = 256;

/// Holds the clients against each target and writes the JSON.
pub async fn run(settings: &Settings) -> anyhow::Result<(Report, PathBuf)> {
    let wanted = settings.shape.clients as u64 + FD_HEADROOM;
    if wanted > settings.nofile_limit {
        bail!(
            "{} connections need a file limit of about {wanted}, but RLIMIT_NOFILE is {} here and cannot be raised further (the hard limit; raising it needs CAP_SYS_RESOURCE); use --clients {} or fewer",
            settings.shape.clients,
            settings.nofile_limit,
            settings.nofile_limit.saturating_sub(FD_HEADROOM)
        );
    }
    let mut notes = vec![
        "RSS per connection: each client is subscribed to one 1:1 conversation and idle"
            .to_string(),
        "Socket.IO peer (npm, rooms) not run yet: out of this bench's scope for now".to_string(),
    ];
    let mut systems = Vec::new();
    for target in &settings.targets {
        eprintln!("== {}: starting", target.name());
        let system = System::start(target, &Default::default()).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let baseline = crate::rss::sample(&system.processes);
        let fleet = Fleet::connect(&system, &settings.shape).await?;
        eprintln!(
            "== {}: {} idle clients connected in {:.1} s; holding {:.0} s",
            target.name(),
            fleet.len(),
            fleet.setup.as_secs_f64(),
            settings.hold.as_secs_f64()
        );
        tokio::time::sleep(settings.hold).await;
        let memory = Memory::new(crate::rss::sample(&system.processes), baseline, fleet.len());
        if let Some(router) = memory.per_connection("router") {
            let kib = router / 1024.0;
            notes.push(if kib <= 16.0 {
                format!("{}: router {kib:.1} KiB per idle connection (target ≤ 16 KiB)", target.name())
            } else {
                format!(
                    "{}: router {kib:.1} KiB per idle connection misses the 16 KiB target by {:.1} KiB",
                    target.name(),
                    kib - 16.0
                )
            });
        }
        systems.push(SystemFigures {
            system: target.name(),
            target: target.clone(),
            bin_dir: system.bin_dir(),
            connections: fleet.len(),
            conversations: fleet.conversations,
            setup_secs: fleet.setup.as_secs_f64(),
            phases: Vec::new(),
            memory,
        });
        fleet.close().await;
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
