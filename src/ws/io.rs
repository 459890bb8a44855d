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
    Tcp {
        /// Bytes read past the handshake (a peer that sent frames right behind it). Dropped once
        /// consumed: on the server it shares hyper's 8 KiB read buffer, which an idle connection
        /// must not keep alive.
        prefix: Option<Bytes>,
        io: TcpStream,
    },
    Upgraded(TokioIo<hyper::upgrade::Upgraded>),
}

impl Io {
    /// Unwraps hyper's upgraded connection back to the TCP stream when that is what it is.
    pub(crate) fn from_upgraded(upgraded: hyper::upgrade::Upgraded) -> Self {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(hyper::upgrade::Parts { io, read_buf, .. }) => Io::Tcp {
                prefix: (!read_buf.is_empty()).then_some(read_buf),
                io: io.into_inner(),
            },
            Err(upgraded) => Io::Upgraded(TokioIo::new(upgraded)),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Tcp { prefix, io } => {
                if let Some(bytes) = prefix {
                    let n = bytes.len().min(buf.remaining());
                    buf.put_slice(&bytes.split_to(n));
                    if bytes.is_empty() {
                        *prefix = None;
                    }
                    return Poll::Ready(Ok(()));
                }
                Pin::new(io).poll_read(cx, buf)
            }
            Io::Upgraded(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp { io, .. } => Pin::new(io).poll_write(cx, data),
            Io::Upgraded(io) => Pin::new(io).poll_write(cx, data),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp { io, .. } => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Upgraded(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Tcp { io, .. } => io.is_write_vectored(),
            Io::Upgraded(io) => io.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Tcp { io, .. } => Pin::new(io).poll_flush(cx),
            Io::Upgraded(io) => Pin::new(io).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Tcp { io, .. } => Pin::new(io).poll_shutdown(cx),
            Io::Upgraded(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}
