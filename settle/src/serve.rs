//! Running the server: its HTTP API on a listener, and the escrow release every few seconds,
//! until shut down. `meshpay settle serve` parses its options into this.

use crate::http::{self, AppState, UploadLimits};
use crate::httpd::{self, ServeLimits};
use crate::server::Server;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How the server runs.
#[derive(Clone)]
pub struct Options {
    /// The admin bearer token.
    pub admin_token: String,
    /// Connection limits and timeouts.
    pub limits: ServeLimits,
    /// Uploads read, queued and judged at once.
    pub uploads: UploadLimits,
    /// Time between escrow releases.
    pub release_every: Duration,
    /// Serve HTTPS with this acceptor.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves `server` on `listener` until `shutdown` completes, releasing expired escrow every
/// [`Options::release_every`]; then closes the database.
pub async fn run(
    server: Arc<Server>,
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = http::router(
        AppState::new(Arc::clone(&server), options.admin_token, &options.uploads)
            .with_secure_cookies(options.tls.is_some()),
    );
    let releaser = {
        let server = Arc::clone(&server);
        let every = options.release_every.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = server.release_expired().await {
                    tracing::error!(error = %e, "escrow release failed");
                }
            }
        })
    };
    // The console's event streams never end by themselves: end them when shutting down, so
    // the connections they hold close at once.
    let shutdown = {
        let server = Arc::clone(&server);
        async move {
            shutdown.await;
            server.live.close();
        }
    };
    let served = httpd::serve(listener, app, options.limits, options.tls, shutdown).await;
    releaser.abort();
    server.db.close().await;
    served
}
