//! What a device remembers about its payments and requests: the records its driver keeps
//! durably and hands back at start-up ([`super::DeviceInit`]), and the changes it asks the
//! driver to write ([`Change`]).

use crate::bundle::Content;
use crate::iou::{FraudProof, Iou};
use crate::keys::{DeviceKey, IssuerId};
use crate::objects::{
    AllowanceCert, Amount, Hash, IssuerDescriptor, Nonce, PaymentAck, PaymentRequest,
    ReceiptStatus, UnixTime,
};
use crate::record::SealedRecord;
use crate::store::Origin;
use crate::sync::HandOver;
use crate::wallet::Spend;
use std::sync::Arc;

/// Status of a payment this device made. In JSON: `"pending"`, `"acked"`, `"refused"`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SentStatus {
    /// Committed and sent (or about to be); no answer yet.
    Pending,
    /// The payee acked it.
    Acked,
    /// The payee refused it.
    Refused,
}

impl SentStatus {
    /// Its name: `pending`, `acked` or `refused`.
    pub fn name(self) -> &'static str {
        match self {
            SentStatus::Pending => "pending",
            SentStatus::Acked => "acked",
            SentStatus::Refused => "refused",
        }
    }

    /// The status with this name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(SentStatus::Pending),
            "acked" => Some(SentStatus::Acked),
            "refused" => Some(SentStatus::Refused),
            _ => None,
        }
    }
}

/// Who got the payee's answer to a sent payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnsweredBy {
    /// The command that made the payment.
    Pay,
    /// An automatic re-send, after the command had reported it pending.
    Resend,
}

impl AnsweredBy {
    /// Its name: `pay` or `resend`.
    pub fn name(self) -> &'static str {
        match self {
            AnsweredBy::Pay => "pay",
            AnsweredBy::Resend => "resend",
        }
    }
}

/// A payment this device made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentPayment {
    /// The IOU.
    pub iou: Iou,
    /// Currency.
    pub currency: String,
    /// Memo of the request.
    pub memo: String,
    /// When it was made.
    pub created_at: UnixTime,
    /// Status.
    pub status: SentStatus,
    /// Refusal reason (its name), if refused.
    pub reason: Option<String>,
    /// The payee's ack, if acked.
    pub ack: Option<PaymentAck>,
    /// The idempotency key the payment was made under, if any.
    pub key: Option<String>,
    /// When the payee's answer arrived, if it did.
    pub answered_at: Option<UnixTime>,
    /// Whether an automatic re-send got that answer (the command had reported it pending).
    pub answered_by_resend: bool,
    /// The issuer's final decision, once known.
    pub settlement: Option<ReceiptStatus>,
}

/// A payment this device received: what it needs to answer a retry and to match a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPayment {
    /// The IOU.
    pub iou: Iou,
    /// The ack sent for it.
    pub ack: PaymentAck,
    /// The issuer's final decision, once known.
    pub settlement: Option<ReceiptStatus>,
}

/// A payment request this device made and nobody has paid yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// The request.
    pub request: PaymentRequest,
    /// The peer that asked for it (`None`: made here, shown as a QR code or text).
    pub asked_by: Option<DeviceKey>,
    /// When it was made.
    pub created_at: UnixTime,
}

/// What became of a payment, as a command answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayOutcome {
    /// `pending`, `acked` or `refused`.
    pub status: SentStatus,
    /// The IOU.
    pub iou: Hash,
    /// The payee.
    pub payee: DeviceKey,
    /// Amount in minor units.
    pub amount: Amount,
    /// Currency.
    pub currency: String,
    /// The IOU's counter in its allowance.
    pub counter: u32,
    /// Refusal reason, or why it is still pending.
    pub reason: Option<String>,
    /// Set when this answers a retry of an earlier payment instead of paying again.
    pub repeated: Option<String>,
}

impl PayOutcome {
    pub(crate) fn of(sent: &SentPayment) -> Self {
        Self {
            status: sent.status,
            iou: sent.iou.id(),
            payee: sent.iou.payee,
            amount: sent.iou.amount,
            currency: sent.currency.clone(),
            counter: sent.iou.counter,
            reason: sent.reason.clone(),
            repeated: None,
        }
    }
}

/// A change of state the driver must write durably (see the crate's driving contract in
/// [`super`]). Each names everything the write needs.
// A write is moved once, from the device to the driver: boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A payment made: the IOU (as pending), the allowance's new head and the wallet epoch,
    /// in one transaction. Then the restore sentinel: the new epoch, and the allowance id if
    /// this is its first IOU. Nothing is sent before both are written.
    Spent {
        /// The spend.
        spend: Spend,
        /// Currency.
        currency: String,
        /// Memo.
        memo: String,
        /// Idempotency key.
        key: Option<String>,
        /// When.
        at: UnixTime,
    },
    /// The payee's first answer to a sent IOU (later answers change nothing).
    Answered {
        /// The IOU.
        iou: Hash,
        /// Acked or refused.
        status: SentStatus,
        /// Refusal reason name.
        reason: Option<String>,
        /// The ack.
        ack: Option<PaymentAck>,
        /// Who got it.
        by: AnsweredBy,
        /// When.
        at: UnixTime,
    },
    /// A payment request made (asked for by `asked_by`, or made here).
    Requested {
        /// The request.
        request: PaymentRequest,
        /// Who asked.
        asked_by: Option<DeviceKey>,
        /// When.
        at: UnixTime,
    },
    /// An unpaid request the peer asked for is closed (its IOU was refused).
    RequestClosed {
        /// The request's nonce.
        nonce: Nonce,
        /// The peer that asked for it.
        asked_by: DeviceKey,
    },
    /// Unpaid requests that expired before `before` are forgotten.
    RequestsPurged {
        /// The cut-off.
        before: UnixTime,
    },
    /// A payment accepted: the IOU, its certificate, the sealed record and the ack, the
    /// request marked paid, the spend notice, in one transaction. Nothing is acked before
    /// it is written.
    Received {
        /// The IOU.
        iou: Iou,
        /// Its allowance.
        cert: AllowanceCert,
        /// The request it pays (currency and memo).
        request: PaymentRequest,
        /// The record to settle it.
        record: SealedRecord,
        /// The ack.
        ack: PaymentAck,
        /// When.
        at: UnixTime,
    },
    /// A fraud proof to keep (the first per allowance).
    Fraud {
        /// The proof.
        proof: FraudProof,
        /// When it was found.
        at: UnixTime,
    },
    /// The issuer's final decision on this device's payment (sent or received).
    Settled {
        /// The IOU.
        iou: Hash,
        /// The decision.
        status: ReceiptStatus,
    },
    /// An issuer now trusted.
    Trusted {
        /// Its descriptor.
        descriptor: IssuerDescriptor,
        /// When.
        at: UnixTime,
    },
    /// An allowance added to the wallet.
    Allowance {
        /// Its certificate.
        cert: AllowanceCert,
        /// When.
        at: UnixTime,
    },
    /// The bundle store changed: bundles added (with their bodies) and removed, tombstones.
    Mesh(MeshWrite),
    /// A peer's signed receipt for the bundles this device handed over (proof of carriage).
    HandOver(HandOver),
}

/// What changed in the bundle store, net of the step: what to keep, what to drop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshWrite {
    /// Bundles held now that are new or whose copy count changed.
    pub put: Vec<Put>,
    /// Bundles no longer held.
    pub removed: Vec<Hash>,
    /// Tombstones added: issuer, record id and expiry.
    pub tombstoned: Vec<(IssuerId, Hash, UnixTime)>,
    /// Tombstones expired: issuer and record id.
    pub untombstoned: Vec<(IssuerId, Hash)>,
}

impl MeshWrite {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.put.is_empty()
            && self.removed.is_empty()
            && self.tombstoned.is_empty()
            && self.untombstoned.is_empty()
    }
}

/// A bundle to keep, with what the store knows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// Bundle id.
    pub id: Hash,
    /// Who handed it over.
    pub origin: Origin,
    /// Spray-and-wait copies left.
    pub copies: u32,
    /// Its arrival number.
    pub arrival: u64,
    /// Its encoding, if new (`None`: only its copy count changed).
    pub body: Option<Arc<[u8]>>,
}

/// What an admitted bundle meant for this device, for drivers that log or measure it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Learned {
    /// A fraud proof against an allowance of `issuer`: it is refused from now on.
    Fraud {
        /// The allowance.
        allowance: crate::objects::AllowanceId,
        /// Its issuer.
        issuer: IssuerId,
    },
    /// A revocation of an allowance.
    Revoked {
        /// The allowance.
        allowance: crate::objects::AllowanceId,
    },
    /// A record sealed to an issuer this device is a gateway for.
    Record {
        /// The issuer.
        issuer: IssuerId,
        /// The record.
        record: SealedRecord,
    },
}

pub(crate) fn alert_issuer(content: &Content) -> Option<IssuerId> {
    match content {
        Content::Fraud(p) => Some(p.cert.body().issuer),
        Content::Revocation(r) => Some(r.body().issuer),
        _ => None,
    }
}
