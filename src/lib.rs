//! # Switchboard: real-time channels for Rust
//!
//! * [`ws`]: the WebSocket layer (RFC 6455, server and client) with a small handler API.
//! * [`Router`], [`Channel`], [`Node`]: pub/sub channels and actions speaking SocketAPI's JSON
//!   protocol (see PROTOCOL.md), broadcast from in-process code or over HTTP.
//! * [`Duplex`]: bidirectional per-connection channels (`on`, `emit`, `request`, `close`), opened
//!   by the client through a [`Router::route`] or by the server with [`Connection::open_channel`].
//! * [`Broker`]: how nodes share channels (in-memory by default).
//! * [`http`]: serving an axum application with upgrades, timeouts and graceful shutdown.
//!
//! The data path reads from the folders:
//!
//! * pub/sub: socket ([`ws`]) → session (`session/`: one connection speaking the protocol of
//!   `protocol/`) → node (`node/`: joins and leaves topics; its hub holds the local subscribers) →
//!   broker (`broker/`: memory or Redis) → the hub of every node → subscribers' sockets;
//! * bidirectional channels: socket → session → [`Duplex`] (`duplex/`), whose handlers and pending
//!   requests are shared with the client's end ([`client::ClientChannel`]);
//! * declaring what a node serves: `router/` (channels, actions, routes, parameters).
//!
//! ```no_run
//! use switchboard::{Channel, Node, Router};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Chat { #[serde(default)] message: String }
//!
//! # async fn run() -> std::io::Result<()> {
//! let mut router = Router::new();
//! let chat = router.channel(Channel::new("chat", |p: Chat| async move {
//!     Ok::<_, String>(serde_json::json!({ "message": p.message }))
//! }));
//! let node = Node::new(router);
//! tokio::spawn(async move { chat.broadcast(Chat { message: "hello".into() }).await });
//! let listener = switchboard::http::bind("127.0.0.1:8000").await?;
//! switchboard::http::serve(listener, node.app(), switchboard::Shutdown::on_signals()).await
//! # }
//! ```
#![warn(missing_docs)]

mod auth;
mod broker;
pub mod client;
mod duplex;
pub mod http;
mod node;
mod protocol;
mod publisher;
mod router;
mod session;
mod shutdown;
pub mod ws;

pub use auth::{Auth, AuthRequest, ConnectProxy, Identity, Jwt, JwtError, JwtKeys, Proxy, Refusal};
#[cfg(feature = "redis")]
pub use broker::RedisBroker;
pub use broker::{Broker, BrokerError, Delivery, HistoryPolicy, MemoryBroker, StreamPosition, StreamRead};
pub use duplex::{Duplex, DuplexError, HandlerOutput, Remover};
pub use node::{Api, Limits, Node, NodeBuilder, Origins, PublishError};
pub use publisher::Publisher;
pub use router::{Access, Channel, ChannelRef, Namespace, Router, SubscribeRule};
pub use session::Connection;
pub use shutdown::Shutdown;
