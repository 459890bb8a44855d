//! Echoes every text and binary message on any path. The target of the Autobahn conformance run.
//!
//! `cargo run --release --example echo -- --bind 127.0.0.1:9001 [--max-message-size BYTES]`

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
    let config = ws::Config {
        max_message_size: args.max_message_size,
        max_backpressure: 64 << 20,
        ..Default::default()
    };
    let app = axum::Router::new().fallback_service(ws::endpoint(|_| Echo, config));
    let listener = switchboard::http::bind(&args.bind).await?;
    println!("echo listening on ws://{}", listener.local_addr()?);
    switchboard::http::serve(listener, app, switchboard::Shutdown::on_signals()).await
}
