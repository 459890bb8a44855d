//! The channels and actions of SocketAPI's documentation, served the SocketAPI way: the WebSocket
//! at `/`, broadcasts from other processes at `POST /_broadcast`.
//!
//! `cargo run --release --example socketapi_docs -- --bind 127.0.0.1:8000`
//!
//! Several of them share their channels through Redis with `--broker redis://127.0.0.1:6379`
//! (a broadcast on any of them reaches the subscribers of all; see docs/brokers.md).
//!
//! A program written for the SocketAPI server of those docs works against this one unchanged.

use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard::{Channel, Jwt, Node, RedisBroker, Router};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    bind: String,
    /// Share channels with other nodes through this broker (`redis://host:port`); in-memory when absent.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// Keep history on `chat` (this many publications, 300 s): what history costs, measured by
    /// `scripts/bench.sh` as the server `switchboard-history`. Not part of SocketAPI's docs.
    #[arg(long, value_name = "SIZE")]
    chat_history: Option<usize>,
    /// Require every connection to authenticate with an HS256 token signed with this secret
    /// (`?token=` or `connect`): what identity costs, measured by `scripts/bench.sh` as the server
    /// `switchboard-auth`. Not part of SocketAPI's docs.
    #[arg(long, value_name = "SECRET")]
    hmac_secret: Option<String>,
    /// permessage-deflate: `off` (default), `on` or `context-takeover`: what compression costs and
    /// saves, measured by `scripts/bench.sh deflate` as the server `switchboard-deflate`.
    #[arg(long, default_value = "off")]
    compression: switchboard::ws::Compression,
}

fn welcome() -> String {
    "Welcome".into()
}
fn all() -> String {
    "all".into()
}
fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize)]
struct Chat {
    #[serde(default = "welcome")]
    message: String,
}

#[derive(Serialize, Deserialize)]
struct News {}

#[derive(Serialize, Deserialize)]
struct PrivateChat {
    token: String,
    #[serde(default = "welcome")]
    message: String,
}

#[derive(Serialize, Deserialize)]
struct Notifications {
    user_id: i64,
    #[serde(default = "all")]
    notification_type: String,
}

#[derive(Serialize, Deserialize)]
struct UserUpdates {
    user_id: i64,
    #[serde(default = "yes")]
    include_details: bool,
}

#[derive(Deserialize)]
struct SendMessage {
    text: String,
}

#[derive(Deserialize)]
struct SendNotification {
    user_id: i64,
    #[allow(dead_code)]
    message: String,
}

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

/// The docs' channels and actions.
fn router(chat_history: Option<usize>) -> Router {
    let mut router = Router::new();
    let chat = Channel::new("chat", |p: Chat| async move {
        Ok::<_, String>(json!({ "message": p.message }))
    });
    let chat = match chat_history {
        Some(size) => chat.history(size, std::time::Duration::from_secs(300)),
        None => chat,
    };
    let chat = router.channel(chat);
    router.channel(
        Channel::new("news", |_: News| async move {
            Ok::<_, String>(json!({ "headline": "Breaking News!" }))
        })
        .default_response(),
    );
    router.channel(
        Channel::new("private_chat", |p: PrivateChat| async move {
            if p.token != "secret_token" {
                return Err("Invalid token".to_owned());
            }
            Ok(json!({ "message": p.message, "authenticated": true }))
        })
        .required_on_subscribe(["token"]),
    );
    let notifications = router.channel(
        Channel::new("notifications", |p: Notifications| async move {
            Ok::<_, String>(json!({ "user_id": p.user_id, "type": p.notification_type, "notifications": [] }))
        })
        .required_on_subscribe(["user_id"]),
    );
    router.channel(Channel::new("user_updates", |p: UserUpdates| async move {
        Ok::<_, String>(json!({ "user_id": p.user_id, "details": p.include_details }))
    }));

    router.action("send_message", move |p: SendMessage| {
        let chat = chat.clone();
        async move { chat.broadcast(Chat { message: p.text }).await }
    });
    router.action("send_notification", move |p: SendNotification| {
        let notifications = notifications.clone();
        async move {
            let params = Notifications {
                user_id: p.user_id,
                notification_type: "alert".into(),
            };
            notifications.broadcast(params).await
        }
    });
    router.action("add", |p: Add| async move {
        p.a.checked_add(p.b).ok_or_else(|| "integer overflow".to_owned())
    });
    router
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let mut builder = Node::builder(router(args.chat_history)).ws_config(switchboard::ws::Config {
        compression: args.compression,
        ..Default::default()
    });
    if let Some(secret) = &args.hmac_secret {
        builder = builder.auth(Jwt::hmac(secret).into_auth());
    }
    if let Some(url) = &args.broker {
        match RedisBroker::connect(url).await {
            Ok(broker) => builder = builder.broker(broker),
            Err(err) => {
                eprintln!("socketapi_docs: {err}");
                std::process::exit(1);
            }
        }
    }
    let node = builder.build();
    let listener = switchboard::http::bind(&args.bind).await?;
    println!("socketapi_docs listening on ws://{}/", listener.local_addr()?);
    switchboard::http::serve(listener, node.app(), switchboard::Shutdown::on_signals()).await?;
    Ok(())
}
