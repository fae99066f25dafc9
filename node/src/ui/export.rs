//! Payments as CSV (`GET /today.csv`), for a spreadsheet.

use super::{Paired, Ui, envelope_error};
use crate::api;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
pub(super) struct Since {
    #[serde(default)]
    since: Option<u64>,
}

/// `GET /today.csv?since=<unix>`: the payments since then (default: the last day) as CSV.
pub(super) async fn today_csv(
    State(ui): State<Arc<Ui>>,
    _: Paired,
    Query(q): Query<Since>,
) -> Response {
    let since = q
        .since
        .unwrap_or_else(|| crate::daemon::now().saturating_sub(86_400));
    match crate::control::history(&ui.node).await {
        Ok(items) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"meshpay-today.csv\"",
                ),
            ],
            csv(&items, since),
        )
            .into_response(),
        Err(e) => envelope_error(&crate::control::api_error(&e)),
    }
}

/// The payments since `since` as CSV, one row each, oldest first.
fn csv(items: &[api::HistoryItem], since: u64) -> String {
    use std::fmt::Write as _;
    fn field(s: &str) -> String {
        // Quote every text field; a leading formula character is defused for spreadsheets.
        let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s.to_owned()
        };
        format!("\"{}\"", s.replace('"', "\"\""))
    }
    let mut out = String::from(
        "time,direction,amount,currency,counterparty,memo,status,reason,settlement,allowance,counter,iou\n",
    );
    let mut rows: Vec<_> = items.iter().filter(|i| i.time >= since).collect();
    rows.sort_by_key(|i| i.time);
    for i in rows {
        let direction = match i.direction {
            api::Direction::Sent => "sent",
            api::Direction::Received => "received",
        };
        let _ = writeln!(
            out,
            "{},{direction},{},{},{},{},{},{},{},{},{},{}",
            i.time,
            i.amount,
            field(&i.currency),
            field(&i.counterparty),
            field(&i.memo),
            i.status.name(),
            field(i.reason.as_deref().unwrap_or("")),
            field(i.settlement.as_deref().unwrap_or("")),
            i.allowance,
            i.counter,
            i.iou
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshpay_protocol::device::SentStatus;

    #[test]
    fn csv_quotes_text_and_defuses_formulas() {
        let item = api::HistoryItem {
            direction: api::Direction::Received,
            iou: "ab".into(),
            counterparty: "mpdev1x".into(),
            amount: 1250,
            currency: "KES".into(),
            memo: "=HYPERLINK(\"x\")".into(),
            status: SentStatus::Acked,
            reason: None,
            allowance: "cd".into(),
            counter: 3,
            time: 100,
            settlement: Some("settled".into()),
            nonce: "ef".into(),
        };
        let old = api::HistoryItem {
            time: 10,
            ..item.clone()
        };
        let text = csv(&[item, old], 50);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2, "only rows since the start: {text}");
        assert_eq!(
            lines[1],
            "100,received,1250,\"KES\",\"mpdev1x\",\"'=HYPERLINK(\"\"x\"\")\",acked,\"\",\"settled\",cd,3,ab"
        );
    }
}
