//! `turbochat-router` binary: wiring only, plus `mint-token` for development.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: turbochat_service::Allocator = turbochat_service::Allocator;

/// A turbochat router: WebSocket and HTTP front, routes to owner nodes.
#[derive(Debug, Parser)]
#[command(name = "turbochat-router", version)]
struct Args {
    /// Config file (TOML). `TURBOCHAT_*` variables override it.
    #[arg(long, short, env = "TURBOCHAT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Print a development token for a user, signed with the HS* secret in [auth].
    MintToken {
        /// The user id (JWT `sub`).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. `1h`, `30m`.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Display name (`name` claim).
        #[arg(long)]
        name: Option<String>,
        /// Picture URL (`picture` claim, `https://`).
        #[arg(long)]
        picture: Option<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = turbochat_service::telemetry::init_tracing("turbochat-router");
    if let Some(Command::MintToken {
        sub,
        ttl,
        name,
        picture,
    }) = &args.command
    {
        return mint(
            args.config.as_deref(),
            sub,
            *ttl,
            name.clone(),
            picture.clone(),
        );
    }
    let config = match turbochat_router::config::Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("turbochat-router: {err}");
            return ExitCode::from(2);
        }
    };
    if args.config.is_none() {
        tracing::warn!(
            "no --config and no TURBOCHAT_CONFIG: running on the built-in development \
             configuration (configs/dev.toml: SQLite under data/, the public HS256 dev secret)"
        );
    }
    let runtime = match turbochat_service::runtime("router") {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("turbochat-router: cannot start runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async move {
        let metrics = turbochat_service::telemetry::init_metrics();
        let shutdown = turbochat_service::shutdown::on_signal();
        turbochat_router::run(config, shutdown, metrics, |listening| {
            turbochat_service::announce_ready("router", listening);
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
            eprintln!("turbochat-router: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn mint(
    config: Option<&std::path::Path>,
    sub: &str,
    ttl: std::time::Duration,
    name: Option<String>,
    picture: Option<String>,
) -> ExitCode {
    #[derive(serde::Deserialize)]
    struct AuthOnly {
        auth: turbochat_router::config::AuthConfig,
    }
    let auth: AuthOnly = match turbochat_service::config::load(config) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("turbochat-router: {err}");
            return ExitCode::from(2);
        }
    };
    let verifier = match turbochat_router::auth::Verifier::from_config(&auth.auth) {
        Ok(v) => v,
        Err(err) => {
            eprintln!("turbochat-router: auth: {err}");
            return ExitCode::from(2);
        }
    };
    match verifier.mint_with_profile(sub, ttl, name, picture) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("turbochat-router: {err}");
            ExitCode::FAILURE
        }
    }
}
