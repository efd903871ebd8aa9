//! The connection loop: accepts TCP connections and serves HTTP/1.1 and HTTP/2 (h2c) on them
//! with hyper, under the limits a public edge needs.
//!
//! `axum::serve` runs hyper without a timer, so even hyper's header timeout is off there and a
//! client that sends half a request head holds its connection for ever; it also caps nothing.
//! Here, for every connection:
//! - at most `SPARK_MAX_CONNECTIONS` are open at once; past that the loop stops accepting and new
//!   connections wait in the kernel's accept backlog, so a flood cannot grow memory;
//! - request heads must arrive within `SPARK_HEADER_READ_TIMEOUT` (hyper starts that timer again
//!   whenever an HTTP/1.1 connection waits for its next request);
//! - a connection with no bytes either way for `SPARK_IDLE_TIMEOUT` is closed (HTTP/2 included);
//! - HTTP/2 pings a quiet peer, and caps concurrent streams per connection;
//! - `TCP_NODELAY` is set, so an SSE event written in pieces is not held back ~40 ms by Nagle's
//!   algorithm waiting for a delayed ACK;
//! - with native TLS (`super::tls`) the handshake runs in the connection's own task and must
//!   finish within the header timeout, so a client that stalls mid-handshake holds only its own
//!   connection slot, and for no longer than a half-sent request head would;
//! - on shutdown the loop stops accepting, idle connections close, and the loop returns once every
//!   in-flight response has finished (the caller bounds that wait with the grace period).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt;

/// The limits of the connection loop.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_streams: u32,
    /// How often a quiet HTTP/2 peer is pinged; no answer within the same time closes it.
    pub h2_keepalive: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains (see the module doc).
/// With `tls` every connection is HTTPS.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.h2_keepalive))
        .keep_alive_timeout(limits.h2_keepalive)
        .max_concurrent_streams(limits.h2_max_streams);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // One permit per open connection: when none is left the loop does not accept.
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: not fatal. A short
                    // pause keeps an EMFILE storm from spinning the loop.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let (io, last_activity) = IdleIo::new(stream);
        let router = router.clone();
        let secure = tls.is_some();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                // What `into_make_service_with_connect_info` would add: the limiter and the
                // brute-force brake read the peer address.
                req.extensions_mut().insert(ConnectInfo(peer));
                if secure {
                    req.extensions_mut().insert(super::tls::Secure);
                }
                router.clone().oneshot(req)
            });
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let idle = limits.idle_timeout;
        let handshake_timeout = limits.header_read_timeout;
        let tls = tls.clone();
        crate::telemetry::spawn_named("connection", async move {
            let served =
                async {
                    match tls {
                        None => {
                            let conn =
                                builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                            watcher.watch(conn.into_owned()).await
                        }
                        Some(acceptor) => {
                            let stream =
                                match tokio::time::timeout(handshake_timeout, acceptor.accept(io))
                                    .await
                                {
                                    Ok(Ok(stream)) => stream,
                                    Ok(Err(e)) => {
                                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                        return Ok(());
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "TLS handshake timed out");
                                        return Ok(());
                                    }
                                };
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service);
                            watcher.watch(conn.into_owned()).await
                        }
                    }
                };
            tokio::select! {
                result = served => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = idle_watchdog(last_activity, idle) => {
                    tracing::debug!(%peer, "idle connection closed");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Resolves once `idle` has passed with no byte read or written.
async fn idle_watchdog(last: Arc<Activity>, idle: Duration) {
    loop {
        let seen = last.get();
        tokio::time::sleep_until(last.at(seen) + idle).await;
        if last.get() == seen {
            return;
        }
    }
}

/// When a connection last moved a byte, as milliseconds since its start.
struct Activity {
    base: Instant,
    millis: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(ms, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.millis.load(Ordering::Relaxed)
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }
}

/// A TCP stream that records when it last moved a byte, for the idle watchdog.
struct IdleIo {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl IdleIo {
    fn new(stream: TcpStream) -> (Self, Arc<Activity>) {
        let activity = Arc::new(Activity {
            base: Instant::now(),
            millis: AtomicU64::new(0),
        });
        (
            IdleIo {
                stream,
                activity: Arc::clone(&activity),
            },
            activity,
        )
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        poll
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, data);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_fires_only_after_a_full_quiet_interval() {
        let activity = Arc::new(Activity {
            base: Instant::now(),
            millis: AtomicU64::new(0),
        });
        let watchdog = crate::telemetry::spawn_named(
            "test-watchdog",
            idle_watchdog(Arc::clone(&activity), Duration::from_secs(60)),
        );
        tokio::time::advance(Duration::from_secs(50)).await;
        activity.touch();
        tokio::time::advance(Duration::from_secs(50)).await;
        tokio::task::yield_now().await;
        assert!(
            !watchdog.is_finished(),
            "activity at 50 s moved the deadline to 110 s"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        tokio::task::yield_now().await;
        assert!(watchdog.is_finished());
    }
}
