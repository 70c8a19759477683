//! Resident memory of a process, read from `/proc/PID/status` (`VmRSS`).

use serde::Serialize;

/// One server process and its resident memory at a moment.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessRss {
    /// `floor`, `node-1`, `router-2`, ...
    pub label: String,
    /// Its process id.
    pub pid: u32,
    /// `VmRSS` in KiB (0 if the process is gone).
    pub rss_kib: u64,
}

/// `VmRSS` of `pid` in KiB, or `None` if the process is gone or the file
/// has no such line (a kernel thread).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples every `(label, pid)`.
pub fn sample(processes: &[(String, u32)]) -> Vec<ProcessRss> {
    processes
        .iter()
        .map(|(label, pid)| ProcessRss {
            label: label.clone(),
            pid: *pid,
            rss_kib: rss_kib(*pid).unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_line() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1234));
        assert_eq!(parse_vm_rss("Name:\tkthread\n"), None);
    }

    #[test]
    fn own_process_has_rss() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
