//! Channels with history: clients that reconnect recover what they missed.
//!
//! `cargo run --release --example history -- --bind 127.0.0.1:8000 [--broker redis://127.0.0.1:6379]`
//!
//! Serves at `/` (and `POST /_broadcast`, `GET /metrics`):
//! * channel `feed` (no parameters), history 1000 publications for 300 s;
//! * channel `user_feed`, `user_id: int` required on subscribe, history 100 for 300 s;
//! * action `post {text}` broadcasts `{"text": TEXT}` on `feed`;
//! * action `post_user {user_id, text}` broadcasts `{"user_id", "text"}` on `user_feed`.
//!
//! `{"channel":"feed","data":{"text":"hi"}}` posted to `/_broadcast` publishes `{"text":"hi"}`.
//! With `--broker`, several of them share the streams: a client recovers on any node.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use switchboard::{Channel, Node, RedisBroker, Router};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    bind: String,
    /// Share channels and their history through this broker (`redis://host:port`); in-memory when absent.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Feed {
    #[serde(default)]
    text: String,
}

#[derive(Serialize, Deserialize)]
struct UserFeed {
    user_id: i64,
    #[serde(default)]
    text: String,
}

const TTL: Duration = Duration::from_secs(300);

fn router() -> Router {
    let mut router = Router::new();
    let feed = router.channel(
        Channel::new("feed", |p: Feed| async move {
            Ok::<_, String>(serde_json::json!({ "text": p.text }))
        })
        .history(1000, TTL),
    );
    let user_feed = router.channel(
        Channel::new("user_feed", |p: UserFeed| async move {
            Ok::<_, String>(serde_json::json!({ "user_id": p.user_id, "text": p.text }))
        })
        .required_on_subscribe(["user_id"])
        .history(100, TTL),
    );
    router.action("post", move |p: Feed| {
        let feed = feed.clone();
        async move { feed.broadcast(p).await.map_err(|e| e.to_string()) }
    });
    router.action("post_user", move |p: UserFeed| {
        let user_feed = user_feed.clone();
        async move { user_feed.broadcast(p).await.map_err(|e| e.to_string()) }
    });
    router
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let node = match &args.broker {
        Some(url) => match RedisBroker::connect(url).await {
            Ok(broker) => Node::builder(router()).broker(broker).build(),
            Err(err) => {
                eprintln!("history: {err}");
                std::process::exit(1);
            }
        },
        None => Node::new(router()),
    };
    let listener = switchboard::http::bind(&args.bind).await?;
    println!("history listening on ws://{}/", listener.local_addr()?);
    switchboard::http::serve(listener, node.app(), switchboard::Shutdown::on_signals()).await?;
    Ok(())
}
