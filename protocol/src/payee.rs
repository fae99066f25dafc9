//! Payee rules and the spend book.
//!
//! The [`SpendBook`] is what a node knows about other people's allowances: the certificates it
//! has seen, every spend (own payments received and spend notices gossiped) per slot, fraud
//! proofs and revocations. It checks an incoming IOU against all of that and finds a fork the
//! moment two conflicting spends meet.
//!
//! ## Driving contract
//!
//! 1. [`SpendBook::check_payment`] judges an IOU for an open request. It changes nothing.
//! 2. On [`Verdict::Accept`], the driver stores the IOU and its sealed record durably, then
//!    calls [`SpendBook::record_payment`], then signs and sends the ack. On
//!    [`Verdict::Duplicate`] it re-sends the ack it stored the first time.
//! 3. On [`Verdict::Fork`] the driver stores the proof, calls
//!    [`SpendBook::add_fraud_proof`] and gossips the proof.
//! 4. Spend notices, fraud proofs and revocations that arrive from the mesh go to
//!    [`SpendBook::observe_notice`], [`SpendBook::add_fraud_proof`] and
//!    [`SpendBook::add_revocation`].
//!
//! The book is rebuilt from storage at start-up by feeding it the stored certificates,
//! payments, notices, proofs and revocations in any order.

use crate::iou::{FraudProof, FraudProofError, Iou, SpendNotice};
use crate::keys::{DeviceKey, IssuerId};
use crate::objects::{
    AllowanceCert, AllowanceId, Hash, Nonce, PaymentRequest, Reason, Revocation, UnixTime,
};
use std::collections::{BTreeMap, BTreeSet};

/// The book's judgement on an incoming IOU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and new: store it, record it, ack it.
    Accept,
    /// This very IOU was accepted before (a retry): re-send the stored ack.
    Duplicate,
    /// Refused, with the reason.
    Reject(Reason),
    /// Refused: it double-spends a slot. The proof names the allowance.
    Fork(Box<FraudProof>),
}

/// What observing a spend notice taught the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeOutcome {
    /// A spend not seen before.
    New,
    /// Already known.
    Known,
    /// No certificate for its allowance is known, so it cannot be checked; it was not kept.
    Unverifiable,
    /// Its signature does not verify; it was not kept.
    BadSignature,
    /// It conflicts with a known spend: a fork, and the proof of it.
    Fork(Box<FraudProof>),
}

/// Why a certificate, proof or revocation was not taken into the book.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BookError {
    /// Its issuer is not trusted by this node.
    #[error("issuer {0} is not trusted")]
    UntrustedIssuer(IssuerId),
    /// A signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The fraud proof is invalid.
    #[error("invalid fraud proof: {0}")]
    BadProof(#[from] FraudProofError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowance {
    cert: AllowanceCert,
    /// Verified spends, by counter.
    spends: BTreeMap<u32, SpendNotice>,
}

/// What a node knows about allowances and their spends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendBook {
    trusted: BTreeSet<IssuerId>,
    allowances: BTreeMap<AllowanceId, Allowance>,
    /// Fraud proofs held, one per allowance.
    fraud: BTreeMap<AllowanceId, FraudProof>,
    revoked: BTreeSet<AllowanceId>,
    /// Request nonces paid, and by which IOU.
    paid: BTreeMap<Nonce, Hash>,
}

impl SpendBook {
    /// An empty book trusting `issuers`.
    pub fn new(issuers: impl IntoIterator<Item = IssuerId>) -> Self {
        Self {
            trusted: issuers.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Trusts another issuer.
    pub fn trust(&mut self, issuer: IssuerId) {
        self.trusted.insert(issuer);
    }

    /// Whether `issuer` is trusted.
    pub fn trusts(&self, issuer: &IssuerId) -> bool {
        self.trusted.contains(issuer)
    }

    /// The fraud proof held against `allowance`, if any.
    pub fn fraud_proof(&self, allowance: &AllowanceId) -> Option<&FraudProof> {
        self.fraud.get(allowance)
    }

    /// All fraud proofs held, by allowance.
    pub fn fraud_proofs(&self) -> impl Iterator<Item = &FraudProof> {
        self.fraud.values()
    }

    /// Whether the allowance is refused (revoked or proven forked).
    pub fn refuses(&self, allowance: &AllowanceId) -> bool {
        self.revoked.contains(allowance) || self.fraud.contains_key(allowance)
    }

    /// The certificate known for `allowance`.
    pub fn certificate(&self, allowance: &AllowanceId) -> Option<&AllowanceCert> {
        self.allowances.get(allowance).map(|a| &a.cert)
    }

    /// Learns a certificate after checking it against a trusted issuer.
    pub fn add_certificate(&mut self, cert: &AllowanceCert) -> Result<(), BookError> {
        let issuer = cert.body().issuer;
        if !self.trusts(&issuer) {
            return Err(BookError::UntrustedIssuer(issuer));
        }
        cert.verify().map_err(|_| BookError::BadSignature)?;
        self.allowances
            .entry(cert.id())
            .or_insert_with(|| Allowance {
                cert: cert.clone(),
                spends: BTreeMap::new(),
            });
        Ok(())
    }

    /// Judges `iou`, presented with `cert` (or a certificate the book already holds), as
    /// payment of `request` (the open request with the IOU's nonce, if any) to `me` at
    /// wall-clock `now`. Checks run in the order of SPEC.md §6.3, and the first failure is
    /// the reason. Changes nothing.
    pub fn check_payment(
        &self,
        iou: &Iou,
        cert: Option<&AllowanceCert>,
        request: Option<&PaymentRequest>,
        me: &DeviceKey,
        now: UnixTime,
    ) -> Verdict {
        use Verdict::Reject;
        if iou.payee != *me {
            return Reject(Reason::WrongPayee);
        }
        if let Some(by) = self.paid.get(&iou.nonce) {
            return if *by == iou.id() {
                Verdict::Duplicate
            } else {
                Reject(Reason::Replay)
            };
        }
        let Some(request) = request.filter(|r| r.nonce == iou.nonce && r.payee == *me) else {
            return Reject(Reason::NonceMismatch);
        };
        let cert = match cert.filter(|c| c.id() == iou.allowance) {
            Some(c) => c,
            None => match self.certificate(&iou.allowance) {
                Some(c) => c,
                None => return Reject(Reason::UnknownAllowance),
            },
        };
        let body = cert.body();
        if !self.trusts(&body.issuer)
            || !(request.issuers.is_empty() || request.issuers.contains(&body.issuer))
        {
            return Reject(Reason::UnknownIssuer);
        }
        if cert.verify().is_err() {
            return Reject(Reason::BadCertificate);
        }
        if iou.verify(&body.holder).is_err() {
            return Reject(Reason::BadSignature);
        }
        if self.revoked.contains(&iou.allowance) {
            return Reject(Reason::Revoked);
        }
        if self.fraud.contains_key(&iou.allowance) {
            return Reject(Reason::KnownFraud);
        }
        if now < body.valid_from || iou.time < body.valid_from {
            return Reject(Reason::NotYetValid);
        }
        if now > body.valid_until || iou.time > body.valid_until {
            return Reject(Reason::Expired);
        }
        if request.expires < now {
            return Reject(Reason::RequestExpired);
        }
        if body.currency != request.currency {
            return Reject(Reason::CurrencyMismatch);
        }
        if iou.amount != request.amount {
            return Reject(Reason::AmountMismatch);
        }
        if iou.amount > body.max_payment {
            return Reject(Reason::OverPaymentLimit);
        }
        if iou.total > body.limit {
            return Reject(Reason::OverLimit);
        }
        let known = self.allowances.get(&iou.allowance);
        let notice = iou.notice();
        if let Some(seen) = known.and_then(|a| a.spends.get(&iou.counter)) {
            if seen.digest != notice.digest {
                let proof = FraudProof::new(cert.clone(), seen.clone(), notice)
                    .expect("same allowance and counter, different digests");
                return Verdict::Fork(Box::new(proof));
            }
        }
        if let Some(before) = known.and_then(|a| a.spends.get(&(iou.counter - 1))) {
            if before.id() != iou.prev {
                return Reject(Reason::ChainBreak);
            }
        }
        Verdict::Accept
    }

    /// Records an accepted, durably stored payment.
    pub fn record_payment(&mut self, iou: &Iou, cert: &AllowanceCert) {
        self.allowances
            .entry(cert.id())
            .or_insert_with(|| Allowance {
                cert: cert.clone(),
                spends: BTreeMap::new(),
            });
        self.insert_spend(iou.notice());
        self.paid.insert(iou.nonce, iou.id());
    }

    /// Records a spend the node made itself, or knows from storage, without a fork check.
    fn insert_spend(&mut self, notice: SpendNotice) {
        if let Some(a) = self.allowances.get_mut(&notice.allowance) {
            a.spends.entry(notice.counter).or_insert(notice);
        }
    }

    /// Takes in a spend notice from the mesh, or a notice cut from one of the node's own
    /// IOUs. A conflict yields a fraud proof, which the book also keeps.
    pub fn observe_notice(&mut self, notice: &SpendNotice) -> NoticeOutcome {
        let Some(a) = self.allowances.get(&notice.allowance) else {
            return NoticeOutcome::Unverifiable;
        };
        if notice.verify(&a.cert.body().holder).is_err() {
            return NoticeOutcome::BadSignature;
        }
        match a.spends.get(&notice.counter) {
            Some(seen) if seen.digest == notice.digest => NoticeOutcome::Known,
            Some(seen) => {
                let proof = FraudProof::new(a.cert.clone(), seen.clone(), notice.clone())
                    .expect("same allowance and counter, different digests");
                self.fraud.insert(notice.allowance, proof.clone());
                NoticeOutcome::Fork(Box::new(proof))
            }
            None => {
                self.insert_spend(notice.clone());
                NoticeOutcome::New
            }
        }
    }

    /// Takes in a fraud proof after checking it. Returns whether it was new.
    pub fn add_fraud_proof(&mut self, proof: &FraudProof) -> Result<bool, BookError> {
        let issuer = proof.cert.body().issuer;
        if !self.trusts(&issuer) {
            return Err(BookError::UntrustedIssuer(issuer));
        }
        proof.verify(&issuer)?;
        self.allowances
            .entry(proof.allowance())
            .or_insert_with(|| Allowance {
                cert: proof.cert.clone(),
                spends: BTreeMap::new(),
            });
        Ok(self
            .fraud
            .insert(proof.allowance(), proof.clone())
            .is_none())
    }

    /// Takes in a revocation after checking it. Returns whether it was new.
    pub fn add_revocation(&mut self, rev: &Revocation) -> Result<bool, BookError> {
        let issuer = rev.body().issuer;
        if !self.trusts(&issuer) {
            return Err(BookError::UntrustedIssuer(issuer));
        }
        rev.verify(&issuer).map_err(|_| BookError::BadSignature)?;
        Ok(self.revoked.insert(rev.body().allowance))
    }

    /// Number of spends known for `allowance`.
    pub fn spends_known(&self, allowance: &AllowanceId) -> usize {
        self.allowances.get(allowance).map_or(0, |a| a.spends.len())
    }
}
