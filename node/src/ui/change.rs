//! Changes from the web app (`POST /api/call`): which control requests a browser may make,
//! what a payment must match, and the PIN or passphrase it needs.

use super::{BODY_DEADLINE, MAX_BODY, Ui, envelope, envelope_error, refuse, run};
use crate::api::{self, ApiError, ErrorKind, Request};
use crate::daemon::Node;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use meshpay_protocol::{PaymentRequest, PrintableKey as _};
use meshpay_transports::http::read_body;
use serde::Deserialize;
use std::sync::Arc;

/// A change from the web app: a control request, the PIN or passphrase where a payment needs
/// one, and for a payment what the page showed the user (refused if the request says other).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    call: Request,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    shown: Option<Shown>,
}

/// What the wallet screen showed before the user confirmed a payment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Shown {
    amount: u64,
    payee: String,
}

pub(super) async fn call(State(ui): State<Arc<Ui>>, h: HeaderMap, body: Body) -> Response {
    if let Err(e) = ui.change(&h) {
        return envelope_error(&e);
    }
    let Ok(_permit) = ui.calls.clone().try_acquire_owned() else {
        return refuse(
            ErrorKind::Busy,
            "the node is busy with other calls; try again",
        );
    };
    let bytes = match read_body(body, MAX_BODY, BODY_DEADLINE).await {
        Ok(b) => b,
        Err(e) => return refuse(ErrorKind::Input, e.to_string()),
    };
    let call: Change = match serde_json::from_slice(&bytes) {
        Ok(c) => c,
        Err(e) => return refuse(ErrorKind::Input, format!("not a call: {e}")),
    };
    let amount = match &call.call {
        Request::Pay {
            request: Some(text),
            to: None,
            amount: None,
            ..
        } => match PaymentRequest::from_text(text) {
            Ok(r) => {
                let shown = call.shown.as_ref();
                if shown.is_none_or(|s| s.amount != r.amount || s.payee != r.payee.to_text()) {
                    return refuse(
                        ErrorKind::Input,
                        "the request is not the one shown: check it again before paying",
                    );
                }
                Some(r.amount)
            }
            // The node says why it does not parse; nothing is paid.
            Err(_) => None,
        },
        Request::Pay { .. } => {
            return refuse(
                ErrorKind::Input,
                "the web app pays payment requests only: paste or scan one",
            );
        }
        Request::Request { .. } | Request::Sync => None,
        Request::Topup { url, .. } | Request::SyncIssuer { url } => {
            if let Err(e) = known_issuer(&ui.node, url).await {
                return envelope_error(&e);
            }
            None
        }
        _ => {
            return refuse(
                ErrorKind::Input,
                "the web app cannot make this call: use the command line",
            );
        }
    };
    let now = crate::daemon::now();
    let mut unconfirmed = None;
    if let Some(a) = amount {
        if ui
            .access
            .needs_pin(a, ui.node.ui_settings().confirm_above, now)
        {
            if let Err(e) = authorize(&ui, call.secret).await {
                return envelope_error(&e);
            }
        } else {
            unconfirmed = Some(a);
        }
    }
    let answer = run(&ui.node, call.call).await;
    if let (Some(a), Ok(api::Answer::Paid(o))) = (unconfirmed, &answer) {
        if o.status != meshpay_protocol::device::SentStatus::Refused {
            ui.access.paid_unconfirmed(a, now);
        }
    }
    envelope(answer)
}

/// A settlement server the web app may send the node to: one named by a trusted issuer's
/// descriptor, or the configured gateway. (A paired browser cannot point the node at any
/// address on the vendor's network.)
async fn known_issuer(node: &Node, url: &str) -> Result<(), ApiError> {
    let url = url.trim_end_matches('/');
    if node
        .gateway_configured()
        .is_some_and(|g| g.trim_end_matches('/') == url)
    {
        return Ok(());
    }
    let issuers = node
        .store()
        .issuers()
        .await
        .map_err(|e| ApiError::new(ErrorKind::Storage, e.to_string()))?;
    if issuers
        .iter()
        .any(|d| d.body().urls.iter().any(|u| u.trim_end_matches('/') == url))
    {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::Input,
            format!(
                "{url} is not a settlement server of an issuer this node trusts; use the command line for another"
            ),
        ))
    }
}

/// Checks the PIN (or the passphrase) a payment needs, one check at a time.
async fn authorize(ui: &Ui, secret: Option<String>) -> Result<(), ApiError> {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return Err(ApiError::new(
            ErrorKind::Authorize,
            "this payment needs the wallet's PIN (or its passphrase)",
        ));
    };
    let _one = ui.checking.lock().await;
    ui.access
        .try_secret(crate::daemon::now())
        .map_err(|e| ApiError::new(ErrorKind::Authorize, e.to_string()))?;
    let store = ui.node.store();
    let storage = |e: crate::store::StoreError| ApiError::new(ErrorKind::Storage, e.to_string());
    // With a PIN set, only the PIN; else the passphrase (the sealed device key).
    let (sealed, is_pin) = match store.meta(crate::cli::PIN_META).await.map_err(storage)? {
        Some(pin) => (Some(pin), true),
        None => (store.meta("device_secret").await.map_err(storage)?, false),
    };
    let right = tokio::task::spawn_blocking(move || {
        sealed.is_some_and(|b| {
            if is_pin {
                crate::keystore::open::<11>(&b, &secret).is_ok()
            } else {
                crate::keystore::open::<32>(&b, &secret).is_ok()
            }
        })
    })
    .await
    .unwrap_or(false);
    if right {
        ui.access.right();
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::Authorize,
            "wrong PIN or passphrase; nothing was paid",
        ))
    }
}
