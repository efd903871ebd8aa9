//! The connection loop: accepts TCP connections and serves HTTP/1.1 and HTTP/2 (h2c) on them
//! with hyper, under the limits a public edge needs.
//!
//! `axum::serve` runs hyper without a timer, so even hyper's header timeout is off there and a
//! client that sends half a request head holds its connection for ever; it also caps nothing.
//! Here, for every connection:
//! - at most `SPARK_MAX_CONNECTIONS` are open at once; past that the loop stops accepting and new
//!   connections wait in the kernel's accept backlog, so a flood cannot grow memory;
//! - request heads must arrive within `SPARK_HEADER_READ_TIMEOUT` (hyper starts that timer again
//!   whenever an HTTP/1.1 connection waits for its next request), and so must a new connection's
//!   first bytes, from which the protocol is read without taking them off the socket (`sniff`:
//!   the preface of HTTP/2 with prior knowledge, or HTTP/1.1); over TLS, ALPN decides;
//! - a connection with no bytes either way for `SPARK_IDLE_TIMEOUT` is closed (HTTP/2 included);
//! - HTTP/2 pings a quiet peer, and caps concurrent streams per connection;
//! - `TCP_NODELAY` is set, so an SSE event written in pieces is not held back ~40 ms by Nagle's
//!   algorithm waiting for a delayed ACK;
//! - with native TLS (`super::tls`) the handshake runs in the connection's own task and must
//!   finish within the header timeout, so a client that stalls mid-handshake holds only its own
//!   connection slot, and for no longer than a half-sent request head would;
//! - on shutdown the loop stops accepting, idle connections close (and those still in their TLS
//!   handshake or before their first bytes), and the loop returns once every in-flight response
//!   has finished (the caller bounds that wait with the grace period).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
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
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(MAX_REQUEST_HEAD as u32)
        .keep_alive_interval(Some(limits.h2_keepalive))
        .keep_alive_timeout(limits.h2_keepalive)
        .max_concurrent_streams(limits.h2_max_streams);
    let builders = Arc::new(Builders { h1, h2 });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Set on shutdown for connections hyper does not have yet (reading their first bytes, or in
    // the TLS handshake): the graceful watcher reaches only those it serves.
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
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
        let service = Handler {
            router: router.clone(),
            peer,
            secure: tls.is_some(),
        };
        let builders = Arc::clone(&builders);
        let watcher = graceful.watcher();
        let idle = limits.idle_timeout;
        let opening = Opening {
            timeout: limits.header_read_timeout,
            closing: closing.clone(),
        };
        let tls = tls.clone();
        crate::telemetry::spawn_named("connection", async move {
            let served = async {
                match tls {
                    None => serve_plain(io, service, &builders, watcher, opening).await,
                    // Boxed: the handshake's state is large, and only HTTPS connections should
                    // carry it in their task.
                    Some(acceptor) => {
                        Box::pin(serve_tls(
                            acceptor, io, service, &builders, watcher, opening,
                        ))
                        .await
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
    let _ = closing_tx.send(true);
    graceful.shutdown().await;
    Ok(())
}

/// The bound on a request head (request line and headers): 32 KiB, as nginx's default, room for
/// an identity provider's JWT with many groups. HTTP/2 refuses a header list past it. For
/// HTTP/1.1 it is hyper's read-buffer bound, checked between reads: a head up to 32 KiB is always
/// served, one past 64 KiB always answered 431 and the connection closed (in between, it depends
/// on how the bytes arrive). Without it hyper lets one connection's read buffer grow to ~400 KiB
/// for a head; HTTP/2's default was 16 KiB. Bodies stream through that buffer, unaffected.
const MAX_REQUEST_HEAD: usize = 32 * 1024;

/// hyper's two protocol builders, configured once and shared by every connection.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// What an HTTP/2 client without TLS sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long to wait before looking again at a connection whose first bytes are the start of the
/// HTTP/2 preface and no more.
const SNIFF_RETRY: Duration = Duration::from_millis(5);

/// The protocol the first bytes of a connection announce: HTTP/2 once the whole preface is
/// there, HTTP/1.1 as soon as a byte differs from it (or the peer closed without a byte, which
/// hyper's HTTP/1.1 side ends quietly), `None` while what arrived is the start of the preface.
fn protocol_of(first: &[u8]) -> Option<Protocol> {
    let n = first.len().min(H2_PREFACE.len());
    if first.is_empty() || first[..n] != H2_PREFACE[..n] {
        Some(Protocol::Http1)
    } else if n == H2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// Reads which protocol a cleartext connection speaks without taking its bytes off the socket.
///
/// hyper-util's `auto` builder answers this by reading the first 24 bytes itself and handing them
/// back to hyper in front of the socket; hyper's first read then returns only those bytes, and
/// its next read, wanting 8 KiB more in an 8 KiB buffer that now holds them, doubled the buffer:
/// every HTTP/1.1 connection held a 16 KiB read buffer for its whole life instead of 8 KiB
/// (heaptrack, BENCHMARKS.md). Peeking leaves the bytes where hyper reads them first.
async fn sniff(stream: &TcpStream) -> std::io::Result<Protocol> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await?;
        if let Some(protocol) = protocol_of(first.get(..n).unwrap_or(&first)) {
            return Ok(protocol);
        }
        // Part of the preface and nothing more yet: `peek` answers at once while those bytes wait
        // unread, so look again a little later. Real clients send the preface in one segment;
        // a client that stalls inside it is ended by the header timeout around this.
        tokio::time::sleep(SNIFF_RETRY).await;
    }
}

/// What serves each request of a connection: the router, with what
/// `into_make_service_with_connect_info` would add (the limiter and the brute-force brake read
/// the peer address) and whether the request came over TLS.
struct Handler {
    router: Router,
    peer: SocketAddr,
    secure: bool,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Handler {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = tower::util::Oneshot<Router, axum::extract::Request>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        if self.secure {
            req.extensions_mut().insert(super::tls::Secure);
        }
        self.router.clone().oneshot(req)
    }
}

/// A cleartext connection: the protocol read from its first bytes (within the header timeout),
/// then served.
async fn serve_plain(
    io: IdleIo,
    service: Handler,
    builders: &Builders,
    watcher: Watcher,
    mut opening: Opening,
) -> Result<(), hyper::Error> {
    let Some(protocol) = opening
        .step(service.peer, "reading the protocol", sniff(&io.stream))
        .await
    else {
        return Ok(());
    };
    serve(protocol, TokioIo::new(io), service, builders, watcher).await
}

/// An HTTPS connection: the handshake (within the header timeout), then the protocol ALPN chose.
/// HTTP/2 over TLS is negotiated, never sniffed (RFC 9113, section 3.2): a client that offered
/// no protocol speaks HTTP/1.1.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    io: IdleIo,
    service: Handler,
    builders: &Builders,
    watcher: Watcher,
    mut opening: Opening,
) -> Result<(), hyper::Error> {
    let Some(stream) = opening
        .step(service.peer, "TLS handshake", acceptor.accept(io))
        .await
    else {
        return Ok(());
    };
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    serve(protocol, TokioIo::new(stream), service, builders, watcher).await
}

/// What a connection does before hyper takes it (the TLS handshake, reading the protocol) is
/// bounded by the header timeout and ended by shutdown.
struct Opening {
    timeout: Duration,
    /// Becomes `true` when the server shuts down.
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Opening {
    /// `step`'s result, or `None` when it failed, took longer than the timeout, or the server
    /// began shutting down first (logged at debug: a client going away is routine).
    async fn step<T>(
        &mut self,
        peer: SocketAddr,
        what: &'static str,
        step: impl Future<Output = std::io::Result<T>>,
    ) -> Option<T> {
        tokio::select! {
            done = tokio::time::timeout(self.timeout, step) => match done {
                Ok(Ok(value)) => Some(value),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "{what} failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "{what} timed out");
                    None
                }
            },
            // A closed channel means the server is gone: stop as well.
            _ = self.closing.wait_for(|closing| *closing) => {
                tracing::debug!(%peer, "{what} stopped: shutting down");
                None
            }
        }
    }
}

/// Serves `io` with hyper's builder for `protocol`, shut down gracefully with the server.
async fn serve<I>(
    protocol: Protocol,
    io: TokioIo<I>,
    service: Handler,
    builders: &Builders,
    watcher: Watcher,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http1 => {
            watcher
                .watch(builders.h1.serve_connection(io, service))
                .await
        }
        Protocol::Http2 => {
            watcher
                .watch(builders.h2.serve_connection(io, service))
                .await
        }
    }
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

    #[test]
    fn the_first_bytes_name_the_protocol() {
        assert_eq!(protocol_of(b""), Some(Protocol::Http1), "closed at once");
        assert_eq!(
            protocol_of(b"GET /livez HTTP/1.1\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(protocol_of(b"P"), None);
        assert_eq!(protocol_of(b"POST / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(protocol_of(H2_PREFACE), Some(Protocol::Http2));
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(&[0, 0, 18, 4]);
        assert_eq!(
            protocol_of(&more),
            Some(Protocol::Http2),
            "the first frame follows"
        );
        assert_eq!(
            protocol_of(b"PRI * HTTP/2.0\r\n\r\nSX"),
            Some(Protocol::Http1)
        );
    }

    /// A connected pair of TCP streams on 127.0.0.1: (client, server).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn sniffing_leaves_the_bytes_for_hyper_to_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, mut server) = pair().await;
        client
            .write_all(b"GET /livez HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(sniff(&server).await.unwrap(), Protocol::Http1);
        let mut head = [0u8; 3];
        server.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"GET", "the first bytes are still on the socket");
    }

    #[tokio::test]
    async fn a_preface_sent_in_pieces_is_waited_for() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = pair().await;
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let sniffing =
            crate::telemetry::spawn_named(
                "test-sniff",
                async move { sniff(&server).await.unwrap() },
            );
        tokio::time::sleep(SNIFF_RETRY * 4).await;
        assert!(!sniffing.is_finished(), "decided on a part of the preface");
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        assert_eq!(sniffing.await.unwrap(), Protocol::Http2);
    }

    #[tokio::test]
    async fn shutdown_does_not_wait_for_a_connection_that_never_sent_a_byte() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let limits = ServerLimits {
            header_read_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
            max_connections: 8,
            h2_max_streams: 8,
            h2_keepalive: Duration::from_secs(120),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = crate::telemetry::spawn_named(
            "test-server",
            run(listener, Router::new(), limits, None, async {
                let _ = stopped.await;
            }),
        );
        let _silent = TcpStream::connect(at).await.unwrap();
        // Let the loop accept it and start reading its first bytes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        // Far inside the two-minute header timeout the silent connection would otherwise hold.
        let ended = tokio::time::timeout(Duration::from_secs(10), server).await;
        assert!(
            ended.is_ok(),
            "shutdown waited for a connection that never spoke"
        );
    }

    #[tokio::test]
    async fn a_peer_that_closes_without_a_byte_is_read_as_http1() {
        let (client, server) = pair().await;
        drop(client);
        assert_eq!(sniff(&server).await.unwrap(), Protocol::Http1);
    }
}
