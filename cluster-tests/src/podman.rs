//! Containers for the container cluster test: a thin layer over the
//! `podman` command line that labels everything it makes with the run's id
//! and removes it all again when dropped — also when the test fails.
//!
//! Podman is configured by the caller's environment (`CONTAINERS_CONF`,
//! `CONTAINERS_STORAGE_CONF`: see `deploy/tests/container-cluster.sh`).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The label every container and network of one run carries.
pub const RUN_LABEL: &str = "io.turbochat.test-run";

/// A podman command that failed.
#[derive(Debug, thiserror::Error)]
#[error("podman {args}: {reason}")]
pub struct PodmanError {
    args: String,
    reason: String,
}

/// One container to start.
#[derive(Debug, Clone, Default)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// Host name (default: the container name).
    pub hostname: Option<String>,
    /// Image reference.
    pub image: String,
    /// Network and fixed address on it.
    pub network: String,
    /// Its address on `network`.
    pub ip: String,
    /// Extra DNS names on the network (several containers may share one:
    /// the name then resolves to all of them, as a headless Service does).
    pub aliases: Vec<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// `host:container[:ro]` bind mounts.
    pub mounts: Vec<String>,
    /// `-p` publications, e.g. `127.0.0.1::8080` (a free host port).
    pub publish: Vec<String>,
    /// User to run as, when not the image's.
    pub user: Option<String>,
    /// Command (empty: the image's).
    pub command: Vec<String>,
}

/// The podman CLI, remembering what it made.
pub struct Podman {
    run_id: String,
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
    keep: bool,
}

impl Podman {
    /// For the run `run_id`; with `keep`, nothing is removed on drop.
    pub fn new(run_id: &str, keep: bool) -> Self {
        Podman {
            run_id: run_id.to_string(),
            containers: Mutex::new(Vec::new()),
            networks: Mutex::new(Vec::new()),
            keep,
        }
    }

    fn label(&self) -> String {
        format!("{RUN_LABEL}={}", self.run_id)
    }

    /// Runs `podman args...`; its stdout, trimmed.
    pub async fn cmd(&self, args: &[&str]) -> Result<String, PodmanError> {
        let output = tokio::process::Command::new("podman")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| PodmanError {
                args: args.join(" "),
                reason: e.to_string(),
            })?;
        if !output.status.success() {
            return Err(PodmanError {
                args: args.join(" "),
                reason: format!(
                    "{}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Creates a bridge network with a fixed subnet.
    pub async fn network_create(
        &self,
        name: &str,
        subnet: &str,
        gateway: &str,
    ) -> Result<(), PodmanError> {
        let label = self.label();
        self.networks.lock().unwrap().push(name.to_string());
        self.cmd(&[
            "network",
            "create",
            "--label",
            &label,
            "--subnet",
            subnet,
            "--gateway",
            gateway,
            name,
        ])
        .await
        .map(drop)
    }

    /// Starts a container in the background.
    pub async fn run(&self, c: &Container) -> Result<(), PodmanError> {
        let label = self.label();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--detach".into(),
            "--name".into(),
            c.name.clone(),
            "--hostname".into(),
            c.hostname.clone().unwrap_or_else(|| c.name.clone()),
            "--label".into(),
            label,
            "--network".into(),
            c.network.clone(),
            "--ip".into(),
            c.ip.clone(),
        ];
        for alias in &c.aliases {
            args.extend(["--network-alias".into(), alias.clone()]);
        }
        for (k, v) in &c.env {
            args.extend(["--env".into(), format!("{k}={v}")]);
        }
        for m in &c.mounts {
            args.extend(["--volume".into(), m.clone()]);
        }
        for p in &c.publish {
            args.extend(["--publish".into(), p.clone()]);
        }
        if let Some(user) = &c.user {
            args.extend(["--user".into(), user.clone()]);
        }
        args.push(c.image.clone());
        args.extend(c.command.iter().cloned());
        self.containers.lock().unwrap().push(c.name.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cmd(&args).await.map(drop)
    }

    /// SIGTERM, then SIGKILL after `grace` (what the kubelet does with
    /// `terminationGracePeriodSeconds`); returns how long it took to exit.
    pub async fn stop(&self, name: &str, grace: Duration) -> Result<Duration, PodmanError> {
        let started = Instant::now();
        let grace = grace.as_secs().to_string();
        self.cmd(&["stop", "--time", &grace, name]).await?;
        Ok(started.elapsed())
    }

    /// SIGKILL.
    pub async fn kill(&self, name: &str) -> Result<(), PodmanError> {
        self.cmd(&["kill", "--signal", "KILL", name])
            .await
            .map(drop)
    }

    /// Removes a stopped container.
    pub async fn rm(&self, name: &str) -> Result<(), PodmanError> {
        self.cmd(&["rm", "--force", name]).await?;
        self.containers.lock().unwrap().retain(|c| c != name);
        Ok(())
    }

    /// The exit code of a stopped container.
    pub async fn exit_code(&self, name: &str) -> Result<i64, PodmanError> {
        let code = self
            .cmd(&["inspect", "--format", "{{.State.ExitCode}}", name])
            .await?;
        code.parse().map_err(|_| PodmanError {
            args: format!("inspect {name}"),
            reason: format!("exit code {code:?}"),
        })
    }

    /// Whether the container runs.
    pub async fn running(&self, name: &str) -> bool {
        self.cmd(&["inspect", "--format", "{{.State.Running}}", name])
            .await
            .map(|s| s == "true")
            .unwrap_or(false)
    }

    /// The host port published for `container_port` (tcp).
    pub async fn host_port(&self, name: &str, container_port: u16) -> Result<u16, PodmanError> {
        let out = self
            .cmd(&["port", name, &format!("{container_port}/tcp")])
            .await?;
        // "127.0.0.1:41234"
        out.lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| PodmanError {
                args: format!("port {name} {container_port}"),
                reason: format!("unexpected output {out:?}"),
            })
    }

    /// The last lines of a container's output (for failure messages).
    pub async fn logs_tail(&self, name: &str, lines: usize) -> String {
        let lines = lines.to_string();
        match tokio::process::Command::new("podman")
            .args(["logs", "--tail", &lines, name])
            .stdin(Stdio::null())
            .output()
            .await
        {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(no logs: {e})"),
        }
    }

    /// Removes every container and network this run made.
    pub fn cleanup(&self) {
        let containers: Vec<String> = std::mem::take(&mut *self.containers.lock().unwrap());
        if !containers.is_empty() {
            let mut args = vec!["rm", "--force", "--time", "0"];
            args.extend(containers.iter().map(String::as_str));
            blocking(&args);
        }
        // Anything labelled with the run that the list missed.
        let label = format!("label={}", self.label());
        let leftover = blocking(&["ps", "--all", "--quiet", "--filter", &label]);
        for id in leftover.split_whitespace() {
            blocking(&["rm", "--force", "--time", "0", id]);
        }
        for network in std::mem::take(&mut *self.networks.lock().unwrap()) {
            blocking(&["network", "rm", "--force", &network]);
        }
    }
}

fn blocking(args: &[&str]) -> String {
    std::process::Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Drop for Podman {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "keeping the containers and networks of run {} (label {})",
                self.run_id,
                self.label()
            );
            return;
        }
        self.cleanup();
    }
}
