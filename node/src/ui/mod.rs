//! The node's web app (`meshpay run --ui ADDR`): take a payment, today, alerts, wallet, mesh.
//!
//! - **One source of truth**: the pages are small HTML shells and one script that read the
//!   control API's own answers (`GET /api/<query>`, `POST /api/call` with a control
//!   [`Request`]), in the same `{"ok": …, "data": …}` envelope the control socket and `--json`
//!   use; live changes arrive as [`crate::api::Notice`]s on a server-sent event stream.
//! - **Nothing leaves the machine**: every asset is embedded in the binary, and the pages send
//!   a content security policy that allows no other origin.
//! - **Who may use it** ([`access`]): a browser pairs once with a one-time link, then holds an
//!   HttpOnly, SameSite=Strict session; every change carries the session's CSRF token; the
//!   `Host` must be the address served (no DNS rebinding) and an `Origin`, when sent, this
//!   app. A wallet payment above `[ui] confirm_above` needs the PIN or the passphrase.
//! - **Bounded**: the transports crate's accept loop (header and stall timeouts, connections
//!   per source), bodies of at most 16 KiB read within 10 s, a few calls and event streams at
//!   once.

pub mod access;
mod change;
mod export;
mod pages;

use crate::api::{self, ApiError, ErrorKind, Request};
use crate::daemon::Node;
use access::{Access, Session};
use axum::Router;

use axum::extract::{FromRequestParts, Path, Query, Request as HttpRequest, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meshpay_protocol::{PaymentRequest, PrintableKey as _};
use meshpay_transports::http::ServeLimits;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Largest request body.
const MAX_BODY: usize = 16 * 1024;
/// Longest wait for a body.
const BODY_DEADLINE: Duration = Duration::from_secs(10);
/// Calls (`POST /api/call`) at once.
const MAX_CALLS: usize = 8;
/// Event streams at once.
const MAX_STREAMS: usize = 16;
/// Longest text a QR code is drawn for.
const MAX_QR_TEXT: usize = 1024;

/// The policy every answer carries: nothing from or to another origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; media-src 'self' blob:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Why the web app cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UiError {
    /// The address does not parse.
    #[error("--ui {0}: give an address and port, e.g. 127.0.0.1:8080")]
    Address(String),
    /// An unspecified address (0.0.0.0, ::).
    #[error(
        "--ui {0}: give the one address to serve on (127.0.0.1:8080, or this device's LAN address such as 192.168.1.20:8080), not every interface"
    )]
    Unspecified(String),
    /// The port cannot be bound.
    #[error("--ui {addr}: cannot listen: {why}")]
    Bind {
        /// The address.
        addr: String,
        /// What the system said.
        why: std::io::Error,
    },
}

/// The web app's shared state.
struct Ui {
    node: Arc<Node>,
    access: Arc<Access>,
    /// `Host` values that name this app.
    hosts: Vec<String>,
    /// `http` or `https`.
    scheme: &'static str,
    calls: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    /// One PIN or passphrase check at a time.
    checking: tokio::sync::Mutex<()>,
}

/// The running web app: where it is, and a first pairing link.
#[derive(Debug, Clone)]
pub struct Started {
    /// `http://host:port/`.
    pub url: String,
    /// A one-time link that pairs a browser.
    pub pair: api::PairLink,
}

/// Starts serving the web app of `node` on `addr`, over HTTPS with `tls`.
pub async fn start(
    node: Arc<Node>,
    addr: &str,
    tls: Option<meshpay_transports::http::TlsAcceptor>,
) -> Result<Started, UiError> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|_| UiError::Address(addr.to_owned()))?;
    if sock.ip().is_unspecified() {
        return Err(UiError::Unspecified(addr.to_owned()));
    }
    let listener = tokio::net::TcpListener::bind(sock)
        .await
        .map_err(|why| UiError::Bind {
            addr: addr.to_owned(),
            why,
        })?;
    let local = listener.local_addr().map_err(|why| UiError::Bind {
        addr: addr.to_owned(),
        why,
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut names = vec![match local {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }];
    if local.ip().is_loopback() {
        names.push("localhost".to_owned());
    }
    let default_port = if tls.is_some() { 443 } else { 80 };
    let mut hosts = Vec::new();
    for n in &names {
        hosts.push(format!("{n}:{}", local.port()));
        // Browsers leave the scheme's default port out of `Host` and `Origin`.
        if local.port() == default_port {
            hosts.push(n.clone());
        }
    }
    let base = format!("{scheme}://{local}");
    let access = Arc::new(Access::new(base.clone()));
    let _ = node.ui.set(Arc::clone(&access));
    let pair = access.pairing_link();
    let ui = Arc::new(Ui {
        node,
        access,
        hosts,
        scheme,
        calls: Arc::new(Semaphore::new(MAX_CALLS)),
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        checking: tokio::sync::Mutex::new(()),
    });
    // A few devices holding connections open must not lock the vendor out.
    let limits = ServeLimits {
        max_connections: 256,
        max_per_source: 16,
        header_timeout: Duration::from_secs(5),
        ..ServeLimits::default()
    };
    let app = router(ui);
    tokio::spawn(async move {
        let served =
            meshpay_transports::http::serve(listener, app, limits, tls, std::future::pending())
                .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the web app stopped");
        }
    });
    Ok(Started {
        url: format!("{base}/"),
        pair,
    })
}

fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(screen(pages::Screen::Pos)))
        .route("/today", get(screen(pages::Screen::Today)))
        .route("/alerts", get(screen(pages::Screen::Alerts)))
        .route("/wallet", get(screen(pages::Screen::Wallet)))
        .route("/mesh", get(screen(pages::Screen::Mesh)))
        .route("/pair/{code}", get(pair))
        .route("/assets/app.js", get(script))
        .route("/assets/app.css", get(style))
        .route("/api/call", post(change::call))
        .route("/api/decode", get(decode))
        .route("/api/received", get(received))
        .route("/api/{query}", get(query))
        .route("/events", get(events))
        .route("/qr.svg", get(qr))
        .route("/today.csv", get(export::today_csv))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&ui), guard))
        .with_state(ui)
}

/// The handler of a screen's page.
fn screen(
    which: pages::Screen,
) -> impl Fn(State<Arc<Ui>>, HeaderMap) -> std::future::Ready<Response> + Clone {
    move |State(ui), h| std::future::ready(page(&ui, &h, which))
}

/// Every answer: the `Host` must be this app (no DNS rebinding), and carries the security
/// headers.
async fn guard(State(ui): State<Arc<Ui>>, req: HttpRequest, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut r = if ui.hosts.iter().any(|h| h == host) {
        next.run(req).await
    } else {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "this meshpay node serves its web app under another address\n",
        )
            .into_response()
    };
    let h = r.headers_mut();
    meshpay_transports::http::harden(h, CSP);
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(self), microphone=(), geolocation=()"),
    );
    r
}

impl Ui {
    /// The session cookie for `id`, good for [`access::SESSION_IDLE`] from now.
    fn cookie(&self, id: &str) -> Option<HeaderValue> {
        let secure = if self.scheme == "https" {
            "; Secure"
        } else {
            ""
        };
        HeaderValue::from_str(&format!(
            "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
            self.access.cookie,
            access::SESSION_IDLE
        ))
        .ok()
    }

    fn session(&self, h: &HeaderMap) -> Option<Session> {
        let cookie = h.get(header::COOKIE).and_then(|v| v.to_str().ok())?;
        self.access.session(cookie, crate::daemon::now())
    }

    /// The session of a change: paired, with its CSRF token, from this app's origin.
    fn change(&self, h: &HeaderMap) -> Result<Session, ApiError> {
        let refuse = |m: &str| Err(ApiError::new(ErrorKind::Forbidden, m));
        let Some(s) = self.session(h) else {
            return Err(ApiError::new(
                ErrorKind::Unauthorized,
                "this browser is not paired: open the link `meshpay pair` prints",
            ));
        };
        if let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            if !self
                .hosts
                .iter()
                .any(|host| origin == format!("{}://{host}", self.scheme))
            {
                return refuse("a change from another site is refused");
            }
        }
        let token = h
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !Access::csrf_ok(&s, token) {
            return refuse("the CSRF token is missing or wrong: reload the page");
        }
        Ok(s)
    }
}

/// The session of a paired browser; a request without one is answered `401` in the envelope.
struct Paired(Session);

impl FromRequestParts<Arc<Ui>> for Paired {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &Arc<Ui>) -> Result<Self, Response> {
        ui.session(&parts.headers).map(Paired).ok_or_else(|| {
            refuse(
                ErrorKind::Unauthorized,
                "this browser is not paired: open the link `meshpay pair` prints",
            )
        })
    }
}

fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Input => StatusCode::BAD_REQUEST,
        ErrorKind::Pay => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Peer | ErrorKind::Issuer => StatusCode::BAD_GATEWAY,
        ErrorKind::Storage => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Authorize | ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Busy | ErrorKind::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// An error in the control API's envelope.
fn envelope_error(e: &ApiError) -> Response {
    let body = serde_json::json!({"ok": false, "kind": e.kind, "error": e.message});
    (status_of(e.kind), axum::Json(body)).into_response()
}

fn refuse(kind: ErrorKind, message: impl Into<String>) -> Response {
    envelope_error(&ApiError::new(kind, message))
}

fn envelope(result: Result<api::Answer, ApiError>) -> Response {
    match result {
        Ok(a) => axum::Json(serde_json::json!({"ok": true, "data": a})).into_response(),
        Err(e) => envelope_error(&e),
    }
}

fn page(ui: &Ui, h: &HeaderMap, screen: pages::Screen) -> Response {
    let Some(s) = ui.session(h) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            pages::unpaired(),
        )
            .into_response();
    };
    let settings = ui.node.ui_settings();
    let html = pages::render(
        screen,
        &pages::Context {
            csrf: &s.csrf,
            currency: ui.node.currency(),
            confirm_above: settings.confirm_above,
            device: &ui.node.device.to_text(),
        },
    );
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    // A page in use keeps its session: the cookie's life starts again with each page.
    if let Some(c) = ui.cookie(&s.id) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

async fn pair(State(ui): State<Arc<Ui>>, Path(code): Path<String>) -> Response {
    match ui.access.redeem(&code, crate::daemon::now()) {
        Some((id, _)) => {
            // A page, not a redirect: a link opened from another site (a chat, a mail) would
            // be followed cross-site, and the browser would not send the SameSite=Strict
            // cookie along; the page's own refresh is same-site.
            let mut r = (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                pages::paired(),
            )
                .into_response();
            if let Some(c) = ui.cookie(&id) {
                r.headers_mut().insert(header::SET_COOKIE, c);
            }
            r
        }
        None => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            pages::pairing_refused(),
        )
            .into_response(),
    }
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        pages::SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        pages::STYLE,
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such page\n").into_response()
}

/// The queries the web app reads, by name.
fn query_of(name: &str) -> Option<Request> {
    Some(match name {
        "id" => Request::Id,
        "peers" => Request::Peers,
        "balance" => Request::Balance,
        "history" => Request::History,
        "allowances" => Request::Allowances,
        "frauds" => Request::Frauds,
        "alerts" => Request::Alerts,
        "refusals" => Request::Refusals,
        "mesh" => Request::Mesh,
        _ => return None,
    })
}

async fn query(State(ui): State<Arc<Ui>>, _: Paired, Path(name): Path<String>) -> Response {
    let Some(request) = query_of(&name) else {
        return refuse(ErrorKind::Input, format!("no query {name:?}"));
    };
    envelope(run(&ui.node, request).await)
}

async fn run(node: &Node, request: Request) -> Result<api::Answer, ApiError> {
    crate::control::run(node, request)
        .await
        .map_err(|e| crate::control::api_error(&e))
}

/// `?text=`: a payment request's text.
#[derive(Debug, Deserialize)]
struct TextQuery {
    text: String,
}

/// `GET /api/decode?text=`: what a payment request asks for, to show before paying.
async fn decode(_: Paired, Query(q): Query<TextQuery>) -> Response {
    match PaymentRequest::from_text(q.text.trim()) {
        Ok(r) => envelope(Ok(api::Answer::Request(crate::control::request_info(&r)))),
        Err(e) => refuse(ErrorKind::Input, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct NonceQuery {
    nonce: String,
}

/// `GET /api/received?nonce=`: the payments received for the request with this nonce (the
/// till asks after a gap in its event stream).
async fn received(State(ui): State<Arc<Ui>>, _: Paired, Query(q): Query<NonceQuery>) -> Response {
    match crate::control::received(&ui.node).await {
        Ok(items) => envelope(Ok(api::Answer::History(
            items.into_iter().filter(|i| i.nonce == q.nonce).collect(),
        ))),
        Err(e) => envelope_error(&crate::control::api_error(&e)),
    }
}

/// An event stream's hold on its session's and the app's stream counts.
struct StreamHold {
    access: Arc<Access>,
    session: String,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for StreamHold {
    fn drop(&mut self) {
        self.access.close_stream(&self.session);
    }
}

async fn events(State(ui): State<Arc<Ui>>, Paired(session): Paired) -> Response {
    let busy = || {
        let mut r = refuse(ErrorKind::Busy, "too many open event streams");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        r
    };
    let Ok(permit) = ui.streams.clone().try_acquire_owned() else {
        return busy();
    };
    if !ui.access.open_stream(&session.id) {
        return busy();
    }
    let hold = StreamHold {
        access: Arc::clone(&ui.access),
        session: session.id,
        _permit: permit,
    };
    let rx = ui.node.notices.subscribe();
    let stream = futures::stream::unfold((rx, hold), |(mut rx, hold)| async move {
        let next = rx.recv().await;
        // A session that ended (expired, or dropped for a newer one) hears no more.
        if !hold.access.alive(&hold.session, crate::daemon::now()) {
            return None;
        }
        let ev = match next {
            Ok(n) => Event::default().data(serde_json::to_string(&n).unwrap_or_default()),
            // A slow page missed notices: it is told to read its data again.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                Event::default().event("resync").data("{}")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(ev), (rx, hold)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn qr(_: Paired, Query(q): Query<TextQuery>) -> Response {
    if q.text.len() > MAX_QR_TEXT {
        return (StatusCode::BAD_REQUEST, "text too long for a QR code").into_response();
    }
    match crate::qr::svg(&q.text) {
        Some(svg) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        None => (StatusCode::BAD_REQUEST, "no QR code for this text").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_web_apps_queries_are_served() {
        assert!(matches!(query_of("history"), Some(Request::History)));
        assert!(query_of("records").is_none());
        assert!(query_of("export").is_none());
    }
}
