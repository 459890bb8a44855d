//! The byte stream under a connection, server or client side.
//!
//! A TCP stream is shared (`Arc`) between the connection's task and its outbound queue: while the
//! task has nothing to write, a publication is written straight from the publishing call
//! (see [`super::socket`]), so it does not cost the subscriber's task a wake-up. Every access
//! goes through tokio's readiness API (`poll_*_ready` + `try_*`), which works on `&TcpStream`.

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes taken from the socket per read.
const READ_CHUNK: usize = 32 * 1024;

thread_local! {
    /// The read buffer of every connection polled on this thread: a connection holds no read
    /// buffer of its own, and reads are decoded before the poll returns.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// The socket under a connection: the TCP stream itself when possible (one less boxed layer on
/// every read and write, and the direct publication path), else hyper's `Upgraded`.
pub(crate) enum Io {
    Tcp(Arc<TcpStream>),
    /// Boxed: rare (a server mounted behind a layer that wraps the stream), and it would make
    /// every connection's task 40 bytes larger.
    Upgraded(Box<TokioIo<hyper::upgrade::Upgraded>>),
}

impl Io {
    pub(crate) fn tcp(stream: TcpStream) -> Self {
        Io::Tcp(Arc::new(stream))
    }

    /// Unwraps hyper's upgraded connection back to the TCP stream when that is what it is.
    /// Also returns the bytes hyper read past the handshake (a peer that sent frames right
    /// behind it), for the connection to decode first.
    pub(crate) fn from_upgraded(upgraded: hyper::upgrade::Upgraded) -> (Self, Bytes) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(hyper::upgrade::Parts { io, read_buf, .. }) => (Io::tcp(io.into_inner()), read_buf),
            Err(upgraded) => (Io::Upgraded(Box::new(TokioIo::new(upgraded))), Bytes::new()),
        }
    }

    /// The TCP stream, for writes from outside the connection's task.
    pub(crate) fn stream(&self) -> Option<&Arc<TcpStream>> {
        match self {
            Io::Tcp(stream) => Some(stream),
            Io::Upgraded(_) => None,
        }
    }

    /// Reads once and hands the bytes to `consume` before returning their count (0: end of
    /// stream).
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>, consume: &mut dyn FnMut(&[u8])) -> Poll<io::Result<usize>> {
        match self {
            Io::Tcp(stream) => loop {
                ready!(stream.poll_read_ready(cx))?;
                let read = READ_BUF.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buf) => read_into(stream, &mut buf, consume),
                    // Only if a consumer read again from inside `consume`, which none does.
                    Err(_) => read_into(stream, &mut vec![0; READ_CHUNK], consume),
                });
                match read {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                    read => return Poll::Ready(read),
                }
            },
            Io::Upgraded(io) => {
                let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
                let mut buf = ReadBuf::uninit(&mut scratch);
                ready!(Pin::new(io.as_mut()).poll_read(cx, &mut buf))?;
                consume(buf.filled());
                Poll::Ready(Ok(buf.filled().len()))
            }
        }
    }
}

fn read_into(stream: &TcpStream, buf: &mut [u8], consume: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
    let n = stream.try_read(buf)?;
    consume(&buf[..n]);
    Ok(n)
}

/// Retries a non-blocking operation on the stream until it does not report `WouldBlock`,
/// waiting for readiness in between (what tokio's own `AsyncWrite for TcpStream` does).
fn poll_write_with(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    mut op: impl FnMut(&TcpStream) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match op(stream) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(stream) => poll_write_with(stream, cx, |s| s.try_write(data)),
            Io::Upgraded(io) => Pin::new(io.as_mut()).poll_write(cx, data),
        }
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(stream) => poll_write_with(stream, cx, |s| s.try_write_vectored(bufs)),
            Io::Upgraded(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Tcp(_) => true,
            Io::Upgraded(io) => io.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            // TCP has nothing buffered on our side.
            Io::Tcp(_) => Poll::Ready(Ok(())),
            Io::Upgraded(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            // What tokio's `TcpStream::poll_shutdown` does, on a shared stream.
            Io::Tcp(stream) => Poll::Ready(socket2::SockRef::from(stream.as_ref()).shutdown(std::net::Shutdown::Write)),
            Io::Upgraded(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
