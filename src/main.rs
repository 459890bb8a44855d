//! The `switchboard` command: `serve` runs the standalone server, `publish` broadcasts on one.

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Logs go to stderr: stdout is for the command's own output (`publish` prints one line).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "switchboard=info,warn".into()),
        )
        .init();
    match cli::run(cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("switchboard: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
