//! The device's vocabulary: the time of an input, ids, what it asks its driver to do
//! ([`Output`]), what it tells ([`Event`]), the user's commands and their answers, its errors
//! and its configuration.

use super::{Change, ImportReport, Learned, PayOutcome};
use crate::bundle::{Content, FileError};
use crate::keys::{DeviceKey, IssuerId};
use crate::objects::{
    AllowanceCert, AllowanceId, Amount, Hash, IssuerDescriptor, PaymentRequest, Reason,
    SettlementReceipt, UnixTime,
};
use crate::sync::Routing;
use crate::wallet::PayError;

/// The time of an input: a monotonic clock for timers and the wall clock for the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (from any origin); deadlines are in this clock.
    pub mono: u64,
    /// Wall-clock Unix seconds: signed into IOUs and judged against expiries.
    pub unix: UnixTime,
}

/// The id of a command, chosen by the driver; its [`Event::Done`] carries it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// The id of an outgoing request, chosen by the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// The id of an incoming request, chosen by the driver; the [`Output::Reply`] carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyId(pub u64);

/// The id of a write; [`Device::committed`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitId(pub u64);

/// A failed write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommitError {
    /// Whether the main write went through and only what follows it failed (the restore
    /// sentinel after a spend): the state is changed, but nothing may be sent.
    pub committed: bool,
    /// What failed.
    pub message: String,
}

/// Something for the driver to carry out, in order.
// A write is moved once, from the device to the driver: boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Write this durably, then report with [`Device::committed`] before anything else.
    Commit {
        /// Its id.
        id: CommitId,
        /// What to write.
        change: Change,
    },
    /// Send this request frame to `to`; report the answer with [`Device::handle_response`].
    Request {
        /// Its id.
        id: RequestId,
        /// The peer.
        to: DeviceKey,
        /// The encoded [`Request`].
        frame: Vec<u8>,
    },
    /// Answer the incoming request the driver called `to`.
    Reply {
        /// The driver's id for the request.
        to: ReplyId,
        /// The encoded [`crate::message::Response`].
        frame: Vec<u8>,
        /// Disconnect the peer once the answer is sent: it broke the rules.
        then_drop: bool,
    },
    /// Drop the link to this peer.
    Disconnect(DeviceKey),
    /// Something happened.
    Event(Event),
}

/// What happened, for the user, the log or a measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A command ended.
    Done {
        /// The command.
        op: OpId,
        /// Its answer, or why it failed.
        result: Result<Answer, DeviceError>,
    },
    /// A payment was accepted and acked.
    Received {
        /// The payer's link.
        from: DeviceKey,
        /// The IOU.
        iou: crate::iou::Iou,
    },
    /// An incoming IOU was refused.
    Refused {
        /// The peer that sent it.
        from: DeviceKey,
        /// Why.
        reason: Reason,
    },
    /// An automatic re-send of a pending payment got this answer.
    Resent(PayOutcome),
    /// An admitted bundle taught the device something.
    Learned(Learned),
    /// The issuer's decision on one of this device's payments is now known.
    Settled {
        /// The IOU.
        iou: Hash,
        /// The decision.
        status: crate::objects::ReceiptStatus,
    },
    /// A sync session with a peer ended.
    Synced {
        /// The peer.
        peer: DeviceKey,
        /// Bundles taken from it.
        took: usize,
        /// Bundles handed to it.
        gave: usize,
    },
    /// A sync session with a peer failed.
    SyncFailed {
        /// The peer.
        peer: DeviceKey,
        /// Why.
        why: String,
    },
    /// A peer broke the rules and is dropped.
    Misbehaved {
        /// The peer.
        peer: DeviceKey,
        /// What it did.
        what: String,
    },
    /// A write failed; the device carried on without it (bundles, settlement marks: the
    /// mesh holds other copies and the next round repeats them).
    WriteFailed {
        /// What failed.
        why: String,
    },
}

/// A user's command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Pay a request (from a QR code or text). Paying it again sends the same IOU again.
    Pay {
        /// The request.
        request: PaymentRequest,
        /// Idempotency key: a payment made under it before is answered instead.
        key: Option<String>,
    },
    /// Ask the connected peer `payee` for a request of `amount` and pay it.
    PayPeer {
        /// The payee.
        payee: DeviceKey,
        /// Minor units.
        amount: Amount,
        /// Currency.
        currency: String,
        /// Memo for the payee.
        memo: String,
        /// Pay even if the same payment was made moments ago.
        again: bool,
        /// Idempotency key.
        key: Option<String>,
    },
    /// Make a payment request to show.
    Request {
        /// Minor units.
        amount: Amount,
        /// Currency.
        currency: String,
        /// Memo.
        memo: String,
    },
    /// Trust an issuer.
    Trust(IssuerDescriptor),
    /// Add an allowance certificate issued to this device.
    AddAllowance(AllowanceCert),
    /// Sync with every connected peer now.
    SyncAll,
    /// Take in a bundle file.
    Import(Vec<u8>),
    /// Receipts from `issuer` (this device acting as its gateway, or reading its feed):
    /// they settle this device's payments, and with `carry` they go into the mesh too.
    Receipts {
        /// The issuer.
        issuer: IssuerId,
        /// Its receipts.
        receipts: Vec<SettlementReceipt>,
        /// Put them into the mesh for others.
        carry: bool,
    },
    /// Fraud proofs and revocations from `issuer`'s feeds, to put into the mesh. Others'
    /// are left out: a server cannot use a gateway to spread another issuer's alerts.
    Alerts {
        /// The issuer.
        issuer: IssuerId,
        /// Fraud proofs and revocations.
        alerts: Vec<Content>,
    },
}

/// What a command answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// A payment's state.
    Paid(PayOutcome),
    /// The request made.
    Requested(PaymentRequest),
    /// The issuer is trusted.
    Trusted,
    /// The allowance is held (`new`: it was not before).
    AllowanceAdded {
        /// Whether it is new.
        new: bool,
    },
    /// Sync with the connected peers ended.
    Synced {
        /// Peers synced with.
        peers: usize,
        /// Bundles taken.
        took: usize,
        /// Bundles given.
        gave: usize,
    },
    /// A bundle file was taken in.
    Imported(ImportReport),
    /// Receipts taken.
    Receipts {
        /// Final receipts of the issuer among them.
        taken: usize,
        /// This device's payments whose settlement changed.
        updated: Vec<Hash>,
        /// Receipts new to the mesh store.
        carried: usize,
    },
    /// Alerts taken.
    Alerts {
        /// New to the mesh store.
        added: usize,
    },
}

/// Why a command failed. Its `Display` is the line a user reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// A wallet rule refused the payment; nothing was spent.
    #[error("{0}")]
    Pay(#[from] PayError),
    /// An idempotency key came again for a different payment.
    #[error(
        "the idempotency key {key:?} was used for another payment ({amount} {currency} to {payee})"
    )]
    KeyReused {
        /// The key.
        key: String,
        /// The payment made under it.
        amount: Amount,
        /// Its currency.
        currency: String,
        /// Its payee, short form.
        payee: String,
    },
    /// The issuer is not trusted.
    #[error("issuer {0} is not trusted: `meshpay trust` its descriptor first")]
    Untrusted(String),
    /// The allowance names another holder.
    #[error("this allowance belongs to {0}, not to this device")]
    NotMine(String),
    /// A signature does not verify.
    #[error("the {0}'s signature does not verify")]
    BadSignature(&'static str),
    /// The allowance was spent from by an earlier copy of this wallet.
    #[error(
        "allowance {0} was spent from by an earlier copy of this wallet and cannot be used again; get a fresh one"
    )]
    SpentByEarlierCopy(AllowanceId),
    /// The peer could not be reached.
    #[error("{0}")]
    Link(String),
    /// The peer refused, or answered wrongly.
    #[error("the peer answered wrongly: {0}")]
    Peer(String),
    /// The write failed; nothing was changed.
    #[error("{0}")]
    Storage(String),
    /// The spend was written but the restore sentinel was not: the payment was not sent
    /// (it is re-sent as pending once the sentinel can be written... or on the next start).
    #[error("cannot write the restore sentinel: {0}")]
    Sentinel(String),
    /// A bundle file is broken or too large; nothing was taken.
    #[error(transparent)]
    File(#[from] FileError),
    /// The input does not pass the wire format's rules.
    #[error("{0}")]
    Invalid(#[from] crate::codec::DecodeError),
    /// This device is a relay: it carries bundles and takes no payments.
    #[error("this node is a relay: it carries bundles and makes no payments")]
    Relay,
}

/// Limits and cadences of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// A relay carries bundles and takes no payments.
    pub relay: bool,
    /// Record routing.
    pub routing: Routing,
    /// Bytes of bundles handed over per sync session at most.
    pub sync_budget: u64,
    /// How long a payment request stays open, seconds.
    pub request_ttl_secs: u64,
    /// Most unpaid requests one peer may have asked for.
    pub max_open_asks_per_peer: usize,
    /// Most unpaid requests in all.
    pub max_open_requests: usize,
    /// Re-send pending payments to connected payees this often (ms); `None`: only when a
    /// payee connects.
    pub resend_every: Option<u64>,
    /// Sync with every connected peer this often (ms), and drop expired bundles; `None`:
    /// only when a peer connects or on command.
    pub sync_every: Option<u64>,
    /// How long after an automatic re-send got a payment acknowledged the same `PayPeer` is
    /// taken as a retry of it rather than a new payment, seconds.
    pub retry_window_secs: u64,
    /// Steps one sync session may take before it is abandoned (a peer that never closes).
    pub max_session_steps: u32,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            relay: false,
            routing: Routing::Epidemic,
            sync_budget: 4 << 20,
            request_ttl_secs: 900,
            max_open_asks_per_peer: 16,
            max_open_requests: 10_000,
            resend_every: Some(30_000),
            sync_every: Some(10_000),
            retry_window_secs: 300,
            max_session_steps: 100_000,
        }
    }
}
