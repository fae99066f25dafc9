//! Settling an upload: what the issuer does with a batch of sealed records between reading
//! them and storing its decisions, as pure functions over a [`Ledger`].
//!
//! The settlement server (`meshpay-settle`) and the simulator both settle through this module,
//! so a record is decided the same way by both; the server adds only storage, threads and
//! limits around it. The rules are those of SPEC.md §6.4 (the ledger's checks, the loss rule)
//! and §4.15 (which inputs get no decision).
//!
//! ## A batch, step by step
//!
//! 1. **Open** every uploaded input with [`open`]: each becomes an [`Input`]: an IOU with
//!    its record id, a record that does not open (only its id is known), or nothing.
//! 2. **Load** into a [`Ledger`] the escrows of the allowances the records name
//!    ([`Ledger::restore`]); an allowance the ledger does not hold is unknown.
//! 3. **Verify** the IOUs' signatures under their allowances' holders with
//!    [`bad_signatures`] (a batch verification, then one by one only if it fails). It takes a
//!    slice, so a caller with many cores may check parts of a batch at once.
//! 4. **Judge** the inputs in upload order with [`judge`]: one [`Answer`] per input, and what
//!    the decisions change ([`Judged`]): the ledger's slots and totals, credits to payees,
//!    conflicts (victims to repay from the holder's account, the loss rule) and fraud proofs.
//! 5. **Sign** one [`SettlementReceipt`] per decision of [`Judged::to_sign`], in its order,
//!    and turn the answers into receipts with [`Judged::answer`]: one per input, plus the new
//!    decisions to keep (they answer their record id from then on, [`kept`]).
//! 6. **Persist** the changes, the credits, the repayments, the fraud proofs (with a
//!    revocation for each newly proven allowance) and the kept decisions together, and only
//!    then hand out the receipts.
//!
//! [`MemoryIssuer`] runs all six steps in memory, for the simulator and for tests: call
//! [`MemoryIssuer::settle`] with the bytes a gateway uploads and the wall-clock time.
//!
//! ## What gets no decision
//!
//! Anyone can seal an IOU to the issuer's public seal key, so a record costs the issuer a
//! signature only once it is bound to an allowance the issuer granted: inputs that do not
//! decode, records that do not open, and IOUs under an unknown allowance or with a bad
//! signature are answered `None` (no receipt), except that a record id decided before is always
//! answered with its stored receipt. A payee without an account gets a provisional
//! `unknown_payee` receipt that claims no slot (checked after the allowance is known and before
//! the signature, SPEC.md §6.4), so the record settles when uploaded again once the payee has an
//! account.

use crate::iou::{FraudProof, Iou};
use crate::keys::{DeviceKey, IssuerSecret};
use crate::ledger::{Ledger, LedgerChanges, OpenAllowanceError, Outcome, Release};
use crate::objects::{
    AllowanceCert, AllowanceId, Amount, Hash, Reason, ReceiptStatus, Revocation, RevocationReason,
    SettlementReceipt, UnixTime,
};
use crate::record::SealedRecord;
use std::collections::{BTreeMap, BTreeSet};

/// One uploaded input after [`open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A record of this issuer that opened: its id and the IOU inside.
    Record(Hash, Iou),
    /// A sealed record that does not open (sealed to another issuer, or altered): only its
    /// id, which a stored decision may still answer.
    Unopened(Hash),
    /// Not a sealed record at all (or, for a server, an input left undecided).
    Nothing,
}

impl Input {
    /// The record id, if the input is a sealed record.
    pub fn id(&self) -> Option<Hash> {
        match self {
            Input::Record(id, _) | Input::Unopened(id) => Some(*id),
            Input::Nothing => None,
        }
    }

    /// The IOU, if the record opened.
    pub fn iou(&self) -> Option<&Iou> {
        match self {
            Input::Record(_, iou) => Some(iou),
            _ => None,
        }
    }
}

/// Decodes `bytes` as a sealed record and opens it with the issuer's secret (HPKE: one X25519
/// agreement, whatever the bytes hold).
pub fn open(bytes: &[u8], issuer: &IssuerSecret) -> Input {
    let Ok(record) = crate::codec::decode::<SealedRecord>(bytes) else {
        return Input::Nothing;
    };
    match record.open(issuer) {
        Ok(iou) => Input::Record(record.id, iou),
        Err(_) => Input::Unopened(record.id),
    }
}

/// An IOU to verify, with its record id and the key it must verify under (its allowance's
/// holder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIou {
    /// The record id.
    pub record: Hash,
    /// The IOU.
    pub iou: Iou,
    /// The holder of the IOU's allowance.
    pub holder: DeviceKey,
}

/// The IOUs among `items` whose signature does not verify under their holder key, by record
/// id, in the order of `items`.
///
/// Ed25519 batch verification first ([`crate::iou::verify_batch`]); only if the batch fails
/// is each IOU checked alone with the strict [`Iou::verify`]. The cost is one batch check for
/// an honest batch, so give it large slices (a few hundred IOUs at least).
pub fn bad_signatures(items: &[SignedIou]) -> Vec<Hash> {
    let refs: Vec<(&Iou, DeviceKey)> = items.iter().map(|s| (&s.iou, s.holder)).collect();
    if crate::iou::verify_batch(&refs).is_ok() {
        return Vec::new();
    }
    items
        .iter()
        .filter(|s| s.iou.verify(&s.holder).is_err())
        .map(|s| s.record)
        .collect()
}

/// The IOUs among `inputs` whose allowance `ledger` holds, with their holder keys: what
/// [`bad_signatures`] checks.
pub fn to_verify(inputs: &[Input], ledger: &Ledger) -> Vec<SignedIou> {
    inputs
        .iter()
        .filter_map(|i| match i {
            Input::Record(id, iou) => ledger.escrow(&iou.allowance).map(|e| SignedIou {
                record: *id,
                iou: iou.clone(),
                holder: e.cert.body().holder,
            }),
            _ => None,
        })
        .collect()
}

/// Which payees have an account to credit.
#[derive(Debug, Clone, Copy)]
pub enum Payees<'a> {
    /// Every payee (the simulator's issuer credits whoever is paid).
    All,
    /// Only these (a server reads, per batch, which of the batch's payees have an account).
    Only(&'a BTreeSet<DeviceKey>),
}

impl Payees<'_> {
    /// Whether `payee` has an account.
    pub fn contains(&self, payee: &DeviceKey) -> bool {
        match self {
            Payees::All => true,
            Payees::Only(set) => set.contains(payee),
        }
    }
}

/// What a batch is judged against besides the ledger.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Decisions kept before, by record id: each answers its record id again, whatever the
    /// bytes uploaded under it.
    pub decided: &'a BTreeMap<Hash, SettlementReceipt>,
    /// Records whose signature does not verify ([`bad_signatures`]).
    pub bad_signatures: &'a BTreeSet<Hash>,
    /// Which payees have an account.
    pub payees: Payees<'a>,
}

/// The answer to one input, before new receipts are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A decision kept before, or none (`None`: no decision, nothing to sign).
    Ready(Option<SettlementReceipt>),
    /// A new decision on a record, to sign.
    Fresh(Hash, ReceiptStatus),
    /// The same record as the input at this index, earlier in the batch.
    SameAs(usize),
}

/// A payee's credit out of one allowance's escrow in a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Credit {
    /// Amount credited.
    pub amount: Amount,
    /// Records settled for it.
    pub records: usize,
}

/// A double spend refused in a batch: the victim's loss, to recover from the holder's account
/// where funds allow (the loss rule, SPEC.md §6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// The allowance holder, who signed both IOUs.
    pub holder: DeviceKey,
    /// The payee of the refused IOU.
    pub victim: DeviceKey,
    /// The refused IOU's amount.
    pub amount: Amount,
    /// The refused record.
    pub record: Hash,
}

/// The verdicts on a batch, before signing, and everything they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// One answer per input, in upload order.
    pub answers: Vec<Answer>,
    /// What the ledger changed ([`Ledger::take_changes`]).
    pub changes: LedgerChanges,
    /// Credits to payees, by (allowance, payee).
    pub credits: BTreeMap<(AllowanceId, DeviceKey), Credit>,
    /// Double spends refused, in upload order.
    pub conflicts: Vec<Conflict>,
    /// The first fraud proof found in the batch against each allowance.
    pub frauds: BTreeMap<AllowanceId, FraudProof>,
}

/// Records decided by one batch, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records settled now.
    pub settled: u64,
    /// Records refused now (with a receipt).
    pub rejected: u64,
    /// Inputs answered with a decision kept before.
    pub repeated: u64,
}

/// A batch's answers with their receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// One answer per input, in upload order; `None` where no decision is taken.
    pub receipts: Vec<Option<SettlementReceipt>>,
    /// The new decisions to keep ([`kept`]), in upload order.
    pub kept: Vec<SettlementReceipt>,
    /// Counts.
    pub tally: Tally,
}

/// Whether a new decision is kept, to answer its record id from then on. Refusals that claim
/// no slot are not: `unknown_allowance` and `bad_signature` are recomputed identically on every
/// upload (and anyone can make them), and `unknown_payee` lasts only until the payee opens an
/// account.
pub fn kept(status: ReceiptStatus) -> bool {
    !matches!(
        status,
        ReceiptStatus::Rejected(
            Reason::UnknownAllowance | Reason::BadSignature | Reason::UnknownPayee
        )
    )
}

/// Judges `inputs` in upload order against `ledger` (which holds the escrows of the
/// allowances they name) at wall-clock `now`.
///
/// For each input: a record id decided before gets its kept receipt; a record seen earlier in
/// the batch gets the same answer; a record under an allowance `ledger` does not hold, or with a
/// bad signature, gets no decision; one whose payee has no account is refused `unknown_payee`;
/// every other record is applied to the ledger ([`Ledger::apply`], signature already checked).
/// The ledger is changed in place, and its changes taken ([`Ledger::take_changes`]) into the
/// result, so call it on a ledger with no changes pending.
pub fn judge(inputs: &[Input], ledger: &mut Ledger, facts: &Facts<'_>, now: UnixTime) -> Judged {
    let mut answers: Vec<Answer> = Vec::with_capacity(inputs.len());
    let mut this_batch: BTreeMap<Hash, usize> = BTreeMap::new();
    let mut credits: BTreeMap<(AllowanceId, DeviceKey), Credit> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut frauds: BTreeMap<AllowanceId, FraudProof> = BTreeMap::new();
    for input in inputs {
        let answer = match input {
            Input::Nothing => Answer::Ready(None),
            Input::Unopened(id) => Answer::Ready(facts.decided.get(id).cloned()),
            Input::Record(id, iou) => {
                if let Some(r) = facts.decided.get(id) {
                    Answer::Ready(Some(r.clone()))
                } else if let Some(k) = this_batch.get(id) {
                    Answer::SameAs(*k)
                } else {
                    let holder = ledger.escrow(&iou.allowance).map(|e| e.cert.body().holder);
                    let status = match holder {
                        // Junk anyone can seal: no decision, nothing signed.
                        None => {
                            answers.push(Answer::Ready(None));
                            continue;
                        }
                        // No account to credit: nothing is claimed or kept, so the record
                        // settles when uploaded again once the payee has an account.
                        Some(_) if !facts.payees.contains(&iou.payee) => {
                            ReceiptStatus::Rejected(Reason::UnknownPayee)
                        }
                        Some(_) if facts.bad_signatures.contains(id) => {
                            answers.push(Answer::Ready(None));
                            continue;
                        }
                        Some(holder) => {
                            let outcome = ledger.apply(iou, now, true);
                            if let Some(proof) = outcome.fork() {
                                frauds
                                    .entry(proof.allowance())
                                    .or_insert_with(|| proof.clone());
                            }
                            match &outcome {
                                Outcome::Settled { amount, payee, .. } => {
                                    let c = credits.entry((iou.allowance, *payee)).or_default();
                                    c.amount += amount;
                                    c.records += 1;
                                }
                                Outcome::Conflict { amount, payee, .. } => {
                                    conflicts.push(Conflict {
                                        holder,
                                        victim: *payee,
                                        amount: *amount,
                                        record: *id,
                                    });
                                }
                                _ => {}
                            }
                            outcome.receipt_status()
                        }
                    };
                    this_batch.insert(*id, answers.len());
                    Answer::Fresh(*id, status)
                }
            }
        };
        answers.push(answer);
    }
    Judged {
        answers,
        changes: ledger.take_changes(),
        credits,
        conflicts,
        frauds,
    }
}

impl Judged {
    /// The new decisions to sign, in upload order: sign one receipt for each, at the time the
    /// batch was judged, and pass them to [`Judged::answer`] in this order.
    pub fn to_sign(&self) -> Vec<(Hash, ReceiptStatus)> {
        self.answers
            .iter()
            .filter_map(|a| match a {
                Answer::Fresh(id, status) => Some((*id, *status)),
                _ => None,
            })
            .collect()
    }

    /// One receipt (or none) per input, given the receipts signed for [`Judged::to_sign`] in
    /// its order; and the new decisions to keep.
    ///
    /// # Panics
    ///
    /// If `signed` holds fewer receipts than [`Judged::to_sign`] asked for (a caller's bug).
    pub fn answer(&self, signed: Vec<SettlementReceipt>) -> Answered {
        let mut signed = signed.into_iter();
        let mut receipts: Vec<Option<SettlementReceipt>> = Vec::with_capacity(self.answers.len());
        let mut kept_now = Vec::new();
        let mut tally = Tally::default();
        for a in &self.answers {
            let r = match a {
                Answer::Ready(r) => {
                    tally.repeated += u64::from(r.is_some());
                    r.clone()
                }
                Answer::SameAs(k) => receipts[*k].clone(),
                Answer::Fresh(_, status) => {
                    let r = signed
                        .next()
                        .expect("one signed receipt per decision of to_sign");
                    if kept(*status) {
                        kept_now.push(r.clone());
                    }
                    if *status == ReceiptStatus::Settled {
                        tally.settled += 1;
                    } else {
                        tally.rejected += 1;
                    }
                    Some(r)
                }
            };
            receipts.push(r);
        }
        Answered {
            receipts,
            kept: kept_now,
            tally,
        }
    }
}

/// An issuer that settles in memory: a [`Ledger`], the decisions it kept, its accounts, and
/// the fraud proofs and revocations it produced. It goes through exactly the steps of the
/// settlement server ([`open`], [`bad_signatures`], [`judge`], signing, keeping), so a
/// simulation settles records the way the server would.
///
/// Driving it: [`MemoryIssuer::open_allowance`] for every certificate the issuer grants
/// (the escrow is not taken from any account here), [`MemoryIssuer::open_account`] or
/// [`MemoryIssuer::credit`] for the accounts it keeps (unless it credits every payee, see
/// [`MemoryIssuer::new`]), then [`MemoryIssuer::settle`] for each upload, and
/// [`MemoryIssuer::fraud_proofs`] / [`MemoryIssuer::revocations`] to read what it produced
/// (both only grow, in the order produced, like the server's feeds: remember how many you
/// have read).
#[derive(Debug)]
pub struct MemoryIssuer {
    secret: IssuerSecret,
    ledger: Ledger,
    decided: BTreeMap<Hash, SettlementReceipt>,
    accounts: BTreeMap<DeviceKey, Amount>,
    every_payee: bool,
    frauds: Vec<FraudProof>,
    proven: BTreeSet<AllowanceId>,
    revocations: Vec<Revocation>,
    revoked: BTreeSet<AllowanceId>,
}

impl MemoryIssuer {
    /// An issuer with no allowances and no accounts. With `every_payee_has_account`, every
    /// payee is credited (its account opened at the first credit), as the simulator wants;
    /// without it, a payee needs an account ([`MemoryIssuer::open_account`]) or its records
    /// are refused `unknown_payee`, as on the server.
    pub fn new(secret: IssuerSecret, every_payee_has_account: bool) -> Self {
        Self {
            ledger: Ledger::new(secret.id()),
            secret,
            decided: BTreeMap::new(),
            accounts: BTreeMap::new(),
            every_payee: every_payee_has_account,
            frauds: Vec::new(),
            proven: BTreeSet::new(),
            revocations: Vec::new(),
            revoked: BTreeSet::new(),
        }
    }

    /// The issuer's secret.
    pub fn secret(&self) -> &IssuerSecret {
        &self.secret
    }

    /// Opens the escrow of a certificate this issuer granted.
    pub fn open_allowance(&mut self, cert: AllowanceCert) -> Result<(), OpenAllowanceError> {
        self.ledger.open_allowance(cert)
    }

    /// Opens an account for `device` (with a zero balance) if it has none.
    pub fn open_account(&mut self, device: DeviceKey) {
        self.accounts.entry(device).or_insert(0);
    }

    /// Credits `device`'s account with `amount`, opening it if needed. Returns the new
    /// balance, or `None` if it would pass `u64::MAX` (nothing changes then).
    pub fn credit(&mut self, device: DeviceKey, amount: Amount) -> Option<Amount> {
        let balance = self.accounts.entry(device).or_insert(0);
        *balance = balance.checked_add(amount)?;
        Some(*balance)
    }

    /// Settles an upload at wall-clock `now`: one answer per input, in order, `None` where the
    /// issuer takes no decision (see the module doc). Credits payees, repays victims of double
    /// spends from the holder's account where its balance allows, and records a fraud proof
    /// and a revocation for every allowance newly proven forked.
    pub fn settle(&mut self, uploads: &[Vec<u8>], now: UnixTime) -> Vec<Option<SettlementReceipt>> {
        let inputs: Vec<Input> = uploads.iter().map(|b| open(b, &self.secret)).collect();
        let bad: BTreeSet<Hash> = bad_signatures(&to_verify(&inputs, &self.ledger))
            .into_iter()
            .collect();
        let with_accounts: BTreeSet<DeviceKey> = inputs
            .iter()
            .filter_map(|i| i.iou().map(|iou| iou.payee))
            .filter(|p| self.accounts.contains_key(p))
            .collect();
        let facts = Facts {
            decided: &self.decided,
            bad_signatures: &bad,
            payees: if self.every_payee {
                Payees::All
            } else {
                Payees::Only(&with_accounts)
            },
        };
        let judged = judge(&inputs, &mut self.ledger, &facts, now);
        let signed = judged
            .to_sign()
            .into_iter()
            .map(|(id, status)| SettlementReceipt::issue(&self.secret, id, status, now))
            .collect();
        let answered = judged.answer(signed);
        for ((_, payee), credit) in &judged.credits {
            let balance = self.accounts.entry(*payee).or_insert(0);
            *balance = balance.saturating_add(credit.amount);
        }
        for c in &judged.conflicts {
            let available = self.accounts.get(&c.holder).copied().unwrap_or(0);
            let repay = c.amount.min(available);
            if repay > 0 {
                self.accounts.insert(c.holder, available - repay);
                let victim = self.accounts.entry(c.victim).or_insert(0);
                *victim = victim.saturating_add(repay);
            }
        }
        for proof in judged.frauds.values() {
            if self.proven.insert(proof.allowance()) {
                self.frauds.push(proof.clone());
                self.revoke(proof.allowance(), RevocationReason::Fraud, now);
            }
        }
        for r in answered.kept {
            self.decided.insert(r.body().record, r);
        }
        answered.receipts
    }

    /// Revokes `allowance` at `now`. The first revocation of an allowance stands: revoking it
    /// again returns that one.
    pub fn revoke(
        &mut self,
        allowance: AllowanceId,
        reason: RevocationReason,
        now: UnixTime,
    ) -> Revocation {
        if self.revoked.contains(&allowance) {
            if let Some(r) = self
                .revocations
                .iter()
                .find(|r| r.body().allowance == allowance)
            {
                return r.clone();
            }
        }
        let rev = Revocation::issue(&self.secret, allowance, reason, now);
        self.revoked.insert(allowance);
        self.revocations.push(rev.clone());
        rev
    }

    /// Closes every allowance past its settle-by time at `now` and returns its unspent escrow
    /// to the holder's account (opened if needed).
    pub fn release_expired(&mut self, now: UnixTime) -> Vec<Release> {
        let released = self.ledger.release_expired(now);
        for r in &released {
            let balance = self.accounts.entry(r.holder).or_insert(0);
            *balance = balance.saturating_add(r.amount);
        }
        released
    }

    /// The settlement ledger: escrows, slots, settled totals.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The decision kept for `record`, if any.
    pub fn decision(&self, record: &Hash) -> Option<&SettlementReceipt> {
        self.decided.get(record)
    }

    /// Every decision kept, by record id.
    pub fn decisions(&self) -> &BTreeMap<Hash, SettlementReceipt> {
        &self.decided
    }

    /// Account balances, by device.
    pub fn accounts(&self) -> &BTreeMap<DeviceKey, Amount> {
        &self.accounts
    }

    /// `device`'s balance, if it has an account.
    pub fn balance(&self, device: &DeviceKey) -> Option<Amount> {
        self.accounts.get(device).copied()
    }

    /// Fraud proofs found, one per allowance, in the order found.
    pub fn fraud_proofs(&self) -> &[FraudProof] {
        &self.frauds
    }

    /// Revocations made (for proven frauds and by [`MemoryIssuer::revoke`]), in order.
    pub fn revocations(&self) -> &[Revocation] {
        &self.revocations
    }
}

#[cfg(test)]
mod tests;
