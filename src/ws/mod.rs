//! The WebSocket layer: RFC 6455 connections for servers and clients, driven by one [`Handler`] trait.
//!
//! Framing, masking, UTF-8 validation and the close handshake are our own (`decoder.rs`,
//! `frame.rs`, `transport.rs`, `closing.rs`): a codec built on a framed reader keeps a read buffer in every
//! connection, and with many idle subscribers that buffer is most of the memory per connection
//! (`docs/decisions/0002-own-frame-codec.md`; conformance is checked by the Autobahn suite). What
//! this module gives an application, and what makes fan-out cheap:
//!
//! * [`WebSocket`], a cloneable handle usable from any task, whose sends never block and never wait:
//!   they append to a per-connection queue that the connection's task drains in one batch per wake-up
//!   (one vectored write for everything that arrived meanwhile — "corking");
//! * [`PreparedMessage`], a message framed once and sent to many sockets without a copy per socket;
//! * a byte budget per connection ([`Config::max_backpressure`]): a peer that stops reading is
//!   disconnected with close code 1008 instead of growing memory;
//! * server pings and an idle timeout, so dead peers are dropped;
//! * mounting on an axum router ([`endpoint`]; [`endpoint_checked`] to refuse a handshake with an
//!   HTTP answer, a [`Rejection`]) and a client ([`connect`]);
//! * [`Sockets`], the registry of a server's open sockets: close them all at once or [drain](Sockets::drain)
//!   them (closes in jittered batches, then a bounded wait), count them, wait for them to end.
//!
//! Inside, one concern per file: `socket.rs` (the handle and its queue), `driver.rs` (the task
//! that runs a socket), `transport.rs` (its I/O: decoding what is read, corked vectored writes),
//! `dispatch.rs` (calling the handler), `closing.rs` (the close handshake), `timers.rs` and
//! `deadline.rs` (timeouts without a timer per socket), `decoder.rs` and `frame.rs` (the codec),
//! `upgrade.rs` and `client.rs` (the opening handshake of each side), `handshake.rs` (what it
//! said, kept compact), `io.rs` (the byte stream), `prepared.rs`, `sockets.rs`, `text.rs`.
//!
//! ```no_run
//! use switchboard::ws::{self, Handler, Text, WebSocket};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     async fn on_message(&mut self, ws: &WebSocket, text: Text) {
//!         let _ = ws.send_text(text);
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = axum::Router::new().route("/echo", ws::endpoint(|_| Echo, ws::Config::default()));
//! let listener = switchboard::http::bind("127.0.0.1:9001").await?;
//! switchboard::http::serve(listener, app, switchboard::Shutdown::new()).await
//! # }
//! ```

mod client;
mod closing;
mod config;
mod deadline;
mod decoder;
mod deflate;
mod dispatch;
mod driver;
mod frame;
mod handler;
mod handshake;
mod io;
mod prepared;
mod socket;
mod sockets;
mod text;
mod timers;
mod transport;
mod upgrade;

pub use client::{connect, ConnectError};
pub use config::{Compression, Config};
pub use handler::{CloseFrame, Handler};
pub use handshake::Handshake;
pub use prepared::PreparedMessage;
pub use socket::{SendError, WebSocket};
pub use sockets::{Drain, DrainReport, Sockets};
pub use text::Text;
pub use upgrade::{endpoint, endpoint_checked, endpoint_with_sockets, Rejection};

/// For the task-size test of the protocol session, which keeps its connection's task in a cell.
#[cfg(test)]
#[allow(unused_imports)]
pub(crate) use driver::future_size_for;
