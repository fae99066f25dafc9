//! The routes gateways call: uploads of sealed records, and the feeds that bring the issuer's
//! decisions (receipts, fraud proofs, revocations) back into the mesh.

use super::{
    ApiError, ApiResult, AppState, BODY_DEADLINE, ErrorBody, MAX_BODY, bad, cbor, content_type,
    json_body,
};
use crate::db::reports::{self, Feed};
use crate::error::ServerError;
use crate::httpd;
use crate::metrics::Metrics;
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use meshpay_protocol::{ReceiptBatch, RecordBatch, decode, encode};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use utoipa::ToSchema;

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
pub(super) async fn settle(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    body: Body,
) -> ApiResult {
    let source: IpAddr = httpd::source_of(&peer);
    let metrics = &s.server.metrics;
    if let Some(after) = s.server.junk.retry_after(Some(source)) {
        Metrics::add(&metrics.uploads_refused, 1);
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
        Metrics::add(&metrics.uploads_refused, 1);
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

/// A page of `feed` after a cursor: `(seq, bytes)` rows and the cursor it started from.
async fn page(s: &AppState, c: &Cursor, feed: Feed) -> ApiResult<(Vec<(i64, Vec<u8>)>, i64)> {
    let since = c.since.unwrap_or(0).max(0);
    let limit = c.limit.unwrap_or(1000).clamp(1, 10_000);
    let rows = reports::feed(&s.server.db, feed, since, limit)
        .await
        .map_err(ServerError::from)?;
    Ok((rows, since))
}

/// Final receipts, in the order they were decided: how gateways learn the fate of records
/// others uploaded, and how wallets learn their payments settled. Items are settlement
/// receipts (SPEC.md §4.10).
#[utoipa::path(get, path = "/v1/receipts", tag = "gateway", params(Cursor),
    responses((status = 200, description = "A page of receipts", body = ReceiptsPage),
              (status = 500, description = "Storage failure", body = ErrorBody)))]
pub(super) async fn receipts(
    State(s): State<AppState>,
    Query(c): Query<Cursor>,
) -> ApiResult<Json<ReceiptsPage>> {
    let (rows, since) = page(&s, &c, Feed::Receipts).await?;
    Ok(Json(ReceiptsPage::of(rows, since)))
}

/// Fraud proofs found at settlement, in the order found (SPEC.md §4.8): gateways put them
/// into the mesh so every node refuses the allowance.
#[utoipa::path(get, path = "/v1/fraud-proofs", tag = "gateway", params(Cursor),
    responses((status = 200, description = "A page of fraud proofs", body = FraudProofsPage),
              (status = 500, description = "Storage failure", body = ErrorBody)))]
pub(super) async fn frauds(
    State(s): State<AppState>,
    Query(c): Query<Cursor>,
) -> ApiResult<Json<FraudProofsPage>> {
    let (rows, since) = page(&s, &c, Feed::FraudProofs).await?;
    Ok(Json(FraudProofsPage::of(rows, since)))
}

/// Revocations, in the order made (SPEC.md §4.11): gateways put them into the mesh.
#[utoipa::path(get, path = "/v1/revocations", tag = "gateway", params(Cursor),
    responses((status = 200, description = "A page of revocations", body = RevocationsPage),
              (status = 500, description = "Storage failure", body = ErrorBody)))]
pub(super) async fn revocations(
    State(s): State<AppState>,
    Query(c): Query<Cursor>,
) -> ApiResult<Json<RevocationsPage>> {
    let (rows, since) = page(&s, &c, Feed::Revocations).await?;
    Ok(Json(RevocationsPage::of(rows, since)))
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
