//! Settling an upload: the protocol's settlement steps ([`meshpay_protocol::settlement`]),
//! with what a server adds around them: storage, the CPU pool and limits.
//!
//! ## A batch, phase by phase
//!
//! 1. **Open** ([`Server::settle`]): every input is opened ([`settlement::open`]) on the CPU
//!    pool, a chunk at a time. Bytes that are not a record of this issuer, or do not open,
//!    are charged to the uploading source's budget ([`crate::JunkBudget`]); once it is spent,
//!    the rest of the batch is left undecided. Nothing is signed for bytes that do not open:
//!    anyone can make them.
//! 2. **Prepare** ([`prepare`]): what does not change while the batch is judged is worked out
//!    once, outside any transaction: the certificates of the allowances named, the records
//!    whose signature does not verify ([`settlement::bad_signatures`], parts of the batch on
//!    every core), the stored decisions, and `settled` receipts signed ahead for the records
//!    not decided yet (nearly all settle), so the database waits on no CPU work.
//! 3. **Load** ([`once`]): one transaction reads the escrows, slots and payee accounts the
//!    batch needs into a [`meshpay_protocol::ledger::Ledger`].
//! 4. **Judge**: [`settlement::judge`], pure; the ledger reports its own changes.
//! 5. **Sign and write** ([`once`]): receipts whose status differs from the one signed ahead
//!    are signed on the CPU pool; the ledger's changes, the transfers, the fraud proofs and
//!    the kept decisions are written conditionally on the state read in phase 3, then
//!    committed.
//!
//! Phases 3 to 5 run again if another server raced this one (see the crate doc), and on a
//! half of the batch at a time if the database refuses the batch for one record.

mod once;
mod prepare;

use crate::cpu::{cpu, par_map};
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::server::Server;
use meshpay_protocol::settlement::{self, Input};
use meshpay_protocol::{Hash, Reason, ReceiptStatus, SettlementReceipt};
use prepare::Prepared;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Records opened per step of the open phase; the source's budget is checked between steps.
const OPEN_CHUNK: usize = 256;

/// Times a batch is judged again after losing a race before the upload is answered `busy`.
const RETRIES: usize = 8;

impl Server {
    /// Settles an upload from `source`: one answer per input, `None` where the issuer takes
    /// no decision (not a sealed record of this issuer, a record that does not open, one under
    /// an allowance not issued here or with a bad signature, or one left for later because the
    /// source's budget for such inputs is spent).
    pub async fn settle(
        self: &Arc<Self>,
        inputs: Vec<Vec<u8>>,
        source: Option<IpAddr>,
    ) -> Result<Vec<Option<SettlementReceipt>>, ServerError> {
        Metrics::add(&self.metrics.batches, 1);
        let (inputs, deferred) = self.open_all(inputs, source).await?;
        let answers = self.decide(&inputs).await?;
        // Records that open but name no allowance here, or carry a bad signature, are junk
        // anyone can seal to the public seal key: no decision, no signature, and their source
        // pays for them like for bytes that do not open.
        let junk = inputs
            .iter()
            .zip(&answers)
            .filter(|(i, a)| matches!(i, Input::Record(..)) && a.is_none())
            .count() as u64;
        if junk > 0 {
            self.junk.charge(source, junk);
            Metrics::add(&self.metrics.unopened, junk);
        }
        let unanswered = answers.iter().filter(|a| a.is_none()).count() as u64;
        self.observe_upload(
            source,
            &answers,
            unanswered.saturating_sub(deferred),
            self.clock.now(),
        );
        Ok(answers)
    }

    /// Phase 1: opens every input on the CPU pool, a chunk at a time, charging `source` for
    /// what does not open and stopping when its budget is spent. Returns the inputs and how
    /// many were left undecided.
    async fn open_all(
        self: &Arc<Self>,
        inputs: Vec<Vec<u8>>,
        source: Option<IpAddr>,
    ) -> Result<(Vec<Input>, u64), ServerError> {
        let total = inputs.len();
        let inputs = Arc::new(inputs);
        let mut out = Vec::with_capacity(total);
        let mut start = 0;
        let mut deferred = 0;
        while start < total {
            if !self.junk.allows(source) {
                deferred = (total - start) as u64;
                Metrics::add(&self.metrics.deferred, deferred);
                out.resize(total, Input::Nothing);
                break;
            }
            let end = (start + OPEN_CHUNK).min(total);
            let (issuer, all) = (Arc::clone(&self.issuer), Arc::clone(&inputs));
            let part =
                cpu(move || par_map(&all[start..end], |b| settlement::open(b, &issuer))).await?;
            let junk = part
                .iter()
                .filter(|p| !matches!(p, Input::Record(..)))
                .count() as u64;
            self.junk.charge(source, junk);
            Metrics::add(&self.metrics.unopened, junk);
            out.extend(part);
            start = end;
        }
        Ok((out, deferred))
    }

    /// Phases 2 to 5.
    async fn decide(
        &self,
        inputs: &[Input],
    ) -> Result<Vec<Option<SettlementReceipt>>, ServerError> {
        let decided = self.stored_receipts(inputs).await?;
        let prepared = self.prepare(inputs, &decided, self.clock.now()).await?;
        self.decide_parts(inputs, &prepared, decided).await
    }

    /// Decides `inputs` with retries, splitting them to isolate a record the database
    /// refuses, which is answered `retry_later` while the rest settle.
    async fn decide_parts(
        &self,
        inputs: &[Input],
        prepared: &Prepared,
        decided: BTreeMap<Hash, SettlementReceipt>,
    ) -> Result<Vec<Option<SettlementReceipt>>, ServerError> {
        match self.decide_with_retries(inputs, prepared, decided).await {
            Err(e) if e.is_record_failure() => {
                let records = inputs
                    .iter()
                    .filter(|i| matches!(i, Input::Record(..)))
                    .count();
                if records > 1 {
                    tracing::warn!(error = %e, records, "the database refused a batch; judging its halves apart");
                    let (a, b) = inputs.split_at(inputs.len() / 2);
                    let first_decided = self.stored_receipts(a).await?;
                    let mut first = Box::pin(self.decide_parts(a, prepared, first_decided)).await?;
                    let second_decided = self.stored_receipts(b).await?;
                    first.extend(Box::pin(self.decide_parts(b, prepared, second_decided)).await?);
                    return Ok(first);
                }
                tracing::error!(error = %e, "the database refused a record; answered retry_later");
                Metrics::add(&self.metrics.retry_later, 1);
                // A record decided before keeps its stored receipt: never a contradicting one.
                let decided = self.stored_receipts(inputs).await?;
                Ok(inputs
                    .iter()
                    .map(|i| match i {
                        Input::Record(id, _) | Input::Unopened(id) if decided.contains_key(id) => {
                            decided.get(id).cloned()
                        }
                        Input::Record(id, _) => Some(SettlementReceipt::issue(
                            &self.issuer,
                            *id,
                            ReceiptStatus::Rejected(Reason::RetryLater),
                            prepared.now,
                        )),
                        _ => None,
                    })
                    .collect())
            }
            other => other,
        }
    }

    /// Decides `inputs`, judging them again (with the decisions stored meanwhile) whenever
    /// another transaction won a race for the same rows.
    async fn decide_with_retries(
        &self,
        inputs: &[Input],
        prepared: &Prepared,
        mut decided: BTreeMap<Hash, SettlementReceipt>,
    ) -> Result<Vec<Option<SettlementReceipt>>, ServerError> {
        for _ in 0..RETRIES {
            match self.decide_once(inputs, prepared, decided).await {
                Err(e) if e.is_transient() => {
                    tracing::debug!(error = %e, "settlement raced another; judging again");
                    // Another server may have decided some of these records meanwhile.
                    decided = self.stored_receipts(inputs).await?;
                }
                other => return other,
            }
        }
        Err(ServerError::Busy)
    }
}
