//! The control API's types, shared by the daemon ([`crate::control`]) and the command line:
//! one [`Request`] per connection, one [`Answer`] (or an [`ApiError`]) back, as JSON.
//!
//! On the wire a request is `{"token": …, "cmd": "<name>", …fields}` and an answer is
//! `{"ok": true, "data": <answer>}` or `{"ok": false, "kind": "<kind>", "error": "<line>"}`.
//! The `data` of an answer is what `--json` prints; which [`Answer`] it is follows from the
//! request ([`Answer::decode`]).

use crate::gateway::GatewayRound;
use crate::mesh::ImportReport;
use meshpay_protocol::device::SentStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A control request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// This device.
    Id,
    /// Connected peers.
    Peers,
    /// Make a payment request.
    Request {
        /// Minor units.
        amount: u64,
        /// Currency (default from config).
        currency: Option<String>,
        /// Memo.
        memo: Option<String>,
    },
    /// Pay a request, or a peer an amount.
    Pay {
        /// A request in text form.
        request: Option<String>,
        /// Or: the payee's device key.
        to: Option<String>,
        /// With: the amount.
        amount: Option<u64>,
        /// Currency (default from config).
        currency: Option<String>,
        /// Memo.
        memo: Option<String>,
        /// Pay again even if the same payment was made moments ago.
        #[serde(default)]
        again: bool,
        /// Idempotency key: a payment already made under it is answered instead.
        #[serde(default)]
        id: Option<String>,
    },
    /// Balances per currency.
    Balance,
    /// Payments sent and received.
    History,
    /// Allowances held.
    Allowances,
    /// Add an allowance certificate (hex of its encoding).
    AddAllowance {
        /// Hex.
        cert: String,
    },
    /// Trust an issuer (hex of its descriptor's encoding).
    Trust {
        /// Hex.
        descriptor: String,
    },
    /// Fraud proofs held.
    Frauds,
    /// Get an allowance from the issuer at `url`.
    Topup {
        /// The settlement server.
        url: String,
        /// Amount to lock.
        amount: u64,
        /// Currency (default from config).
        currency: Option<String>,
        /// Validity in days.
        days: u64,
    },
    /// Upload sealed records to the issuer at `url` and fetch its receipts.
    SyncIssuer {
        /// The settlement server.
        url: String,
    },
    /// The sealed records of received payments (hex).
    Records,
    /// The mesh store and proof of carriage.
    Mesh,
    /// Sync with every connected peer now.
    Sync,
    /// Write every carried bundle to a file.
    Export {
        /// Absolute path.
        path: String,
    },
    /// Import a bundle file.
    Import {
        /// Absolute path.
        path: String,
    },
    /// Dial a peer.
    Dial {
        /// Multiaddress.
        addr: String,
    },
    /// What needs the user's attention: fraud proofs, revocations, a restore, peers dropped.
    Alerts,
    /// A new one-time pairing link for the web app.
    Pair,
    /// Payments this node refused since it started, and why.
    Refusals,
}

/// This device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdInfo {
    /// Its key, text form.
    pub device_key: String,
    /// Its libp2p peer id.
    pub peer_id: Option<String>,
    /// Listening addresses.
    pub listen: Vec<String>,
    /// The restore check made at start.
    pub restore_check: String,
}

/// A connected peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peer {
    /// Its key, text form.
    pub device_key: String,
    /// The link: `p2p` or `ble`.
    pub link: String,
    /// Its address on that link.
    pub address: String,
}

/// A payment request, with its text form (what a QR code shows).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestInfo {
    /// Text form.
    pub text: String,
    /// The payee, text form.
    pub payee: String,
    /// Minor units.
    pub amount: u64,
    /// Currency.
    pub currency: String,
    /// Memo.
    pub memo: String,
    /// Nonce, hex.
    pub nonce: String,
    /// Open until (Unix seconds).
    pub expires: u64,
}

/// What became of a payment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayOutcome {
    /// `acked`, `refused` or `pending`.
    pub status: SentStatus,
    /// The IOU id.
    pub iou: String,
    /// The payee.
    pub payee: String,
    /// Amount in minor units.
    pub amount: u64,
    /// Currency.
    pub currency: String,
    /// The IOU's counter in its allowance.
    pub counter: u32,
    /// Refusal reason, or why it is still pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set when this answers a retry of an earlier payment instead of paying again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated: Option<String>,
}

/// Money in one currency.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Balance {
    /// Sum of the allowances' limits.
    pub allowance_limit: u64,
    /// What can still be paid now.
    pub spendable: u64,
    /// Paid and acknowledged.
    pub sent_acked: u64,
    /// Paid, not yet acknowledged.
    pub sent_pending: u64,
    /// Refused by the payee.
    pub sent_refused: u64,
    /// Received.
    pub received: u64,
}

/// Sent or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Paid by this wallet.
    Sent,
    /// Paid to this wallet.
    Received,
}

/// One payment in the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryItem {
    /// Sent or received.
    pub direction: Direction,
    /// The IOU id.
    pub iou: String,
    /// The payee (sent) or the payer (received).
    pub counterparty: String,
    /// Minor units.
    pub amount: u64,
    /// Currency.
    pub currency: String,
    /// Memo.
    pub memo: String,
    /// Its status (a received payment is acked).
    pub status: SentStatus,
    /// Refusal reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Allowance id, hex.
    pub allowance: String,
    /// Counter in the allowance.
    pub counter: u32,
    /// When (Unix seconds).
    pub time: u64,
    /// The issuer's decision: `settled` or `rejected: <reason>`.
    pub settlement: Option<String>,
    /// The nonce of the payment request it pays, hex.
    #[serde(default)]
    pub nonce: String,
}

/// An allowance held.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Allowance {
    /// Id, hex.
    pub id: String,
    /// Issuer, text form.
    pub issuer: String,
    /// Currency.
    pub currency: String,
    /// Limit.
    pub limit: u64,
    /// Spent so far.
    pub spent: u64,
    /// Left.
    pub available: u64,
    /// Last counter used.
    pub counter: u32,
    /// Most per payment.
    pub max_payment: u64,
    /// Valid from (Unix seconds).
    pub valid_from: u64,
    /// Valid until (Unix seconds).
    pub valid_until: u64,
    /// Settle by (Unix seconds).
    pub settle_by: u64,
    /// Retired after a suspected restore.
    pub retired: bool,
    /// Usable now.
    pub usable: bool,
}

/// A fraud proof held.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fraud {
    /// The allowance, hex.
    pub allowance: String,
    /// Its holder, text form.
    pub holder: String,
    /// Its issuer, text form.
    pub issuer: String,
    /// The counter spent twice.
    pub counter: u32,
    /// When it was found (Unix seconds).
    pub found_at: u64,
    /// The proof's encoding, hex.
    pub proof: String,
}

/// A hand-over receipt a peer signed for what this node carried to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Carried {
    /// The peer, text form.
    pub taker: String,
    /// Bundles.
    pub count: u32,
    /// Bytes.
    pub bytes: u64,
    /// When (Unix seconds).
    pub at: u64,
    /// The receipt's encoding, hex.
    pub receipt: String,
}

/// The mesh store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeshInfo {
    /// Bundles held.
    pub bundles: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Bundles per kind.
    pub by_kind: BTreeMap<String, usize>,
    /// Settled records remembered.
    pub tombstones: usize,
    /// The quota.
    pub max_bytes: u64,
    /// Writes to disk that failed since start.
    pub write_errors: u64,
    /// Proof of carriage, newest first.
    pub carried: Vec<Carried>,
    /// The last round with a settlement server, if this node is a gateway or synced by hand.
    #[serde(default)]
    pub gateway: Option<GatewayContact>,
}

/// A round with a settlement server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayContact {
    /// The server.
    pub url: String,
    /// When (Unix seconds).
    pub at: u64,
    /// What the round did, when it went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<GatewayRound>,
    /// Why it did not, otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A fraud proof: an allowance spent twice, refused from then on.
    Fraud,
    /// The issuer revoked an allowance.
    Revoked,
    /// This wallet's files were restored from a copy; its allowances are retired.
    Restore,
    /// A peer broke the protocol's rules and was dropped.
    Misbehaved,
}

/// Something the node's user should know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// When it was found (Unix seconds).
    pub at: u64,
    /// The allowance (hex) or the peer (text form) it concerns.
    pub subject: String,
    /// The line a user reads.
    pub detail: String,
}

/// A payment this node refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    /// The peer that sent it, text form.
    pub payer: String,
    /// Why (a refusal reason's name, e.g. `counter_conflict`).
    pub reason: String,
    /// When (Unix seconds).
    pub at: u64,
}

/// A one-time link that opens a web-app session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairLink {
    /// Open it once, in the browser to pair.
    pub url: String,
    /// It stops working then (Unix seconds).
    pub expires: u64,
}

/// Something that happened in the node, as the web app's event stream sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Notice {
    /// A payment was received and acknowledged.
    Received {
        /// The IOU id, hex.
        iou: String,
        /// The payer, text form.
        payer: String,
        /// Minor units.
        amount: u64,
        /// The IOU's counter in its allowance.
        counter: u32,
        /// The payment request's nonce, hex: which request it pays.
        nonce: String,
        /// When (Unix seconds).
        at: u64,
    },
    /// An incoming payment was refused.
    Refused {
        /// The peer that sent it, text form.
        payer: String,
        /// Why.
        reason: String,
        /// When (Unix seconds).
        at: u64,
    },
    /// A pending payment of this wallet got an answer.
    Sent(PayOutcome),
    /// The issuer's decision on a payment is known.
    Settled {
        /// The IOU id, hex.
        iou: String,
        /// `settled` or `rejected: <reason>`.
        status: String,
    },
    /// An alert.
    Alert(Alert),
    /// The connected peers changed.
    Peers,
    /// A sync with a peer moved bundles.
    Synced {
        /// The peer, text form.
        peer: String,
        /// Bundles taken.
        took: usize,
        /// Bundles given.
        gave: usize,
    },
    /// A round with a settlement server ended.
    Gateway(GatewayContact),
}

/// A control answer: the `data` of an `ok` answer.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// [`Request::Id`].
    Id(IdInfo),
    /// [`Request::Peers`].
    Peers(Vec<Peer>),
    /// [`Request::Request`].
    Request(RequestInfo),
    /// [`Request::Pay`].
    Paid(PayOutcome),
    /// [`Request::Balance`]: per currency.
    Balance(BTreeMap<String, Balance>),
    /// [`Request::History`].
    History(Vec<HistoryItem>),
    /// [`Request::Allowances`].
    Allowances(Vec<Allowance>),
    /// [`Request::AddAllowance`].
    AllowanceAdded(AllowanceAdded),
    /// [`Request::Trust`].
    Trusted(Trusted),
    /// [`Request::Frauds`].
    Frauds(Vec<Fraud>),
    /// [`Request::Topup`].
    ToppedUp(ToppedUp),
    /// [`Request::SyncIssuer`].
    GatewayRound(GatewayRound),
    /// [`Request::Records`]: hex encodings.
    Records(Vec<String>),
    /// [`Request::Mesh`].
    Mesh(MeshInfo),
    /// [`Request::Sync`].
    Synced(Synced),
    /// [`Request::Export`].
    Exported(Exported),
    /// [`Request::Import`].
    Imported(ImportReport),
    /// [`Request::Dial`].
    Dialed(Dialed),
    /// [`Request::Alerts`], newest first.
    Alerts(Vec<Alert>),
    /// [`Request::Pair`].
    Paired(PairLink),
    /// [`Request::Refusals`], newest first.
    Refusals(Vec<Refusal>),
}

/// An allowance added.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllowanceAdded {
    /// Id, hex.
    pub id: String,
    /// Not held before.
    pub new: bool,
    /// Limit.
    pub limit: u64,
    /// Currency.
    pub currency: String,
}

/// An issuer now trusted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trusted {
    /// Issuer, text form.
    pub issuer: String,
    /// Its name.
    pub name: String,
}

/// A new allowance from the issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToppedUp {
    /// Allowance id, hex.
    pub id: String,
    /// Limit.
    pub limit: u64,
    /// Currency.
    pub currency: String,
    /// Valid until (Unix seconds).
    pub valid_until: u64,
    /// Settle by (Unix seconds).
    pub settle_by: u64,
}

/// A sync with the connected peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Synced {
    /// Peers synced with.
    pub peers: usize,
    /// Bundles taken.
    pub took: usize,
    /// Bundles given.
    pub gave: usize,
}

/// A bundle file written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exported {
    /// Bundles written.
    pub bundles: usize,
    /// Bytes written.
    pub bytes: usize,
    /// Where.
    pub path: String,
}

/// A peer dialled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dialed {
    /// The address dialled.
    pub address: String,
    /// The device reached, text form.
    pub device_key: String,
    /// Its libp2p peer id.
    pub peer_id: Option<String>,
}

impl Answer {
    /// The answer to `request` from the `data` of an `ok` answer.
    pub fn decode(request: &Request, data: serde_json::Value) -> serde_json::Result<Self> {
        use serde_json::from_value as v;
        Ok(match request {
            Request::Id => Answer::Id(v(data)?),
            Request::Peers => Answer::Peers(v(data)?),
            Request::Request { .. } => Answer::Request(v(data)?),
            Request::Pay { .. } => Answer::Paid(v(data)?),
            Request::Balance => Answer::Balance(v(data)?),
            Request::History => Answer::History(v(data)?),
            Request::Allowances => Answer::Allowances(v(data)?),
            Request::AddAllowance { .. } => Answer::AllowanceAdded(v(data)?),
            Request::Trust { .. } => Answer::Trusted(v(data)?),
            Request::Frauds => Answer::Frauds(v(data)?),
            Request::Topup { .. } => Answer::ToppedUp(v(data)?),
            Request::SyncIssuer { .. } => Answer::GatewayRound(v(data)?),
            Request::Records => Answer::Records(v(data)?),
            Request::Mesh => Answer::Mesh(v(data)?),
            Request::Sync => Answer::Synced(v(data)?),
            Request::Export { .. } => Answer::Exported(v(data)?),
            Request::Import { .. } => Answer::Imported(v(data)?),
            Request::Dial { .. } => Answer::Dialed(v(data)?),
            Request::Alerts => Answer::Alerts(v(data)?),
            Request::Pair => Answer::Paired(v(data)?),
            Request::Refusals => Answer::Refusals(v(data)?),
        })
    }
}

/// What kind of failure an error answer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request or its input is wrong; nothing changed.
    Input,
    /// A wallet rule refused the payment; nothing was spent.
    Pay,
    /// The peer could not be reached, or answered wrongly.
    Peer,
    /// The issuer's server refused, could not be reached, or answered wrongly.
    Issuer,
    /// Storage failed; nothing was changed (or, for the restore sentinel, nothing was sent).
    Storage,
    /// The control token is wrong, or (web app) the browser is not paired or the CSRF token
    /// is missing.
    Unauthorized,
    /// (Web app) the payment needs the wallet's PIN or passphrase, or the one given is wrong.
    Authorize,
    /// (Web app) a change without the session's CSRF token, or from another site.
    Forbidden,
    /// (Web app) too many requests at once; try again shortly.
    Busy,
    /// The node is stopping.
    Stopped,
}

/// An error answer.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct ApiError {
    /// Its kind.
    pub kind: ErrorKind,
    /// The line a user reads.
    #[serde(rename = "error")]
    pub message: String,
}

impl ApiError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_their_json_and_decode_by_request() {
        let paid = Answer::Paid(PayOutcome {
            status: SentStatus::Acked,
            iou: "ab".into(),
            payee: "mp1x".into(),
            amount: 1250,
            currency: "KES".into(),
            counter: 3,
            reason: None,
            repeated: None,
        });
        let v = serde_json::to_value(&paid).unwrap();
        assert_eq!(v["status"], "acked");
        assert_eq!(v["amount"], 1250);
        assert!(v.get("reason").is_none());
        let pay = Request::Pay {
            request: Some("mp1req".into()),
            to: None,
            amount: None,
            currency: None,
            memo: None,
            again: false,
            id: None,
        };
        match Answer::decode(&pay, v.clone()).unwrap() {
            Answer::Paid(o) => assert_eq!((o.status, o.counter), (SentStatus::Acked, 3)),
            other => panic!("{other:?}"),
        }
        // The wrong shape for the request is an error, not a guess.
        assert!(Answer::decode(&Request::Peers, v).is_err());
        let synced = serde_json::json!({"peers": 2, "took": 5, "gave": 1});
        assert!(matches!(
            Answer::decode(&Request::Sync, synced),
            Ok(Answer::Synced(Synced {
                peers: 2,
                took: 5,
                gave: 1
            }))
        ));
    }

    #[test]
    fn errors_carry_their_kind() {
        let e = ApiError::new(ErrorKind::Pay, "no usable allowance");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"kind": "pay", "error": "no usable allowance"})
        );
        let back: ApiError = serde_json::from_value(v).unwrap();
        assert_eq!(
            (back.kind, back.to_string().as_str()),
            (ErrorKind::Pay, "no usable allowance")
        );
    }
}
