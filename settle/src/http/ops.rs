//! Operations: health, metrics and the OpenAPI document.

use super::{ApiError, AppState};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Risk alerts are counted again at most this often for `/metrics` (they read the books).
const RISK_COUNTS_MAX_AGE: Duration = Duration::from_secs(5);

/// Prometheus counters (text exposition format 0.0.4), and the risk alerts standing per rule
/// (`meshpay_risk_alerts{rule="…"}`, counted at most 5 s before).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Counters and gauges", content_type = "text/plain", body = String)))]
pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = s.server.metrics.render(s.waiting.load(Ordering::Relaxed));
    // If the books cannot be read now, the risk gauges are left out rather than shown as 0.
    if let Some(counts) = s.server.risk_counts(RISK_COUNTS_MAX_AGE).await {
        text.push_str(&crate::metrics::render_risk(&counts));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Liveness: answers at once, never waiting behind settlement work.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The server is up", content_type = "text/plain", body = String)))]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// This document: the OpenAPI 3.1 description of every route served.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub(super) async fn openapi(
    axum::Extension(doc): axum::Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Response {
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
