//! One turbochat process under test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long a process may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Node or router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `turbochat-node`.
    Node,
    /// `turbochat-router`.
    Router,
    /// `turbochat-colocated`: a node and a router in one process.
    Colocated,
}

impl Role {
    fn binary(self) -> &'static str {
        match self {
            Role::Node => "turbochat-node",
            Role::Router => "turbochat-router",
            Role::Colocated => "turbochat-colocated",
        }
    }
}

/// A running (or stopped) child process with its environment, so it can be
/// restarted exactly as it was, on the same ports.
pub struct Process {
    /// Node or router.
    pub role: Role,
    /// `node.id` / `router.id`.
    pub id: String,
    config: PathBuf,
    env: BTreeMap<String, String>,
    child: Option<Child>,
    /// The ready line, parsed.
    pub ready: Value,
    log: PathBuf,
}

impl Process {
    /// Starts the binary with `configs/dev.toml` and `env`, waits for its
    /// ready line. Its stderr goes to `log_dir/{id}.log`.
    pub fn start(role: Role, id: &str, env: BTreeMap<String, String>, log_dir: &Path) -> Self {
        Self::start_with_config(role, id, env, log_dir, &crate::bins::dev_config())
    }

    /// Like [`Process::start`] with another config file.
    pub fn start_with_config(
        role: Role,
        id: &str,
        env: BTreeMap<String, String>,
        log_dir: &Path,
        config: &Path,
    ) -> Self {
        let log = log_dir.join(format!("{id}.log"));
        let mut process = Process {
            role,
            id: id.to_string(),
            config: config.to_path_buf(),
            env,
            child: None,
            ready: Value::Null,
            log,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut child = Command::new(crate::bins::bin(self.role.binary()))
            .arg("--config")
            .arg(&self.config)
            .envs(&self.env)
            .env(
                "RUST_LOG",
                std::env::var("TURBOCHAT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.role.binary()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let started = Instant::now();
        let line = loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                break line;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited with {status} before ready:\n{}",
                    self.id,
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "{} not ready after {READY_TIMEOUT:?}:\n{}",
                self.id,
                self.log_tail()
            );
        };
        self.ready = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: bad ready line {line:?}: {e}", self.id));
        self.child = Some(child);
    }

    /// A string field of the ready line (`http`, `grpc`, `gossip`).
    pub fn addr(&self, key: &str) -> String {
        self.ready[key]
            .as_str()
            .unwrap_or_else(|| panic!("{} ready line has no {key}: {}", self.id, self.ready))
            .to_string()
    }

    /// Path of its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether it is still running; its exit status if not.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait up to `deadline` for a clean exit; returns its status
    /// code (None if it had to be killed).
    pub fn terminate(&mut self, deadline: Duration) -> Option<i32> {
        self.signal(Signal::SIGTERM);
        let mut child = self.child.take()?;
        let started = Instant::now();
        while started.elapsed() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGSTOP: the process freezes (a zombie owner).
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// Starts it again with the same environment and ports (the ready line
    /// must name the same addresses: the ports were pinned at first start).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Pins the addresses it bound so a restart reuses them.
    pub fn pin(&mut self, key: &str, value: String) {
        self.env.insert(key.to_string(), value);
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Its whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.thaw();
        self.kill9();
    }
}
