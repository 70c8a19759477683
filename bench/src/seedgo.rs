//! The seed's Go server (`peers/seedgo`): the design the product brief
//! plans, as a target. Built with Debian's Go and Go packages (GOPATH
//! mode: no module proxy is reachable) when no binary of its current
//! source exists, then started as [`INSTANCES`] instances that share a
//! fresh PostgreSQL database and a Redis channel prefix of their own.
//!
//! Binaries live outside the source tree, named by a digest of the
//! source (`<build dir>/seedgo-<digest>`): a changed source is a missing
//! binary, and worktrees building different sources do not overwrite
//! each other's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use harness::store::TestStore;

use crate::system::ChildProcess;

/// Instances started per run; clients are spread over them.
pub const INSTANCES: usize = 2;

/// Where Debian's `golang-*-dev` packages put their sources.
const GOPATH: &str = "/usr/share/gocode";

/// The Debian packages the build needs (`.ci/run` installs them).
pub const DEBIAN_PACKAGES: &str = "golang-go golang-github-gorilla-websocket-dev golang-github-jackc-pgx-v4-dev golang-github-gomodule-redigo-dev golang-github-golang-jwt-jwt-dev";

/// How long an instance may take to connect, create its schema, subscribe
/// to Redis and print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the Go source lives.
pub fn source_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/peers/seedgo"))
}

/// Where binaries are built: `$CARGO_TARGET_DIR/seedgo` when that is an
/// absolute path, else `/var/tmp/turbochat-seedgo`.
pub fn build_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("seedgo"),
        _ => PathBuf::from("/var/tmp/turbochat-seedgo"),
    }
}

/// The binary of the current source, built first if there is none.
/// Blocks (a first build takes tens of seconds).
pub fn binary() -> anyhow::Result<PathBuf> {
    // One build at a time in this process (tests start systems in
    // parallel); other processes are kept apart by the partial file's name.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let source = source_dir();
    let digest = source_digest(&source)?;
    let dir = build_dir();
    let binary = dir.join(format!("seedgo-{digest:016x}"));
    if binary.is_file() {
        return Ok(binary);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    // Built under a name of its own, then renamed: a concurrent build of
    // the same source (another bench) never runs a half-written file.
    let partial = dir.join(format!(
        "seedgo-{digest:016x}.{}.partial",
        uuid::Uuid::new_v4().simple()
    ));
    eprintln!(
        "== seedgo: go build {} -> {}",
        source.display(),
        binary.display()
    );
    let output = Command::new("go")
        .args(["build", "-o"])
        .arg(&partial)
        .arg(".")
        .current_dir(&source)
        .env("GOPATH", GOPATH)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", dir.join("go-cache"))
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("running go (the seedgo peer needs Debian's {DEBIAN_PACKAGES}; .ci/run installs them)")
        })?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "go build in {} failed with {} (are {DEBIAN_PACKAGES} installed?):\n{}",
            source.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(&partial, &binary)
        .with_context(|| format!("rename {} to {}", partial.display(), binary.display()))?;
    Ok(binary)
}

/// FNV-1a over the names and contents of the `.go` files in `dir`, in name
/// order: stable across runs, builds and machines.
fn source_digest(dir: &Path) -> anyhow::Result<u64> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "go"))
        .collect();
    if files.is_empty() {
        bail!("no .go files in {}", dir.display());
    }
    files.sort();
    let mut hash = Fnv1a::default();
    for file in files {
        let name = file.file_name().expect("a file name");
        hash.write(name.to_string_lossy().as_bytes());
        hash.write(&[0]);
        hash.write(&std::fs::read(&file).with_context(|| format!("read {}", file.display()))?);
        hash.write(&[0]);
    }
    Ok(hash.0)
}

struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Running instances and their database. Dropping stops the instances,
/// then drops the database.
pub struct SeedGo {
    /// `seedgo-1`, `seedgo-2`, ...
    instances: Vec<(String, ChildProcess)>,
    /// Declared after the instances: dropped once they are gone.
    _database: TestStore,
    /// The Redis channel prefix this run used.
    pub channel_prefix: String,
}

impl SeedGo {
    /// Builds the binary if needed, creates a database and starts
    /// [`INSTANCES`] instances on it (at once: they share the schema
    /// creation, as a deployment's instances would).
    pub async fn start() -> anyhow::Result<SeedGo> {
        let binary = tokio::task::spawn_blocking(binary).await??;
        let database = TestStore::postgres().await;
        let channel_prefix = format!(
            "seedgo-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let starting: Vec<_> = (1..=INSTANCES)
            .map(|i| {
                let name = format!("seedgo-{i}");
                let mut command = Command::new(&binary);
                command
                    .args(["-listen", "127.0.0.1:0", "-exit-with-stdin", "-database"])
                    .arg(&database.url)
                    .arg("-redis")
                    .arg(harness::cluster::redis_url())
                    .arg("-channel-prefix")
                    .arg(&channel_prefix)
                    // The claims the bench's tokens carry (harness::tokens).
                    .args(["-jwt-issuer", "turbocar", "-jwt-audience", "turbochat"])
                    .env("SEEDGO_JWT_SECRET", harness::tokens::DEV_SECRET);
                tokio::task::spawn_blocking(move || {
                    ChildProcess::start(&name, command, READY_TIMEOUT).map(|p| (name, p))
                })
            })
            .collect();
        let mut instances = Vec::new();
        let mut failed = None;
        for handle in starting {
            match handle.await? {
                Ok(instance) => instances.push(instance),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(SeedGo {
            instances,
            _database: database,
            channel_prefix,
        })
    }

    /// `ip:port` of every instance.
    pub fn endpoints(&self) -> anyhow::Result<Vec<String>> {
        self.instances
            .iter()
            .map(|(name, p)| {
                p.ready["http"]
                    .as_str()
                    .map(String::from)
                    .ok_or_else(|| anyhow!("no http in {name}'s ready line {}", p.ready))
            })
            .collect()
    }

    /// `(label, pid)` of every instance.
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.instances
            .iter()
            .map(|(name, p)| (name.clone(), p.child.id()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_follows_the_source() {
        let dir = tempfile::tempdir().unwrap();
        assert!(source_digest(dir.path()).is_err(), "no Go files");
        std::fs::write(dir.path().join("main.go"), "package main\n").unwrap();
        std::fs::write(dir.path().join("README.md"), "not source").unwrap();
        let first = source_digest(dir.path()).unwrap();
        assert_eq!(source_digest(dir.path()).unwrap(), first, "stable");
        std::fs::write(dir.path().join("README.md"), "still not source").unwrap();
        assert_eq!(source_digest(dir.path()).unwrap(), first, "only .go files");
        std::fs::write(dir.path().join("main.go"), "package main // changed\n").unwrap();
        assert_ne!(source_digest(dir.path()).unwrap(), first, "content");
        std::fs::write(dir.path().join("main.go"), "package main\n").unwrap();
        std::fs::write(dir.path().join("hub.go"), "").unwrap();
        assert_ne!(source_digest(dir.path()).unwrap(), first, "files");
    }
}
