//! Where the binaries under test are. Built once per test process with the
//! same profile as the tests (`cargo build --bin ...`), unless
//! `TURBOCHAT_BIN_DIR` names a directory that already has them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cluster-tests lives in the workspace")
        .to_path_buf()
}

/// The directory holding `turbochat-node` and `turbochat-router`, built if
/// needed. Panics with cargo's output if the build fails.
pub fn bin_dir() -> &'static Path {
    bin_dir_cell().get_or_init(|| {
        if let Ok(dir) = std::env::var("TURBOCHAT_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let release = cfg!(not(debug_assertions));
        build(release)
    })
}

/// Uses the binaries in `dir` (e.g. the launcher's own directory) instead of
/// building any. Returns false if a directory was already chosen.
pub fn use_bin_dir(dir: PathBuf) -> bool {
    bin_dir_cell().set(dir).is_ok()
}

fn bin_dir_cell() -> &'static OnceLock<PathBuf> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    &DIR
}

/// Builds both binaries with the given profile and returns their directory.
pub fn build(release: bool) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root()).args([
        "build",
        "--bin",
        "turbochat-node",
        "--bin",
        "turbochat-router",
        "--bin",
        "turbochat-colocated",
        // The owner-panic test's hook; never in a production build.
        "--features",
        "turbochat-node/fault-injection",
    ]);
    if release {
        command.arg("--release");
    }
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "building turbochat binaries failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    target_dir().join(if release { "release" } else { "debug" })
}

fn target_dir() -> PathBuf {
    match std::env::var("CARGO_TARGET_DIR") {
        Ok(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        Err(_) => workspace_root().join("target"),
    }
}

/// Path of one binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The dev config file every process starts from.
pub fn dev_config() -> PathBuf {
    workspace_root().join("configs/dev.toml")
}
