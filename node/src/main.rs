//! `turbochat-node` binary: wiring only (see the library for the data path).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOC: turbochat_service::Allocator = turbochat_service::Allocator;

/// A turbochat node: owns conversations, orders, persists and fans out messages.
#[derive(Debug, Parser)]
#[command(name = "turbochat-node", version)]
struct Args {
    /// Config file (TOML). `TURBOCHAT_*` variables override it.
    #[arg(long, short, env = "TURBOCHAT_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = turbochat_service::telemetry::init_tracing("turbochat-node");
    let config = match turbochat_node::config::Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("turbochat-node: {err}");
            return ExitCode::from(2);
        }
    };
    if args.config.is_none() {
        tracing::warn!(
            "no --config and no TURBOCHAT_CONFIG: running on the built-in development \
             configuration (configs/dev.toml: SQLite under data/, the public HS256 dev secret)"
        );
    }
    let runtime = match turbochat_service::runtime("node") {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("turbochat-node: cannot start runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async move {
        let metrics = turbochat_service::telemetry::init_metrics();
        let shutdown = turbochat_service::shutdown::on_signal();
        turbochat_node::run(config, shutdown, metrics, |listening| {
            turbochat_service::announce_ready("node", listening);
        })
        .await?;
        Ok(())
    });
    // The exporter's blocking client must not run inside the runtime.
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("turbochat-node: {err:#}");
            ExitCode::FAILURE
        }
    }
}
