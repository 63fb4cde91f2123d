//! The Sotto relay binary: `sotto-server --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use sotto_server::config::{Config, LogFormat};
use sotto_server::serve::{load_tls, serve, shutdown_signal};
use sotto_server::AppState;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sotto-server: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sotto-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config));
    // Everything durable is flushed by now; don't wait on idle background threads.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(load_tls(cert, key).map_err(|e| format!("tls: {e}"))?),
        None => None,
    };
    let listen = config.listen;
    let backend = if config.database_url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let state = AppState::open(config)
        .await
        .map_err(|e| format!("database: {e}"))?;
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(
        %listen,
        tls = tls.is_some(),
        backend,
        "sotto relay listening"
    );
    serve(state, tcp, tls, shutdown_signal())
        .await
        .map_err(|e| format!("server: {e}"))
}
