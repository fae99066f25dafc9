//! The console's JSON, behind a session: the admin API's answers (same functions, same
//! types), and the live feed's recent events.

use super::super::{ApiResult, AppState, admin};
use super::{ApiSession, ChangeSession};
use crate::live::LiveEvent;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::IntoResponse as _;
use serde::Serialize;

/// `GET /console/api/risk`: as `GET /admin/risk`.
pub(super) async fn risk(_: ApiSession, State(s): State<AppState>) -> ApiResult {
    Ok(Json(s.server.risk().await?).into_response())
}

/// `GET /console/api/exposure`: as `GET /admin/exposure`.
pub(super) async fn exposure(_: ApiSession, State(s): State<AppState>) -> ApiResult {
    Ok(Json(s.server.exposure().await?).into_response())
}

/// `GET /console/api/reconciliation`: as `GET /admin/reconciliation`.
pub(super) async fn reconciliation(_: ApiSession, State(s): State<AppState>) -> ApiResult {
    Ok(Json(admin::reconcile(&s).await?).into_response())
}

/// `GET /console/api/refusals`: refusals by reason.
pub(super) async fn refusals(_: ApiSession, State(s): State<AppState>) -> ApiResult {
    Ok(Json(s.server.refusals().await?).into_response())
}

/// The live feed's recent events.
#[derive(Debug, Serialize)]
struct Recent {
    /// Oldest first.
    events: Vec<LiveEvent>,
}

/// `GET /console/api/feed`: the last events of the live feed.
pub(super) async fn feed(_: ApiSession, State(s): State<AppState>) -> ApiResult {
    let events = s
        .server
        .live
        .recent()
        .iter()
        .map(|e| (**e).clone())
        .collect();
    Ok(Json(Recent { events }).into_response())
}

/// `GET /console/api/accounts/{device}`: as `GET /admin/accounts/{device}`.
pub(super) async fn statement(
    _: ApiSession,
    State(s): State<AppState>,
    Path(dev): Path<String>,
) -> ApiResult {
    Ok(Json(admin::statement_of(&s, dev).await?).into_response())
}

/// `POST /console/api/accounts`: as `POST /admin/accounts`.
pub(super) async fn open_account(
    _: ChangeSession,
    State(s): State<AppState>,
    body: Body,
) -> ApiResult {
    admin::open_account_from(&s, body).await
}

/// `POST /console/api/accounts/{device}/credit`: as `POST /admin/accounts/{device}/credit`.
pub(super) async fn credit(
    _: ChangeSession,
    State(s): State<AppState>,
    Path(dev): Path<String>,
    body: Body,
) -> ApiResult {
    admin::adjust(&s, &dev, body, true).await
}

/// `POST /console/api/accounts/{device}/debit`: as `POST /admin/accounts/{device}/debit`.
pub(super) async fn debit(
    _: ChangeSession,
    State(s): State<AppState>,
    Path(dev): Path<String>,
    body: Body,
) -> ApiResult {
    admin::adjust(&s, &dev, body, false).await
}
