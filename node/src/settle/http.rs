//! The settlement server's HTTP API (axum). CBOR for wallets and bulk uploads, JSON for humans
//! and debugging; `GET /openapi.json` describes every route.

use super::{Server, ServerError, user};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meshpay_protocol::{
    DeviceKey, PrintableKey as _, ReceiptBatch, RecordBatch, WalletRequest, decode, encode,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Largest request body.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// Shared state of the routes.
#[derive(Clone)]
pub struct AppState {
    /// The server.
    pub server: Arc<Server>,
    /// The admin bearer token.
    pub admin_token: Arc<String>,
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> Self {
        let code = match &e {
            ServerError::Bad(_) => StatusCode::BAD_REQUEST,
            ServerError::Replay(_) => StatusCode::CONFLICT,
            ServerError::Funds(_) => StatusCode::PAYMENT_REQUIRED,
            ServerError::NotFound(_) => StatusCode::NOT_FOUND,
            ServerError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ServerError::Db(_) => {
                tracing::error!(error = %e, "storage failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(code, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn cbor(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/cbor")], bytes).into_response()
}

fn content_type(h: &HeaderMap) -> &str {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or("", |v| v.split(';').next().unwrap_or("").trim())
}

fn admin(s: &AppState, h: &HeaderMap) -> Result<(), ApiError> {
    let given = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let want = s.admin_token.as_bytes();
    let ok = given.len() == want.len()
        && given.bytes().zip(want).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
    if ok && !want.is_empty() {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "admin token missing or wrong".into(),
        ))
    }
}

fn device(s: &str) -> Result<DeviceKey, ApiError> {
    DeviceKey::from_text(s).map_err(|e| bad(format!("device key: {e}")))
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/.well-known/meshpay-issuer", get(descriptor))
        .route("/v1/issuer", get(issuer_json))
        .route("/v1/allowances", post(allowance))
        .route("/v1/settle", post(settle))
        .route("/v1/receipts", get(receipts))
        .route("/v1/fraud-proofs", get(frauds))
        .route("/v1/revocations", get(revocations))
        .route("/v1/statement", post(wallet_statement))
        .route("/admin/revocations", post(revoke))
        .route("/admin/accounts", post(open_account))
        .route("/admin/accounts/{device}/credit", post(credit))
        .route("/admin/accounts/{device}/debit", post(debit))
        .route("/admin/accounts/{device}", get(statement))
        .route("/admin/reconciliation", get(reconciliation))
        .route("/admin/release", post(release))
        .route("/admin/clock", post(set_clock))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn descriptor(State(s): State<AppState>) -> Response {
    cbor(encode(&s.server.descriptor))
}

async fn issuer_json(State(s): State<AppState>) -> Json<Value> {
    let d = s.server.descriptor.body();
    Json(json!({
        "issuer": d.issuer.to_text(), "seal_key": d.seal_key.to_hex(), "name": d.name,
        "currencies": d.currencies, "urls": d.urls, "valid_from": d.valid_from,
        "valid_until": d.valid_until, "max_allowance": d.max_allowance, "max_payment": d.max_payment,
        "descriptor": hex::encode(encode(&s.server.descriptor)),
    }))
}

async fn allowance(State(s): State<AppState>, h: HeaderMap, body: Bytes) -> ApiResult {
    if content_type(&h) != "application/cbor" {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send a CBOR wallet request (application/cbor)".into(),
        ));
    }
    let req: WalletRequest = decode(&body).map_err(|e| bad(e.to_string()))?;
    let cert = s.server.issue_allowance(&req).await?;
    Ok(cbor(encode(&cert)))
}

#[derive(Deserialize)]
struct JsonUpload {
    records: Vec<String>,
}

async fn settle(State(s): State<AppState>, h: HeaderMap, body: Bytes) -> ApiResult {
    let (inputs, json_out) = match content_type(&h) {
        "application/cbor" => {
            let batch: RecordBatch = decode(&body).map_err(|e| bad(e.to_string()))?;
            (batch.0.into_iter().map(|b| b.0).collect::<Vec<_>>(), false)
        }
        "application/json" => {
            let up: JsonUpload =
                serde_json::from_slice(&body).map_err(|e| bad(format!("JSON body: {e}")))?;
            if up.records.len() > RecordBatch::MAX_RECORDS {
                return Err(bad("more than 4096 records"));
            }
            let records = up
                .records
                .iter()
                .map(|r| hex::decode(r.trim()).map_err(|_| bad("records must be hex strings")))
                .collect::<Result<Vec<_>, _>>()?;
            (records, true)
        }
        other => {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content type {other:?}: send application/cbor (or application/json for debugging)"
                ),
            ));
        }
    };
    let receipts = tokio::time::timeout(Duration::from_secs(60), s.server.settle(&inputs))
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "settlement timed out; nothing was acknowledged".into(),
            )
        })??;
    if json_out {
        let list: Vec<Value> = receipts
            .iter()
            .map(|r| match r {
                None => Value::Null,
                Some(r) => json!({
                    "record": r.body().record.to_hex(),
                    "status": match r.status() {
                        meshpay_protocol::ReceiptStatus::Settled => "settled".to_owned(),
                        meshpay_protocol::ReceiptStatus::Rejected(reason) => reason.name().to_owned(),
                    },
                    "receipt": hex::encode(encode(r)),
                }),
            })
            .collect();
        Ok(Json(json!({"receipts": list})).into_response())
    } else {
        Ok(cbor(encode(&ReceiptBatch(receipts))))
    }
}

#[derive(Deserialize)]
struct Cursor {
    since: Option<i64>,
    limit: Option<i64>,
}

/// A feed read after a cursor: `SELECT seq, <column> FROM <table>` as hex, with the next
/// cursor. Table and column names are constants of this module, never user input.
async fn feed(s: &AppState, c: &Cursor, table: &str, column: &str, key: &str) -> ApiResult {
    let sql = format!("SELECT seq, {column} FROM {table} WHERE seq > $1 ORDER BY seq LIMIT $2");
    let rows = sqlx::query(&sql)
        .bind(c.since.unwrap_or(0))
        .bind(c.limit.unwrap_or(1000).clamp(1, 10_000))
        .fetch_all(s.server.db.pool())
        .await
        .map_err(ServerError::from)?;
    let mut next = c.since.unwrap_or(0);
    let mut list = Vec::new();
    for r in rows {
        let seq: i64 = r.try_get(0).map_err(ServerError::from)?;
        let bytes: Vec<u8> = r.try_get(1).map_err(ServerError::from)?;
        next = seq;
        list.push(json!({"seq": seq, column: hex::encode(bytes)}));
    }
    Ok(Json(json!({key: list, "next": next})).into_response())
}

async fn receipts(State(s): State<AppState>, Query(c): Query<Cursor>) -> ApiResult {
    feed(&s, &c, "records", "receipt", "receipts").await
}

async fn frauds(State(s): State<AppState>, Query(c): Query<Cursor>) -> ApiResult {
    feed(&s, &c, "frauds", "proof", "fraud_proofs").await
}

async fn revocations(State(s): State<AppState>, Query(c): Query<Cursor>) -> ApiResult {
    feed(&s, &c, "revocations", "revocation", "revocations").await
}

async fn wallet_statement(State(s): State<AppState>, h: HeaderMap, body: Bytes) -> ApiResult {
    if content_type(&h) != "application/cbor" {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send a CBOR wallet request (application/cbor)".into(),
        ));
    }
    let req: WalletRequest = decode(&body).map_err(|e| bad(e.to_string()))?;
    let (balance, entries) = s.server.wallet_statement(&req).await?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|(kind, amount, counterpart, reference, at)| json!({"kind": kind, "amount": amount, "counterpart": counterpart, "reference": reference, "at": at}))
        .collect();
    Ok(Json(json!({"balance": balance, "entries": entries})).into_response())
}

#[derive(Deserialize)]
struct Revoke {
    allowance: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn revoke(State(s): State<AppState>, h: HeaderMap, body: Bytes) -> ApiResult {
    admin(&s, &h)?;
    let r: Revoke = serde_json::from_slice(&body).map_err(|e| bad(format!("JSON body: {e}")))?;
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
    Ok(
        Json(json!({"allowance": r.allowance, "revocation": hex::encode(encode(&rev))}))
            .into_response(),
    )
}

#[derive(Deserialize)]
struct NewAccount {
    device: String,
}

async fn open_account(State(s): State<AppState>, h: HeaderMap, body: Bytes) -> ApiResult {
    admin(&s, &h)?;
    let a: NewAccount =
        serde_json::from_slice(&body).map_err(|e| bad(format!("JSON body: {e}")))?;
    let new = s.server.open_account(&device(&a.device)?).await?;
    Ok((
        if new {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(json!({"account": a.device, "new": new})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct Adjust {
    amount: u64,
    #[serde(default)]
    reference: String,
}

async fn adjust(s: &AppState, h: &HeaderMap, dev: &str, body: &[u8], credit: bool) -> ApiResult {
    admin(s, h)?;
    let a: Adjust = serde_json::from_slice(body).map_err(|e| bad(format!("JSON body: {e}")))?;
    if a.amount == 0 {
        return Err(bad("amount must be positive"));
    }
    let balance = s
        .server
        .adjust(&device(dev)?, a.amount, credit, &a.reference)
        .await?;
    Ok(Json(json!({"account": dev, "balance": balance})).into_response())
}

async fn credit(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(dev): Path<String>,
    body: Bytes,
) -> ApiResult {
    adjust(&s, &h, &dev, &body, true).await
}

async fn debit(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(dev): Path<String>,
    body: Bytes,
) -> ApiResult {
    adjust(&s, &h, &dev, &body, false).await
}

async fn statement(State(s): State<AppState>, h: HeaderMap, Path(dev): Path<String>) -> ApiResult {
    admin(&s, &h)?;
    let name = user(&device(&dev)?);
    let pool = s.server.db.pool();
    let balance: Option<i64> = sqlx::query("SELECT balance FROM accounts WHERE name = $1")
        .bind(&name)
        .fetch_optional(pool)
        .await
        .map_err(ServerError::from)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(ServerError::from)?;
    let Some(balance) = balance else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no account {dev}")));
    };
    let rows = sqlx::query("SELECT seq, src, dst, amount, kind, reference, at FROM transfers WHERE src = $1 OR dst = $1 ORDER BY seq")
        .bind(&name)
        .fetch_all(pool)
        .await
        .map_err(ServerError::from)?;
    let mut entries = Vec::new();
    for r in rows {
        let src: String = r.try_get(1).map_err(ServerError::from)?;
        let amount: i64 = r.try_get(3).map_err(ServerError::from)?;
        entries.push(json!({
            "seq": r.try_get::<i64, _>(0).map_err(ServerError::from)?,
            "kind": r.try_get::<String, _>(4).map_err(ServerError::from)?,
            "amount": if src == name { -amount } else { amount },
            "counterpart": if src == name { r.try_get::<String, _>(2).map_err(ServerError::from)? } else { src },
            "reference": r.try_get::<String, _>(5).map_err(ServerError::from)?,
            "at": r.try_get::<i64, _>(6).map_err(ServerError::from)?,
        }));
    }
    Ok(Json(json!({"account": dev, "balance": balance, "entries": entries})).into_response())
}

async fn reconciliation(State(s): State<AppState>, h: HeaderMap) -> ApiResult {
    admin(&s, &h)?;
    let pool = s.server.db.pool();
    let rows = sqlx::query("SELECT name, balance FROM accounts ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(ServerError::from)?;
    let (mut users, mut escrow, mut external, mut sum) = (0i64, 0i64, 0i64, 0i64);
    let mut accounts = serde_json::Map::new();
    for r in rows {
        let name: String = r.try_get(0).map_err(ServerError::from)?;
        let b: i64 = r.try_get(1).map_err(ServerError::from)?;
        sum += b;
        if name.starts_with("user:") {
            users += b;
        } else if name.starts_with("escrow:") {
            escrow += b;
        } else {
            external += b;
        }
        accounts.insert(name, json!(b));
    }
    let count = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_one(pool)
            .await
            .and_then(|r| r.try_get::<i64, _>(0))
            .map_err(ServerError::from)
    };
    Ok(Json(json!({
        "accounts": accounts,
        "totals": {"users": users, "escrow": escrow, "credited_net": -external},
        "records": {
            "settled": count("SELECT COUNT(*) FROM records WHERE status = 0").await?,
            "rejected": count("SELECT COUNT(*) FROM records WHERE status <> 0").await?,
        },
        "settled_amount": count("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM transfers WHERE kind = 'settle'").await?,
        "fraud_proofs": count("SELECT COUNT(*) FROM frauds").await?,
        "conserved": sum == 0 && users + escrow == -external,
    }))
    .into_response())
}

async fn release(State(s): State<AppState>, h: HeaderMap) -> ApiResult {
    admin(&s, &h)?;
    let released = s.server.release_expired().await?;
    let list: Vec<Value> = released
        .iter()
        .map(|(id, amount)| json!({"allowance": id.to_hex(), "returned": amount}))
        .collect();
    Ok(Json(json!({"released": list})).into_response())
}

#[derive(Deserialize)]
struct SetClock {
    now: u64,
}

async fn set_clock(State(s): State<AppState>, h: HeaderMap, body: Bytes) -> ApiResult {
    admin(&s, &h)?;
    let c: SetClock = serde_json::from_slice(&body).map_err(|e| bad(format!("JSON body: {e}")))?;
    if s.server.clock.set(c.now) {
        Ok(Json(json!({"now": c.now})).into_response())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "the clock is settable only with --test-clock".into(),
        ))
    }
}

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
            "Records rejected with a receipt.",
            &m.rejected,
        ),
        (
            "meshpay_records_repeated_total",
            "Records uploaded again after their decision.",
            &m.repeated,
        ),
        (
            "meshpay_upload_batches_total",
            "Upload batches.",
            &m.batches,
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The OpenAPI 3.1 description of the routes.
pub const OPENAPI: &str = include_str!("openapi.json");
