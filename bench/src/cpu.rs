//! CPU time the servers spent over a phase, per process, from
//! `/proc/PID/stat` (user + system time of all threads), and the time their
//! threads were runnable but waiting for a CPU, from
//! `/proc/PID/task/*/schedstat` (its second field).
//!
//! On a machine where everything shares two cores, latency near
//! saturation swings from run to run; CPU time per message does not, so it
//! is the figure to compare two builds or two systems by. PostgreSQL's
//! backends are separate processes, not known by pid: every process named
//! `postgres` is counted (the bench's database is the only one in use
//! while it runs), and for a system that uses Redis (seedgo) every
//! `redis-server` the same way.

use std::collections::BTreeMap;

use serde::Serialize;

/// CPU seconds used so far and seconds spent waiting for a CPU, by label
/// (`node-1`, `router-1`, `postgres`, `floor`, ...).
#[derive(Debug, Clone)]
pub struct CpuSample {
    at: std::time::Instant,
    used: BTreeMap<String, f64>,
    waited: BTreeMap<String, f64>,
}

impl Default for CpuSample {
    /// Nothing used, now.
    fn default() -> Self {
        CpuSample {
            at: std::time::Instant::now(),
            used: BTreeMap::new(),
            waited: BTreeMap::new(),
        }
    }
}

/// The name of PostgreSQL's processes, and the label their CPU is summed
/// under.
pub const POSTGRES: &str = "postgres";

/// The name of Redis' process, and the label its CPU is summed under.
pub const REDIS: &str = "redis-server";

impl CpuSample {
    /// Samples `(label, pid)` and every process named as one of `shared`
    /// (summed under that name). A process that is gone counts as zero.
    pub fn take(processes: &[(String, u32)], shared: &[&str]) -> CpuSample {
        let tick = clock_ticks_per_second();
        let mut sample = CpuSample::default();
        for (label, pid) in processes {
            let ticks = read_stat(*pid).map(|s| s.ticks).unwrap_or(0);
            sample.used.insert(label.clone(), ticks as f64 / tick);
            sample
                .waited
                .insert(label.clone(), run_queue_wait_ns(*pid) as f64 / 1e9);
        }
        for name in shared {
            sample.used.insert(name.to_string(), 0.0);
            sample.waited.insert(name.to_string(), 0.0);
        }
        for pid in proc_pids() {
            let Some(stat) = read_stat(pid).filter(|s| shared.contains(&s.comm.as_str())) else {
                continue;
            };
            *sample.used.get_mut(&stat.comm).expect("inserted") += stat.ticks as f64 / tick;
            *sample.waited.get_mut(&stat.comm).expect("inserted") +=
                run_queue_wait_ns(pid) as f64 / 1e9;
        }
        sample
    }

    /// What was used between `earlier` and `self` (a process gone since
    /// counts as zero, never negative).
    pub fn since(&self, earlier: &CpuSample, messages: u64) -> CpuFigures {
        let difference = |now: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>| {
            now.iter()
                .map(|(label, n)| {
                    let b = before.get(label).copied().unwrap_or(0.0);
                    (label.clone(), (n - b).max(0.0))
                })
                .collect::<BTreeMap<String, f64>>()
        };
        let seconds = difference(&self.used, &earlier.used);
        let run_queue_wait_seconds = difference(&self.waited, &earlier.waited);
        let wall_seconds = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        let total: f64 = seconds.values().sum();
        let per_message = |s: f64| (messages > 0).then(|| s * 1e6 / messages as f64);
        CpuFigures {
            messages,
            total_us_per_message: per_message(total),
            postgres_us_per_message: per_message(seconds.get(POSTGRES).copied().unwrap_or(0.0)),
            seconds,
            run_queue_wait_seconds,
            wall_seconds,
        }
    }
}

/// CPU used by the servers over one phase.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CpuFigures {
    /// CPU seconds by process label (`postgres` = all its processes, 0 for
    /// the peers without a database; `redis-server` likewise, for seedgo).
    pub seconds: BTreeMap<String, f64>,
    /// Messages offered over the sampled time (warmup and measured part).
    pub messages: u64,
    /// All server CPU (PostgreSQL, and Redis where used, included) per
    /// message, microseconds.
    pub total_us_per_message: Option<f64>,
    /// PostgreSQL's part of it.
    pub postgres_us_per_message: Option<f64>,
    /// Seconds the threads of each process were runnable but waited for a
    /// CPU (summed over threads, so it can exceed the phase's length): how
    /// much the processes of one machine delay each other.
    pub run_queue_wait_seconds: BTreeMap<String, f64>,
    /// Wall-clock seconds between the two samples.
    pub wall_seconds: f64,
}

impl CpuFigures {
    /// Threads of the processes whose label starts with `prefix` that were
    /// waiting for a CPU, on average over the phase (`None` without such
    /// processes or time).
    pub fn threads_waiting(&self, prefix: &str) -> Option<f64> {
        let matching: Vec<f64> = self
            .run_queue_wait_seconds
            .iter()
            .filter(|(label, _)| label.starts_with(prefix))
            .map(|(_, s)| *s)
            .collect();
        (self.wall_seconds > 0.0 && !matching.is_empty())
            .then(|| matching.iter().sum::<f64>() / self.wall_seconds)
    }
}

struct Stat {
    comm: String,
    /// utime + stime, in clock ticks.
    ticks: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pid (comm) state ppid ... utime stime ...`: comm may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After the comm: state is field 3 (index 0 here); utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Stat {
        comm,
        ticks: utime + stime,
    })
}

/// Nanoseconds the threads of `pid` have waited on a run queue (0 if the
/// process is gone or the kernel keeps no schedstats).
fn run_queue_wait_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn proc_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
}

#[allow(unsafe_code)]
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let line =
            "4242 (tokio (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 1 1";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.comm, "tokio (x) y");
        assert_eq!(stat.ticks, 300);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn own_process_uses_cpu_and_differences_add_up() {
        let me = vec![("bench".to_string(), std::process::id())];
        let before = CpuSample::take(&me, &[POSTGRES]);
        // Spin until 50 ms of CPU show up (never, if reading them is broken).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        let figures = loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let figures = CpuSample::take(&me, &[POSTGRES]).since(&before, 1000);
            if figures.seconds["bench"] >= 0.05 || std::time::Instant::now() > deadline {
                break figures;
            }
        };
        let own = figures.seconds["bench"];
        assert!(own >= 0.05, "spinning shows as CPU time: {figures:?}");
        assert!(figures.total_us_per_message.unwrap() >= own * 1e3);
        assert_eq!(
            CpuSample::default().since(&before, 0).total_us_per_message,
            None
        );
        assert!(figures.wall_seconds > 0.0);
        assert!(figures.threads_waiting("bench").is_some());
        assert_eq!(figures.threads_waiting("node"), None);
    }

    #[test]
    fn shared_services_are_summed_by_process_name() {
        let own = read_stat(std::process::id()).expect("own stat").comm;
        let shared = [own.as_str(), "no-such-process"];
        let before = CpuSample::take(&[], &shared);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        let figures = loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let figures = CpuSample::take(&[], &shared).since(&before, 1000);
            if figures.seconds[&own] >= 0.05 || std::time::Instant::now() > deadline {
                break figures;
            }
        };
        assert!(figures.seconds[&own] >= 0.05, "{figures:?}");
        assert_eq!(figures.seconds["no-such-process"], 0.0, "{figures:?}");
        assert!(
            !figures.seconds.contains_key(POSTGRES),
            "only what was asked"
        );
    }
}
