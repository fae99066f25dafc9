//! Settlement rules for the issuer, as pure state.
//!
//! Each allowance is an escrow. IOUs arrive in any order, any number of times, through any
//! number of gateways; [`Ledger::apply`] settles each `(allowance, counter)` slot at most
//! once and never lets the settled total pass the allowance limit.
//!
//! ## The loss rule
//!
//! **First settled wins.** When a second, different IOU for an already settled slot arrives,
//! it is rejected and the two make a fraud proof against the allowance. The ledger also
//! remembers the first IOU it refused for a slot (over the limit, late, …): a different IOU
//! for that slot is a fork as well, so every fork that reaches the ledger is found, but since
//! nothing settled in the slot, the new IOU is judged on its own and may settle (its payee
//! accepted it in good faith). No slot settles twice. IOUs for other slots
//! of a forked allowance still settle while the escrow lasts: their payees were paid in good
//! faith. What the escrow cannot cover is the victims' loss; the settlement server then
//! debits the holder's account for them where funds allow (the [`Outcome::Conflict`] carries
//! the amount). The issuer never pays out more than the escrow, so its own loss is bounded by
//! zero; the victims' loss is bounded by what they accepted from a forked allowance before the
//! proof reached them.
//!
//! After `settle_by`, the allowance is closed: [`Ledger::release_expired`] returns the unspent
//! escrow to the holder's account, and later records are rejected as late.

use crate::iou::{FraudProof, Iou};
use crate::keys::{DeviceKey, IssuerId};
use crate::objects::{AllowanceCert, AllowanceId, Amount, Hash, Reason, ReceiptStatus, UnixTime};
use std::collections::BTreeMap;

/// The verdict on one IOU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Settled now: credit `payee` with `amount` out of the escrow.
    Settled {
        /// IOU id.
        iou: Hash,
        /// Amount credited.
        amount: Amount,
        /// Who is credited.
        payee: DeviceKey,
        /// A fork found on the way: an IOU refused earlier for the same slot.
        fork: Option<Box<FraudProof>>,
    },
    /// This very IOU settled before: nothing to do (idempotent re-upload).
    AlreadySettled {
        /// IOU id.
        iou: Hash,
    },
    /// Refused.
    Rejected {
        /// IOU id.
        iou: Hash,
        /// Why.
        reason: Reason,
        /// A fork found on the way: an IOU refused earlier for the same slot.
        fork: Option<Box<FraudProof>>,
    },
    /// Refused: its slot was settled by a different IOU. The proof names the allowance.
    Conflict {
        /// IOU id of the refused IOU.
        iou: Hash,
        /// The refused IOU's amount: the victim's loss, to recover from the holder.
        amount: Amount,
        /// The refused IOU's payee: the victim.
        payee: DeviceKey,
        /// The evidence.
        proof: Box<FraudProof>,
    },
}

impl Outcome {
    /// What the settlement receipt for this IOU says: settled (now or before), or rejected with
    /// the reason; a conflict is rejected as [`Reason::CounterConflict`].
    pub fn receipt_status(&self) -> ReceiptStatus {
        match self {
            Outcome::Settled { .. } | Outcome::AlreadySettled { .. } => ReceiptStatus::Settled,
            Outcome::Rejected { reason, .. } => ReceiptStatus::Rejected(*reason),
            Outcome::Conflict { .. } => ReceiptStatus::Rejected(Reason::CounterConflict),
        }
    }

    /// The fraud proof this outcome found, if any.
    pub fn fork(&self) -> Option<&FraudProof> {
        match self {
            Outcome::Settled { fork, .. } | Outcome::Rejected { fork, .. } => fork.as_deref(),
            Outcome::Conflict { proof, .. } => Some(proof),
            Outcome::AlreadySettled { .. } => None,
        }
    }

    /// The IOU the outcome is about.
    pub fn iou(&self) -> Hash {
        match self {
            Outcome::Settled { iou, .. }
            | Outcome::AlreadySettled { iou }
            | Outcome::Rejected { iou, .. }
            | Outcome::Conflict { iou, .. } => *iou,
        }
    }
}

/// What became of the first IOU seen for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotVerdict {
    /// It settled.
    Settled,
    /// It was refused; a different IOU for the slot is still a fork.
    Rejected(Reason),
}

/// The IOU that settled one `(allowance, counter)` slot, or else the first IOU with a valid
/// signature that the ledger refused for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// IOU id.
    pub iou: Hash,
    /// The spend statement's digest.
    pub digest: Hash,
    /// The holder's signature (to build fraud proofs).
    pub sig: crate::keys::Signature,
    /// The IOU's amount.
    pub amount: Amount,
    /// Settled or refused.
    pub verdict: SlotVerdict,
}

/// One allowance's escrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escrow {
    /// The certificate the issuer signed.
    pub cert: AllowanceCert,
    /// Claimed slots, by counter.
    pub slots: BTreeMap<u32, Slot>,
    /// Sum of settled amounts.
    pub settled_total: Amount,
    /// Released after settle-by: no more settlement.
    pub released: bool,
    /// The first fraud proof found against it.
    pub fraud: Option<FraudProof>,
}

impl Escrow {
    /// Escrow not yet settled or released.
    pub fn unspent(&self) -> Amount {
        if self.released {
            0
        } else {
            self.cert.body().limit - self.settled_total
        }
    }
}

/// Escrow returned to a holder's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The allowance closed.
    pub allowance: AllowanceId,
    /// Its holder.
    pub holder: DeviceKey,
    /// Amount returned.
    pub amount: Amount,
}

/// Why an allowance could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenAllowanceError {
    /// Signed by another issuer.
    #[error("the certificate is another issuer's")]
    ForeignIssuer,
    /// An allowance with that id exists.
    #[error("allowance {0} exists")]
    Duplicate(AllowanceId),
}

/// What [`Ledger::apply`] changed, for the driver to write: each changed slot and each
/// changed settled total, with what it was before (so the write can be conditional on it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerChanges {
    /// Slots claimed for the first time, in (allowance, counter) order.
    pub new_slots: Vec<(AllowanceId, u32, Slot)>,
    /// Slots that held a refused IOU and now hold a settled one.
    pub settled_slots: Vec<(AllowanceId, u32, Slot)>,
    /// Settled totals that moved: allowance, total before, total after.
    pub totals: Vec<(AllowanceId, Amount, Amount)>,
}

impl LedgerChanges {
    /// True if nothing changed.
    pub fn is_empty(&self) -> bool {
        self.new_slots.is_empty() && self.settled_slots.is_empty() && self.totals.is_empty()
    }
}

/// The issuer's settlement state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    issuer: IssuerId,
    escrows: BTreeMap<AllowanceId, Escrow>,
    /// Slots changed since the last [`Ledger::take_changes`]: `true` if the slot is new.
    changed_slots: BTreeMap<(AllowanceId, u32), bool>,
    /// Settled totals before the first change since the last [`Ledger::take_changes`].
    totals_before: BTreeMap<AllowanceId, Amount>,
}

impl Ledger {
    /// An empty ledger for `issuer`.
    pub fn new(issuer: IssuerId) -> Self {
        Self {
            issuer,
            escrows: BTreeMap::new(),
            changed_slots: BTreeMap::new(),
            totals_before: BTreeMap::new(),
        }
    }

    /// Takes what [`Ledger::apply`] changed since the last call (restoring and opening
    /// allowances are not changes: the driver made them).
    pub fn take_changes(&mut self) -> LedgerChanges {
        let mut out = LedgerChanges::default();
        for ((allowance, counter), new) in std::mem::take(&mut self.changed_slots) {
            let Some(slot) = self
                .escrows
                .get(&allowance)
                .and_then(|e| e.slots.get(&counter))
            else {
                continue;
            };
            let item = (allowance, counter, slot.clone());
            if new {
                out.new_slots.push(item);
            } else {
                out.settled_slots.push(item);
            }
        }
        for (allowance, before) in std::mem::take(&mut self.totals_before) {
            let after = self
                .escrows
                .get(&allowance)
                .map_or(before, |e| e.settled_total);
            if after != before {
                out.totals.push((allowance, before, after));
            }
        }
        out
    }

    /// Opens the escrow for a certificate the issuer just signed.
    pub fn open_allowance(&mut self, cert: AllowanceCert) -> Result<(), OpenAllowanceError> {
        if cert.body().issuer != self.issuer {
            return Err(OpenAllowanceError::ForeignIssuer);
        }
        let id = cert.id();
        if self.escrows.contains_key(&id) {
            return Err(OpenAllowanceError::Duplicate(id));
        }
        self.escrows.insert(
            id,
            Escrow {
                cert,
                slots: BTreeMap::new(),
                settled_total: 0,
                released: false,
                fraud: None,
            },
        );
        Ok(())
    }

    /// Restores an escrow from storage (settled slots, release flag and fraud proof included).
    pub fn restore(&mut self, escrow: Escrow) {
        self.escrows.insert(escrow.cert.id(), escrow);
    }

    /// The escrow of `allowance`.
    pub fn escrow(&self, allowance: &AllowanceId) -> Option<&Escrow> {
        self.escrows.get(allowance)
    }

    /// All escrows, by allowance id.
    pub fn escrows(&self) -> &BTreeMap<AllowanceId, Escrow> {
        &self.escrows
    }

    /// Judges and, if valid, settles one IOU at wall-clock `now`. `signature_checked` lets a
    /// caller that already verified the IOU's signature against the holder key (in a batch)
    /// skip the second check; pass `false` when unsure.
    // The checks of SPEC.md §6.4, one after the other in their order.
    #[allow(clippy::too_many_lines)]
    pub fn apply(&mut self, iou: &Iou, now: UnixTime, signature_checked: bool) -> Outcome {
        let id = iou.id();
        let Some(escrow) = self.escrows.get_mut(&iou.allowance) else {
            return Outcome::Rejected {
                iou: id,
                reason: Reason::UnknownAllowance,
                fork: None,
            };
        };
        let body = escrow.cert.body();
        if !signature_checked && iou.verify(&body.holder).is_err() {
            return Outcome::Rejected {
                iou: id,
                reason: Reason::BadSignature,
                fork: None,
            };
        }
        let digest = iou.digest();
        let mut fork = None;
        if let Some(slot) = escrow.slots.get(&iou.counter) {
            if slot.digest == digest {
                return match slot.verdict {
                    SlotVerdict::Settled => Outcome::AlreadySettled { iou: id },
                    SlotVerdict::Rejected(reason) => Outcome::Rejected {
                        iou: id,
                        reason,
                        fork: None,
                    },
                };
            }
            let claimed = crate::iou::SpendNotice {
                version: crate::codec::VERSION,
                allowance: iou.allowance,
                counter: iou.counter,
                digest: slot.digest,
                sig: slot.sig,
            };
            let proof = FraudProof::new(escrow.cert.clone(), claimed, iou.notice())
                .expect("same slot, different digests");
            escrow.fraud.get_or_insert_with(|| proof.clone());
            if slot.verdict == SlotVerdict::Settled {
                return Outcome::Conflict {
                    iou: id,
                    amount: iou.amount,
                    payee: iou.payee,
                    proof: Box::new(proof),
                };
            }
            fork = Some(Box::new(proof));
        }
        let refusal = if escrow.released || now > body.settle_by {
            Some(Reason::LateSettlement)
        } else if iou.time < body.valid_from {
            Some(Reason::NotYetValid)
        } else if iou.time > body.valid_until {
            Some(Reason::Expired)
        } else if iou.amount > body.max_payment {
            Some(Reason::OverPaymentLimit)
        } else if escrow
            .settled_total
            .checked_add(iou.amount)
            .is_none_or(|t| t > body.limit)
        {
            Some(Reason::OverLimit)
        } else {
            None
        };
        if let Some(reason) = refusal {
            // Keep the first refused IOU of a slot; a later refusal changes nothing.
            if let std::collections::btree_map::Entry::Vacant(v) = escrow.slots.entry(iou.counter) {
                v.insert(Slot {
                    iou: id,
                    digest,
                    sig: iou.sig,
                    amount: iou.amount,
                    verdict: SlotVerdict::Rejected(reason),
                });
                self.changed_slots
                    .insert((iou.allowance, iou.counter), true);
            }
            return Outcome::Rejected {
                iou: id,
                reason,
                fork,
            };
        }
        let replaced = escrow
            .slots
            .insert(
                iou.counter,
                Slot {
                    iou: id,
                    digest,
                    sig: iou.sig,
                    amount: iou.amount,
                    verdict: SlotVerdict::Settled,
                },
            )
            .is_some();
        self.totals_before
            .entry(iou.allowance)
            .or_insert(escrow.settled_total);
        escrow.settled_total += iou.amount;
        // A slot first claimed in this round stays "new" when it settles later in the round.
        self.changed_slots
            .entry((iou.allowance, iou.counter))
            .or_insert(!replaced);
        Outcome::Settled {
            iou: id,
            amount: iou.amount,
            payee: iou.payee,
            fork,
        }
    }

    /// Closes every allowance whose settle-by time is before `now` and returns the escrow to
    /// release, in allowance-id order.
    pub fn release_expired(&mut self, now: UnixTime) -> Vec<Release> {
        let mut out = Vec::new();
        for (id, e) in &mut self.escrows {
            if !e.released && now > e.cert.body().settle_by {
                out.push(Release {
                    allowance: *id,
                    holder: e.cert.body().holder,
                    amount: e.unspent(),
                });
                e.released = true;
            }
        }
        out
    }
}

#[cfg(test)]
// Tests that walk through a scenario read best as one function.
#[allow(clippy::too_many_lines)]
mod tests {
    use super::*;
    use crate::testkit::{DAY, T0, allowance, device, issuer, pay, request, wallet};

    #[test]
    fn settle_once_conflict_limit_and_release() {
        let iss = issuer();
        let (alice, bob, carol) = (device(1), device(2), device(3));
        let cert = allowance(&iss, 1, &alice, 1000);
        let mut ledger = Ledger::new(iss.id());
        ledger.open_allowance(cert.clone()).unwrap();
        assert_eq!(
            ledger.open_allowance(cert.clone()),
            Err(OpenAllowanceError::Duplicate(cert.id()))
        );
        let mut w = wallet([cert.clone()]);
        let mut clone = w.clone();
        let a = pay(&mut w, &alice, &request(&bob, 600, 1));
        let b = pay(&mut w, &alice, &request(&bob, 300, 2));
        let forked = pay(&mut clone, &alice, &request(&carol, 700, 3));

        // Arrival order: second IOU first.
        assert_eq!(
            ledger.apply(&b, T0, false),
            Outcome::Settled {
                iou: b.id(),
                amount: 300,
                payee: bob.public(),
                fork: None,
            }
        );
        assert_eq!(
            ledger.apply(&a, T0, false),
            Outcome::Settled {
                iou: a.id(),
                amount: 600,
                payee: bob.public(),
                fork: None,
            }
        );
        assert_eq!(
            ledger.apply(&a, T0, false),
            Outcome::AlreadySettled { iou: a.id() }
        );
        let Outcome::Conflict {
            iou,
            amount,
            payee,
            proof,
        } = ledger.apply(&forked, T0, false)
        else {
            panic!("expected a conflict");
        };
        assert_eq!((iou, amount, payee), (forked.id(), 700, carol.public()));
        assert_eq!(proof.verify(&iss.id()), Ok(()));
        let e = ledger.escrow(&cert.id()).unwrap();
        assert_eq!(e.settled_total, 900);
        assert_eq!(e.unspent(), 100);
        assert!(e.fraud.is_some());

        // Slots of a forked allowance that do not conflict still settle, up to the limit.
        let last = pay(&mut w, &alice, &request(&bob, 100, 4));
        assert_eq!(
            ledger.apply(&last, T0, false),
            Outcome::Settled {
                iou: last.id(),
                amount: 100,
                payee: bob.public(),
                fork: None,
            }
        );
        assert_eq!(ledger.escrow(&cert.id()).unwrap().settled_total, 1000);
        // A tampered wallet that ignores its limit.
        let cheat = crate::iou::IouDraft {
            allowance: cert.id(),
            counter: 9,
            amount: 1,
            total: 1,
            prev: Hash([1; 32]),
            payee: bob.public(),
            nonce: crate::objects::Nonce([9; 16]),
            time: T0,
        }
        .sign(&alice);
        assert_eq!(
            ledger.apply(&cheat, T0, false),
            Outcome::Rejected {
                iou: cheat.id(),
                reason: Reason::OverLimit,
                fork: None,
            }
        );

        // Release after settle-by.
        assert_eq!(ledger.release_expired(T0 + 14 * DAY), vec![]);
        assert_eq!(
            ledger.release_expired(T0 + 14 * DAY + 1),
            vec![Release {
                allowance: cert.id(),
                holder: alice.public(),
                amount: 0
            }]
        );
        assert_eq!(ledger.release_expired(T0 + 15 * DAY), vec![]);
    }

    #[test]
    fn rejections() {
        let iss = issuer();
        let (alice, bob) = (device(1), device(2));
        let cert = allowance(&iss, 1, &alice, 1000);
        let mut ledger = Ledger::new(iss.id());
        let stranger = crate::keys::IssuerSecret::from_bytes(&[0x44; 64]);
        assert_eq!(
            ledger.open_allowance(allowance(&stranger, 2, &alice, 10)),
            Err(OpenAllowanceError::ForeignIssuer)
        );
        let mut w = wallet([cert.clone()]);
        let iou = pay(&mut w, &alice, &request(&bob, 100, 1));
        assert_eq!(
            ledger.apply(&iou, T0, false),
            Outcome::Rejected {
                iou: iou.id(),
                reason: Reason::UnknownAllowance,
                fork: None,
            }
        );
        ledger.open_allowance(cert.clone()).unwrap();
        let mut tampered = iou.clone();
        tampered.payee = alice.public();
        assert_eq!(
            ledger.apply(&tampered, T0, false),
            Outcome::Rejected {
                iou: tampered.id(),
                reason: Reason::BadSignature,
                fork: None,
            }
        );
        assert_eq!(
            ledger.apply(&iou, T0 + 14 * DAY + 1, false),
            Outcome::Rejected {
                iou: iou.id(),
                reason: Reason::LateSettlement,
                fork: None,
            }
        );
        let backdated = crate::iou::IouDraft {
            allowance: cert.id(),
            counter: 2,
            amount: 5,
            total: 5,
            prev: Hash([1; 32]),
            payee: bob.public(),
            nonce: crate::objects::Nonce([2; 16]),
            time: T0 - 2 * DAY,
        }
        .sign(&alice);
        assert_eq!(
            ledger.apply(&backdated, T0, false),
            Outcome::Rejected {
                iou: backdated.id(),
                reason: Reason::NotYetValid,
                fork: None,
            }
        );
        let late = crate::iou::IouDraft {
            allowance: cert.id(),
            counter: 3,
            amount: 5,
            total: 5,
            prev: Hash([1; 32]),
            payee: bob.public(),
            nonce: crate::objects::Nonce([3; 16]),
            time: T0 + 8 * DAY,
        }
        .sign(&alice);
        assert_eq!(
            ledger.apply(&late, T0, false),
            Outcome::Rejected {
                iou: late.id(),
                reason: Reason::Expired,
                fork: None,
            }
        );
        // A refused IOU is remembered: re-applying it gives the same answer, and a different
        // IOU for its slot is a fork, found even though the new IOU settles.
        assert_eq!(
            ledger.apply(&late, T0, false),
            Outcome::Rejected {
                iou: late.id(),
                reason: Reason::Expired,
                fork: None
            }
        );
        let other = crate::iou::IouDraft {
            allowance: cert.id(),
            counter: 3,
            amount: 6,
            total: 6,
            prev: Hash([1; 32]),
            payee: bob.public(),
            nonce: crate::objects::Nonce([4; 16]),
            time: T0,
        }
        .sign(&alice);
        let out = ledger.apply(&other, T0, false);
        assert!(
            matches!(
                out,
                Outcome::Settled {
                    amount: 6,
                    fork: Some(_),
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(out.fork().unwrap().verify(&iss.id()), Ok(()));
        assert_eq!(out.receipt_status(), ReceiptStatus::Settled);
        assert_eq!(ledger.escrow(&cert.id()).unwrap().settled_total, 6);
        // Now the slot is settled: the refused IOU comes back as a conflict.
        let again = ledger.apply(&late, T0, false);
        assert_eq!(
            again.receipt_status(),
            ReceiptStatus::Rejected(Reason::CounterConflict)
        );
        ledger.apply(&other, T0, false);
        assert_eq!(ledger.escrow(&cert.id()).unwrap().settled_total, 6);
        assert_eq!(
            ledger.release_expired(T0 + 15 * DAY),
            vec![Release {
                allowance: cert.id(),
                holder: alice.public(),
                amount: 994
            }]
        );
    }
}
