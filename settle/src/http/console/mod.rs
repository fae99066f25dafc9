//! The issuer console at `/console`: web pages for the issuer's staff over the same functions
//! and types as the admin API, behind a sign-in with the admin token.
//!
//! - **Signing in**: `GET /console/login` is a form; `POST /console/login` (form-encoded
//!   `token=…`) compares the token with the admin token in constant time and, if it matches,
//!   sets the session cookie `mp_console` (32 random bytes in hex; `HttpOnly`,
//!   `SameSite=Strict`, `Path=/console`, `Secure` over HTTPS) and answers `303` to `/console`.
//!   The token never travels in a URL. Failed logins are limited per source address
//!   ([`session`]).
//! - **Without a session**, a page answers `303` to the login page; JSON, the event stream and
//!   every `POST` answer `401` with the usual error body (`code: unauthorized`).
//! - **Changes** (`POST`, but the login) must carry the session's CSRF token (in every page's
//!   `<meta name="csrf-token">`) in `X-CSRF-Token`, and an `Origin`, if present, must match
//!   `Host`; otherwise `403` (`code: forbidden`). The console's script sends them.
//! - **Everything here is embedded** in the binary (`include_str!`): two assets,
//!   `/console/assets/console.css` and `/console/assets/console.js`, and server-rendered
//!   pages. Every answer carries a strict Content-Security-Policy (no inline script or style,
//!   nothing from another origin), `X-Content-Type-Options: nosniff`, `Referrer-Policy:
//!   no-referrer`, `X-Frame-Options: DENY`, and pages and JSON `Cache-Control: no-store`.
//! - **Live**: `GET /console/events` streams the live feed ([`crate::live`]) as server-sent
//!   events, at most [`MAX_STREAMS`] at once, with a keep-alive comment every 15 s; a stream
//!   ends once its session is signed out or expires.
//!
//! The console's JSON (`/console/api/…`) answers with the admin API's types: statement,
//! reconciliation, [`crate::risk::RiskReport`], [`crate::exposure::Exposure`].

mod api;
mod html;
mod pages;
pub mod session;

use super::{ApiError, AppState, BODY_DEADLINE, MAX_SMALL_BODY, is_admin_token};
use crate::httpd;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use session::{Sessions, Throttle, random_token, same};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "mp_console";
/// Event streams open at once at most.
pub const MAX_STREAMS: usize = 16;
/// The Content-Security-Policy of every console answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'";

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// The console's state: sessions, failed logins, open event streams.
#[derive(Debug, Default)]
pub(crate) struct Console {
    sessions: Mutex<Sessions>,
    throttle: Mutex<Throttle>,
    streams: Arc<AtomicUsize>,
    /// Woken by each sign-out, so its event streams end at once.
    logouts: tokio::sync::Notify,
    secure: bool,
}

impl Console {
    /// A console whose cookies are `Secure` if `secure` (the server speaks HTTPS).
    pub(crate) fn new(secure: bool) -> Self {
        Self {
            secure,
            ..Self::default()
        }
    }

    /// Counts an attempt with a token not yet known to be right from `source` at `now`: how
    /// long it must wait instead, if it failed too often lately ([`Throttle::attempt`]).
    pub(crate) fn attempt(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        self.throttle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .attempt(source, now)
    }

    /// The session token and CSRF token of the request's session, if it has a live one.
    fn session(&self, h: &HeaderMap) -> Option<(String, String)> {
        let token = cookie(h)?;
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .find(token, Instant::now())
            .map(|s| (token.to_owned(), s.csrf.clone()))
    }
}

/// The value of the session cookie, if the request carries it.
fn cookie(h: &HeaderMap) -> Option<&str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// Whether a request's `Origin`, if it has one, is its own `Host`. `Origin: null` is what a
/// browser sends for a plain form post from a page under `Referrer-Policy: no-referrer` (the
/// login form): `null_ok` lets it through there. The console's script posts with `fetch`,
/// which sends the page's real origin, so changes never need it.
fn same_origin(h: &HeaderMap, null_ok: bool) -> bool {
    let Some(origin) = h.get(header::ORIGIN) else {
        return true;
    };
    if null_ok && origin.as_bytes() == b"null" {
        return true;
    }
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, a)| a.trim_end_matches('/'));
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

fn unauthorized() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "sign in to the console first (POST /console/login)",
    )
    .into_response()
}

fn forbidden(message: &str) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// A page's session: pages without one redirect to the login page.
pub(super) struct PageSession {
    /// The CSRF token the page carries.
    csrf: String,
}

impl FromRequestParts<AppState> for PageSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        match s.console.session(&parts.headers) {
            Some((_, csrf)) => Ok(Self { csrf }),
            None => Err(see_other("/console/login")),
        }
    }
}

/// A JSON read's session: without one, `401`.
pub(super) struct ApiSession;

impl FromRequestParts<AppState> for ApiSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        match s.console.session(&parts.headers) {
            Some(_) => Ok(Self),
            None => Err(unauthorized()),
        }
    }
}

/// A change's session: `401` without one, `403` from another origin or without the CSRF
/// token.
pub(super) struct ChangeSession {
    token: String,
}

impl FromRequestParts<AppState> for ChangeSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        let Some((token, csrf)) = s.console.session(&parts.headers) else {
            return Err(unauthorized());
        };
        if !same_origin(&parts.headers, false) {
            return Err(forbidden("the request comes from another origin"));
        }
        let given = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same(&csrf, given) {
            return Err(forbidden(
                "X-CSRF-Token is missing or wrong: send the token of the page's csrf-token meta tag",
            ));
        }
        Ok(Self { token })
    }
}

/// The console's routes (all under `/console`), with their security headers.
pub(super) fn router(state: AppState) -> Router {
    Router::new()
        .route("/console", get(pages::overview))
        .route("/console/", get(|| async { see_other("/console") }))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/accounts", get(pages::accounts))
        .route("/console/accounts/confirm", get(pages::confirm))
        .route("/console/settlement", get(pages::settlement))
        .route("/console/risk", get(pages::risk))
        .route("/console/exposure", get(pages::exposure))
        .route("/console/events", get(events))
        .route("/console/api/risk", get(api::risk))
        .route("/console/api/exposure", get(api::exposure))
        .route("/console/api/reconciliation", get(api::reconciliation))
        .route("/console/api/refusals", get(api::refusals))
        .route("/console/api/feed", get(api::feed))
        .route("/console/api/accounts", post(api::open_account))
        .route("/console/api/accounts/{device}", get(api::statement))
        .route("/console/api/accounts/{device}/credit", post(api::credit))
        .route("/console/api/accounts/{device}/debit", post(api::debit))
        .route("/console/assets/console.js", get(script))
        .route("/console/assets/console.css", get(style))
        .with_state(state)
        .layer(axum::middleware::map_response(harden))
}

/// Adds the security headers to every console answer; pages and JSON are never stored.
async fn harden(mut res: Response) -> Response {
    meshpay_transports::http::harden(res.headers_mut(), CSP);
    res
}

/// An HTML answer.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The value of field `name` in a form-encoded body (`application/x-www-form-urlencoded`).
fn form_field(body: &[u8], name: &str) -> Option<String> {
    fn decode(part: &[u8]) -> Option<String> {
        let mut out = Vec::with_capacity(part.len());
        let mut k = 0;
        while k < part.len() {
            match part[k] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = part.get(k + 1..k + 3)?;
                    out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                    k += 2;
                }
                b => out.push(b),
            }
            k += 1;
        }
        String::from_utf8(out).ok()
    }
    body.split(|b| *b == b'&').find_map(|pair| {
        let eq = pair.iter().position(|b| *b == b'=').unwrap_or(pair.len());
        let (key, value) = (&pair[..eq], pair.get(eq + 1..).unwrap_or_default());
        (decode(key)? == name).then(|| decode(value)).flatten()
    })
}

fn login_form(message: Option<&str>) -> String {
    let message = message.map_or_else(String::new, |m| {
        format!(
            "<p id=\"login-error\" class=\"error\" role=\"alert\">{}</p>",
            html::esc(m)
        )
    });
    let main = format!(
        "<p>Sign in with the server's admin token ($MESHPAY_ADMIN_TOKEN).</p>{message}<form class=\"login\" method=\"post\" action=\"/console/login\"><label for=\"token\">Admin token</label><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus><button type=\"submit\" id=\"login\">Sign in</button></form>"
    );
    html::page("Sign in", html::Nav::None, None, &main)
}

/// The login form (or, already signed in, the overview).
async fn login_page(State(s): State<AppState>, h: HeaderMap) -> Response {
    if s.console.session(&h).is_some() {
        return see_other("/console");
    }
    html(StatusCode::OK, login_form(None))
}

/// Signs in with the admin token.
async fn login(State(s): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    if !same_origin(h, true) {
        return html(
            StatusCode::FORBIDDEN,
            login_form(Some("This sign-in came from another site and was refused.")),
        );
    }
    let source = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| {
            httpd::source_of(&c.0)
        });
    let now = Instant::now();
    let wait = s.console.attempt(source, now);
    if let Some(wait) = wait {
        httpd::drain(body, MAX_SMALL_BODY, Duration::from_secs(5)).await;
        let secs = wait.as_secs().max(1);
        let mut r = html(
            StatusCode::TOO_MANY_REQUESTS,
            login_form(Some(&format!(
                "Too many wrong tokens from this address. Try again in {secs} seconds."
            ))),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    let body = match httpd::read_body(body, MAX_SMALL_BODY, BODY_DEADLINE).await {
        Ok(b) => b,
        Err(e) => {
            return html(
                StatusCode::BAD_REQUEST,
                login_form(Some(&format!("The form did not arrive: {e}."))),
            );
        }
    };
    let given = form_field(&body, "token").unwrap_or_default();
    // The attempt was counted as a failure before the comparison; a correct token forgives it.
    if !is_admin_token(&s, &given) {
        return html(
            StatusCode::UNAUTHORIZED,
            login_form(Some("That is not the admin token. Check it and try again.")),
        );
    }
    s.console
        .throttle
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear(source);
    let token = random_token();
    s.console
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .open(token.clone(), random_token(), now);
    let secure = s.console.secure
        || h.get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={}{}",
        session::SESSION_LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut r = see_other("/console");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Signs out: the session ends and its cookie is cleared.
async fn logout(State(s): State<AppState>, session: ChangeSession) -> Response {
    s.console
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .close(&session.token);
    s.console.logouts.notify_waiters();
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0"),
        )],
    )
        .into_response()
}

/// A place among the open event streams, given back when the stream ends.
struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(open: &Arc<AtomicUsize>) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_STREAMS).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(Arc::clone(open)))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An open event stream: what it listens to, and whose session it serves.
struct Stream {
    rx: tokio::sync::broadcast::Receiver<Arc<crate::live::LiveEvent>>,
    closing: tokio::sync::watch::Receiver<bool>,
    _slot: StreamSlot,
    tick: tokio::time::Interval,
    console: Arc<Console>,
    token: String,
}

impl Stream {
    /// Whether its session still stands (not signed out, not expired).
    fn signed_in(&self) -> bool {
        self.console
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .find(&self.token, Instant::now())
            .is_some()
    }
}

/// How often an idle event stream checks that its session still stands.
const SESSION_CHECK: Duration = Duration::from_secs(15);

/// The live feed as server-sent events: each event's `data` is one JSON [`crate::live::LiveEvent`].
/// A stream that falls behind skips what it missed; all end when the server stops, and each
/// ends once its session is signed out or expires (checked before each event and every 15 s).
async fn events(State(s): State<AppState>, h: HeaderMap, _: ApiSession) -> Response {
    let Some(token) = cookie(&h).map(str::to_owned) else {
        return unauthorized();
    };
    let Some(slot) = StreamSlot::take(&s.console.streams) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many console event streams are open",
        )
        .retry(Duration::from_secs(10))
        .into_response();
    };
    let mut tick = tokio::time::interval(SESSION_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Stream {
        rx: s.server.live.subscribe(),
        closing: s.server.live.closing(),
        _slot: slot,
        tick,
        console: Arc::clone(&s.console),
        token,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            // Listening for sign-outs before checking the session, so none is missed.
            let console = Arc::clone(&st.console);
            let logout = console.logouts.notified();
            tokio::pin!(logout);
            logout.as_mut().enable();
            if *st.closing.borrow() || !st.signed_in() {
                return None;
            }
            tokio::select! {
                got = st.rx.recv() => match got {
                    Ok(e) => {
                        if !st.signed_in() {
                            return None;
                        }
                        let Ok(event) = Event::default().json_data(&*e) else { continue };
                        return Some((Ok::<_, Infallible>(event), st));
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                },
                changed = st.closing.changed() => if changed.is_err() { return None },
                () = &mut logout => {}
                _ = st.tick.tick() => {}
            }
        }
    });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// An embedded asset, revalidated by its ETag.
fn asset(h: &HeaderMap, body: &'static str, kind: &'static str, tag: &str) -> Response {
    let matches = h
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let headers = [
        (header::ETAG, tag.to_owned()),
        (header::CACHE_CONTROL, "no-cache".to_owned()),
    ];
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, [(header::CONTENT_TYPE, kind)], body).into_response()
}

fn etag(body: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    // SipHash with fixed keys: the same tag for the same bytes in every run of one build.
    let mut h = std::hash::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

static SCRIPT_TAG: LazyLock<String> = LazyLock::new(|| etag(SCRIPT));
static STYLE_TAG: LazyLock<String> = LazyLock::new(|| etag(STYLE));

async fn script(h: HeaderMap) -> Response {
    asset(&h, SCRIPT, "text/javascript; charset=utf-8", &SCRIPT_TAG)
}

async fn style(h: HeaderMap) -> Response {
    asset(&h, STYLE, "text/css; charset=utf-8", &STYLE_TAG)
}

/// What the console's answers weigh: the assets' sizes in bytes (script, style).
pub fn asset_sizes() -> (usize, usize) {
    (SCRIPT.len(), STYLE.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_decode() {
        assert_eq!(
            form_field(b"a=1&token=se%20cr+et%21&b", "token").as_deref(),
            Some("se cr et!")
        );
        assert_eq!(form_field(b"token=", "token").as_deref(), Some(""));
        assert_eq!(form_field(b"tok=x", "token"), None);
        assert_eq!(form_field(b"token=%zz", "token"), None);
        assert_eq!(form_field(b"token=%4", "token"), None);
    }

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; mp_console=abc ; c=d"),
        );
        assert_eq!(cookie(&h), Some("abc"));
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h, false));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h, false));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h, false));
        assert!(!same_origin(&h, true));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h, false));
        assert!(same_origin(&h, true));
    }

    #[test]
    fn assets_are_small_and_need_nothing_from_elsewhere() {
        let (script, style) = asset_sizes();
        assert!(script < 20_000 && style < 20_000, "{script} {style}");
        for text in [SCRIPT, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("@import"));
        }
        assert!(!SCRIPT.contains("innerHTML"), "text only, never markup");
    }
}
