//! The signed objects issuers and payees produce, and the payment request.
//!
//! Every signed object here is a two-element array `[body, signature]`; the signature is over
//! `tag || 0x00 || encode(body)` with the tag of [`Body::TAG`]. The IOU and the spend notice
//! are signed differently (see [`crate::iou`]) so that a notice can be cut from an IOU
//! without a second signature.
//!
//! This file holds what every object shares (the scalar types, [`Body`], [`Signed`] and the
//! tagged hash); the objects themselves live by family, all re-exported here:
//!
//! - `issuer`: the issuer descriptor and allowance certificates;
//! - `request`: payment requests, payment acks and wallet requests to the issuer;
//! - `reason`: refusal reasons and receipt statuses, with their stable codes;
//! - `receipt`: settlement receipts, revocations, hand-over receipts and settlement batches.

use crate::codec::{self, DecodeError, Wire, byte_newtype};
use crate::keys::{BadSignature, DeviceSecret, IssuerSecret, Signature};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

mod issuer;
mod reason;
mod receipt;
mod request;

pub use issuer::{AllowanceBody, AllowanceCert, DescriptorBody, IssuerDescriptor};
pub use reason::{Reason, ReceiptStatus};
pub use receipt::{
    HandOver, HandOverBody, ReceiptBatch, ReceiptBody, RecordBatch, Revocation, RevocationBody,
    RevocationReason, SettlementReceipt, ids_digest,
};
pub use request::{
    AckBody, PaymentAck, PaymentRequest, REQUEST_TEXT_PREFIX, RequestTextError, WalletAction,
    WalletRequest, WalletRequestBody,
};

/// Seconds since the Unix epoch (UTC). Wall-clock time is always an explicit input.
pub type UnixTime = u64;

/// An amount in the currency's minor units (cents, …).
pub type Amount = u64;

/// The largest amount anything may carry: 2^53 − 1 minor units (SPEC.md §1.2).
///
/// Every amount, limit, running total and maximum on the wire is at most this; decoders refuse
/// larger values. It keeps every sum an issuer forms from any 1,024 of them inside a signed
/// 64-bit integer (the settlement database's), and every amount exact as a JSON number in any
/// language (IEEE-754 doubles hold integers up to 2^53 exactly).
pub const MAX_AMOUNT: Amount = (1 << 53) - 1;

/// Whether `amount` is within [`MAX_AMOUNT`].
pub fn amount_in_range(amount: Amount) -> bool {
    amount <= MAX_AMOUNT
}

byte_newtype!(
    /// Identifies an allowance; chosen at random by the issuer.
    AllowanceId,
    16
);
byte_newtype!(
    /// A payment request's nonce; chosen at random by the payee.
    Nonce,
    16
);
byte_newtype!(
    /// SHA-256 of something, under a domain tag.
    Hash,
    32
);

macro_rules! hex_display {
    ($($t:ty),*) => {$(
        impl core::fmt::Display for $t {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    )*};
}
hex_display!(AllowanceId, Nonce, Hash);

/// SHA-256 of `tag || 0 || bytes`.
pub(crate) fn hash(tag: &str, bytes: &[u8]) -> Hash {
    Hash(Sha256::digest(codec::tagged(tag, bytes)).into())
}

/// Signature and hash domain tags (SPEC.md §3), re-exported from [`crate::tags`].
pub use crate::tags;

/// Checks a currency code: 1 to 12 characters of `A-Z`, `0-9` and `-` (ISO 4217 codes, or an
/// issuer's own unit).
pub fn valid_currency(code: &str) -> bool {
    (1..=12).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
}

/// The body of a signed object.
pub trait Body: Serialize + DeserializeOwned + Clone {
    /// Signature domain tag.
    const TAG: &'static str;
    /// Human name of the object type.
    const KIND: &'static str;
    /// Largest encoding of the whole signed object.
    const MAX_SIZE: usize;
    /// Field checks beyond the schema.
    fn check(&self) -> Result<(), DecodeError>;
}

/// A body and a signature over it: `[body, signature]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<B>(B, Signature);

impl<B: Body> Signed<B> {
    /// The signed content.
    pub fn body(&self) -> &B {
        &self.0
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.1
    }

    /// Exactly the bytes the signature covers, after the tag.
    pub fn signed_bytes(&self) -> Vec<u8> {
        codec::encode(&self.0)
    }

    /// Checks the signature against `key` (strict Ed25519).
    pub fn verify_by(&self, key: &[u8; 32]) -> Result<(), BadSignature> {
        crate::keys::verify(key, B::TAG, &self.signed_bytes(), &self.1)
    }

    pub(crate) fn by_device(body: B, key: &DeviceSecret) -> Self {
        let sig = key.sign(B::TAG, &codec::encode(&body));
        Self(body, sig)
    }

    pub(crate) fn by_issuer(body: B, key: &IssuerSecret) -> Self {
        let sig = key.sign(B::TAG, &codec::encode(&body));
        Self(body, sig)
    }

    /// Reassembles a signed object from its parts (for tests and tools; nothing is checked).
    pub fn from_parts(body: B, sig: Signature) -> Self {
        Self(body, sig)
    }
}

impl<B: Body> Wire for Signed<B> {
    const KIND: &'static str = B::KIND;
    const MAX_SIZE: usize = B::MAX_SIZE;
    fn check(&self) -> Result<(), DecodeError> {
        self.0.check()
    }
}

fn invalid(kind: &'static str, field: &'static str) -> DecodeError {
    DecodeError::InvalidField { kind, field }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes() {
        assert!(valid_currency("KES"));
        assert!(valid_currency("MARKET-TOKEN"));
        assert!(!valid_currency(""));
        assert!(!valid_currency("kes"));
        assert!(!valid_currency("THIRTEEN-CHAR"));
    }
}
