//! The issuer's staff routes, behind the admin token: accounts, revocations, the books'
//! reconciliation, risk alerts and exposure, escrow release and (tests only) the clock. The
//! issuer console answers with the same functions and types.

use super::wallet::Statement;
use super::{ApiError, ApiResult, AppState, ErrorBody, admin, bad, device, json_body, small_body};
use crate::db::reports;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use meshpay_protocol::encode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
pub(super) async fn revoke(State(s): State<AppState>, h: HeaderMap, body: Body) -> ApiResult {
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
pub(super) async fn open_account(State(s): State<AppState>, h: HeaderMap, body: Body) -> ApiResult {
    admin(&s, &h)?;
    open_account_from(&s, body).await
}

/// Opens the account a [`NewAccount`] body names (the admin route and the console).
pub(super) async fn open_account_from(s: &AppState, body: Body) -> ApiResult {
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

/// Credits or debits `dev` by an [`Adjust`] body (the admin routes and the console).
pub(super) async fn adjust(s: &AppState, dev: &str, body: Body, credit: bool) -> ApiResult {
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
pub(super) async fn credit(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(dev): Path<String>,
    body: Body,
) -> ApiResult {
    admin(&s, &h)?;
    adjust(&s, &dev, body, true).await
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
pub(super) async fn debit(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(dev): Path<String>,
    body: Body,
) -> ApiResult {
    admin(&s, &h)?;
    adjust(&s, &dev, body, false).await
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
pub(super) async fn statement(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(dev): Path<String>,
) -> ApiResult {
    admin(&s, &h)?;
    Ok(Json(statement_of(&s, dev).await?).into_response())
}

/// The statement of `dev` (the admin route and the console).
pub(super) async fn statement_of(s: &AppState, dev: String) -> ApiResult<Statement> {
    let (balance, entries) = s.server.statement(&device(&dev)?).await?;
    Ok(Statement {
        account: dev,
        balance,
        entries,
    })
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
pub(super) async fn reconciliation(State(s): State<AppState>, h: HeaderMap) -> ApiResult {
    admin(&s, &h)?;
    Ok(Json(reconcile(&s).await?).into_response())
}

/// The books checked (the admin route and the console).
pub(super) async fn reconcile(s: &AppState) -> ApiResult<Reconciliation> {
    let books = reports::books(&s.server.db)
        .await
        .map_err(crate::ServerError::from)?;
    let (mut users, mut escrow, mut external, mut sum) = (0i128, 0i128, 0i128, 0i128);
    for (name, b) in &books.accounts {
        let b = i128::from(*b);
        sum += b;
        if name.starts_with("user:") {
            users += b;
        } else if name.starts_with("escrow:") {
            escrow += b;
        } else {
            external += b;
        }
    }
    Ok(Reconciliation {
        accounts: books.accounts,
        totals: Totals {
            users,
            escrow,
            credited_net: -external,
        },
        records: RecordCounts {
            settled: books.settled_records,
            rejected: books.rejected_records,
        },
        settled_amount: books.settled_amount,
        fraud_proofs: books.fraud_proofs,
        conserved: sum == 0 && users + escrow == -external,
    })
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
pub(super) async fn release(State(s): State<AppState>, h: HeaderMap) -> ApiResult {
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
pub(super) async fn set_clock(State(s): State<AppState>, h: HeaderMap, body: Body) -> ApiResult {
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

/// The risk alerts standing and the rules' thresholds.
///
/// Fraud proofs and revocations against open allowances, and open allowances near their limit,
/// come from the books; velocity, forked payees and sources of junk are counted in memory as
/// records are settled, and start empty when the server starts. At most 100 alerts per rule
/// are listed, the newest first; `counts` has them all.
#[utoipa::path(get, path = "/admin/risk", tag = "admin", security(("admin_token" = [])),
    responses(
        (status = 200, description = "The alerts and rules", body = crate::risk::RiskReport),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 500, description = "Storage failure", body = ErrorBody),
    ))]
pub(super) async fn risk(State(s): State<AppState>, h: HeaderMap) -> ApiResult {
    admin(&s, &h)?;
    Ok(Json(s.server.risk().await?).into_response())
}

/// Offline exposure: what open allowances may still settle, by currency and by holder, and
/// what expires when.
#[utoipa::path(get, path = "/admin/exposure", tag = "admin", security(("admin_token" = [])),
    responses(
        (status = 200, description = "The exposure", body = crate::exposure::Exposure),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 500, description = "Storage failure", body = ErrorBody),
    ))]
pub(super) async fn exposure(State(s): State<AppState>, h: HeaderMap) -> ApiResult {
    admin(&s, &h)?;
    Ok(Json(s.server.exposure().await?).into_response())
}
