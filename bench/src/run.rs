//! `run` and `smoke`: one load phase against each system in turn, then the
//! side-by-side table and the JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::load::{Fleet, FleetShape, Load};
use crate::report::{Memory, Report, SystemFigures};
use crate::system::{ServerEnv, System, Target};

/// What `run` / `smoke` do.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `run` or `smoke` (names the JSON file).
    pub mode: String,
    /// Systems, in order; put the floor first for ratios.
    pub targets: Vec<Target>,
    /// Clients and conversations.
    pub shape: FleetShape,
    /// The offered load.
    pub load: Load,
    /// Where the JSON goes.
    pub results_dir: PathBuf,
    /// The command line settings, recorded in the JSON.
    pub recorded: serde_json::Value,
    /// The file limit in force.
    pub nofile_limit: u64,
    /// Extra environment for turbochat's processes.
    pub env: ServerEnv,
}

/// Router environment so the bench measures the data path, not the
/// per-user limits: only changed when a client's share of the load would
/// come near the default 20 sends/s. Returns the env and a note.
pub fn router_env_for(per_client_rate: f64) -> (BTreeMap<String, String>, Option<String>) {
    let mut env = BTreeMap::new();
    if per_client_rate * 1.5 <= 20.0 {
        return (env, None);
    }
    let sends = (per_client_rate * 2.0).ceil() as u64;
    env.insert(
        "TURBOCHAT_LIMITS__SEND_PER_SECOND".into(),
        sends.to_string(),
    );
    env.insert(
        "TURBOCHAT_LIMITS__SEND_BURST".into(),
        (sends * 2).to_string(),
    );
    env.insert(
        "TURBOCHAT_LIMITS__FRAMES_PER_SECOND".into(),
        (sends * 4).max(100).to_string(),
    );
    let note = format!(
        "each client sends {per_client_rate:.1} msg/s, near turbochat's default per-user limit (20/s): routers ran with send_per_second={sends}"
    );
    (env, Some(note))
}

/// Runs the load against every target, one at a time, and writes the JSON.
pub async fn run(settings: &Settings) -> anyhow::Result<(Report, PathBuf)> {
    let per_client = settings.load.rate / settings.shape.clients as f64;
    let (router_defaults, note) = router_env_for(per_client);
    let env = settings.env.over_router_defaults(router_defaults);
    let mut notes: Vec<String> = note.into_iter().collect();
    let mut systems = Vec::new();
    for target in &settings.targets {
        eprintln!("== {}: starting", target.name());
        let system = System::start(target, &env).await?;
        let bin_dir = system.bin_dir();
        if let Some(dir) = &bin_dir {
            if settings.mode == "run" && !dir.contains("release") {
                notes.push(format!(
                    "{}: binaries from {dir} (not a release build?)",
                    target.name()
                ));
            }
        }
        let mut fleet = Fleet::connect(&system, &settings.shape).await?;
        eprintln!(
            "== {}: {} clients in {} conversations connected in {:.1} s; offering {} msg/s for {:.0}+{:.0} s",
            target.name(),
            fleet.len(),
            fleet.conversations,
            fleet.setup.as_secs_f64(),
            settings.load.rate,
            settings.load.warmup.as_secs_f64(),
            settings.load.duration.as_secs_f64(),
        );
        let phase = crate::server::observe(&system, &mut fleet, &settings.load).await;
        let memory = Memory::new(
            crate::rss::sample(&system.processes),
            Vec::new(),
            fleet.len(),
        );
        eprintln!(
            "== {}: delivered {}/{} (lost {}), p50 {:.2} ms, p99 {:.2} ms",
            target.name(),
            phase.delivered,
            phase.expected_deliveries,
            phase.lost,
            phase.latency.p50_ms,
            phase.latency.p99_ms
        );
        systems.push(SystemFigures {
            system: target.name(),
            target: target.clone(),
            bin_dir,
            connections: fleet.len(),
            conversations: fleet.conversations,
            setup_secs: fleet.setup.as_secs_f64(),
            connect_secs: None,
            phases: vec![phase],
            memory,
        });
        fleet.close().await;
        system.stop().await;
    }
    notes.extend(check_targets(&systems));
    let report = Report {
        mode: settings.mode.clone(),
        timestamp: crate::report::timestamp(),
        machine: crate::report::Machine::current(settings.nofile_limit),
        settings: settings.recorded.clone(),
        systems,
        notes,
    };
    let path = report.write(&settings.results_dir)?;
    Ok((report, path))
}

/// Notes comparing turbochat with the targets (p99 ≤ 10 ms,
/// p50 ≤ 2 ms, nothing lost, p99 within 3x of the floor), with the
/// Socket.IO peer at the same load, and with the seed's Go server (server
/// CPU per message: target ≤ 1/3 of seedgo's).
pub fn check_targets(systems: &[SystemFigures]) -> Vec<String> {
    let phase_of = |target: Target| {
        systems
            .iter()
            .find(|s| s.target == target)
            .and_then(|s| s.phases.last())
    };
    let p99_of = |target: Target| phase_of(target).map(|p| p.latency.p99_ms);
    let floor_p99 = p99_of(Target::Floor);
    let socketio_p99 = p99_of(Target::SocketIo).filter(|p| *p > 0.0);
    let seedgo = phase_of(Target::SeedGo);
    let mut notes = Vec::new();
    for s in systems
        .iter()
        .filter(|s| matches!(s.target, Target::Turbochat { .. }))
    {
        let Some(p) = s.phases.last() else { continue };
        let mut missed = Vec::new();
        if p.latency.p99_ms > 10.0 {
            missed.push(format!("p99 {:.2} ms > 10 ms", p.latency.p99_ms));
        }
        if p.latency.p50_ms > 2.0 {
            missed.push(format!("p50 {:.2} ms > 2 ms", p.latency.p50_ms));
        }
        if p.lost > 0 {
            missed.push(format!("{} deliveries lost", p.lost));
        }
        if let Some(floor) = floor_p99.filter(|f| *f > 0.0) {
            if p.latency.p99_ms > 3.0 * floor {
                missed.push(format!(
                    "p99 {:.1}x the floor's (target ≤ 3x)",
                    p.latency.p99_ms / floor
                ));
            }
        }
        if let Some(theirs) = socketio_p99 {
            notes.push(format!(
                "{}: p50 {:.2} ms, p99 {:.2} ms = {:.2}x Socket.IO's p99 {theirs:.2} ms at the same load",
                s.system,
                p.latency.p50_ms,
                p.latency.p99_ms,
                p.latency.p99_ms / theirs
            ));
        }
        if let Some(theirs) = seedgo {
            let cpu = |p: &crate::load::PhaseFigures| p.cpu.as_ref()?.total_us_per_message;
            let cpu_ratio = match (cpu(p), cpu(theirs)) {
                (Some(ours), Some(seed)) if seed > 0.0 => format!(
                    "server CPU {ours:.0} µs/msg = {:.2}x seedgo's {seed:.0} (target ≤ 0.33x)",
                    ours / seed
                ),
                _ => "no CPU figures".to_string(),
            };
            notes.push(format!(
                "{}: p99 {:.2} ms vs seedgo's {:.2} ms at the same load; {cpu_ratio}",
                s.system, p.latency.p99_ms, theirs.latency.p99_ms
            ));
        }
        if missed.is_empty() {
            notes.push(format!(
                "{}: within the latency/loss targets at this load",
                s.system
            ));
        } else {
            notes.push(format!(
                "{}: missed targets: {}",
                s.system,
                missed.join("; ")
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_router_limits_only_when_needed() {
        assert!(router_env_for(0.5).0.is_empty());
        assert!(router_env_for(10.0).0.is_empty());
        let (env, note) = router_env_for(50.0);
        assert_eq!(env["TURBOCHAT_LIMITS__SEND_PER_SECOND"], "100");
        assert!(note.is_some());
    }
}
