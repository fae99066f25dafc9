//! The settlement server's HTTP API (axum). CBOR for wallets and bulk uploads, JSON for humans
//! and debugging. Every route is declared with its OpenAPI description next to its handler
//! (utoipa), and the router is built from those declarations, so `GET /openapi.json` lists
//! exactly the routes served. `docs/api.md` is the prose reference.
//!
//! Limits: each route reads its body itself, with its own size limit and a deadline; uploads
//! are admitted a few at a time per source and judged a few at a time in all (the rest wait
//! in a short queue, or get `503` with `Retry-After`); a source whose uploads do not open
//! gets `429` with `Retry-After` ([`super::JunkBudget`]).

use super::{Server, ServerError, user};
use crate::httpd::{self, BodyError, Gate};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use meshpay_protocol::{
    DeviceKey, PrintableKey as _, ReceiptBatch, RecordBatch, WalletRequest, decode, encode,
};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
        }
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
        let (status, code) = match &e {
            ServerError::Bad(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ServerError::Replay(_) => (StatusCode::CONFLICT, "replay"),
            ServerError::Funds(_) => (StatusCode::PAYMENT_REQUIRED, "insufficient_funds"),
            ServerError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ServerError::Busy | ServerError::Stopping => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
                    .retry(Duration::from_secs(1));
            }
            ServerError::Db(_) => {
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

fn admin(s: &AppState, h: &HeaderMap) -> ApiResult<()> {
    use subtle::ConstantTimeEq as _;
    let given = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let want = s.admin_token.as_bytes();
    let ok = given.len() == want.len() && bool::from(given.as_bytes().ct_eq(want));
    if ok && !want.is_empty() {
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

/// The router and the OpenAPI document that describes exactly its routes.
pub fn router_and_openapi(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(descriptor))
        .routes(routes!(issuer_json))
        .routes(routes!(allowance))
        .routes(routes!(settle))
        .routes(routes!(receipts))
        .routes(routes!(frauds))
        .routes(routes!(revocations))
        .routes(routes!(wallet_statement))
        .routes(routes!(revoke))
        .routes(routes!(open_account))
        .routes(routes!(credit))
        .routes(routes!(debit))
        .routes(routes!(statement))
        .routes(routes!(reconciliation))
        .routes(routes!(release))
        .routes(routes!(set_clock))
        .routes(routes!(metrics))
        .routes(routes!(healthz))
        .routes(routes!(openapi))
        .with_state(state)
        .split_for_parts();
    let doc = Arc::new(api.clone());
    (router.layer(axum::Extension(doc)), api)
}

/// The router.
pub fn router(state: AppState) -> Router {
    router_and_openapi(state).0
}

/// The issuer's signed descriptor (CBOR, SPEC.md §4.2): what wallets pin.
#[utoipa::path(get, path = "/.well-known/meshpay-issuer", tag = "wallet",
    responses((status = 200, description = "The issuer descriptor", content_type = "application/cbor", body = Vec<u8>)))]
async fn descriptor(State(s): State<AppState>) -> Response {
    cbor(encode(&s.server.descriptor))
}

/// The issuer descriptor's fields, for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuerInfo {
    /// The issuer key (`mpiss1…`).
    pub issuer: String,
    /// The X25519 key records are sealed to (hex).
    pub seal_key: String,
    /// Display name.
    pub name: String,
    /// Currencies it issues.
    pub currencies: Vec<String>,
    /// Its settlement URLs.
    pub urls: Vec<String>,
    /// Start of validity (Unix seconds).
    pub valid_from: u64,
    /// End of validity (Unix seconds).
    pub valid_until: u64,
    /// Largest allowance it grants (minor units).
    pub max_allowance: u64,
    /// Largest single payment (minor units).
    pub max_payment: u64,
    /// The descriptor's encoding (hex).
    pub descriptor: String,
}

/// The issuer descriptor as JSON.
#[utoipa::path(get, path = "/v1/issuer", tag = "wallet",
    responses((status = 200, description = "The descriptor's fields", body = IssuerInfo)))]
async fn issuer_json(State(s): State<AppState>) -> Json<IssuerInfo> {
    let d = s.server.descriptor.body();
    Json(IssuerInfo {
        issuer: d.issuer.to_text(),
        seal_key: d.seal_key.to_hex(),
        name: d.name.clone(),
        currencies: d.currencies.clone(),
        urls: d.urls.clone(),
        valid_from: d.valid_from,
        valid_until: d.valid_until,
        max_allowance: d.max_allowance,
        max_payment: d.max_payment,
        descriptor: hex::encode(encode(&s.server.descriptor)),
    })
}

/// Top-up: lock part of the wallet's account in escrow and get an allowance certificate.
///
/// The body is a wallet request (SPEC.md §4.14) with action 1, signed by the device. Its
/// nonce is spent whatever the answer: a refused request cannot be replayed later. The
/// server fills in the certificate: `limit` = the amount asked, `max_payment` = the smaller of
/// that and the descriptor's `max_payment`, `valid_from` = now − 60 s, `valid_until` = now +
/// `valid_secs`, `settle_by` = `valid_until` + 7 days; `valid_secs` is at most 30 days.
#[utoipa::path(post, path = "/v1/allowances", tag = "wallet",
    request_body(content = Vec<u8>, content_type = "application/cbor", description = "A signed wallet request, action 1 (allowance)"),
    responses(
        (status = 200, description = "The allowance certificate (SPEC.md §4.3)", content_type = "application/cbor", body = Vec<u8>),
        (status = 400, description = "Invalid request, signature, issuer, clock (more than 300 s off), currency, amount or validity", body = ErrorBody),
        (status = 402, description = "The account holds less than the amount", body = ErrorBody),
        (status = 404, description = "The device has no account", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 30 s", body = ErrorBody),
        (status = 409, description = "The request's nonce was used before", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not application/cbor", body = ErrorBody),
        (status = 500, description = "Storage failure; nothing changed but the nonce", body = ErrorBody),
    ))]
async fn allowance(State(s): State<AppState>, h: HeaderMap, body: Body) -> ApiResult {
    need_cbor(&h)?;
    let body = small_body(body).await?;
    let req: WalletRequest = decode(&body).map_err(|e| bad(e.to_string()))?;
    let cert = s.server.issue_allowance(&req).await?;
    Ok(cbor(encode(&cert)))
}

/// A record upload in JSON (for debugging): hex encodings of sealed records.
#[derive(Debug, Deserialize, ToSchema)]
pub struct JsonUpload {
    /// Sealed records, each the hex of its encoding; at most 4,096.
    pub records: Vec<String>,
}

/// One answer of a JSON upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct JsonReceipt {
    /// The record id (hex).
    pub record: String,
    /// `settled`, or the refusal reason's name (SPEC.md §4.10).
    pub status: String,
    /// Whether this is the issuer's last word on the record.
    pub r#final: bool,
    /// The signed receipt (hex).
    pub receipt: String,
}

/// The answers of a JSON upload, one per record, `null` where no decision was taken.
#[derive(Debug, Serialize, ToSchema)]
pub struct JsonReceipts {
    /// In upload order.
    pub receipts: Vec<Option<JsonReceipt>>,
}

/// Settle: upload sealed records, get one answer per record.
///
/// CBOR in and out: a record batch (SPEC.md §4.15, at most 4,096 records, 2 MiB), answered
/// with a receipt batch in the same order. An answer is `null` where the issuer takes no
/// decision and signs nothing: the input is not a sealed record of this issuer, it does not
/// open, or it was left for later because the source's budget for inputs that do not open is
/// spent. Every other record gets a signed receipt; a decided record always gets its stored
/// receipt, however often and by whomever it is uploaded. One record never fails a batch: a
/// record the database refuses is answered `retry_later` and the rest settle.
#[utoipa::path(post, path = "/v1/settle", tag = "gateway",
    request_body(content = Vec<u8>, content_type = "application/cbor", description = "A record batch (or application/json: JsonUpload)"),
    responses(
        (status = 200, description = "A receipt batch (application/cbor), or JsonReceipts for a JSON upload", content_type = "application/cbor", body = Vec<u8>),
        (status = 400, description = "The body is not a record batch", body = ErrorBody),
        (status = 413, description = "Body over 2 MiB", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 30 s", body = ErrorBody),
        (status = 415, description = "Neither application/cbor nor application/json", body = ErrorBody),
        (status = 429, description = "This source's uploads did not open: wait Retry-After seconds", body = ErrorBody),
        (status = 503, description = "Too many uploads in progress, settlement timed out (120 s), or the server is stopping: try again after Retry-After seconds. Nothing was acknowledged", body = ErrorBody),
        (status = 500, description = "Storage failure; nothing was acknowledged", body = ErrorBody),
    ))]
async fn settle(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    body: Body,
) -> ApiResult {
    let source: IpAddr = httpd::source_of(&peer);
    let metrics = &s.server.metrics;
    if let Some(after) = s.server.junk.retry_after(Some(source)) {
        metrics.uploads_refused.fetch_add(1, Ordering::Relaxed);
        httpd::drain(body, MAX_BODY, Duration::from_secs(5)).await;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "this source uploaded too many records that do not open; try again later",
        )
        .retry(after));
    }
    let json_in = match content_type(&h) {
        "application/cbor" => false,
        "application/json" => true,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "content type {other:?}: send application/cbor (or application/json for debugging)"
                ),
            ));
        }
    };
    let Some(_upload) = s.uploads.admit(source) else {
        metrics.uploads_refused.fetch_add(1, Ordering::Relaxed);
        httpd::drain(body, MAX_BODY, Duration::from_secs(5)).await;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many uploads in progress; try again shortly",
        )
        .retry(Duration::from_secs(2)));
    };
    let body = httpd::read_body(body, MAX_BODY, BODY_DEADLINE).await?;
    let inputs = if json_in {
        let up: JsonUpload = json_body(&body)?;
        if up.records.len() > RecordBatch::MAX_RECORDS {
            return Err(bad("more than 4096 records"));
        }
        up.records
            .iter()
            .map(|r| hex::decode(r.trim()).map_err(|_| bad("records must be hex strings")))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        let batch: RecordBatch = decode(&body).map_err(|e| bad(e.to_string()))?;
        batch.0.into_iter().map(|b| b.0).collect()
    };
    drop(body);
    // Judged a few at a time: the CPU pool and the database writer are shared by all.
    let permit = {
        // Counted while waiting, however the wait ends (a client that goes away drops it).
        let _waiting = Gauge::up(&s.waiting);
        s.judging.acquire().await
    };
    let _permit = permit.map_err(|_| ApiError::from(ServerError::Stopping))?;
    let receipts = tokio::time::timeout(
        Duration::from_secs(120),
        s.server.settle(inputs, Some(source)),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "settlement timed out; nothing was acknowledged",
        )
        .retry(Duration::from_secs(5))
    })??;
    if json_in {
        let receipts = receipts
            .iter()
            .map(|r| {
                r.as_ref().map(|r| JsonReceipt {
                    record: r.body().record.to_hex(),
                    status: match r.status() {
                        meshpay_protocol::ReceiptStatus::Settled => "settled".to_owned(),
                        meshpay_protocol::ReceiptStatus::Rejected(reason) => {
                            reason.name().to_owned()
                        }
                    },
                    r#final: r.status().is_final(),
                    receipt: hex::encode(encode(r)),
                })
            })
            .collect();
        Ok(Json(JsonReceipts { receipts }).into_response())
    } else {
        Ok(cbor(encode(&ReceiptBatch(receipts))))
    }
}

/// Where a feed read starts, and how much of it.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Cursor {
    /// Items after this sequence number (default 0: from the start).
    pub since: Option<i64>,
    /// Most items (1 to 10,000; default 1,000).
    pub limit: Option<i64>,
}

macro_rules! feed_page {
    ($page:ident, $item:ident, $list:ident, $field:ident, $what:literal) => {
        #[doc = concat!("One ", $what, ": its sequence number and its CBOR encoding in hex.")]
        #[derive(Debug, Serialize, ToSchema)]
        pub struct $item {
            /// Sequence number: pass the last one as `since` to read on.
            pub seq: i64,
            #[doc = concat!("The ", $what, "'s CBOR encoding, in hex.")]
            pub $field: String,
        }

        #[doc = concat!("A page of the ", $what, " feed.")]
        #[derive(Debug, Serialize, ToSchema)]
        pub struct $page {
            /// The items, in sequence order.
            pub $list: Vec<$item>,
            /// The cursor for the next page: the last item's `seq`, or `since` if the page is
            /// empty (the end of the feed).
            pub next: i64,
        }

        impl $page {
            fn of(rows: Vec<(i64, Vec<u8>)>, since: i64) -> Self {
                let next = rows.last().map_or(since, |r| r.0);
                Self {
                    $list: rows
                        .into_iter()
                        .map(|(seq, bytes)| $item {
                            seq,
                            $field: hex::encode(bytes),
                        })
                        .collect(),
                    next,
                }
            }
        }
    };
}

feed_page!(ReceiptsPage, ReceiptItem, receipts, receipt, "receipt");
feed_page!(
    FraudProofsPage,
    FraudProofItem,
    fraud_proofs,
    proof,
    "fraud proof"
);
feed_page!(
    RevocationsPage,
    RevocationItem,
    revocations,
    revocation,
    "revocation"
);

/// A feed read after a cursor: `(seq, bytes)` rows and the cursor it started from. Table and
/// column names are constants of this module, never user input.
async fn feed(
    s: &AppState,
    c: &Cursor,
    table: &str,
    column: &str,
) -> ApiResult<(Vec<(i64, Vec<u8>)>, i64)> {
    let sql = format!("SELECT seq, {column} FROM {table} WHERE seq > $1 ORDER BY seq LIMIT $2");
    let since = c.since.unwrap_or(0).max(0);
    let rows = sqlx::query(&sql)
        .bind(since)
        .bind(c.limit.unwrap_or(1000).clamp(1, 10_000))
        .fetch_all(s.server.db.readers())
        .await
        .map_err(ServerError::from)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push((
            r.try_get(0).map_err(ServerError::from)?,
            r.try_get(1).map_err(ServerError::from)?,
        ));
    }
    Ok((out, since))
}

/// Final receipts, in the order they were decided: how gateways learn the fate of records
/// others uploaded, and how wallets learn their payments settled. Items are settlement
/// receipts (SPEC.md §4.10).
#[utoipa::path(get, path = "/v1/receipts", tag = "gateway", params(Cursor),
    responses((status = 200, description = "A page of receipts", body = ReceiptsPage),
              (status = 500, description = "Storage failure", body = ErrorBody)))]
async fn receipts(
    State(s): State<AppState>,
    Query(c): Query<Cursor>,
) -> ApiResult<Json<ReceiptsPage>> {
    let (rows, since) = feed(&s, &c, "records", "receipt").await?;
    Ok(Json(ReceiptsPage::of(rows, since)))
}

/// Fraud proofs found at settlement, in the order found (SPEC.md §4.8): gateways put them
/// into the mesh so every node refuses the allowance.
#[utoipa::path(get, path = "/v1/fraud-proofs", tag = "gateway", params(Cursor),
    responses((status = 200, description = "A page of fraud proofs", body = FraudProofsPage),
              (status = 500, description = "Storage failure", body = ErrorBody)))]
async fn frauds(
    State(s): State<AppState>,
    Query(c): Query<Cursor>,
) -> ApiResult<Json<FraudProofsPage>> {
    let (rows, since) = feed(&s, &c, "frauds", "proof").await?;
    Ok(Json(FraudProofsPage::of(rows, since)))
}

/// Revocations, in the order made (SPEC.md §4.11): gateways put them into the mesh.
#[utoipa::path(get, path = "/v1/revocations", tag = "gateway", params(Cursor),
    responses((status = 200, description = "A page of revocations", body = RevocationsPage),
              (status = 500, description = "Storage failure", body = ErrorBody)))]
async fn revocations(
    State(s): State<AppState>,
    Query(c): Query<Cursor>,
) -> ApiResult<Json<RevocationsPage>> {
    let (rows, since) = feed(&s, &c, "revocations", "revocation").await?;
    Ok(Json(RevocationsPage::of(rows, since)))
}

/// An account's balance and every transfer into or out of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Statement {
    /// The account's device key (`mpdev1…`).
    pub account: String,
    /// Balance now (minor units).
    pub balance: u64,
    /// Transfers, in the books' order.
    pub entries: Vec<super::db::Entry>,
}

/// A wallet's own statement, asked with a signed wallet request (action 2). Its nonce is
/// spent whatever the answer.
#[utoipa::path(post, path = "/v1/statement", tag = "wallet",
    request_body(content = Vec<u8>, content_type = "application/cbor", description = "A signed wallet request, action 2 (statement)"),
    responses(
        (status = 200, description = "The account's statement", body = Statement),
        (status = 400, description = "Invalid request, signature, issuer or clock", body = ErrorBody),
        (status = 404, description = "The device has no account", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 30 s", body = ErrorBody),
        (status = 409, description = "The request's nonce was used before", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not application/cbor", body = ErrorBody),
        (status = 500, description = "Storage failure", body = ErrorBody),
    ))]
async fn wallet_statement(State(s): State<AppState>, h: HeaderMap, body: Body) -> ApiResult {
    need_cbor(&h)?;
    let body = small_body(body).await?;
    let req: WalletRequest = decode(&body).map_err(|e| bad(e.to_string()))?;
    let (balance, entries) = s.server.wallet_statement(&req).await?;
    Ok(Json(Statement {
        account: req.body().device.to_text(),
        balance,
        entries,
    })
    .into_response())
}

/// An allowance to revoke.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Revoke {
    /// The allowance id (32 hex digits).
    pub allowance: String,
    /// `device_lost` (default), `issuer` or `fraud`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A revocation made.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// The allowance id.
    pub allowance: String,
    /// The signed revocation (hex, SPEC.md §4.11); it also joins the revocations feed.
    pub revocation: String,
}

/// Revoke an allowance (a device reported lost, …): nodes that receive the revocation refuse
/// the allowance from then on. Revoking again answers the first revocation (the one the
/// feed and the mesh carry).
#[utoipa::path(post, path = "/admin/revocations", tag = "admin", security(("admin_token" = [])),
    request_body = Revoke,
    responses(
        (status = 200, description = "Revoked", body = Revoked),
        (status = 400, description = "Bad allowance id or reason", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 404, description = "No such allowance", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 30 s", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 500, description = "Storage failure; nothing changed", body = ErrorBody),
    ))]
async fn revoke(State(s): State<AppState>, h: HeaderMap, body: Body) -> ApiResult {
    admin(&s, &h)?;
    let r: Revoke = json_body(&small_body(body).await?)?;
    let id = meshpay_protocol::AllowanceId::from_hex(&r.allowance)
        .ok_or_else(|| bad("allowance: 32 hex digits"))?;
    let reason = match r.reason.as_deref() {
        None | Some("device_lost") => meshpay_protocol::RevocationReason::DeviceLost,
        Some("issuer") => meshpay_protocol::RevocationReason::Issuer,
        Some("fraud") => meshpay_protocol::RevocationReason::Fraud,
        Some(other) => {
            return Err(bad(format!(
                "reason {other:?}: device_lost, issuer or fraud"
            )));
        }
    };
    let rev = s.server.revoke(&id, reason).await?;
    Ok(Json(Revoked {
        allowance: r.allowance,
        revocation: hex::encode(encode(&rev)),
    })
    .into_response())
}

/// An account to open.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewAccount {
    /// The device key (`mpdev1…`).
    pub device: String,
}

/// An account opened (or found).
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountOpened {
    /// The device key.
    pub account: String,
    /// Whether it was new.
    pub new: bool,
}

/// Open an account for a device (idempotent: `201` when new, `200` when it existed).
#[utoipa::path(post, path = "/admin/accounts", tag = "admin", security(("admin_token" = [])),
    request_body = NewAccount,
    responses(
        (status = 201, description = "Opened", body = AccountOpened),
        (status = 200, description = "It existed", body = AccountOpened),
        (status = 400, description = "Bad device key", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 30 s", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 500, description = "Storage failure; nothing changed", body = ErrorBody),
    ))]
async fn open_account(State(s): State<AppState>, h: HeaderMap, body: Body) -> ApiResult {
    admin(&s, &h)?;
    let a: NewAccount = json_body(&small_body(body).await?)?;
    let new = s.server.open_account(&device(&a.device)?).await?;
    Ok((
        if new {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(AccountOpened {
            account: a.device,
            new,
        }),
    )
        .into_response())
}

/// An amount to credit or debit.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Adjust {
    /// Minor units, 1 to 2^53 − 1.
    pub amount: u64,
    /// A note kept with the transfer (at most 200 bytes).
    #[serde(default)]
    pub reference: String,
}

/// A balance after a credit or debit.
#[derive(Debug, Serialize, ToSchema)]
pub struct Balance {
    /// The device key.
    pub account: String,
    /// Balance now (minor units).
    pub balance: u64,
}

async fn adjust(s: &AppState, h: &HeaderMap, dev: &str, body: Body, credit: bool) -> ApiResult {
    admin(s, h)?;
    let a: Adjust = json_body(&small_body(body).await?)?;
    let balance = s
        .server
        .adjust(&device(dev)?, a.amount, credit, &a.reference)
        .await?;
    Ok(Json(Balance {
        account: dev.to_owned(),
        balance,
    })
    .into_response())
}

/// Credit an account (money in from outside: a top-up at the counter, a transfer).
#[utoipa::path(post, path = "/admin/accounts/{device}/credit", tag = "admin", security(("admin_token" = [])),
    params(("device" = String, Path, description = "The device key (mpdev1…)")),
    request_body = Adjust,
    responses(
        (status = 200, description = "Credited", body = Balance),
        (status = 400, description = "Bad key, amount (0, or over 2^53 − 1) or reference; or the books cannot hold the sum", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 30 s", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 500, description = "Storage failure; nothing changed", body = ErrorBody),
    ))]
async fn credit(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(dev): Path<String>,
    body: Body,
) -> ApiResult {
    adjust(&s, &h, &dev, body, true).await
}

/// Debit an account (money out: a withdrawal).
#[utoipa::path(post, path = "/admin/accounts/{device}/debit", tag = "admin", security(("admin_token" = [])),
    params(("device" = String, Path, description = "The device key (mpdev1…)")),
    request_body = Adjust,
    responses(
        (status = 200, description = "Debited", body = Balance),
        (status = 400, description = "Bad key, amount or reference", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 402, description = "The account holds less", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 30 s", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 500, description = "Storage failure; nothing changed", body = ErrorBody),
    ))]
async fn debit(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(dev): Path<String>,
    body: Body,
) -> ApiResult {
    adjust(&s, &h, &dev, body, false).await
}

/// An account's statement (admin).
#[utoipa::path(get, path = "/admin/accounts/{device}", tag = "admin", security(("admin_token" = [])),
    params(("device" = String, Path, description = "The device key (mpdev1…)")),
    responses(
        (status = 200, description = "The statement", body = Statement),
        (status = 400, description = "Bad device key", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 500, description = "Storage failure", body = ErrorBody),
    ))]
async fn statement(State(s): State<AppState>, h: HeaderMap, Path(dev): Path<String>) -> ApiResult {
    admin(&s, &h)?;
    let name = user(&device(&dev)?);
    let mut tx = s.server.db.begin().await.map_err(ServerError::from)?;
    let Some(balance) = super::db::balance(&mut tx, &name)
        .await
        .map_err(ServerError::from)?
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no account {dev}"),
        ));
    };
    let entries = super::db::statement(&mut tx, &name)
        .await
        .map_err(ServerError::from)?;
    tx.commit().await.map_err(ServerError::from)?;
    Ok(Json(Statement {
        account: dev,
        balance: super::db::u(balance),
        entries,
    })
    .into_response())
}

/// Sums of the books.
#[derive(Debug, Serialize, ToSchema)]
pub struct Totals {
    /// All user balances.
    pub users: i128,
    /// All escrow balances.
    pub escrow: i128,
    /// Everything credited minus everything debited (minus the `external` balance).
    pub credited_net: i128,
}

/// Record counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordCounts {
    /// Records settled.
    pub settled: i64,
    /// Records refused with a stored (final) receipt.
    pub rejected: i64,
}

/// The books checked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reconciliation {
    /// Every account's balance.
    pub accounts: std::collections::BTreeMap<String, i64>,
    /// Sums.
    pub totals: Totals,
    /// Records.
    pub records: RecordCounts,
    /// Sum of every settlement transfer.
    pub settled_amount: i128,
    /// Fraud proofs found.
    pub fraud_proofs: i64,
    /// Whether every balance sums to zero and users plus escrow equal what was credited.
    pub conserved: bool,
}

/// Check the books: every balance sums to zero, and user balances plus escrow equal
/// everything credited.
#[utoipa::path(get, path = "/admin/reconciliation", tag = "admin", security(("admin_token" = [])),
    responses(
        (status = 200, description = "The books", body = Reconciliation),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 500, description = "Storage failure", body = ErrorBody),
    ))]
async fn reconciliation(State(s): State<AppState>, h: HeaderMap) -> ApiResult {
    admin(&s, &h)?;
    let pool = s.server.db.readers();
    let rows = sqlx::query("SELECT name, balance FROM accounts ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(ServerError::from)?;
    let (mut users, mut escrow, mut external, mut sum) = (0i128, 0i128, 0i128, 0i128);
    let mut accounts = std::collections::BTreeMap::new();
    for r in rows {
        let name: String = r.try_get(0).map_err(ServerError::from)?;
        let b: i64 = r.try_get(1).map_err(ServerError::from)?;
        sum += i128::from(b);
        if name.starts_with("user:") {
            users += i128::from(b);
        } else if name.starts_with("escrow:") {
            escrow += i128::from(b);
        } else {
            external += i128::from(b);
        }
        accounts.insert(name, b);
    }
    let count = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_one(pool)
            .await
            .and_then(|r| r.try_get::<i64, _>(0))
            .map_err(ServerError::from)
    };
    let mut settled_amount = 0i128;
    for r in sqlx::query("SELECT amount FROM transfers WHERE kind = 'settle'")
        .fetch_all(pool)
        .await
        .map_err(ServerError::from)?
    {
        settled_amount += i128::from(r.try_get::<i64, _>(0).map_err(ServerError::from)?);
    }
    Ok(Json(Reconciliation {
        accounts,
        totals: Totals {
            users,
            escrow,
            credited_net: -external,
        },
        records: RecordCounts {
            settled: count("SELECT COUNT(*) FROM records WHERE status = 0").await?,
            rejected: count("SELECT COUNT(*) FROM records WHERE status <> 0").await?,
        },
        settled_amount,
        fraud_proofs: count("SELECT COUNT(*) FROM frauds").await?,
        conserved: sum == 0 && users + escrow == -external,
    })
    .into_response())
}

/// Escrow returned.
#[derive(Debug, Serialize, ToSchema)]
pub struct Released {
    /// The allowance closed.
    pub allowance: String,
    /// What went back to the holder's account.
    pub returned: u64,
}

/// What a release round did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseRound {
    /// Allowances closed.
    pub released: Vec<Released>,
}

/// Return now the unspent escrow of allowances past their settle-by time (the server also
/// does it by itself, every `--release-every` seconds).
#[utoipa::path(post, path = "/admin/release", tag = "admin", security(("admin_token" = [])),
    responses(
        (status = 200, description = "Released", body = ReleaseRound),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 500, description = "Storage failure; nothing changed", body = ErrorBody),
    ))]
async fn release(State(s): State<AppState>, h: HeaderMap) -> ApiResult {
    admin(&s, &h)?;
    let released = s.server.release_expired().await?;
    Ok(Json(ReleaseRound {
        released: released
            .iter()
            .map(|(id, amount)| Released {
                allowance: id.to_hex(),
                returned: *amount,
            })
            .collect(),
    })
    .into_response())
}

/// The server's clock, for tests.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SetClock {
    /// Unix seconds (0: the wall clock again).
    pub now: u64,
}

/// TEST ONLY: fix the server's clock. Refused (`403`) unless the server runs with
/// `--test-clock`.
#[utoipa::path(post, path = "/admin/clock", tag = "admin", security(("admin_token" = [])),
    request_body = SetClock,
    responses(
        (status = 200, description = "The clock is set", body = SetClock),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 403, description = "The server does not run with --test-clock", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 30 s", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
    ))]
async fn set_clock(State(s): State<AppState>, h: HeaderMap, body: Body) -> ApiResult {
    admin(&s, &h)?;
    let c: SetClock = json_body(&small_body(body).await?)?;
    if s.server.clock.set(c.now) {
        Ok(Json(c).into_response())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the clock is settable only with --test-clock",
        ))
    }
}

/// Prometheus counters (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Counters", content_type = "text/plain", body = String)))]
async fn metrics(State(s): State<AppState>) -> Response {
    let m = &s.server.metrics;
    let counters = [
        (
            "meshpay_records_settled_total",
            "Records settled.",
            &m.settled,
        ),
        (
            "meshpay_records_rejected_total",
            "Records refused with a receipt.",
            &m.rejected,
        ),
        (
            "meshpay_records_repeated_total",
            "Records uploaded again after their decision.",
            &m.repeated,
        ),
        (
            "meshpay_records_unopened_total",
            "Inputs that were not a record of this issuer or did not open.",
            &m.unopened,
        ),
        (
            "meshpay_records_deferred_total",
            "Records left undecided because their source's budget was spent.",
            &m.deferred,
        ),
        (
            "meshpay_records_retry_later_total",
            "Records answered retry_later because the database refused them.",
            &m.retry_later,
        ),
        (
            "meshpay_upload_batches_total",
            "Upload batches.",
            &m.batches,
        ),
        (
            "meshpay_uploads_refused_total",
            "Uploads refused before reading (budget spent, too many in progress).",
            &m.uploads_refused,
        ),
        (
            "meshpay_allowances_issued_total",
            "Allowances issued.",
            &m.allowances,
        ),
        (
            "meshpay_fraud_proofs_total",
            "Fraud proofs found.",
            &m.frauds,
        ),
    ];
    let mut text = String::new();
    for (name, help, v) in counters {
        let v = v.load(Ordering::Relaxed);
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        );
    }
    let waiting = s.waiting.load(Ordering::Relaxed);
    let _ = write!(
        text,
        "# HELP meshpay_uploads_waiting Uploads read and waiting to be judged.\n# TYPE meshpay_uploads_waiting gauge\nmeshpay_uploads_waiting {waiting}\n"
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Liveness: answers at once, never waiting behind settlement work.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The server is up", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// This document: the OpenAPI 3.1 description of every route served.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi(axum::Extension(doc): axum::Extension<Arc<utoipa::openapi::OpenApi>>) -> Response {
    match doc.to_json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            format!("the OpenAPI document does not serialise: {e}"),
        )
        .into_response(),
    }
}

/// One unit of a gauge, given back when dropped.
struct Gauge<'a>(&'a AtomicUsize);

impl<'a> Gauge<'a> {
    fn up(g: &'a AtomicUsize) -> Self {
        g.fetch_add(1, Ordering::Relaxed);
        Self(g)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
