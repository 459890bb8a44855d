//! Echoes every text and binary message on any path. The target of the Autobahn conformance run.
//!
//! `cargo run --release --example echo -- --bind 127.0.0.1:9001 [--max-message-size BYTES]
//! [--compression off|on|context-takeover]`
//!
//! It accepts permessage-deflate offers by default (without context takeover), as Autobahn's
//! sections 12 and 13 need.

use clap::Parser;
use switchboard::ws::{self, Handler, Text, WebSocket};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    bind: String,
    /// Largest message accepted, in bytes; a larger one closes the connection with 1009.
    #[arg(long, default_value_t = 64 << 20)]
    max_message_size: usize,
    /// permessage-deflate: `off`, `on` (without context takeover) or `context-takeover`.
    #[arg(long, default_value = "on")]
    compression: String,
    /// With compression agreed, messages shorter than this are sent uncompressed. 0 by default:
    /// the Autobahn driver (kosoku) fails cases on an uncompressed message in a compressed session.
    #[arg(long, default_value_t = 0)]
    compression_threshold: usize,
}

struct Echo;

impl Handler for Echo {
    async fn on_message(&mut self, ws: &WebSocket, text: Text) {
        let _ = ws.send_text(text);
    }

    async fn on_bytes(&mut self, ws: &WebSocket, data: bytes::Bytes) {
        let _ = ws.send_binary(data);
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let compression = match args.compression.as_str() {
        "off" => ws::Compression::Off,
        "on" => ws::Compression::NoContextTakeover,
        "context-takeover" => ws::Compression::ContextTakeover,
        other => {
            eprintln!("--compression: expected off, on or context-takeover, got {other}");
            std::process::exit(2);
        }
    };
    let config = ws::Config {
        max_message_size: args.max_message_size,
        max_backpressure: 64 << 20,
        compression,
        compression_threshold: args.compression_threshold,
        ..Default::default()
    };
    let app = axum::Router::new().fallback_service(ws::endpoint(|_| Echo, config));
    let listener = switchboard::http::bind(&args.bind).await?;
    println!("echo listening on ws://{}", listener.local_addr()?);
    switchboard::http::serve(listener, app, switchboard::Shutdown::on_signals()).await
}
