//! `sotto-loadgen`: load for a Sotto relay over its real wire protocol, on loopback.
//!
//! ```text
//!   setup     POST /api/users/register, /login, PUT /api/keys   (one account, one device each)
//!   send      K HTTP/1.1 connections ── POST /api/messages/send ──▶ relay ──▶ N WebSockets
//!             content = [index u64][send time u64][padding]        ◀── ack {ids} (and receipts)
//!   group     S senders ── POST /api/groups/{id}/messages (one shared ciphertext) ──▶ relay
//!             ──▶ every member's WebSocket (M members)            ◀── ack {ids}
//!   idle      M authenticated WebSockets from 127.0.0.2.. , relay RSS before/after
//! ```
//!
//! It either starts the relay itself (a fresh SQLite file in a temporary directory, or a given
//! database URL), which lets it read the relay's memory and CPU from `/proc`, or attaches to one
//! already running on a loopback address. Every run is bounded in size and time.
#![forbid(unsafe_code)]

mod client;
mod group;
mod idle;
mod relay;
mod send;
mod stats;

use clap::{Parser, Subcommand};

/// Errors are reported, not handled: a load run either works or says why it stopped.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Load generator for the Sotto relay (loopback only).
///
/// Examples:
///   sotto-loadgen send --accounts 200 --in-flight 64 --duration 10
///   sotto-loadgen send --rate 5000 --duration 20
///   sotto-loadgen --database-url postgres://postgres@127.0.0.1:5432/load1 send
///   sotto-loadgen group --members 10,100,1000 --senders 10 --messages 1000
///   sotto-loadgen idle --connections 10000 --hold 40
///   sotto-loadgen --url http://127.0.0.1:7700 --relay-pid 1234 send
#[derive(Debug, Parser)]
#[command(name = "sotto-loadgen", version, verbatim_doc_comment)]
struct Cli {
    #[command(flatten)]
    relay: relay::RelayArgs,

    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// 1:1 messages between N connected devices: accepted msgs/s, send→receive latency, losses.
    Send(send::SendArgs),
    /// Group messages to M connected members: deliveries/s, fan-out completion, send cost by size.
    Group(group::GroupArgs),
    /// M idle authenticated WebSockets: relay memory per connection.
    Idle(idle::IdleArgs),
    /// One of `idle --client-processes`'s processes (started by it).
    #[command(hide = true)]
    IdleWorker(idle::WorkerArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        // Raise the descriptor limit first: a spawned relay inherits it.
        let wanted = match &cli.mode {
            Mode::Send(args) => args.fd_budget(),
            Mode::Group(args) => args.fd_budget(),
            Mode::Idle(args) => args.fd_budget(cli.relay.processes),
            Mode::IdleWorker(args) => args.fd_budget(),
        };
        relay::raise_fd_limit(wanted)?;
        if let Mode::IdleWorker(args) = cli.mode {
            return idle::worker(args).await;
        }
        let relay = relay::Relay::start(&cli.relay).await?;
        if relay.processes() > 1 {
            eprintln!(
                "relay: {} processes, accounts spread over them round-robin",
                relay.processes()
            );
        }
        let run = async {
            match cli.mode {
                Mode::Send(args) => send::run(&relay, args).await,
                Mode::Group(args) => group::run(&relay, args).await,
                Mode::Idle(args) => idle::run(&relay, args).await,
                Mode::IdleWorker(_) => Ok(()),
            }
        };
        // On Ctrl-C or SIGTERM the started relay is stopped and its temporary files removed.
        let result = tokio::select! {
            result = run => result,
            signal = interrupted() => Err(format!("interrupted by {signal}").into()),
        };
        relay.stop().await;
        result
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
