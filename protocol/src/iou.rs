//! IOUs, spend notices and fraud proofs: the double-spend counter and its evidence.
//!
//! An allowance holder's IOUs form an append-only log: counter 1, 2, 3, … with each IOU naming
//! the spend id of the one before (`prev`). The holder does not sign the IOU's bytes directly;
//! it signs a **spend statement** `[allowance id, counter, digest]`, where `digest` is the
//! hash of every other field of the IOU. Cutting the other fields off an IOU leaves a
//! **spend notice** that still carries a valid signature, so relays can gossip notices and
//! find forks without learning who was paid or how much.
//!
//! Two valid statements for the same `(allowance, counter)` with different digests are a
//! **fraud proof**: the holder signed two different spends for one slot, which an honest
//! wallet never does. With the allowance certificate attached, anyone who knows the issuer's
//! public key can check it, offline, trusting nobody.

use crate::codec::{self, DecodeError, VERSION, Wire, check_version};
use crate::keys::{BadSignature, DeviceKey, DeviceSecret, IssuerId, Signature};
use crate::objects::{AllowanceCert, AllowanceId, Amount, Hash, Nonce, UnixTime, hash};
use crate::tags;
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

/// A payment from an allowance holder to a payee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Iou {
    /// Format version.
    pub version: u8,
    /// The allowance spent from.
    pub allowance: AllowanceId,
    /// Position in the holder's log for this allowance: 1, 2, 3, … with no gaps.
    pub counter: u32,
    /// Amount paid, in minor units.
    pub amount: Amount,
    /// Running total of all IOUs under the allowance up to and including this one.
    pub total: Amount,
    /// Spend id of the IOU with `counter - 1`; all zero for counter 1.
    pub prev: Hash,
    /// Who is paid.
    pub payee: DeviceKey,
    /// The payment request's nonce.
    pub nonce: Nonce,
    /// When the holder made it (wall clock, seconds).
    pub time: UnixTime,
    /// The holder's signature over the spend statement.
    pub sig: Signature,
}

impl Wire for Iou {
    const KIND: &'static str = "IOU";
    const MAX_SIZE: usize = 224;
    fn check(&self) -> Result<(), DecodeError> {
        let k = Self::KIND;
        check_version(k, self.version)?;
        if self.counter == 0 {
            return Err(DecodeError::InvalidField {
                kind: k,
                field: "counter starts at 1",
            });
        }
        if (self.counter == 1) != (self.prev == Hash([0; 32])) {
            return Err(DecodeError::InvalidField {
                kind: k,
                field: "prev is all zero exactly when counter is 1",
            });
        }
        if self.amount == 0 || self.total < self.amount {
            return Err(DecodeError::InvalidField {
                kind: k,
                field: "amount must be positive and at most total",
            });
        }
        if !crate::objects::amount_in_range(self.total) {
            return Err(DecodeError::InvalidField {
                kind: k,
                field: "total is over the largest amount",
            });
        }
        Ok(())
    }
}

/// The fields of an IOU that its digest covers, in wire order.
type IouRest<'a> = (
    u8,
    Amount,
    Amount,
    &'a Hash,
    &'a DeviceKey,
    &'a Nonce,
    UnixTime,
);

/// What the holder signs for each spend: `[allowance id, counter, digest]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpendStatement {
    /// The allowance.
    pub allowance: AllowanceId,
    /// The slot.
    pub counter: u32,
    /// Hash of the rest of the IOU.
    pub digest: Hash,
}

impl SpendStatement {
    /// The exact bytes signed after the `meshpay/v1/spend` tag.
    pub fn signed_bytes(&self) -> Vec<u8> {
        codec::encode(&(&self.allowance, self.counter, &self.digest))
    }

    /// The spend id, which the next IOU names as `prev`.
    pub fn id(&self) -> Hash {
        hash(tags::SPEND_ID, &self.signed_bytes())
    }

    fn sign(&self, key: &DeviceSecret) -> Signature {
        key.sign(tags::SPEND, &self.signed_bytes())
    }

    fn verify(&self, holder: &DeviceKey, sig: &Signature) -> Result<(), BadSignature> {
        crate::keys::verify(&holder.0, tags::SPEND, &self.signed_bytes(), sig)
    }
}

/// The fields of an IOU before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IouDraft {
    /// The allowance.
    pub allowance: AllowanceId,
    /// The slot.
    pub counter: u32,
    /// The amount.
    pub amount: Amount,
    /// Running total including this amount.
    pub total: Amount,
    /// Spend id of the previous IOU (zeros for counter 1).
    pub prev: Hash,
    /// Payee key.
    pub payee: DeviceKey,
    /// Request nonce.
    pub nonce: Nonce,
    /// Wall-clock time.
    pub time: UnixTime,
}

impl IouDraft {
    /// Signs the draft with the holder's key.
    pub fn sign(self, key: &DeviceSecret) -> Iou {
        let mut iou = Iou {
            version: VERSION,
            allowance: self.allowance,
            counter: self.counter,
            amount: self.amount,
            total: self.total,
            prev: self.prev,
            payee: self.payee,
            nonce: self.nonce,
            time: self.time,
            sig: Signature([0; 64]),
        };
        iou.sig = iou.statement().sign(key);
        iou
    }
}

impl Iou {
    /// Hash of every field but allowance id, counter and signature.
    pub fn digest(&self) -> Hash {
        let rest: IouRest<'_> = (
            self.version,
            self.amount,
            self.total,
            &self.prev,
            &self.payee,
            &self.nonce,
            self.time,
        );
        hash(tags::IOU_REST, &codec::encode(&rest))
    }

    /// The statement the holder signed.
    pub fn statement(&self) -> SpendStatement {
        SpendStatement {
            allowance: self.allowance,
            counter: self.counter,
            digest: self.digest(),
        }
    }

    /// The spend id (what the next IOU's `prev` names).
    pub fn spend_id(&self) -> Hash {
        self.statement().id()
    }

    /// The IOU id: hash of the whole encoded IOU. Its settlement record carries the same id,
    /// and acks and receipts name it.
    pub fn id(&self) -> Hash {
        hash(tags::IOU_ID, &codec::encode(self))
    }

    /// Checks that `holder` signed this IOU.
    pub fn verify(&self, holder: &DeviceKey) -> Result<(), BadSignature> {
        self.statement().verify(holder, &self.sig)
    }

    /// The notice that can be gossiped in place of this IOU.
    pub fn notice(&self) -> SpendNotice {
        SpendNotice {
            version: VERSION,
            allowance: self.allowance,
            counter: self.counter,
            digest: self.digest(),
            sig: self.sig,
        }
    }
}

/// An IOU with everything but the slot and the digest cut off; the signature still verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct SpendNotice {
    /// Format version.
    pub version: u8,
    /// The allowance.
    pub allowance: AllowanceId,
    /// The slot.
    pub counter: u32,
    /// Digest of the rest of the IOU.
    pub digest: Hash,
    /// The holder's signature over the statement.
    pub sig: Signature,
}

impl Wire for SpendNotice {
    const KIND: &'static str = "spend notice";
    const MAX_SIZE: usize = 160;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(Self::KIND, self.version)?;
        if self.counter == 0 {
            return Err(DecodeError::InvalidField {
                kind: Self::KIND,
                field: "counter starts at 1",
            });
        }
        Ok(())
    }
}

impl SpendNotice {
    /// The statement the signature covers.
    pub fn statement(&self) -> SpendStatement {
        SpendStatement {
            allowance: self.allowance,
            counter: self.counter,
            digest: self.digest,
        }
    }

    /// Checks that `holder` signed it.
    pub fn verify(&self, holder: &DeviceKey) -> Result<(), BadSignature> {
        self.statement().verify(holder, &self.sig)
    }

    /// The spend id of this notice (what the next IOU names as `prev`). A notice bundle's id
    /// is the hash of the whole bundle, as for every bundle.
    pub fn id(&self) -> Hash {
        self.statement().id()
    }
}

/// Evidence that an allowance holder signed two different spends for one slot.
///
/// `first.digest < second.digest` (byte order), so every node that finds the same fork builds
/// the same bytes and the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct FraudProof {
    /// Format version.
    pub version: u8,
    /// The allowance, signed by its issuer: binds the holder key to the allowance.
    pub cert: AllowanceCert,
    /// One spend.
    pub first: SpendNotice,
    /// The conflicting spend.
    pub second: SpendNotice,
}

/// Why a fraud proof is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FraudProofError {
    /// The certificate is from another issuer than the one checked against.
    #[error("the allowance certificate is from another issuer")]
    WrongIssuer,
    /// The certificate's signature does not verify.
    #[error("the allowance certificate's signature does not verify")]
    BadCertificate,
    /// A notice's signature does not verify under the holder key.
    #[error("a spend notice's signature does not verify")]
    BadNotice,
}

impl Wire for FraudProof {
    const KIND: &'static str = "fraud proof";
    const MAX_SIZE: usize = 512;
    fn check(&self) -> Result<(), DecodeError> {
        let k = Self::KIND;
        check_version(k, self.version)?;
        crate::objects::Body::check(self.cert.body())?;
        self.first.check()?;
        self.second.check()?;
        let id = self.cert.id();
        if self.first.allowance != id || self.second.allowance != id {
            return Err(DecodeError::InvalidField {
                kind: k,
                field: "notices are for another allowance",
            });
        }
        if self.first.counter != self.second.counter {
            return Err(DecodeError::InvalidField {
                kind: k,
                field: "notices are for different counters",
            });
        }
        if self.first.digest >= self.second.digest {
            return Err(DecodeError::InvalidField {
                kind: k,
                field: "digests must differ and be in ascending order",
            });
        }
        Ok(())
    }
}

impl FraudProof {
    /// Builds a proof from two notices for the same slot of `cert`'s allowance, or `None` if
    /// they are not a conflict (other allowance, other slot, or the same spend). Signatures
    /// are not checked here; see [`FraudProof::verify`].
    pub fn new(cert: AllowanceCert, a: SpendNotice, b: SpendNotice) -> Option<Self> {
        let id = cert.id();
        if a.allowance != id || b.allowance != id || a.counter != b.counter || a.digest == b.digest
        {
            return None;
        }
        let (first, second) = if a.digest < b.digest { (a, b) } else { (b, a) };
        Some(Self {
            version: VERSION,
            cert,
            first,
            second,
        })
    }

    /// Checks the proof with nothing but the issuer's public key.
    pub fn verify(&self, issuer: &IssuerId) -> Result<(), FraudProofError> {
        if self.cert.body().issuer != *issuer {
            return Err(FraudProofError::WrongIssuer);
        }
        self.cert
            .verify()
            .map_err(|_| FraudProofError::BadCertificate)?;
        let holder = self.cert.body().holder;
        self.first
            .verify(&holder)
            .and_then(|()| self.second.verify(&holder))
            .map_err(|_| FraudProofError::BadNotice)
    }

    /// The allowance proven forked.
    pub fn allowance(&self) -> AllowanceId {
        self.cert.id()
    }

    /// The proof's id (its bundle id).
    pub fn id(&self) -> Hash {
        hash(tags::FRAUD_ID, &codec::encode(self))
    }
}

/// Checks many IOUs' signatures at once (Ed25519 batch verification), each against its
/// holder's key. `Ok` means every signature is valid; on `Err`, check them one by one with
/// [`Iou::verify`] to find the bad ones. Batch verification is a fast pre-filter: it accepts
/// the same valid signatures as strict verification except ones built with small-order
/// components, which prove nothing a holder could not sign anyway (no forgery is possible).
pub fn verify_batch(ious: &[(&Iou, DeviceKey)]) -> Result<(), BadSignature> {
    if ious.is_empty() {
        return Ok(());
    }
    let messages: Vec<Vec<u8>> = ious
        .iter()
        .map(|(iou, _)| codec::tagged(tags::SPEND, &iou.statement().signed_bytes()))
        .collect();
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let sigs: Vec<ed25519_dalek::Signature> = ious
        .iter()
        .map(|(iou, _)| ed25519_dalek::Signature::from_bytes(&iou.sig.0))
        .collect();
    let keys = ious
        .iter()
        .map(|(_, k)| ed25519_dalek::VerifyingKey::from_bytes(&k.0).map_err(|_| BadSignature))
        .collect::<Result<Vec<_>, _>>()?;
    ed25519_dalek::verify_batch(&refs, &sigs, &keys).map_err(|_| BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{allowance, device, issuer, pay, request, wallet};

    #[test]
    fn batch_verification_agrees_with_single() {
        let iss = issuer();
        let (alice, bob) = (device(1), device(2));
        let mut w = wallet([allowance(&iss, 1, &alice, 10_000)]);
        let ious: Vec<Iou> = (0..20)
            .map(|i| pay(&mut w, &alice, &request(&bob, 10, i)))
            .collect();
        let mut items: Vec<(&Iou, DeviceKey)> = ious.iter().map(|i| (i, alice.public())).collect();
        assert_eq!(verify_batch(&items), Ok(()));
        assert_eq!(verify_batch(&[]), Ok(()));
        let mut bad = ious[7].clone();
        bad.amount += 1;
        items[7] = (&bad, alice.public());
        assert_eq!(verify_batch(&items), Err(BadSignature));
        items[7] = (&ious[7], bob.public());
        assert_eq!(verify_batch(&items), Err(BadSignature));
    }
}
