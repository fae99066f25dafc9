//! The routes wallets call: the issuer's descriptor, allowances and statements (signed
//! wallet requests, SPEC.md §4.14).

use super::{ApiResult, AppState, ErrorBody, bad, cbor, need_cbor, small_body};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use meshpay_protocol::{PrintableKey as _, WalletRequest, decode, encode};
use serde::Serialize;
use utoipa::ToSchema;

/// The issuer's signed descriptor (CBOR, SPEC.md §4.2): what wallets pin.
#[utoipa::path(get, path = "/.well-known/meshpay-issuer", tag = "wallet",
    responses((status = 200, description = "The issuer descriptor", content_type = "application/cbor", body = Vec<u8>)))]
pub(super) async fn descriptor(State(s): State<AppState>) -> Response {
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
pub(super) async fn issuer_json(State(s): State<AppState>) -> Json<IssuerInfo> {
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
pub(super) async fn allowance(State(s): State<AppState>, h: HeaderMap, body: Body) -> ApiResult {
    need_cbor(&h)?;
    let body = small_body(body).await?;
    let req: WalletRequest = decode(&body).map_err(|e| bad(e.to_string()))?;
    let cert = s.server.issue_allowance(&req).await?;
    Ok(cbor(encode(&cert)))
}

/// An account's balance and every transfer into or out of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Statement {
    /// The account's device key (`mpdev1…`).
    pub account: String,
    /// Balance now (minor units).
    pub balance: u64,
    /// Transfers, in the books' order.
    pub entries: Vec<crate::db::Entry>,
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
pub(super) async fn wallet_statement(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Body,
) -> ApiResult {
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
