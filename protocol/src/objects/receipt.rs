//! Receipts and the other signed answers that travel back through the mesh: settlement
//! receipts (the issuer's verdict on one record, naming only the record), revocations of
//! allowances, hand-over receipts (a carrier's signed proof that it took bundles from
//! another), and the upload and answer batches of a settlement server (SPEC.md §4.10, §4.11,
//! §4.15, §11.2).

use super::{AllowanceId, Body, Hash, ReceiptStatus, Signed, UnixTime, hash, invalid, tags};
use crate::codec::{Blob, DecodeError, VERSION, Wire, check_version};
use crate::keys::{BadSignature, DeviceKey, IssuerId, IssuerSecret};
use serde::{Deserialize, Serialize};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};
use std::collections::BTreeSet;

// ---------------------------------------------------------------------------------------------
// Settlement receipts

/// The issuer's signed verdict on one settlement record. It names only the record, so it can
/// travel back through the mesh without telling relays who paid whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct ReceiptBody {
    /// Format version.
    pub version: u8,
    /// The issuer.
    pub issuer: IssuerId,
    /// The record (= IOU id).
    pub record: Hash,
    /// [`ReceiptStatus`] code.
    pub status: u16,
    /// When the issuer decided.
    pub decided_at: UnixTime,
}

/// A settlement receipt.
pub type SettlementReceipt = Signed<ReceiptBody>;

impl Body for ReceiptBody {
    const TAG: &'static str = tags::RECEIPT;
    const KIND: &'static str = "settlement receipt";
    const MAX_SIZE: usize = 192;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        if ReceiptStatus::from_code(self.status).is_none() {
            return Err(invalid(Self::KIND, "unknown status code"));
        }
        Ok(())
    }
}

impl SettlementReceipt {
    /// The issuer's receipt for `record`.
    pub fn issue(
        key: &IssuerSecret,
        record: Hash,
        status: ReceiptStatus,
        decided_at: UnixTime,
    ) -> Self {
        Self::by_issuer(
            ReceiptBody {
                version: VERSION,
                issuer: key.id(),
                record,
                status: status.code(),
                decided_at,
            },
            key,
        )
    }

    /// Checks the issuer's signature and that it is `issuer`'s.
    pub fn verify(&self, issuer: &IssuerId) -> Result<(), BadSignature> {
        if self.body().issuer != *issuer {
            return Err(BadSignature);
        }
        self.verify_by(&issuer.0)
    }

    /// The decoded status.
    pub fn status(&self) -> ReceiptStatus {
        ReceiptStatus::from_code(self.body().status).expect("checked at decode and issue")
    }
}

// ---------------------------------------------------------------------------------------------
// Revocations

/// Why an issuer revoked an allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationReason {
    /// A double spend was proven.
    Fraud,
    /// The holder reported the device lost or stolen.
    DeviceLost,
    /// The issuer's own decision.
    Issuer,
}

impl RevocationReason {
    /// Wire code.
    pub fn code(self) -> u16 {
        match self {
            RevocationReason::Fraud => 1,
            RevocationReason::DeviceLost => 2,
            RevocationReason::Issuer => 3,
        }
    }

    /// From a wire code.
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(RevocationReason::Fraud),
            2 => Some(RevocationReason::DeviceLost),
            3 => Some(RevocationReason::Issuer),
            _ => None,
        }
    }
}

/// The issuer's signed order to refuse an allowance from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct RevocationBody {
    /// Format version.
    pub version: u8,
    /// The issuer.
    pub issuer: IssuerId,
    /// The allowance revoked.
    pub allowance: AllowanceId,
    /// [`RevocationReason`] code.
    pub reason: u16,
    /// When it was revoked.
    pub revoked_at: UnixTime,
}

/// A revocation.
pub type Revocation = Signed<RevocationBody>;

impl Body for RevocationBody {
    const TAG: &'static str = tags::REVOCATION;
    const KIND: &'static str = "revocation";
    const MAX_SIZE: usize = 192;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        if RevocationReason::from_code(self.reason).is_none() {
            return Err(invalid(Self::KIND, "unknown reason code"));
        }
        Ok(())
    }
}

impl Revocation {
    /// The issuer revokes `allowance`.
    pub fn issue(
        key: &IssuerSecret,
        allowance: AllowanceId,
        reason: RevocationReason,
        revoked_at: UnixTime,
    ) -> Self {
        Self::by_issuer(
            RevocationBody {
                version: VERSION,
                issuer: key.id(),
                allowance,
                reason: reason.code(),
                revoked_at,
            },
            key,
        )
    }

    /// Checks the issuer's signature and that it is `issuer`'s.
    pub fn verify(&self, issuer: &IssuerId) -> Result<(), BadSignature> {
        if self.body().issuer != *issuer {
            return Err(BadSignature);
        }
        self.verify_by(&issuer.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-over receipts

/// What a hand-over receipt says: `taker` took `count` bundles (`bytes` in all) from `giver`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct HandOverBody {
    /// Format version.
    pub version: u8,
    /// Who handed the bundles over.
    pub giver: DeviceKey,
    /// Who took them (the signer).
    pub taker: DeviceKey,
    /// How many bundles.
    pub count: u32,
    /// Their total size.
    pub bytes: u64,
    /// [`ids_digest`] of their ids.
    pub ids: Hash,
    /// When.
    pub at: UnixTime,
}

/// A hand-over receipt, signed by the taker: the giver's proof of carriage.
pub type HandOver = Signed<HandOverBody>;

impl Body for HandOverBody {
    const TAG: &'static str = tags::HAND_OVER;
    const KIND: &'static str = "hand-over receipt";
    // 194 bytes at most (counts and times of nine bytes each); 256 leaves room to spare.
    const MAX_SIZE: usize = 256;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)
    }
}

impl HandOver {
    /// Checks the taker's signature.
    pub fn verify(&self) -> Result<(), BadSignature> {
        self.verify_by(&self.body().taker.0)
    }
}

/// Digest of a set of bundle ids: SHA-256 over the tag and the ids in ascending order.
pub fn ids_digest<'a>(ids: impl IntoIterator<Item = &'a Hash>) -> Hash {
    let sorted: BTreeSet<&Hash> = ids.into_iter().collect();
    let mut bytes = Vec::with_capacity(sorted.len() * 32);
    for id in sorted {
        bytes.extend_from_slice(&id.0);
    }
    hash(tags::HAND_OVER_IDS, &bytes)
}

// ---------------------------------------------------------------------------------------------
// Settlement batches

/// A settlement upload: sealed records, each as the bytes of its encoding, in one CBOR array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBatch(pub Vec<Blob>);

impl RecordBatch {
    /// At most this many records per upload.
    pub const MAX_RECORDS: usize = 4096;
}

impl Wire for RecordBatch {
    const KIND: &'static str = "record batch";
    const MAX_SIZE: usize = 2 * 1024 * 1024;
    fn check(&self) -> Result<(), DecodeError> {
        if self.0.len() > Self::MAX_RECORDS {
            return Err(invalid(Self::KIND, "more than 4096 records"));
        }
        Ok(())
    }
}

/// The answer to a [`RecordBatch`]: one receipt per record, in order, `null` where an input
/// was not a sealed record at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBatch(pub Vec<Option<SettlementReceipt>>);

impl Wire for ReceiptBatch {
    const KIND: &'static str = "receipt batch";
    const MAX_SIZE: usize = 1024 * 1024;
    fn check(&self) -> Result<(), DecodeError> {
        for r in self.0.iter().flatten() {
            r.check()?;
        }
        Ok(())
    }
}
