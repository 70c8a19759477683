//! Figures as people and programs read them: latency percentiles, the
//! side-by-side table with ratios against the floor, and the JSON file
//! under `bench/results/`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::PhaseFigures;
use crate::rss::ProcessRss;
use crate::system::Target;

/// Percentiles of a latency histogram recorded in microseconds, in
/// milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest value.
    pub max_ms: f64,
}

impl Percentiles {
    /// Summarises `histogram` (microseconds); all zero when empty.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            count: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// Resident memory of one system's processes while the clients were
/// connected.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Each server process, sampled with the clients connected.
    pub processes: Vec<ProcessRss>,
    /// Each server process before any client connected (memory mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub baseline: Vec<ProcessRss>,
    /// Connections held when sampled.
    pub connections: usize,
    /// Sum of `processes` divided by connections, in bytes.
    pub total_per_connection_bytes: f64,
    /// Sum over processes of (RSS - baseline) divided by connections, in
    /// bytes (memory mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_per_connection_bytes: Option<f64>,
}

impl Memory {
    /// From samples taken with `connections` clients connected, and an
    /// optional baseline taken before they connected.
    pub fn new(processes: Vec<ProcessRss>, baseline: Vec<ProcessRss>, connections: usize) -> Self {
        let n = connections.max(1) as f64;
        let total: u64 = processes.iter().map(|p| p.rss_kib).sum();
        let added = (!baseline.is_empty()).then(|| {
            let before: u64 = baseline.iter().map(|p| p.rss_kib).sum();
            total.saturating_sub(before) as f64 * 1024.0 / n
        });
        Memory {
            processes,
            baseline,
            connections,
            total_per_connection_bytes: total as f64 * 1024.0 / n,
            added_per_connection_bytes: added,
        }
    }

    /// Per-connection bytes of the processes whose label starts with
    /// `prefix` (`router`, `node`, `floor`): added over the baseline when
    /// there is one, else total.
    pub fn per_connection(&self, prefix: &str) -> Option<f64> {
        let pick = |list: &[ProcessRss]| -> Option<u64> {
            let matching: Vec<u64> = list
                .iter()
                .filter(|p| p.label.starts_with(prefix))
                .map(|p| p.rss_kib)
                .collect();
            (!matching.is_empty()).then(|| matching.iter().sum())
        };
        let now = pick(&self.processes)?;
        let before = if self.baseline.is_empty() {
            0
        } else {
            pick(&self.baseline).unwrap_or(0)
        };
        Some(now.saturating_sub(before) as f64 * 1024.0 / self.connections.max(1) as f64)
    }
}

/// One system's figures in a run.
#[derive(Debug, Clone, Serialize)]
pub struct SystemFigures {
    /// `floor`, `turbochat-1n1r`, ...
    pub system: String,
    /// What was started.
    pub target: Target,
    /// Where turbochat's binaries came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<String>,
    /// Clients connected.
    pub connections: usize,
    /// Conversations they were placed in.
    pub conversations: usize,
    /// Seconds to create conversations and connect everyone.
    pub setup_secs: f64,
    /// Of those, seconds to connect everyone (`memory` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_secs: Option<f64>,
    /// Load phases (one for `run`, several for `sweep`, none for `memory`).
    pub phases: Vec<PhaseFigures>,
    /// Memory with the clients connected.
    pub memory: Memory,
}

/// What the machine was.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// `MemTotal` in KiB.
    pub mem_total_kib: u64,
    /// `RLIMIT_NOFILE` (soft) the bench ran with.
    pub nofile_limit: u64,
}

impl Machine {
    /// The machine this runs on.
    pub fn current(nofile_limit: u64) -> Self {
        let mem_total_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            mem_total_kib,
            nofile_limit,
        }
    }
}

/// A whole run, as written to `bench/results/<timestamp>-<mode>.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `run`, `smoke`, `memory`, `sweep`.
    pub mode: String,
    /// UTC, `YYYYMMDDTHHMMSSZ`.
    pub timestamp: String,
    /// The machine.
    pub machine: Machine,
    /// The command-line settings.
    pub settings: serde_json::Value,
    /// One entry per system, the floor first when it ran.
    pub systems: Vec<SystemFigures>,
    /// Anything a reader must know (missed bounds, peers not run, ...).
    pub notes: Vec<String>,
}

impl Report {
    /// Writes `<dir>/<timestamp>-<mode>.json` and returns its path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}-{}.json", self.timestamp, self.mode));
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(path)
    }
}

/// Now as `YYYYMMDDTHHMMSSZ` (UTC).
pub fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A value and, when there is a floor value to compare with, `(N.Nx)`.
fn with_ratio(value: f64, floor: Option<f64>, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    match floor {
        Some(f) if f > 0.0 => format!("{text} ({:.1}x)", value / f),
        _ => text,
    }
}

/// The side-by-side table of a run's last phase per system, with ratios
/// against the floor (the first column) for latency and memory.
pub fn table(systems: &[SystemFigures]) -> String {
    let floor = systems.iter().find(|s| s.target == Target::Floor);
    let floor_phase = floor.and_then(|f| f.phases.last());
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, cell: &dyn Fn(&SystemFigures) -> String| {
        rows.push((name.to_string(), systems.iter().map(cell).collect()));
    };
    row("connections", &|s| s.connections.to_string());
    row("conversations", &|s| s.conversations.to_string());
    let phase = |s: &SystemFigures| s.phases.last().cloned();
    if systems.iter().any(|s| !s.phases.is_empty()) {
        let count = |f: fn(&PhaseFigures) -> u64| {
            move |s: &SystemFigures| phase(s).map(|p| f(&p).to_string()).unwrap_or_default()
        };
        row("offered msg/s", &|s| {
            phase(s)
                .map(|p| format!("{:.0}", p.load.rate))
                .unwrap_or_default()
        });
        row("sent", &count(|p| p.sent));
        row("acked", &count(|p| p.acked));
        row("expected deliveries", &count(|p| p.expected_deliveries));
        row("delivered", &count(|p| p.delivered));
        row("lost", &count(|p| p.lost));
        row("duplicated", &count(|p| p.duplicated));
        row("errors", &count(|p| p.errors.values().sum()));
        row("disconnects", &count(|p| p.disconnects));
        row("delivered msg/s", &|s| {
            phase(s)
                .map(|p| format!("{:.0}", p.delivered_per_sec))
                .unwrap_or_default()
        });
        type Pick = fn(&crate::report::Percentiles) -> f64;
        let latency_rows: [(&str, Pick); 5] = [
            ("latency p50 ms", |l| l.p50_ms),
            ("latency p90 ms", |l| l.p90_ms),
            ("latency p99 ms", |l| l.p99_ms),
            ("latency p99.9 ms", |l| l.p999_ms),
            ("latency max ms", |l| l.max_ms),
        ];
        for (name, pick) in latency_rows {
            row(name, &|s| {
                phase(s)
                    .map(|p| {
                        let floor = floor_phase.map(|f| pick(&f.latency));
                        with_ratio(pick(&p.latency), floor, 2)
                    })
                    .unwrap_or_default()
            });
        }
        row("ack p50 / p99 ms", &|s| {
            phase(s)
                .map(|p| format!("{:.2} / {:.2}", p.ack_latency.p50_ms, p.ack_latency.p99_ms))
                .unwrap_or_default()
        });
        if systems
            .iter()
            .any(|s| phase(s).is_some_and(|p| p.nodes.is_some()))
        {
            let pair = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => format!("{a:.2} / {b:.2}"),
                _ => "-".into(),
            };
            row("node recv→durable p50/p99 ms", &|s| {
                phase(s)
                    .and_then(|p| p.nodes)
                    .map(|n| pair(n.send_commit_p50_ms, n.send_commit_p99_ms))
                    .unwrap_or_else(|| "-".into())
            });
            row("group commit p50/p99 ms", &|s| {
                phase(s)
                    .and_then(|p| p.nodes)
                    .map(|n| pair(n.commit_p50_ms, n.commit_p99_ms))
                    .unwrap_or_else(|| "-".into())
            });
            row("messages per commit", &|s| {
                phase(s)
                    .and_then(|p| p.nodes)
                    .and_then(|n| n.messages_per_commit)
                    .map(|m| format!("{m:.1}"))
                    .unwrap_or_else(|| "-".into())
            });
        }
        row("server CPU µs/msg (pg)", &|s| {
            phase(s)
                .and_then(|p| p.cpu)
                .and_then(|c| {
                    let total = c.total_us_per_message?;
                    let pg = c.postgres_us_per_message.unwrap_or(0.0);
                    Some(format!("{total:.0} ({pg:.0})"))
                })
                .unwrap_or_else(|| "-".into())
        });
        row("threads waiting for CPU node/router/pg", &|s| {
            phase(s)
                .and_then(|p| p.cpu)
                .filter(|c| {
                    c.run_queue_wait_seconds
                        .keys()
                        .any(|k| k.starts_with("node"))
                })
                .map(|c| {
                    let waiting = |prefix| {
                        c.threads_waiting(prefix)
                            .map(|m| format!("{m:.2}"))
                            .unwrap_or_else(|| "-".into())
                    };
                    format!(
                        "{} / {} / {}",
                        waiting("node"),
                        waiting("router"),
                        waiting("postgres")
                    )
                })
                .unwrap_or_else(|| "-".into())
        });
        row("scheduler lag p99 ms", &|s| {
            phase(s)
                .map(|p| format!("{:.2}", p.scheduler_lag.p99_ms))
                .unwrap_or_default()
        });
    }
    let floor_rss = floor.map(|f| f.memory.total_per_connection_bytes / 1024.0);
    row("RSS total MiB", &|s| {
        let kib: u64 = s.memory.processes.iter().map(|p| p.rss_kib).sum();
        format!("{:.1}", kib as f64 / 1024.0)
    });
    row("RSS/conn KiB (all procs)", &|s| {
        with_ratio(s.memory.total_per_connection_bytes / 1024.0, floor_rss, 1)
    });
    for prefix in ["router", "node"] {
        if systems
            .iter()
            .any(|s| s.memory.per_connection(prefix).is_some())
        {
            let label = if systems.iter().any(|s| !s.memory.baseline.is_empty()) {
                format!("{prefix}s added RSS/conn KiB")
            } else {
                format!("{prefix}s RSS/conn KiB")
            };
            row(&label, &|s| {
                s.memory
                    .per_connection(prefix)
                    .map(|b| format!("{:.1}", b / 1024.0))
                    .unwrap_or_else(|| "-".into())
            });
        }
    }
    if systems
        .iter()
        .any(|s| s.memory.added_per_connection_bytes.is_some())
    {
        let floor_added = floor.and_then(|f| f.memory.added_per_connection_bytes);
        row("added RSS/conn KiB (all)", &|s| {
            s.memory
                .added_per_connection_bytes
                .map(|b| with_ratio(b / 1024.0, floor_added.map(|f| f / 1024.0), 1))
                .unwrap_or_default()
        });
    }

    let names: Vec<String> = systems.iter().map(|s| s.system.clone()).collect();
    let first = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(6);
    let widths: Vec<usize> = (0..systems.len())
        .map(|i| {
            rows.iter()
                .map(|(_, cells)| cells[i].len())
                .chain([names[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!("{:first$}", "");
    for (name, width) in names.iter().zip(&widths) {
        out.push_str(&format!("  {name:>width$}"));
    }
    out.push('\n');
    for (name, cells) in &rows {
        out.push_str(&format!("{name:first$}"));
        for (cell, width) in cells.iter().zip(&widths) {
            out.push_str(&format!("  {cell:>width$}"));
        }
        out.push('\n');
    }
    out
}

/// A sweep's figures step by step: one row per offered load, p50 / p99
/// (ms) and lost per system.
pub fn sweep_table(systems: &[SystemFigures]) -> String {
    let mut rates: Vec<f64> = systems
        .iter()
        .flat_map(|s| s.phases.iter().map(|p| p.load.rate))
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let mut out = format!("{:>10}", "msg/s");
    for s in systems {
        out.push_str(&format!(
            "  {:>30}",
            format!("{} p50/p99 ms (lost)", s.system)
        ));
    }
    out.push('\n');
    for rate in rates {
        out.push_str(&format!("{rate:>10.0}"));
        for s in systems {
            let cell = s
                .phases
                .iter()
                .find(|p| p.load.rate == rate)
                .map(|p| {
                    format!(
                        "{:.2} / {:.2} ({})",
                        p.latency.p50_ms, p.latency.p99_ms, p.lost
                    )
                })
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!("  {cell:>30}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(format_utc(0), "19700101T000000Z");
        assert_eq!(format_utc(1_700_000_000), "20231114T221320Z");
        assert_eq!(format_utc(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let mut h = crate::load::histogram();
        for micros in 1..=1000u64 {
            h.record(micros * 1000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(Percentiles::of(&crate::load::histogram()).count, 0);
    }

    #[test]
    fn memory_per_connection() {
        let rss = |label: &str, kib| ProcessRss {
            label: label.into(),
            pid: 1,
            rss_kib: kib,
        };
        let memory = Memory::new(
            vec![rss("router-1", 30_000), rss("node-1", 20_000)],
            vec![rss("router-1", 10_000), rss("node-1", 15_000)],
            1000,
        );
        assert_eq!(memory.per_connection("router"), Some(20_480.0));
        assert_eq!(memory.per_connection("node"), Some(5_120.0));
        assert_eq!(memory.added_per_connection_bytes, Some(25_600.0));
        assert_eq!(memory.total_per_connection_bytes, 51_200.0);
        assert_eq!(memory.per_connection("floor"), None);
    }
}
