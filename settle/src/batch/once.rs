//! Phases 3 to 5, in one transaction: load the ledger, judge, sign what was not signed
//! ahead, write, commit.

use super::prepare::Prepared;
use crate::cpu::{cpu, par_map};
use crate::db::accounts::{balance, escrow, existing_accounts, transfer, user};
use crate::db::{Tx, settlement as rows, u};
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::server::Server;
use meshpay_protocol::ledger::{Escrow, Ledger};
use meshpay_protocol::settlement::{self, Facts, Input, Judged, Payees};
use meshpay_protocol::{
    AllowanceId, DeviceKey, Hash, ReceiptStatus, Revocation, RevocationReason, SettlementReceipt,
    UnixTime, encode,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

impl Server {
    /// Judges `inputs` once against the state read in a new transaction, and commits the
    /// decisions. Fails with a transient error ([`ServerError::is_transient`]) if another
    /// transaction changed that state meanwhile.
    pub(super) async fn decide_once(
        &self,
        inputs: &[Input],
        prepared: &Prepared,
        decided: BTreeMap<Hash, SettlementReceipt>,
    ) -> Result<Vec<Option<SettlementReceipt>>, ServerError> {
        let now = prepared.now;
        let mut tx = self.db.begin().await?;
        let (mut ledger, payees) = self.load(&mut tx, inputs, &prepared.certs).await?;
        let facts = Facts {
            decided: &decided,
            bad_signatures: &prepared.bad,
            payees: Payees::Only(&payees),
        };
        let judged = settlement::judge(inputs, &mut ledger, &facts, now);
        let signed = self.sign(&judged, &prepared.hoped, now).await?;
        let answered = judged.answer(signed);
        let frauds = self.write(&mut tx, &judged, &answered.kept, now).await?;
        tx.commit().await?;
        let m = &self.metrics;
        Metrics::add(&m.settled, answered.tally.settled);
        Metrics::add(&m.rejected, answered.tally.rejected);
        Metrics::add(&m.repeated, answered.tally.repeated);
        Metrics::add(&m.frauds, frauds.len() as u64);
        self.observe_batch(inputs, &judged, &prepared.certs, &frauds, now);
        Ok(answered.receipts)
    }

    /// Phase 3: reads, in the batch's transaction, the escrows and slots of the allowances the
    /// batch names into a ledger, and which of its payees have an account. (Certificates,
    /// which never change, were read before.)
    async fn load(
        &self,
        tx: &mut Tx,
        inputs: &[Input],
        certs: &BTreeMap<AllowanceId, meshpay_protocol::AllowanceCert>,
    ) -> Result<(Ledger, BTreeSet<DeviceKey>), ServerError> {
        let mut counters: BTreeMap<AllowanceId, Vec<u32>> = BTreeMap::new();
        for iou in inputs.iter().filter_map(Input::iou) {
            counters.entry(iou.allowance).or_default().push(iou.counter);
        }
        let mut ledger = Ledger::new(self.issuer.id());
        // In id order (a BTreeMap's), so that concurrent batches lock escrows in one order.
        for (allowance, cert) in certs {
            let Some((settled_total, released)) = rows::lock_escrow(tx, allowance).await? else {
                continue;
            };
            let wanted = counters.get(allowance).map_or(&[][..], Vec::as_slice);
            ledger.restore(Escrow {
                cert: cert.clone(),
                slots: rows::load_slots(tx, allowance, wanted).await?,
                settled_total,
                released,
                fraud: None,
            });
        }
        let names: Vec<String> = inputs
            .iter()
            .filter_map(|i| i.iou().map(|iou| user(&iou.payee)))
            .collect();
        let existing = existing_accounts(tx, &names).await?;
        let payees = inputs
            .iter()
            .filter_map(Input::iou)
            .filter(|iou| existing.contains(&user(&iou.payee)))
            .map(|iou| iou.payee)
            .collect();
        Ok((ledger, payees))
    }

    /// Phase 5, signing: one receipt per decision of [`Judged::to_sign`], in its order; the
    /// ones signed ahead where the decision is `settled`, the others on the CPU pool now.
    async fn sign(
        &self,
        judged: &Judged,
        hoped: &BTreeMap<Hash, SettlementReceipt>,
        now: UnixTime,
    ) -> Result<Vec<SettlementReceipt>, ServerError> {
        let fresh = judged.to_sign();
        let ahead = |id: &Hash, status: &ReceiptStatus| {
            (*status == ReceiptStatus::Settled)
                .then(|| hoped.get(id))
                .flatten()
        };
        let late: Vec<(Hash, ReceiptStatus)> = fresh
            .iter()
            .filter(|(id, status)| ahead(id, status).is_none())
            .copied()
            .collect();
        let mut late = if late.is_empty() {
            Vec::new()
        } else {
            let issuer = Arc::clone(&self.issuer);
            cpu(move || {
                par_map(&late, |(id, status)| {
                    SettlementReceipt::issue(&issuer, *id, *status, now)
                })
            })
            .await?
        }
        .into_iter();
        Ok(fresh
            .iter()
            .map(|(id, status)| match ahead(id, status) {
                Some(r) => r.clone(),
                None => late
                    .next()
                    .expect("one late signature per receipt not signed ahead"),
            })
            .collect())
    }

    /// Phase 5, writing: the ledger's changes, the credits, the repayments of double-spend
    /// victims (the loss rule), the fraud proofs with their revocations, and the decisions to
    /// keep. Every write that another server could race is conditional on the state read in
    /// phase 3: if it lost, the error is [`ServerError::Busy`] and the batch is judged again.
    /// Returns the allowances newly proven forked, with their holders.
    async fn write(
        &self,
        tx: &mut Tx,
        judged: &Judged,
        kept: &[SettlementReceipt],
        now: UnixTime,
    ) -> Result<Vec<(AllowanceId, DeviceKey)>, ServerError> {
        let changes = &judged.changes;
        for (allowance, counter, slot) in &changes.settled_slots {
            rows::settle_refused_slot(tx, allowance, *counter, slot)
                .await?
                .map_err(|_| ServerError::Busy)?;
        }
        rows::insert_slots(tx, &changes.new_slots)
            .await?
            .map_err(|_| ServerError::Busy)?;
        for (allowance, before, after) in &changes.totals {
            rows::move_settled_total(tx, allowance, *before, *after)
                .await?
                .map_err(|_| ServerError::Busy)?;
        }
        for ((allowance, payee), credit) in &judged.credits {
            let reference = format!("settle {} record(s)", credit.records);
            transfer(
                tx,
                &escrow(allowance),
                &user(payee),
                credit.amount,
                "settle",
                &reference,
                now,
            )
            .await?;
        }
        for c in &judged.conflicts {
            // The loss rule: the victim is repaid from the holder's account where funds allow.
            let holder = user(&c.holder);
            let available = u(balance(tx, &holder).await?.unwrap_or(0));
            let repay = c.amount.min(available);
            if repay > 0 {
                transfer(
                    tx,
                    &holder,
                    &user(&c.victim),
                    repay,
                    "fraud-recovery",
                    &c.record.to_hex(),
                    now,
                )
                .await?;
            }
        }
        if !kept.is_empty() || !judged.frauds.is_empty() {
            rows::lock_feeds(tx).await?;
        }
        let mut new_frauds = Vec::new();
        for proof in judged.frauds.values() {
            if rows::insert_fraud(tx, proof, now).await? {
                // A proven fork revokes the allowance: nodes that get the revocation refuse it.
                let rev = Revocation::issue(
                    &self.issuer,
                    proof.allowance(),
                    RevocationReason::Fraud,
                    now,
                );
                rows::insert_revocation(tx, &rev, now).await?;
                new_frauds.push((proof.allowance(), proof.cert.body().holder));
            }
        }
        let records: Vec<(Hash, u16, Vec<u8>)> = kept
            .iter()
            .map(|r| (r.body().record, r.status().code(), encode(r)))
            .collect();
        rows::insert_records(tx, &records, now)
            .await?
            .map_err(|_| ServerError::Busy)?;
        Ok(new_frauds)
    }
}
