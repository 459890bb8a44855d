//! Drives the Switchboard WebSocket client through an Autobahn fuzzing server
//! (`kosoku -m fuzzingserver 127.0.0.1:9002`): every case is an echo session.
//!
//! `cargo run --release --example autobahn_client -- --server ws://127.0.0.1:9002`

use clap::Parser;
use std::sync::{Arc, Mutex};
use switchboard::ws::{self, Handler, Text, WebSocket};

#[derive(Parser)]
struct Args {
    /// The fuzzing server's base URL.
    #[arg(long, default_value = "ws://127.0.0.1:9002")]
    server: String,
    /// Agent name in the reports.
    #[arg(long, default_value = "switchboard")]
    agent: String,
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

/// Keeps the first text message (the case count).
struct Collect(Arc<Mutex<Option<String>>>);

impl Handler for Collect {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert_with(|| text.to_string());
        }
    }
}

fn config() -> ws::Config {
    ws::Config {
        max_message_size: 64 << 20,
        max_backpressure: 64 << 20,
        // Offers permessage-deflate (Autobahn's sections 12 and 13).
        compression: ws::Compression::NoContextTakeover,
        // Everything compressed: the fuzzing server (kosoku) fails cases on an uncompressed
        // message in a compressed session.
        compression_threshold: 0,
        ..Default::default()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let count = Arc::new(Mutex::new(None));
    let ws = ws::connect(
        &format!("{}/getCaseCount", args.server),
        Collect(count.clone()),
        config(),
    )
    .await?;
    ws.closed().await;
    let cases: u32 = count
        .lock()
        .map_err(|_| "poisoned")?
        .clone()
        .ok_or("no case count received")?
        .trim()
        .parse()?;
    println!("running {cases} cases");
    for case in 1..=cases {
        let url = format!("{}/runCase?case={case}&agent={}", args.server, args.agent);
        match ws::connect(&url, Echo, config()).await {
            Ok(ws) => ws.closed().await,
            Err(err) => eprintln!("case {case}: {err}"),
        }
    }
    let ws = ws::connect(
        &format!("{}/updateReports?agent={}", args.server, args.agent),
        Echo,
        config(),
    )
    .await?;
    ws.closed().await;
    println!("done");
    Ok(())
}
