//! Where the time goes inside turbochat: each node's own Prometheus
//! metrics (`/metrics`), scraped before and after a phase, turned into the
//! node-side share of the send→receive latency.
//!
//! Two histograms answer it: `turbochat_send_commit_seconds` (the owner got
//! the send → it is durable, which includes waiting for the group-commit
//! writer) and `turbochat_store_commit_seconds` (one group commit), plus
//! `turbochat_store_commit_messages` (messages per commit). The difference
//! between the bench's latency and the node's send→commit is the routers,
//! the gRPC links, the sockets and the scheduling between processes.
//!
//! Buckets are the nodes' (50 µs … 10 s), so percentiles here are
//! interpolated inside a bucket, as Prometheus' `histogram_quantile` does:
//! good to a bucket's width, not to the microsecond. The scrape before the
//! phase is taken before its warmup, so the warmup's messages are counted
//! too (at the same load).

use std::collections::BTreeMap;

use anyhow::Context;
use prometheus_parse::{Scrape, Value};
use serde::Serialize;

use crate::load::{Fleet, Load, PhaseFigures};
use crate::system::System;

/// Cumulative counts of one histogram, summed over the nodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Upper bound (`le`, seconds) → cumulative count, `+Inf` included.
    buckets: BTreeMap<OrderedBound, f64>,
    sum: f64,
    count: f64,
}

/// An `le` bound that can key a map (bounds are finite or +Inf, never NaN).
#[derive(Debug, Clone, Copy)]
struct OrderedBound(f64);
impl PartialEq for OrderedBound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for OrderedBound {}
impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Histogram {
    /// `self - earlier`, bucket by bucket (a counter never goes down; a
    /// restarted node would, and is clamped at zero).
    fn since(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|(le, n)| {
                let before = earlier.buckets.get(le).copied().unwrap_or(0.0);
                (*le, (n - before).max(0.0))
            })
            .collect();
        Histogram {
            buckets,
            sum: (self.sum - earlier.sum).max(0.0),
            count: (self.count - earlier.count).max(0.0),
        }
    }

    fn add(&mut self, other: &Histogram) {
        for (le, n) in &other.buckets {
            *self.buckets.entry(*le).or_insert(0.0) += n;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// The `q` quantile (0..=1), linearly interpolated inside its bucket;
    /// the last finite bound when it falls in `+Inf`; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.get(&OrderedBound(f64::INFINITY)).copied()?;
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower = 0.0;
        let mut below = 0.0;
        for (OrderedBound(le), cumulative) in &self.buckets {
            if *cumulative >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let in_bucket = cumulative - below;
                let fraction = if in_bucket > 0.0 {
                    (rank - below) / in_bucket
                } else {
                    1.0
                };
                return Some(lower + (le - lower) * fraction);
            }
            lower = *le;
            below = *cumulative;
        }
        Some(lower)
    }

    /// Mean of the recorded values, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

/// The histograms this module reads, from one or more scrapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    send_commit: Histogram,
    commit: Histogram,
    /// A summary on the nodes: only its sum and count are used.
    commit_messages: Histogram,
}

const SEND_COMMIT: &str = "turbochat_send_commit_seconds";
const COMMIT: &str = "turbochat_store_commit_seconds";
const COMMIT_MESSAGES: &str = "turbochat_store_commit_messages";

impl Snapshot {
    /// Parses one node's Prometheus text.
    pub fn parse(text: &str) -> anyhow::Result<Snapshot> {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .context("parsing Prometheus text")?;
        let mut snapshot = Snapshot::default();
        for sample in scrape.samples {
            let (base, part) = match sample.metric.rsplit_once('_') {
                Some((base, part @ ("sum" | "count"))) => (base, Some(part)),
                _ => (sample.metric.as_str(), None),
            };
            let target = match base {
                SEND_COMMIT => &mut snapshot.send_commit,
                COMMIT => &mut snapshot.commit,
                COMMIT_MESSAGES => &mut snapshot.commit_messages,
                _ => continue,
            };
            match (part, sample.value) {
                (None, Value::Histogram(buckets)) => {
                    for b in buckets {
                        *target
                            .buckets
                            .entry(OrderedBound(b.less_than))
                            .or_insert(0.0) += b.count;
                    }
                }
                (Some(part), Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => match part
                {
                    "sum" => target.sum += v,
                    _ => target.count += v,
                },
                _ => {}
            }
        }
        Ok(snapshot)
    }

    /// Sum of several nodes' snapshots.
    pub fn total(snapshots: &[Snapshot]) -> Snapshot {
        let mut total = Snapshot::default();
        for s in snapshots {
            total.send_commit.add(&s.send_commit);
            total.commit.add(&s.commit);
            total.commit_messages.add(&s.commit_messages);
        }
        total
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> NodeFigures {
        let send_commit = self.send_commit.since(&earlier.send_commit);
        let commit = self.commit.since(&earlier.commit);
        let messages = self.commit_messages.since(&earlier.commit_messages);
        let ms = |h: &Histogram, q: f64| h.quantile(q).map(|s| s * 1000.0);
        NodeFigures {
            messages_committed: send_commit.count as u64,
            commits: commit.count as u64,
            messages_per_commit: messages.mean(),
            send_commit_p50_ms: ms(&send_commit, 0.50),
            send_commit_p99_ms: ms(&send_commit, 0.99),
            commit_p50_ms: ms(&commit, 0.50),
            commit_p99_ms: ms(&commit, 0.99),
            commit_mean_ms: commit.mean().map(|s| s * 1000.0),
        }
    }
}

/// The nodes' side of one phase (all nodes together).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NodeFigures {
    /// Messages the owners committed.
    pub messages_committed: u64,
    /// Group commits.
    pub commits: u64,
    /// Mean messages per group commit.
    pub messages_per_commit: Option<f64>,
    /// Owner got the send → durable (queueing for the writer included).
    pub send_commit_p50_ms: Option<f64>,
    /// The same, 99th percentile.
    pub send_commit_p99_ms: Option<f64>,
    /// One group commit (`Store::append`).
    pub commit_p50_ms: Option<f64>,
    /// The same, 99th percentile.
    pub commit_p99_ms: Option<f64>,
    /// The same, mean.
    pub commit_mean_ms: Option<f64>,
}

/// Runs `load` on `fleet` and adds what `system`'s nodes saw meanwhile
/// (`None` for the peers, or when a scrape failed: that is reported on
/// stderr and the phase still counts) and the CPU its processes used.
pub async fn observe(system: &System, fleet: &mut Fleet, load: &Load) -> PhaseFigures {
    let http = reqwest::Client::new();
    let endpoints = &system.node_metrics;
    let before = if endpoints.is_empty() {
        None
    } else {
        scrape(&http, endpoints)
            .await
            .map_err(|e| eprintln!("== {}: no node metrics: {e:#}", system.target.name()))
            .ok()
    };
    let shared = system.shared_services();
    let cpu_before = crate::cpu::CpuSample::take(&system.processes, shared);
    let mut phase = fleet.run_phase(load).await;
    let offered = load.rate * (load.warmup + load.duration).as_secs_f64();
    phase.cpu = Some(
        crate::cpu::CpuSample::take(&system.processes, shared)
            .since(&cpu_before, offered.round() as u64),
    );
    if let Some(before) = before {
        match scrape(&http, endpoints).await {
            Ok(after) => phase.nodes = Some(after.since(&before)),
            Err(e) => eprintln!("== {}: no node metrics: {e:#}", system.target.name()),
        }
    }
    phase
}

/// Scrapes `/metrics` of every `ip:port` and adds them up.
pub async fn scrape(http: &reqwest::Client, endpoints: &[String]) -> anyhow::Result<Snapshot> {
    let mut snapshots = Vec::new();
    for addr in endpoints {
        let text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("GET {addr}/metrics"))?
            .text()
            .await?;
        snapshots.push(Snapshot::parse(&text)?);
    }
    Ok(Snapshot::total(&snapshots))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# TYPE turbochat_store_commit_seconds histogram
turbochat_store_commit_seconds_bucket{le=\"0.001\"} 10
turbochat_store_commit_seconds_bucket{le=\"0.0025\"} 10
turbochat_store_commit_seconds_bucket{le=\"+Inf\"} 10
turbochat_store_commit_seconds_sum 0.005
turbochat_store_commit_seconds_count 10
# TYPE turbochat_store_commit_messages summary
turbochat_store_commit_messages{quantile=\"0.5\"} 1
turbochat_store_commit_messages_sum 10
turbochat_store_commit_messages_count 10
# TYPE turbochat_frames_received_total counter
turbochat_frames_received_total 99
";

    const AFTER: &str = "\
# TYPE turbochat_store_commit_seconds histogram
turbochat_store_commit_seconds_bucket{le=\"0.001\"} 60
turbochat_store_commit_seconds_bucket{le=\"0.0025\"} 110
turbochat_store_commit_seconds_bucket{le=\"+Inf\"} 110
turbochat_store_commit_seconds_sum 0.155
turbochat_store_commit_seconds_count 110
# TYPE turbochat_store_commit_messages summary
turbochat_store_commit_messages{quantile=\"0.5\"} 4
turbochat_store_commit_messages_sum 410
turbochat_store_commit_messages_count 110
# TYPE turbochat_send_commit_seconds histogram
turbochat_send_commit_seconds_bucket{le=\"0.001\"} 0
turbochat_send_commit_seconds_bucket{le=\"0.0025\"} 400
turbochat_send_commit_seconds_bucket{le=\"+Inf\"} 400
turbochat_send_commit_seconds_sum 0.6
turbochat_send_commit_seconds_count 400
";

    #[test]
    fn differences_of_two_scrapes() {
        let before = Snapshot::parse(BEFORE).unwrap();
        let after = Snapshot::parse(AFTER).unwrap();
        let f = after.since(&before);
        assert_eq!(f.commits, 100);
        assert_eq!(f.messages_committed, 400);
        assert_eq!(f.messages_per_commit, Some(4.0));
        // 50 commits ≤ 1 ms, 50 in (1, 2.5] ms: the median is the 1 ms edge.
        assert!((f.commit_p50_ms.unwrap() - 1.0).abs() < 1e-9, "{f:?}");
        // p99 = rank 99 of 100: 49/50 of the way through the second bucket.
        assert!((f.commit_p99_ms.unwrap() - 2.47).abs() < 1e-9, "{f:?}");
        assert!((f.commit_mean_ms.unwrap() - 1.5).abs() < 1e-9, "{f:?}");
        // All 400 sends in (1, 2.5] ms: the median halfway through it.
        assert!((f.send_commit_p50_ms.unwrap() - 1.75).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn nodes_add_up_and_empty_is_none() {
        let one = Snapshot::parse(AFTER).unwrap();
        let two = Snapshot::total(&[one.clone(), one.clone()]);
        let f = two.since(&Snapshot::default());
        assert_eq!(f.commits, 220);
        assert_eq!(f.messages_committed, 800);
        let empty = Snapshot::default().since(&Snapshot::default());
        assert_eq!(empty.commit_p99_ms, None);
        assert_eq!(empty.messages_per_commit, None);
    }

    #[test]
    fn quantile_in_the_overflow_bucket_is_the_last_bound() {
        let text = "\
# TYPE turbochat_store_commit_seconds histogram
turbochat_store_commit_seconds_bucket{le=\"0.001\"} 1
turbochat_store_commit_seconds_bucket{le=\"+Inf\"} 10
";
        let s = Snapshot::parse(text).unwrap();
        assert_eq!(s.commit.quantile(0.99), Some(0.001));
    }
}
