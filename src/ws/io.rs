//! The byte stream under a connection, server or client side.

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The socket under a connection: the TCP stream itself when possible (one less boxed layer on
/// every read and write), else hyper's `Upgraded`.
pub(crate) enum Io {
    Tcp(TcpStream),
    /// Boxed: rare (a server mounted behind a layer that wraps the stream), and inline it would
    /// make every connection's task larger.
    Upgraded(Box<TokioIo<hyper::upgrade::Upgraded>>),
}

impl Io {
    /// Unwraps hyper's upgraded connection back to the TCP stream when that is what it is.
    /// Also returns the bytes hyper read past the handshake (a peer that sent frames right
    /// behind it), for the connection to decode first.
    pub(crate) fn from_upgraded(upgraded: hyper::upgrade::Upgraded) -> (Self, Bytes) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(hyper::upgrade::Parts { io, read_buf, .. }) => (Io::Tcp(io.into_inner()), read_buf),
            Err(upgraded) => (Io::Upgraded(Box::new(TokioIo::new(upgraded))), Bytes::new()),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            Io::Upgraded(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(io) => Pin::new(io).poll_write(cx, data),
            Io::Upgraded(io) => Pin::new(io.as_mut()).poll_write(cx, data),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Upgraded(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Tcp(io) => io.is_write_vectored(),
            Io::Upgraded(io) => io.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(io) => Pin::new(io).poll_flush(cx),
            Io::Upgraded(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            Io::Upgraded(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
