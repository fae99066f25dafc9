//! Phase 2: what does not change while a batch is judged, worked out once for the whole batch
//! and outside any transaction.

use crate::cpu::{cpu, par_map, par_parts};
use crate::db::settlement as rows;
use crate::error::ServerError;
use crate::server::Server;
use meshpay_protocol::settlement::{self, Input, SignedIou};
use meshpay_protocol::{
    AllowanceCert, AllowanceId, Hash, ReceiptStatus, SettlementReceipt, UnixTime, decode,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Certificates cached at most; past it the cache starts again empty.
const CACHED_CERTS: usize = 100_000;

/// What is worked out once for a whole batch before it is judged.
pub(super) struct Prepared {
    /// The time the batch is judged at (its receipts' time).
    pub now: UnixTime,
    /// The certificates of the allowances the batch names that exist.
    pub certs: BTreeMap<AllowanceId, AllowanceCert>,
    /// Records whose signature does not verify.
    pub bad: BTreeSet<Hash>,
    /// `settled` receipts signed ahead, by record id.
    pub hoped: BTreeMap<Hash, SettlementReceipt>,
}

impl Server {
    /// Reads the certificates the batch names and checks the signatures under them, then signs
    /// ahead, as if they settle, the records not `decided` yet. A record that turns out
    /// otherwise is signed again with its status (phase 5).
    pub(super) async fn prepare(
        &self,
        inputs: &[Input],
        decided: &BTreeMap<Hash, SettlementReceipt>,
        now: UnixTime,
    ) -> Result<Prepared, ServerError> {
        let certs = self.certificates(inputs).await?;
        let bad = self.bad_signatures(inputs, &certs).await?;
        let hoped = self
            .sign_hopefully(inputs, &certs, &bad, decided, now)
            .await?;
        Ok(Prepared {
            now,
            certs,
            bad,
            hoped,
        })
    }

    /// The stored receipts of the records among `inputs` (read outside any transaction: a
    /// stored decision never changes; one made by another server after this read makes the
    /// batch's conditional insert fail, and the batch is judged again). A stored receipt that
    /// does not decode is signed again from its stored status and time: signatures are
    /// deterministic, so it is the same receipt.
    pub(super) async fn stored_receipts(
        &self,
        inputs: &[Input],
    ) -> Result<BTreeMap<Hash, SettlementReceipt>, ServerError> {
        let ids: Vec<Hash> = inputs.iter().filter_map(Input::id).collect();
        let rows = rows::load_receipts(&self.db, &ids).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, (status, decided_at, bytes))| {
                let receipt = decode::<SettlementReceipt>(&bytes).ok().or_else(|| {
                    tracing::warn!(record = %id, "a stored receipt does not decode; signed again");
                    let status = ReceiptStatus::from_code(status)?;
                    Some(SettlementReceipt::issue(
                        &self.issuer,
                        id,
                        status,
                        decided_at,
                    ))
                })?;
                Some((id, receipt))
            })
            .collect())
    }

    /// `settled` receipts, signed on the CPU pool, for the batch's records that are not decided
    /// yet, have a known allowance and a good signature.
    async fn sign_hopefully(
        &self,
        inputs: &[Input],
        certs: &BTreeMap<AllowanceId, AllowanceCert>,
        bad: &BTreeSet<Hash>,
        decided: &BTreeMap<Hash, SettlementReceipt>,
        now: UnixTime,
    ) -> Result<BTreeMap<Hash, SettlementReceipt>, ServerError> {
        let candidates: BTreeSet<Hash> = inputs
            .iter()
            .filter_map(|i| match i {
                Input::Record(id, iou)
                    if certs.contains_key(&iou.allowance)
                        && !bad.contains(id)
                        && !decided.contains_key(id) =>
                {
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        if candidates.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids: Vec<Hash> = candidates.into_iter().collect();
        let issuer = Arc::clone(&self.issuer);
        cpu(move || {
            par_map(&ids, |id| {
                (
                    *id,
                    SettlementReceipt::issue(&issuer, *id, ReceiptStatus::Settled, now),
                )
            })
            .into_iter()
            .collect()
        })
        .await
    }

    /// The certificates of the allowances the batch's records name, from the cache or the
    /// database (a record's allowance was committed before its certificate left the server).
    async fn certificates(
        &self,
        inputs: &[Input],
    ) -> Result<BTreeMap<AllowanceId, AllowanceCert>, ServerError> {
        let wanted: BTreeSet<AllowanceId> = inputs
            .iter()
            .filter_map(|i| i.iou().map(|iou| iou.allowance))
            .collect();
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.lock_certs();
            for id in wanted {
                match cache.get(&id) {
                    Some(c) => {
                        found.insert(id, c.clone());
                    }
                    None => missing.push(id),
                }
            }
        }
        if !missing.is_empty() {
            let read = rows::certificates(&self.db, &missing).await?;
            let mut cache = self.lock_certs();
            if cache.len() + read.len() > CACHED_CERTS {
                cache.clear();
            }
            for (id, c) in read {
                cache.insert(id, c.clone());
                found.insert(id, c);
            }
        }
        Ok(found)
    }

    /// The records whose signature does not verify under their allowance's holder key
    /// ([`settlement::bad_signatures`] on one part of the batch per core).
    async fn bad_signatures(
        &self,
        inputs: &[Input],
        certs: &BTreeMap<AllowanceId, AllowanceCert>,
    ) -> Result<BTreeSet<Hash>, ServerError> {
        let items: Vec<SignedIou> = inputs
            .iter()
            .filter_map(|i| match i {
                Input::Record(id, iou) => certs.get(&iou.allowance).map(|c| SignedIou {
                    record: *id,
                    iou: iou.clone(),
                    holder: c.body().holder,
                }),
                _ => None,
            })
            .collect();
        cpu(move || {
            par_parts(&items, settlement::bad_signatures)
                .into_iter()
                .flatten()
                .collect()
        })
        .await
    }
}
