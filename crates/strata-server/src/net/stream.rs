//! An accepted socket that records its activity and can be closed from outside.
//!
//! The protocol servers (hyper for HTTP, tonic for gRPC) own their connections; the
//! [`Watchdog`](super::watch::Watchdog) does not. It closes a connection by marking its
//! [`ConnectionActivity`] killed and waking the socket's reader and writer: the next
//! read or write fails, and the protocol server ends the connection the way it ends one
//! whose peer vanished.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::limits::ConnectionPermit;

/// `write_blocked_since` when no write is waiting.
const NOT_BLOCKED: u64 = u64::MAX;

/// Why the watchdog closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum KillReason {
    /// The client sent nothing at all within the first-byte timeout.
    Silent = 1,
    /// The client stopped reading: a write made no progress within the stall timeout.
    WriteStalled = 2,
    /// The server is shutting down and the connection did not end in time.
    Shutdown = 3,
}

impl KillReason {
    fn from_u8(value: u8) -> Option<KillReason> {
        match value {
            1 => Some(KillReason::Silent),
            2 => Some(KillReason::WriteStalled),
            3 => Some(KillReason::Shutdown),
            _ => None,
        }
    }

    /// A short description, for logs and the error the socket returns.
    pub fn describe(self) -> &'static str {
        match self {
            KillReason::Silent => "the client sent nothing within the first-byte timeout",
            KillReason::WriteStalled => "the client stopped reading (write stalled)",
            KillReason::Shutdown => "the server is shutting down",
        }
    }
}

/// What a connection did and when: shared by its socket and its watchdog.
#[derive(Debug)]
pub struct ConnectionActivity {
    opened: Instant,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    /// Milliseconds after `opened` since which a write has been waiting, or `NOT_BLOCKED`.
    write_blocked_since: AtomicU64,
    killed: AtomicU8,
    closed: AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
    /// Woken when the socket is dropped, so the watchdog ends with its connection.
    pub(crate) closed_notify: Notify,
}

impl ConnectionActivity {
    fn new() -> ConnectionActivity {
        ConnectionActivity {
            opened: Instant::now(),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(NOT_BLOCKED),
            killed: AtomicU8::new(0),
            closed: AtomicBool::new(false),
            read_waker: AtomicWaker::new(),
            write_waker: AtomicWaker::new(),
            closed_notify: Notify::new(),
        }
    }

    fn millis_since_open(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// How long the connection has been open.
    pub fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    /// Bytes received from the client so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes sent to the client so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// How long the oldest waiting write has waited (`None`: no write is waiting).
    pub fn write_blocked_for(&self) -> Option<Duration> {
        match self.write_blocked_since.load(Ordering::Relaxed) {
            NOT_BLOCKED => None,
            since => Some(Duration::from_millis(
                self.millis_since_open().saturating_sub(since),
            )),
        }
    }

    /// Whether the socket has been dropped.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Why the connection was killed, if it was.
    pub fn killed(&self) -> Option<KillReason> {
        KillReason::from_u8(self.killed.load(Ordering::Acquire))
    }

    /// Closes the connection: its next read and write fail. The first reason sticks.
    pub fn kill(&self, reason: KillReason) {
        let _ = self
            .killed
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.read_waker.wake();
        self.write_waker.wake();
    }

    fn killed_error(&self) -> Option<io::Error> {
        self.killed()
            .map(|reason| io::Error::new(io::ErrorKind::TimedOut, reason.describe()))
    }
}

/// An accepted TCP connection with its activity record and its connection permit.
#[derive(Debug)]
pub struct TrackedStream {
    inner: TcpStream,
    activity: Arc<ConnectionActivity>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    _permit: ConnectionPermit,
}

impl TrackedStream {
    /// Wraps an accepted socket holding `permit`.
    pub fn new(inner: TcpStream, peer: SocketAddr, permit: ConnectionPermit) -> TrackedStream {
        let local = inner.local_addr().ok();
        TrackedStream {
            inner,
            activity: Arc::new(ConnectionActivity::new()),
            peer,
            local,
            _permit: permit,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The activity record (for the watchdog and tests).
    pub fn activity(&self) -> &Arc<ConnectionActivity> {
        &self.activity
    }

    /// Whether `TCP_NODELAY` is set on the socket.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.nodelay()
    }

    fn note_write<T>(&self, result: &Poll<io::Result<T>>) {
        let activity = &self.activity;
        match result {
            Poll::Pending => {
                let now = activity.millis_since_open();
                let _ = activity.write_blocked_since.compare_exchange(
                    NOT_BLOCKED,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) => activity
                .write_blocked_since
                .store(NOT_BLOCKED, Ordering::Relaxed),
        }
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.activity.closed.store(true, Ordering::Release);
        // `notify_one` keeps a permit if the watchdog is not waiting right now.
        self.activity.closed_notify.notify_one();
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.activity.read_waker.register(cx.waker());
        if let Some(error) = this.activity.killed_error() {
            return Poll::Ready(Err(error));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            this.activity
                .bytes_read
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        result
    }
}

impl TrackedStream {
    /// One write, plain or vectored: fails at once on a killed connection, and records
    /// whether the write waited and how much it wrote.
    fn tracked_write(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        self.activity.write_waker.register(cx.waker());
        if let Some(error) = self.activity.killed_error() {
            return Poll::Ready(Err(error));
        }
        let result = write(Pin::new(&mut self.inner), cx);
        self.note_write(&result);
        if let Poll::Ready(Ok(written)) = result {
            self.activity
                .bytes_written
                .fetch_add(written as u64, Ordering::Relaxed);
        }
        result
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .tracked_write(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .tracked_write(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for TrackedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.peer),
        }
    }
}
