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
        self.observe_verified_notice(notice)
    }

    /// [`SpendBook::observe_notice`] for a notice the caller has already verified under the
    /// holder of the certificate this book holds for its allowance (a bundle the store admitted
    /// with that same certificate).
    pub(crate) fn observe_verified_notice(&mut self, notice: &SpendNotice) -> NoticeOutcome {
        let Some(a) = self.allowances.get(&notice.allowance) else {
            return NoticeOutcome::Unverifiable;
        };
        match a.spends.get(&notice.counter) {
            Some(seen) if seen.digest == notice.digest => NoticeOutcome::Known,
            Some(seen) => {
                let proof = FraudProof::new(a.cert.clone(), seen.clone(), notice.clone())
                    .expect("same allowance and counter, different digests");
                let kept = self.fraud.entry(notice.allowance).or_insert(proof);
                NoticeOutcome::Fork(Box::new(kept.clone()))
            }
            None => {
                self.insert_spend(notice.clone());
                NoticeOutcome::New
            }
        }
    }

    /// Takes in a fraud proof after checking it. Returns whether it was new; the book keeps the
    /// first proof it learned for an allowance (any one suffices).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IssuerSecret;
    use crate::objects::{AllowanceBody, RevocationReason};
    use crate::testkit::{DAY, T0, allowance, device, issuer, pay, request, wallet};

    struct Scene {
        iss: IssuerSecret,
        alice: crate::keys::DeviceSecret,
        bob: crate::keys::DeviceSecret,
        cert: AllowanceCert,
        book: SpendBook,
    }

    fn scene() -> Scene {
        let iss = issuer();
        let (alice, bob) = (device(1), device(2));
        let cert = allowance(&iss, 1, &alice, 1000);
        let book = SpendBook::new([iss.id()]);
        Scene {
            iss,
            alice,
            bob,
            cert,
            book,
        }
    }

    #[test]
    fn accept_record_duplicate_replay() {
        let mut s = scene();
        let mut w = wallet([s.cert.clone()]);
        let req = request(&s.bob, 100, 1);
        let iou = pay(&mut w, &s.alice, &req);
        let me = s.bob.public();
        assert_eq!(
            s.book
                .check_payment(&iou, Some(&s.cert), Some(&req), &me, T0),
            Verdict::Accept
        );
        s.book.record_payment(&iou, &s.cert);
        assert_eq!(
            s.book.check_payment(&iou, None, Some(&req), &me, T0),
            Verdict::Duplicate
        );
        // Another IOU for the same request is a replay.
        let mut w2 = wallet([allowance(&s.iss, 2, &s.alice, 1000)]);
        let other = pay(&mut w2, &s.alice, &req);
        assert_eq!(
            s.book.check_payment(&other, None, Some(&req), &me, T0),
            Verdict::Reject(Reason::Replay)
        );
        assert_eq!(s.book.spends_known(&s.cert.id()), 1);
    }

    #[test]
    fn each_rejection_reason() {
        use Verdict::Reject;
        let s = scene();
        let me = s.bob.public();
        let mut w = wallet([s.cert.clone()]);
        let req = request(&s.bob, 100, 1);
        let iou = pay(&mut w, &s.alice, &req);
        let check = |book: &SpendBook,
                     iou: &Iou,
                     cert: Option<&AllowanceCert>,
                     req: Option<&PaymentRequest>,
                     now| { book.check_payment(iou, cert, req, &me, now) };
        let c = Some(&s.cert);
        let r = Some(&req);
        assert_eq!(check(&s.book, &iou, c, r, T0), Verdict::Accept);
        assert_eq!(
            s.book.check_payment(&iou, c, r, &s.alice.public(), T0),
            Reject(Reason::WrongPayee)
        );
        assert_eq!(
            check(&s.book, &iou, c, None, T0),
            Reject(Reason::NonceMismatch)
        );
        let other_req = request(&s.bob, 100, 9);
        assert_eq!(
            check(&s.book, &iou, c, Some(&other_req), T0),
            Reject(Reason::NonceMismatch)
        );
        assert_eq!(
            check(&s.book, &iou, None, r, T0),
            Reject(Reason::UnknownAllowance)
        );
        assert_eq!(
            check(&SpendBook::new([]), &iou, c, r, T0),
            Reject(Reason::UnknownIssuer)
        );
        let mut picky = req.clone();
        picky.issuers = vec![crate::keys::IssuerId([7; 32])];
        assert_eq!(
            check(&s.book, &iou, c, Some(&picky), T0),
            Reject(Reason::UnknownIssuer)
        );
        // A certificate whose body was altered after signing.
        let mut body: AllowanceBody = s.cert.body().clone();
        body.limit = 1_000_000;
        let forged = AllowanceCert::from_parts(body, *s.cert.signature());
        assert_eq!(
            check(&s.book, &iou, Some(&forged), r, T0),
            Reject(Reason::BadCertificate)
        );
        // An IOU altered after signing.
        let mut tampered = iou.clone();
        tampered.amount = 99;
        tampered.total = 99;
        assert_eq!(
            check(&s.book, &tampered, c, r, T0),
            Reject(Reason::BadSignature)
        );
        // Revoked, and known fraud.
        let mut book = s.book.clone();
        let rev = crate::objects::Revocation::issue(
            &s.iss,
            s.cert.id(),
            RevocationReason::DeviceLost,
            T0,
        );
        assert_eq!(book.add_revocation(&rev), Ok(true));
        assert_eq!(check(&book, &iou, c, r, T0), Reject(Reason::Revoked));
        // Time windows.
        assert_eq!(
            check(&s.book, &iou, c, r, T0 - 2 * DAY),
            Reject(Reason::NotYetValid)
        );
        let mut long_req = req.clone();
        long_req.expires = T0 + 30 * DAY;
        assert_eq!(
            check(&s.book, &iou, c, Some(&long_req), T0 + 8 * DAY),
            Reject(Reason::Expired)
        );
        assert_eq!(
            check(&s.book, &iou, c, r, T0 + 3601),
            Reject(Reason::RequestExpired)
        );
        let mut usd = req.clone();
        usd.currency = "USD".into();
        assert_eq!(
            check(&s.book, &iou, c, Some(&usd), T0),
            Reject(Reason::CurrencyMismatch)
        );
        let mut more = req.clone();
        more.amount = 101;
        assert_eq!(
            check(&s.book, &iou, c, Some(&more), T0),
            Reject(Reason::AmountMismatch)
        );
    }

    #[test]
    fn limits_are_checked_even_if_the_wallet_cheats() {
        let s = scene();
        let me = s.bob.public();
        let mut body = s.cert.body().clone();
        body.max_payment = 50;
        let cert = AllowanceCert::issue(&s.iss, body);
        let req = request(&s.bob, 60, 1);
        // A tampered wallet signs whatever it likes.
        let over_payment = crate::iou::IouDraft {
            allowance: cert.id(),
            counter: 1,
            amount: 60,
            total: 60,
            prev: Hash::default(),
            payee: me,
            nonce: req.nonce,
            time: T0,
        }
        .sign(&s.alice);
        assert_eq!(
            s.book
                .check_payment(&over_payment, Some(&cert), Some(&req), &me, T0),
            Verdict::Reject(Reason::OverPaymentLimit)
        );
        let req = request(&s.bob, 10, 1);
        let over_limit = crate::iou::IouDraft {
            allowance: s.cert.id(),
            counter: 5,
            amount: 10,
            total: 1001,
            prev: Hash([1; 32]),
            payee: me,
            nonce: req.nonce,
            time: T0,
        }
        .sign(&s.alice);
        assert_eq!(
            s.book
                .check_payment(&over_limit, Some(&s.cert), Some(&req), &me, T0),
            Verdict::Reject(Reason::OverLimit)
        );
    }

    #[test]
    fn fork_between_own_payment_and_clone_is_proven() {
        let mut s = scene();
        let me = s.bob.public();
        // Alice's wallet and its clone both start from the same state.
        let mut original = wallet([s.cert.clone()]);
        let mut clone = original.clone();
        let req1 = request(&s.bob, 100, 1);
        let iou1 = pay(&mut original, &s.alice, &req1);
        s.book.record_payment(&iou1, &s.cert);
        let req2 = request(&s.bob, 70, 2);
        let iou2 = pay(&mut clone, &s.alice, &req2);
        assert_eq!(iou2.counter, iou1.counter);
        let Verdict::Fork(proof) = s
            .book
            .check_payment(&iou2, Some(&s.cert), Some(&req2), &me, T0)
        else {
            panic!("expected a fork");
        };
        assert_eq!(proof.verify(&s.iss.id()), Ok(()));
        assert_eq!(proof.allowance(), s.cert.id());
        assert_eq!(s.book.add_fraud_proof(&proof), Ok(true));
        assert_eq!(s.book.add_fraud_proof(&proof), Ok(false));
        assert!(s.book.refuses(&s.cert.id()));
        // From now on the allowance is refused, even for a slot never used.
        let iou3 = pay(&mut clone, &s.alice, &request(&s.bob, 5, 3));
        assert_eq!(
            s.book
                .check_payment(&iou3, None, Some(&request(&s.bob, 5, 3)), &me, T0),
            Verdict::Reject(Reason::KnownFraud)
        );
    }

    #[test]
    fn notices_find_forks_and_chain_breaks() {
        let mut s = scene();
        let carol = device(3);
        let me = s.bob.public();
        let mut original = wallet([s.cert.clone()]);
        let mut clone = original.clone();
        let iou1 = pay(&mut original, &s.alice, &request(&carol, 100, 1));
        // Bob has never seen the certificate: he cannot judge notices yet.
        assert_eq!(
            s.book.observe_notice(&iou1.notice()),
            NoticeOutcome::Unverifiable
        );
        s.book.add_certificate(&s.cert).unwrap();
        let mut bad = iou1.notice();
        bad.digest = Hash([9; 32]);
        assert_eq!(s.book.observe_notice(&bad), NoticeOutcome::BadSignature);
        assert_eq!(s.book.observe_notice(&iou1.notice()), NoticeOutcome::New);
        assert_eq!(s.book.observe_notice(&iou1.notice()), NoticeOutcome::Known);
        // The clone pays Bob with the same counter: the notice from Carol's payment convicts it.
        let req = request(&s.bob, 70, 2);
        let forked = pay(&mut clone, &s.alice, &req);
        assert!(matches!(
            s.book.check_payment(&forked, None, Some(&req), &me, T0),
            Verdict::Fork(_)
        ));
        // A notice conflicting with a known one also yields the proof, and the book keeps it.
        let NoticeOutcome::Fork(proof) = s.book.observe_notice(&forked.notice()) else {
            panic!("expected a fork");
        };
        assert_eq!(proof.verify(&s.iss.id()), Ok(()));
        assert!(s.book.refuses(&s.cert.id()));

        // Chain break: IOU 2 whose prev is not the known IOU 1.
        let mut book = SpendBook::new([s.iss.id()]);
        book.add_certificate(&s.cert).unwrap();
        assert_eq!(book.observe_notice(&iou1.notice()), NoticeOutcome::New);
        let req = request(&s.bob, 10, 4);
        let broken = crate::iou::IouDraft {
            allowance: s.cert.id(),
            counter: 2,
            amount: 10,
            total: 110,
            prev: Hash([3; 32]),
            payee: me,
            nonce: req.nonce,
            time: T0,
        }
        .sign(&s.alice);
        assert_eq!(
            book.check_payment(&broken, None, Some(&req), &me, T0),
            Verdict::Reject(Reason::ChainBreak)
        );
    }

    #[test]
    fn untrusted_and_forged_evidence_is_refused() {
        let mut s = scene();
        let stranger = IssuerSecret::from_bytes(&[0x33; 64]);
        let cert = allowance(&stranger, 1, &s.alice, 1000);
        assert_eq!(
            s.book.add_certificate(&cert),
            Err(BookError::UntrustedIssuer(stranger.id()))
        );
        let rev =
            crate::objects::Revocation::issue(&stranger, cert.id(), RevocationReason::Fraud, T0);
        assert_eq!(
            s.book.add_revocation(&rev),
            Err(BookError::UntrustedIssuer(stranger.id()))
        );
        // A "fraud proof" whose second notice was not signed by the holder.
        let mut w = wallet([s.cert.clone()]);
        let iou = pay(&mut w, &s.alice, &request(&s.bob, 10, 1));
        let mut fake = iou.notice();
        fake.digest = Hash([0xff; 32]);
        let proof = FraudProof::new(s.cert.clone(), iou.notice(), fake).unwrap();
        assert_eq!(
            s.book.add_fraud_proof(&proof),
            Err(BookError::BadProof(FraudProofError::BadNotice))
        );
        assert!(!s.book.refuses(&s.cert.id()));
    }
}
