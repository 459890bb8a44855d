//! Presence: who is in a room, and who came and went.
//!
//! `cargo run --release --example presence -- --bind 127.0.0.1:8000 [--broker redis://127.0.0.1:6379]
//! [--hmac-secret SECRET] [--presence-ttl-secs 30]`
//!
//! Serves at `/` (and `POST /_broadcast`, `POST /_presence`, `POST /_presence_stats`,
//! `GET /metrics`): channel `room` with presence and join_leave, keyed by `room: str` (required on
//! subscribe); action `say {room, text}` broadcasts `{"room", "text"}` to the room. Connections are
//! anonymous (user "") unless they send `{"type":"connect","token":…}` with an HS256 token
//! signed with `--hmac-secret` (claims `sub`, `exp`, `info`).

use clap::Parser;
use serde::{Deserialize, Serialize};
use switchboard::{Channel, Jwt, Node, RedisBroker, Router};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    bind: String,
    /// Share channels (and presence) with other nodes through this broker (`redis://host:port`).
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// Let connections authenticate with HS256 tokens signed with this secret (optional: without
    /// a `connect`, a connection is anonymous).
    #[arg(long, value_name = "SECRET")]
    hmac_secret: Option<String>,
    /// With `--broker`: seconds the members of a node that died still count.
    #[arg(long, default_value_t = 30)]
    presence_ttl_secs: u64,
}

#[derive(Serialize, Deserialize)]
struct Room {
    room: String,
    #[serde(default)]
    text: String,
}

fn router() -> Router {
    let mut router = Router::new();
    let room = router.channel(
        Channel::new("room", |p: Room| async move {
            Ok::<_, String>(serde_json::json!({ "room": p.room, "text": p.text }))
        })
        .required_on_subscribe(["room"])
        .join_leave(),
    );
    router.action("say", move |p: Room| {
        let room = room.clone();
        async move { room.broadcast(p).await.map_err(|e| e.to_string()) }
    });
    router
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let ttl = std::time::Duration::from_secs(args.presence_ttl_secs.max(1));
    let mut builder = Node::builder(router()).presence_ttl(ttl);
    if let Some(secret) = &args.hmac_secret {
        builder = builder.auth(Jwt::hmac(secret).into_auth().optional());
    }
    if let Some(url) = &args.broker {
        match RedisBroker::connect(url).await {
            Ok(broker) => builder = builder.broker(broker),
            Err(err) => {
                eprintln!("presence: {err}");
                std::process::exit(1);
            }
        }
    }
    let node = builder.build();
    let listener = switchboard::http::bind(&args.bind).await?;
    println!("presence listening on ws://{}/", listener.local_addr()?);
    switchboard::http::serve(listener, node.app(), switchboard::Shutdown::on_signals()).await?;
    Ok(())
}
