//! The settlement server's HTTP API (axum). CBOR for wallets and bulk uploads, JSON for humans
//! and debugging. Every route is declared with its OpenAPI description next to its handler
//! (utoipa), and the router is built from those declarations, so `GET /openapi.json` lists
//! exactly the routes served. `docs/api.md` is the prose reference.
//!
//! Limits: each route reads its body itself, with its own size limit and a deadline; uploads
//! are admitted a few at a time per source and judged a few at a time in all (the rest wait
//! in a short queue, or get `503` with `Retry-After`); a source whose uploads do not open
//! gets `429` with `Retry-After` ([`crate::JunkBudget`]).
//!
//! The routes are grouped by who calls them: [`wallet`], [`gateway`], [`admin`] and [`ops`];
//! [`console`] is the issuer's staff's web console over the same functions (HTML pages, and
//! JSON behind a session instead of the bearer token; not in the OpenAPI document).

pub mod admin;
pub mod console;
pub mod gateway;
pub mod ops;
pub mod wallet;

use crate::error::{ErrorKind, ServerError};
use crate::httpd::{self, BodyError, Gate};
use crate::server::Server;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use meshpay_protocol::{DeviceKey, PrintableKey as _};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest upload body (a record batch).
pub const MAX_BODY: usize = 2 * 1024 * 1024;
/// Largest body of every other route.
pub const MAX_SMALL_BODY: usize = 16 * 1024;
/// Longest wait for a whole request body.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);

/// How many uploads may be read, queued and judged at once.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// Uploads being read or waiting to be judged, in all.
    pub in_flight: usize,
    /// … and from one address.
    pub in_flight_per_source: usize,
    /// Uploads judged at once (the CPU pool and the database's writer).
    pub judged: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            in_flight: 32,
            in_flight_per_source: 4,
            judged: 2,
        }
    }
}

/// Shared state of the routes.
#[derive(Clone)]
pub struct AppState {
    /// The server.
    pub server: Arc<Server>,
    /// The admin bearer token.
    pub admin_token: Arc<String>,
    uploads: Arc<Gate>,
    judging: Arc<tokio::sync::Semaphore>,
    waiting: Arc<AtomicUsize>,
    console: Arc<console::Console>,
}

impl AppState {
    /// The routes' state for `server`, with admin token `admin_token`.
    pub fn new(server: Arc<Server>, admin_token: String, limits: &UploadLimits) -> Self {
        Self {
            server,
            admin_token: Arc::new(admin_token),
            uploads: Gate::new(limits.in_flight, limits.in_flight_per_source),
            judging: Arc::new(tokio::sync::Semaphore::new(limits.judged.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            console: Arc::new(console::Console::default()),
        }
    }

    /// Marks the console's cookies `Secure`: the server speaks HTTPS itself. (Behind a TLS
    /// proxy, a request with `X-Forwarded-Proto: https` gets them `Secure` anyway.)
    #[must_use]
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.console = Arc::new(console::Console::new(secure));
        self
    }
}

/// Every error answer: a message for people and a stable code for programs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in one sentence.
    pub error: String,
    /// Stable machine code: `bad_request`, `unauthorized`, `not_found`, `insufficient_funds`,
    /// `replay`, `forbidden`, `unsupported_media_type`, `too_large`, `timeout`, `rate_limited`,
    /// `busy`, `storage`.
    pub code: &'static str,
}

struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn retry(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                error: self.message,
                code: self.code,
            }),
        )
            .into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> Self {
        let (status, code) = match e.kind() {
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "bad_request"),
            ErrorKind::Replay => (StatusCode::CONFLICT, "replay"),
            ErrorKind::Funds => (StatusCode::PAYMENT_REQUIRED, "insufficient_funds"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Busy => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
                    .retry(Duration::from_secs(1));
            }
            ErrorKind::Storage => {
                tracing::error!(error = %e, "storage failure");
                (StatusCode::INTERNAL_SERVER_ERROR, "storage")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
            BodyError::Slow(_) => {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", e.to_string())
            }
            BodyError::Broken(_) => bad(e.to_string()),
        }
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg)
}

fn cbor(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/cbor")], bytes).into_response()
}

fn content_type(h: &HeaderMap) -> &str {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or("", |v| v.split(';').next().unwrap_or("").trim())
}

fn need_cbor(h: &HeaderMap) -> ApiResult<()> {
    if content_type(h) == "application/cbor" {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send a CBOR wallet request (application/cbor)",
        ))
    }
}

async fn small_body(body: Body) -> ApiResult<Bytes> {
    Ok(httpd::read_body(body, MAX_SMALL_BODY, BODY_DEADLINE).await?)
}

fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("JSON body: {e}")))
}

/// Whether `given` is the admin token (compared in constant time; an empty token matches
/// nothing).
fn is_admin_token(s: &AppState, given: &str) -> bool {
    !s.admin_token.is_empty() && console::session::same(&s.admin_token, given)
}

/// The bearer token of a request (empty without one).
fn bearer(h: &HeaderMap) -> &str {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

fn admin(s: &AppState, h: &HeaderMap) -> ApiResult<()> {
    if is_admin_token(s, bearer(h)) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin token missing or wrong",
        ))
    }
}

fn device(s: &str) -> ApiResult<DeviceKey> {
    DeviceKey::from_text(s).map_err(|e| bad(format!("device key: {e}")))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "meshpay settlement server",
        description = "The issuer's API: wallets get allowances and statements (signed CBOR wallet requests), gateways upload sealed settlement records and read receipts, fraud proofs and revocations, and the issuer's staff run accounts with the admin token. Wire objects are specified in protocol/SPEC.md; docs/api.md describes every route, limit and error.",
        license(name = "MIT OR Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&AdminAuth),
    tags(
        (name = "wallet", description = "Routes wallets call with signed wallet requests."),
        (name = "gateway", description = "Routes gateways call to settle records and bring the issuer's decisions back into the mesh."),
        (name = "admin", description = "The issuer's staff, with `Authorization: Bearer <admin token>`."),
        (name = "operations", description = "Health, metrics and this document."),
    )
)]
struct ApiDoc;

struct AdminAuth;

impl utoipa::Modify for AdminAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "admin_token",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// Limits guessing the admin token through the admin routes: a request to `/admin/…` without
/// the right bearer token counts as a failed attempt of its source, in the same count as the
/// console's failed logins ([`console::session::Throttle`]), before the route compares it;
/// past the limit it gets `429 rate_limited`. The right token always passes and counts
/// nothing, so guessing from an address never locks the staff's scripts out.
async fn limit_admin_guesses(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !req.uri().path().starts_with("/admin/") || is_admin_token(&s, bearer(req.headers())) {
        return next.run(req).await;
    }
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| {
            httpd::source_of(&c.0)
        });
    if let Some(wait) = s.console.attempt(source, std::time::Instant::now()) {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many wrong admin tokens from this address",
        )
        .retry(wait)
        .into_response();
    }
    next.run(req).await
}

/// The router and the OpenAPI document that describes exactly its routes.
pub fn router_and_openapi(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(wallet::descriptor))
        .routes(routes!(wallet::issuer_json))
        .routes(routes!(wallet::allowance))
        .routes(routes!(gateway::settle))
        .routes(routes!(gateway::receipts))
        .routes(routes!(gateway::frauds))
        .routes(routes!(gateway::revocations))
        .routes(routes!(wallet::wallet_statement))
        .routes(routes!(admin::revoke))
        .routes(routes!(admin::open_account))
        .routes(routes!(admin::credit))
        .routes(routes!(admin::debit))
        .routes(routes!(admin::statement))
        .routes(routes!(admin::reconciliation))
        .routes(routes!(admin::risk))
        .routes(routes!(admin::exposure))
        .routes(routes!(admin::release))
        .routes(routes!(admin::set_clock))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::openapi))
        .with_state(state.clone())
        .split_for_parts();
    let doc = Arc::new(api.clone());
    let router =
        router
            .merge(console::router(state.clone()))
            .layer(axum::middleware::from_fn_with_state(
                state,
                limit_admin_guesses,
            ));
    (router.layer(axum::Extension(doc)), api)
}

/// The router.
pub fn router(state: AppState) -> Router {
    router_and_openapi(state).0
}
