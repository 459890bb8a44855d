//! # Switchboard: real-time channels for Rust
//!
//! * [`ws`]: the WebSocket layer (RFC 6455, server and client) with a small handler API.
//! * [`http`]: serving an axum application with upgrades, timeouts and graceful shutdown.
//!
//! The data path reads from the module list: socket ([`ws`]) → connection → session → hub →
//! broker → subscribers.
#![warn(missing_docs)]

pub mod http;
mod shutdown;
pub mod ws;

pub use shutdown::Shutdown;
