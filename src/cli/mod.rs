//! Command-line interface.

mod config;
mod demo;
mod identity;
mod publish;
mod serve;

use clap::{Parser, Subcommand};

/// Switchboard: real-time channels over WebSocket (SocketAPI-compatible).
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the standalone server: demo channels, the demo page, /_broadcast and /metrics.
    Serve(Box<serve::ServeArgs>),
    /// Broadcast on a channel of a running server: `switchboard publish chat '{"message":"hi"}'`.
    Publish(publish::PublishArgs),
}

pub async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Publish(args) => publish::run(args).await,
    }
}
