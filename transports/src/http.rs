//! Serving HTTP to strangers (the settlement server, the node's web app): an accept loop with
//! limits on what each connection and each source address may hold, in the habits of hyper
//! and tower (limits as layers, timeouts on every read).
//!
//! - **Connections**: at most [`ServeLimits::max_connections`] at once (never more than the
//!   process's open-file limit allows, with room left for the database), and at most
//!   [`ServeLimits::max_per_source`] from one address. A connection over a cap is accepted and
//!   closed at once, so it neither waits in the kernel's queue nor holds a file.
//! - **Headers**: a request's head must arrive within [`ServeLimits::header_timeout`] of the
//!   connection opening or of the previous answer (the keep-alive idle time is the same
//!   bound); a slow client is disconnected, not waited for.
//! - **Stalls**: a connection whose answer makes no progress for
//!   [`ServeLimits::stall_timeout`] is closed (a client that stops reading its answer).
//!   Reads need no such timer: heads have the header timeout, bodies the routes' deadlines,
//!   and hyper keeps a read pending while a handler works, which must not count as a stall.
//! - **TLS**: the handshake must end within the header timeout.
//!
//! Bodies are read by the routes themselves, each with its own size limit and deadline
//! ([`read_body`]).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// Limits of a server.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one address.
    pub max_per_source: usize,
    /// Longest wait for a request's head (and for the TLS handshake).
    pub header_timeout: Duration,
    /// Longest time an answer may make no progress being written.
    pub stall_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_per_source: 64,
            header_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Files kept free for everything else the process opens (database files, logs, sockets to
/// PostgreSQL).
const FILES_KEPT_FREE: usize = 64;

/// The process's soft limit on open files, from `/proc/self/limits` (Linux), if known.
pub fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return Some(usize::MAX);
    }
    soft.parse().ok()
}

impl ServeLimits {
    /// The connection cap that fits the open-file limit.
    pub fn effective_max_connections(&self) -> usize {
        let files = open_file_limit().unwrap_or(1024);
        self.max_connections
            .min(files.saturating_sub(FILES_KEPT_FREE))
            .max(1)
    }
}

/// A count of things open (connections, uploads), in all and per source address, with a cap
/// on each.
#[derive(Debug)]
pub struct Gate {
    max: usize,
    per_source: usize,
    open: Mutex<(usize, BTreeMap<IpAddr, usize>)>,
}

/// A place taken in a [`Gate`], given back when dropped.
#[derive(Debug)]
pub struct Slot {
    tally: Arc<Gate>,
    source: IpAddr,
}

impl Gate {
    /// A gate for at most `max` things open, `per_source` of them from one address.
    pub fn new(max: usize, per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            per_source: per_source.max(1),
            open: Mutex::new((0, BTreeMap::new())),
        })
    }

    /// Takes a place for `source`, unless a cap is reached.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Option<Slot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let from = open.1.get(&source).copied().unwrap_or(0);
        if open.0 >= self.max || from >= self.per_source {
            return None;
        }
        open.0 += 1;
        open.1.insert(source, from + 1);
        Some(Slot {
            tally: Arc::clone(self),
            source,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .tally
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.source);
            }
        }
    }
}

/// Adds the headers every page of a web face carries: the content security policy `csp`, no
/// MIME sniffing, no referrer, no framing, and (unless the answer set its own) no caching.
pub fn harden(h: &mut axum::http::HeaderMap, csp: &'static str) {
    use axum::http::{HeaderValue, header};
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// The source a connection counts against: its IPv4 address (without IPv4-mapped IPv6
/// disguise) or its IPv6 /64 network.
pub fn source_of(addr: &SocketAddr) -> IpAddr {
    crate::source_group(addr.ip())
}

/// Serves `app` on `listener` (over TLS with `tls`) within `limits` until `shutdown`
/// completes, then lets open requests finish for up to ten seconds. Routes can read the
/// peer's address with axum's `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let tally = Gate::new(limits.effective_max_connections(), limits.max_per_source);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of files (or a connection reset while queued): wait a moment rather
                    // than spin; connections that end free what is needed.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = tally.admit(source_of(&peer)) else {
            tracing::debug!(%peer, "connection over the cap: closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = Stalling::new(stream, limits.stall_timeout);
            match tls {
                None => connection(stream, peer, app, &limits, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => connection(s, peer, app, &limits, watcher).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake too slow"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after 10 s; closing them");
    }
    Ok(())
}

async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    limits: &ServeLimits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req.map(Body::new))
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// A stream whose writes fail with `TimedOut` once one has waited `limit` with no progress.
struct Stalling<S> {
    inner: S,
    limit: Duration,
    write_since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Stalling<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            write_since: None,
        }
    }
}

fn stalled(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
) -> bool {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    sleep.as_mut().poll(cx).is_ready()
}

fn stall_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no progress on the connection")
}

/// Passes a poll's result through, failing it once `timer` (armed at the first `Pending`,
/// cleared on progress) has run `limit` without progress.
fn watch<T>(
    poll: Poll<io::Result<T>>,
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    match poll {
        Poll::Pending if stalled(timer, limit, cx) => Poll::Ready(Err(stall_error())),
        Poll::Pending => Poll::Pending,
        ready @ Poll::Ready(_) => {
            *timer = None;
            ready
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stalling<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stalling<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        watch(poll, &mut this.write_since, this.limit, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        watch(poll, &mut this.write_since, this.limit, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over the route's limit.
    #[error("the body is over the limit of {0} bytes for this route")]
    TooLarge(usize),
    /// Not all of it came within the deadline.
    #[error("the body did not arrive within {0} seconds")]
    Slow(u64),
    /// The connection broke.
    #[error("the body could not be read: {0}")]
    Broken(String),
}

/// Reads and drops a request body of at most `limit` bytes within `deadline`, before an early
/// refusal: a client still sending its body when the answer comes would otherwise see its
/// connection reset instead of the answer. A body over the limit or the deadline is left
/// (the connection then closes with the answer).
pub async fn drain(body: Body, limit: usize, deadline: Duration) {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut seen = 0usize;
    let _ = tokio::time::timeout(deadline, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += data.len();
                if seen > limit {
                    break;
                }
            }
        }
    })
    .await;
}

/// Reads a request body of at most `limit` bytes within `deadline`.
pub async fn read_body(body: Body, limit: usize, deadline: Duration) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(BodyError::Slow(deadline.as_secs())),
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let text = e.to_string();
            // axum reports an over-long body as a length-limit error in its source chain.
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            while let Some(s) = source {
                if s.to_string().contains("length limit") {
                    return Err(BodyError::TooLarge(limit));
                }
                source = s.source();
            }
            Err(BodyError::Broken(text))
        }
    }
}

/// Why a TLS certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file cannot be read, or holds no valid PEM certificate.
    #[error("cannot read a certificate from {path}: {reason}")]
    Certificate {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file cannot be read, or holds no private key.
    #[error("cannot read a private key from {path}: {reason}")]
    Key {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (the key does not match the certificate, or an unsupported
    /// algorithm).
    #[error("the certificate and the key do not match: {0}")]
    Config(#[from] rustls::Error),
}

pub use tokio_rustls::TlsAcceptor;

/// Loads a certificate chain and its key from PEM files into a TLS acceptor.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_error = |reason: String| TlsError::Certificate {
        path: cert.to_owned(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(format!("no valid PEM certificate ({e})")))?;
    if certs.is_empty() {
        return Err(cert_error("no certificate in it".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
