//! The settlement server: the issuer's side of meshpay.
//!
//! It holds the issuer's keys, keeps accounts (double-entry, see [`db`]), locks escrow for
//! allowances that wallets ask for online, and settles the sealed records gateways upload:
//! open (HPKE), verify (Ed25519 batch verification as a pre-filter, strict verification for
//! any batch that fails), judge with the protocol crate's [`Ledger`] rules, commit, and answer
//! with signed receipts.
//!
//! Several servers may share one PostgreSQL database. Each record is judged against the
//! escrow state read inside the transaction, and every write that settles or claims a slot
//! is conditional (`INSERT … ON CONFLICT DO NOTHING`, `UPDATE … WHERE settled + amount <=
//! limit`); if another server got there first, the transaction rolls back and the batch is
//! judged again, so a record settles once whatever the number of servers and uploads.

pub mod cli;
pub mod db;
pub mod http;

use crate::keystore;
use db::{Db, DbError, i, transfer, u};
use meshpay_protocol::codec::VERSION;
use meshpay_protocol::ledger::{Escrow, Ledger, Outcome, Slot, SlotVerdict};
use meshpay_protocol::{
    AllowanceBody, AllowanceCert, AllowanceId, DeviceKey, FraudProof, Hash, Iou, IssuerDescriptor,
    IssuerSecret, Reason, ReceiptStatus, Revocation, RevocationReason, SealedRecord,
    SettlementReceipt, WalletAction, WalletRequest, decode, encode,
};
use rand_core::{OsRng, RngCore};
use sqlx::Row;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a server call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Storage failed; nothing was changed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The request is invalid.
    #[error("{0}")]
    Bad(String),
    /// The request was already used (replay).
    #[error("{0}")]
    Replay(String),
    /// The account lacks the money.
    #[error("{0}")]
    Funds(String),
    /// Not found.
    #[error("{0}")]
    NotFound(String),
    /// Other servers kept winning the race for the same records; try again.
    #[error("too much contention on these records; try again")]
    Busy,
}

impl ServerError {
    /// Whether judging the batch again may succeed: another transaction won a race
    /// (a deadlock, a serialization failure or a unique key taken meanwhile).
    fn is_transient(&self) -> bool {
        match self {
            // A balance read in this batch was changed by a concurrent transaction.
            ServerError::Busy | ServerError::Db(DbError::Insufficient(_)) => true,
            ServerError::Db(DbError::Sql(sqlx::Error::Database(e))) => {
                matches!(e.code().as_deref(), Some("40P01" | "40001" | "23505"))
            }
            _ => false,
        }
    }
}

impl From<sqlx::Error> for ServerError {
    fn from(e: sqlx::Error) -> Self {
        ServerError::Db(DbError::Sql(e))
    }
}

/// The server's notion of now: the wall clock, or a clock set by tests (`--test-clock`).
#[derive(Debug)]
pub struct Clock {
    fixed: AtomicU64,
    settable: bool,
}

impl Clock {
    /// The wall clock; `settable` lets the admin API fix it (tests only).
    pub fn new(settable: bool) -> Self {
        Self {
            fixed: AtomicU64::new(0),
            settable,
        }
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> u64 {
        match self.fixed.load(Ordering::Relaxed) {
            0 => crate::daemon::now(),
            t => t,
        }
    }

    /// Fixes the clock (if settable).
    pub fn set(&self, t: u64) -> bool {
        if self.settable {
            self.fixed.store(t, Ordering::Relaxed);
        }
        self.settable
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records settled.
    pub settled: AtomicU64,
    /// Records rejected (with a receipt).
    pub rejected: AtomicU64,
    /// Records that were decided before (idempotent re-uploads).
    pub repeated: AtomicU64,
    /// Upload batches.
    pub batches: AtomicU64,
    /// Allowances issued.
    pub allowances: AtomicU64,
    /// Fraud proofs found.
    pub frauds: AtomicU64,
}

/// Policy of the server.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Seconds between an allowance's end of validity and its settle-by time.
    pub settle_grace_secs: u64,
    /// Longest allowance validity granted.
    pub max_valid_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            settle_grace_secs: 7 * 86_400,
            max_valid_secs: 30 * 86_400,
        }
    }
}

/// The settlement server's state.
pub struct Server {
    /// Storage.
    pub db: Db,
    issuer: IssuerSecret,
    /// The signed descriptor.
    pub descriptor: IssuerDescriptor,
    /// The clock.
    pub clock: Clock,
    /// Counters.
    pub metrics: Metrics,
    /// Policy.
    pub policy: Policy,
}

/// Account name of a device.
pub fn user(d: &DeviceKey) -> String {
    format!("user:{}", d.to_hex())
}

fn escrow_account(id: &AllowanceId) -> String {
    format!("escrow:{}", id.to_hex())
}

/// Reads the issuer's files in `dir`: `issuer.key` (sealed) and `descriptor.cbor`.
pub fn load_issuer(
    dir: &Path,
    passphrase: &str,
) -> anyhow::Result<(IssuerSecret, IssuerDescriptor)> {
    let blob = std::fs::read(dir.join("issuer.key")).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (create it with `meshpay issuer init`)",
            dir.join("issuer.key").display()
        )
    })?;
    let secret = IssuerSecret::from_bytes(&*keystore::open::<64>(&blob, passphrase)?);
    let descriptor: IssuerDescriptor = decode(&std::fs::read(dir.join("descriptor.cbor"))?)
        .map_err(|e| anyhow::anyhow!("descriptor.cbor: {e}"))?;
    if descriptor.body().issuer != secret.id() {
        anyhow::bail!("descriptor.cbor belongs to another issuer than issuer.key");
    }
    Ok((secret, descriptor))
}

/// What an upload's record is answered with, before new receipts are signed.
enum Answer {
    /// A receipt already made (stored, or for bytes that did not open), or none.
    Ready(Option<SettlementReceipt>),
    /// A new decision, to sign.
    Fresh(Hash, ReceiptStatus),
    /// The same record earlier in the batch.
    SameAs(usize),
}

/// One record of an upload, after opening.
enum Opened {
    Decided(SettlementReceipt),
    Iou(Hash, Iou),
}

impl Server {
    /// A server for `issuer` over `db`.
    pub fn new(
        db: Db,
        issuer: IssuerSecret,
        descriptor: IssuerDescriptor,
        clock: Clock,
        policy: Policy,
    ) -> Self {
        Self {
            db,
            issuer,
            descriptor,
            clock,
            metrics: Metrics::default(),
            policy,
        }
    }

    fn receipt(&self, id: Hash, status: ReceiptStatus) -> SettlementReceipt {
        SettlementReceipt::issue(&self.issuer, id, status, self.clock.now())
    }

    /// Opens an account for a device (admin). Returns whether it was new.
    pub async fn open_account(&self, device: &DeviceKey) -> Result<bool, ServerError> {
        let mut tx = self.db.begin().await?;
        let new = db::open_account(&mut tx, &user(device), self.clock.now()).await?;
        tx.commit().await?;
        Ok(new)
    }

    /// Credits (top-up from outside) or debits (withdrawal) an account (admin).
    pub async fn adjust(
        &self,
        device: &DeviceKey,
        amount: u64,
        credit: bool,
        reference: &str,
    ) -> Result<u64, ServerError> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let name = user(device);
        let r = if credit {
            transfer(&mut tx, "external", &name, amount, "credit", reference, now).await
        } else {
            transfer(&mut tx, &name, "external", amount, "debit", reference, now).await
        };
        match r {
            Ok(()) => {}
            Err(DbError::NoAccount(a)) => {
                return Err(ServerError::NotFound(format!("no account {a}")));
            }
            Err(DbError::Insufficient(a)) => {
                return Err(ServerError::Funds(format!("{a} has too little money")));
            }
            Err(e) => return Err(e.into()),
        }
        let balance = db::balance(&mut tx, &name).await?.unwrap_or(0);
        tx.commit().await?;
        Ok(u(balance))
    }

    /// Checks a wallet request's signature, issuer, clock and nonce, recording the nonce in
    /// `tx` so the request cannot be used again.
    async fn check_wallet_request(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        req: &WalletRequest,
    ) -> Result<(), ServerError> {
        req.verify()
            .map_err(|_| ServerError::Bad("the request's signature does not verify".into()))?;
        let b = req.body();
        if b.issuer != self.issuer.id() {
            return Err(ServerError::Bad("the request is for another issuer".into()));
        }
        let now = self.clock.now();
        if b.time.abs_diff(now) > 300 {
            return Err(ServerError::Bad(format!(
                "the request's time is {}s off the server's clock",
                b.time.abs_diff(now)
            )));
        }
        let r = sqlx::query(
            "INSERT INTO nonces (device, nonce, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(b.device.0.to_vec())
        .bind(b.nonce.0.to_vec())
        .bind(i(now)?)
        .execute(&mut **tx)
        .await?;
        if r.rows_affected() != 1 {
            return Err(ServerError::Replay("this request was already used".into()));
        }
        Ok(())
    }

    /// Issues an allowance: locks the amount in escrow and signs the certificate.
    pub async fn issue_allowance(&self, req: &WalletRequest) -> Result<AllowanceCert, ServerError> {
        let WalletAction::Allowance { amount, valid_secs } = req.action() else {
            return Err(ServerError::Bad("not an allowance request".into()));
        };
        let d = self.descriptor.body();
        let b = req.body();
        if !d.currencies.contains(&b.currency) {
            return Err(ServerError::Bad(format!(
                "this issuer does not issue {}",
                b.currency
            )));
        }
        if amount > d.max_allowance {
            return Err(ServerError::Bad(format!(
                "at most {} per allowance",
                d.max_allowance
            )));
        }
        if valid_secs > self.policy.max_valid_secs {
            return Err(ServerError::Bad(format!(
                "at most {} seconds of validity",
                self.policy.max_valid_secs
            )));
        }
        let now = self.clock.now();
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let cert = AllowanceCert::issue(
            &self.issuer,
            AllowanceBody {
                version: VERSION,
                id: AllowanceId(id),
                issuer: self.issuer.id(),
                holder: b.device,
                currency: b.currency.clone(),
                limit: amount,
                max_payment: amount.min(d.max_payment),
                valid_from: now.saturating_sub(60),
                valid_until: now + valid_secs,
                settle_by: now + valid_secs + self.policy.settle_grace_secs,
            },
        );
        let mut tx = self.db.begin().await?;
        self.check_wallet_request(&mut tx, req).await?;
        let escrow = escrow_account(&cert.id());
        db::open_account(&mut tx, &escrow, now).await?;
        match transfer(
            &mut tx,
            &user(&b.device),
            &escrow,
            amount,
            "escrow",
            &cert.id().to_hex(),
            now,
        )
        .await
        {
            Ok(()) => {}
            Err(DbError::NoAccount(_)) => {
                return Err(ServerError::NotFound(
                    "this device has no account here".into(),
                ));
            }
            Err(DbError::Insufficient(_)) => {
                return Err(ServerError::Funds(format!(
                    "the account holds less than {amount}"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let c = cert.body();
        sqlx::query("INSERT INTO escrows (id, holder, cert, limit_amount, settled, released, settle_by, created_at) VALUES ($1, $2, $3, $4, 0, 0, $5, $6)")
            .bind(c.id.0.to_vec())
            .bind(c.holder.0.to_vec())
            .bind(encode(&cert))
            .bind(i(c.limit)?)
            .bind(i(c.settle_by)?)
            .bind(i(now)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.metrics.allowances.fetch_add(1, Ordering::Relaxed);
        Ok(cert)
    }

    /// Settles an upload: one receipt per input, `None` where the input is not a sealed
    /// record at all (there is no record id to sign for).
    pub async fn settle(
        &self,
        inputs: &[Vec<u8>],
    ) -> Result<Vec<Option<SettlementReceipt>>, ServerError> {
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        for _ in 0..8 {
            match self.settle_once(inputs).await {
                Err(e) if e.is_transient() => {
                    tracing::debug!(error = %e, "settlement raced another; judging again");
                }
                other => return other,
            }
        }
        Err(ServerError::Busy)
    }

    async fn settle_once(
        &self,
        inputs: &[Vec<u8>],
    ) -> Result<Vec<Option<SettlementReceipt>>, ServerError> {
        let now = self.clock.now();
        // 1. Open every record (no database work yet).
        let opened: Vec<Option<Opened>> = par_map(inputs, |bytes| {
            let record = decode::<SealedRecord>(bytes).ok()?;
            Some(match record.open(&self.issuer) {
                Ok(iou) => Opened::Iou(record.id, iou),
                Err(meshpay_protocol::record::OpenError::ForeignIssuer) => Opened::Decided(
                    self.receipt(record.id, ReceiptStatus::Rejected(Reason::ForeignIssuer)),
                ),
                Err(_) => Opened::Decided(
                    self.receipt(record.id, ReceiptStatus::Rejected(Reason::Malformed)),
                ),
            })
        });
        let ious: Vec<(Hash, &Iou)> = opened
            .iter()
            .flatten()
            .filter_map(|o| match o {
                Opened::Iou(id, iou) => Some((*id, iou)),
                Opened::Decided(_) => None,
            })
            .collect();

        // 2. Read, once, the state the batch needs.
        let mut tx = self.db.begin().await?;
        let wanted: std::collections::BTreeSet<AllowanceId> =
            ious.iter().map(|(_, iou)| iou.allowance).collect();
        let mut ledger = Ledger::new(self.issuer.id());
        let mut loaded: BTreeMap<AllowanceId, Escrow> = BTreeMap::new();
        // On PostgreSQL, lock the escrows of this batch in id order first: concurrent batches
        // over the same allowances then queue instead of deadlocking. (SQLite has one writer.)
        let select = match self.db.engine {
            db::Engine::Postgres => {
                "SELECT cert, settled, released FROM escrows WHERE id = $1 FOR UPDATE"
            }
            db::Engine::Sqlite => "SELECT cert, settled, released FROM escrows WHERE id = $1",
        };
        for allowance in &wanted {
            let Some(row) = sqlx::query(select)
                .bind(allowance.0.to_vec())
                .fetch_optional(&mut *tx)
                .await?
            else {
                continue;
            };
            let bytes: Vec<u8> = row.try_get(0)?;
            let Ok(cert) = decode::<AllowanceCert>(&bytes) else {
                continue;
            };
            let counters: Vec<u32> = ious
                .iter()
                .filter(|(_, i)| i.allowance == *allowance)
                .map(|(_, i)| i.counter)
                .collect();
            let escrow = Escrow {
                cert,
                slots: load_slots(&mut tx, allowance, &counters).await?,
                settled_total: u(row.try_get(1)?),
                released: row.try_get::<i64, _>(2)? != 0,
                fraud: None,
            };
            ledger.restore(escrow.clone());
            loaded.insert(*allowance, escrow);
        }
        // Receipts already given, for every record id uploaded (opened or not): a record that
        // was decided is always answered with its stored receipt.
        let all_ids: Vec<Hash> = opened
            .iter()
            .flatten()
            .map(|o| match o {
                Opened::Iou(id, _) => *id,
                Opened::Decided(r) => r.body().record,
            })
            .collect();
        let decided = load_receipts(&mut tx, &all_ids).await?;
        let payees = existing_accounts(
            &mut tx,
            &ious.iter().map(|(_, i)| user(&i.payee)).collect::<Vec<_>>(),
        )
        .await?;
        let signed: Vec<(&Iou, DeviceKey)> = ious
            .iter()
            .filter_map(|(_, iou)| {
                loaded
                    .get(&iou.allowance)
                    .map(|e| (*iou, e.cert.body().holder))
            })
            .collect();
        let batch_ok = meshpay_protocol::iou::verify_batch(&signed).is_ok();

        // 3. Judge every record in memory, in upload order; sign the new receipts afterwards,
        //    on every core.
        let mut answers: Vec<Answer> = Vec::with_capacity(opened.len());
        let mut this_batch: BTreeMap<Hash, usize> = BTreeMap::new();
        let mut credits: BTreeMap<(AllowanceId, DeviceKey), (u64, usize)> = BTreeMap::new();
        let mut conflicts: Vec<(DeviceKey, DeviceKey, u64, Hash)> = Vec::new();
        let mut frauds: BTreeMap<AllowanceId, FraudProof> = BTreeMap::new();
        for o in &opened {
            let answer = match o {
                None => Answer::Ready(None),
                // Not final (SPEC.md §4.10): never stored, and a stored receipt wins.
                Some(Opened::Decided(r)) => {
                    Answer::Ready(Some(decided.get(&r.body().record).unwrap_or(r).clone()))
                }
                Some(Opened::Iou(id, iou)) => {
                    if let Some(r) = decided.get(id) {
                        answers.push(Answer::Ready(Some(r.clone())));
                        continue;
                    }
                    if let Some(k) = this_batch.get(id) {
                        answers.push(Answer::SameAs(*k));
                        continue;
                    }
                    let status = match loaded.get(&iou.allowance) {
                        None => ReceiptStatus::Rejected(Reason::UnknownAllowance),
                        // No account to credit: nothing is claimed or stored, so the record
                        // settles when uploaded again once the payee has an account.
                        Some(_) if !payees.contains(&user(&iou.payee)) => {
                            ReceiptStatus::Rejected(Reason::UnknownPayee)
                        }
                        Some(e) if !batch_ok && iou.verify(&e.cert.body().holder).is_err() => {
                            ReceiptStatus::Rejected(Reason::BadSignature)
                        }
                        Some(e) => {
                            let holder = e.cert.body().holder;
                            let outcome = ledger.apply(iou, now, true);
                            if let Some(proof) = outcome.fork() {
                                frauds
                                    .entry(proof.allowance())
                                    .or_insert_with(|| proof.clone());
                            }
                            match &outcome {
                                Outcome::Settled { amount, payee, .. } => {
                                    let c = credits.entry((iou.allowance, *payee)).or_default();
                                    c.0 += amount;
                                    c.1 += 1;
                                }
                                Outcome::Conflict { amount, payee, .. } => {
                                    conflicts.push((holder, *payee, *amount, *id));
                                }
                                _ => {}
                            }
                            outcome.receipt_status()
                        }
                    };
                    this_batch.insert(*id, answers.len());
                    Answer::Fresh(*id, status)
                }
            };
            answers.push(answer);
        }
        let to_sign: Vec<(Hash, ReceiptStatus)> = answers
            .iter()
            .filter_map(|a| match a {
                Answer::Fresh(id, status) => Some((*id, *status)),
                _ => None,
            })
            .collect();
        let signed = par_map(&to_sign, |(id, status)| self.receipt(*id, *status));
        let mut signed = signed.into_iter();
        let mut out: Vec<Option<SettlementReceipt>> = Vec::with_capacity(answers.len());
        let mut new_records: Vec<(Hash, u16, Vec<u8>)> = Vec::new();
        let mut fresh_count = (0u64, 0u64);
        for a in &answers {
            let r = match a {
                Answer::Ready(r) => r.clone(),
                Answer::SameAs(k) => out[*k].clone(),
                Answer::Fresh(id, status) => {
                    let r = signed.next().expect("one signature per fresh receipt");
                    // Refusals that claim no slot (unknown allowance, bad signature) and the
                    // provisional unknown_payee are not stored: anyone can make the first two,
                    // and the same bytes always get the same answer.
                    if !matches!(
                        status,
                        ReceiptStatus::Rejected(
                            Reason::UnknownAllowance | Reason::BadSignature | Reason::UnknownPayee
                        )
                    ) {
                        new_records.push((*id, status.code(), encode(&r)));
                    }
                    if *status == ReceiptStatus::Settled {
                        fresh_count.0 += 1;
                    } else {
                        fresh_count.1 += 1;
                    }
                    Some(r)
                }
            };
            out.push(r);
        }

        // 4. Write the difference. Every write is conditional on the state read in step 2; if
        //    another server changed it meanwhile, the batch is judged again.
        for (id, before) in &loaded {
            let after = ledger.escrow(id).expect("restored above");
            let mut fresh = Vec::new();
            for (counter, slot) in &after.slots {
                match before.slots.get(counter) {
                    None => fresh.push((*counter, slot.clone())),
                    Some(old) if old.verdict != slot.verdict || old.digest != slot.digest => {
                        let r = sqlx::query("UPDATE slots SET iou = $3, digest = $4, sig = $5, amount = $6, verdict = 0 WHERE allowance = $1 AND counter = $2 AND verdict <> 0")
                            .bind(id.0.to_vec())
                            .bind(i64::from(*counter))
                            .bind(slot.iou.0.to_vec())
                            .bind(slot.digest.0.to_vec())
                            .bind(slot.sig.0.to_vec())
                            .bind(i(slot.amount)?)
                            .execute(&mut *tx)
                            .await?;
                        if r.rows_affected() != 1 {
                            return Err(ServerError::Busy);
                        }
                    }
                    Some(_) => {}
                }
            }
            insert_slots(&mut tx, id, &fresh).await?;
            if after.settled_total != before.settled_total {
                let r = sqlx::query("UPDATE escrows SET settled = $3 WHERE id = $1 AND settled = $2 AND released = 0")
                    .bind(id.0.to_vec())
                    .bind(i(before.settled_total)?)
                    .bind(i(after.settled_total)?)
                    .execute(&mut *tx)
                    .await?;
                if r.rows_affected() != 1 {
                    return Err(ServerError::Busy);
                }
            }
        }
        for ((allowance, payee), (amount, n)) in &credits {
            let reference = format!("settle {n} record(s)");
            transfer(
                &mut tx,
                &escrow_account(allowance),
                &user(payee),
                *amount,
                "settle",
                &reference,
                now,
            )
            .await?;
        }
        for (holder, victim, amount, id) in &conflicts {
            // The loss rule: the victim is repaid from the holder's account where funds allow.
            let holder = user(holder);
            let available = u(db::balance(&mut tx, &holder).await?.unwrap_or(0));
            let repay = (*amount).min(available);
            if repay > 0 {
                transfer(
                    &mut tx,
                    &holder,
                    &user(victim),
                    repay,
                    "fraud-recovery",
                    &id.to_hex(),
                    now,
                )
                .await?;
            }
        }
        if self.db.engine == db::Engine::Postgres && (!new_records.is_empty() || !frauds.is_empty())
        {
            // Feeds page by sequence number: make rows become visible in sequence order by
            // letting one batch at a time add to them.
            sqlx::query("SELECT pg_advisory_xact_lock(7434)")
                .execute(&mut *tx)
                .await?;
        }
        for proof in frauds.values() {
            self.store_fraud(&mut tx, proof, now).await?;
        }
        insert_records(&mut tx, &new_records, now).await?;
        tx.commit().await?;
        self.metrics
            .settled
            .fetch_add(fresh_count.0, Ordering::Relaxed);
        self.metrics
            .rejected
            .fetch_add(fresh_count.1, Ordering::Relaxed);
        let repeated = answers.len() - to_sign.len();
        self.metrics
            .repeated
            .fetch_add(repeated as u64, Ordering::Relaxed);
        Ok(out)
    }

    async fn store_fraud(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        proof: &FraudProof,
        now: u64,
    ) -> Result<(), ServerError> {
        let r = sqlx::query("INSERT INTO frauds (allowance, proof, found_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(proof.allowance().0.to_vec())
            .bind(encode(proof))
            .bind(i(now)?)
            .execute(&mut **tx)
            .await?;
        if r.rows_affected() == 1 {
            self.metrics.frauds.fetch_add(1, Ordering::Relaxed);
            // A proven fork revokes the allowance: nodes that get the revocation refuse it.
            self.store_revocation(tx, &proof.allowance(), RevocationReason::Fraud, now)
                .await?;
        }
        Ok(())
    }

    async fn store_revocation(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        allowance: &AllowanceId,
        reason: RevocationReason,
        now: u64,
    ) -> Result<Revocation, ServerError> {
        let rev = Revocation::issue(&self.issuer, *allowance, reason, now);
        sqlx::query("INSERT INTO revocations (allowance, revocation, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(allowance.0.to_vec())
            .bind(encode(&rev))
            .bind(i(now)?)
            .execute(&mut **tx)
            .await?;
        Ok(rev)
    }

    /// Revokes an allowance this issuer granted (admin: a device reported lost, …).
    pub async fn revoke(
        &self,
        allowance: &AllowanceId,
        reason: RevocationReason,
    ) -> Result<Revocation, ServerError> {
        let mut tx = self.db.begin().await?;
        let exists = sqlx::query("SELECT id FROM escrows WHERE id = $1")
            .bind(allowance.0.to_vec())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Err(ServerError::NotFound(format!("no allowance {allowance}")));
        }
        let rev = self
            .store_revocation(&mut tx, allowance, reason, self.clock.now())
            .await?;
        tx.commit().await?;
        Ok(rev)
    }

    /// A wallet's own account statement, asked with a signed wallet request.
    pub async fn wallet_statement(
        &self,
        req: &WalletRequest,
    ) -> Result<(u64, Vec<(String, i64, String, String, u64)>), ServerError> {
        if req.action() != WalletAction::Statement {
            return Err(ServerError::Bad("not a statement request".into()));
        }
        let mut tx = self.db.begin().await?;
        self.check_wallet_request(&mut tx, req).await?;
        let name = user(&req.body().device);
        let Some(balance) = db::balance(&mut tx, &name).await? else {
            return Err(ServerError::NotFound(
                "this device has no account here".into(),
            ));
        };
        let rows = sqlx::query("SELECT kind, src, dst, amount, reference, at FROM transfers WHERE src = $1 OR dst = $1 ORDER BY seq")
            .bind(&name)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in rows {
            let src: String = r.try_get(1)?;
            let dst: String = r.try_get(2)?;
            let amount: i64 = r.try_get(3)?;
            let (signed, other) = if src == name {
                (-amount, dst)
            } else {
                (amount, src)
            };
            entries.push((
                r.try_get(0)?,
                signed,
                other,
                r.try_get(4)?,
                u(r.try_get(5)?),
            ));
        }
        Ok((u(balance), entries))
    }

    /// Returns the unspent escrow of every allowance past its settle-by time to its holder.
    pub async fn release_expired(&self) -> Result<Vec<(AllowanceId, u64)>, ServerError> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let rows = sqlx::query("SELECT id, holder FROM escrows WHERE released = 0 AND settle_by < $1 ORDER BY id LIMIT 1000")
            .bind(i(now)?)
            .fetch_all(&mut *tx)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let id: Vec<u8> = r.try_get(0)?;
            let holder: Vec<u8> = r.try_get(1)?;
            // Close the escrow and read what is left in one statement: a settlement that
            // commits first is counted, one that commits later finds the escrow released.
            let Some(left) = sqlx::query("UPDATE escrows SET released = 1 WHERE id = $1 AND released = 0 RETURNING limit_amount - settled")
                .bind(id.clone())
                .fetch_optional(&mut *tx)
                .await?
            else {
                continue;
            };
            let unspent = u(left.try_get::<i64, _>(0)?);
            let id = AllowanceId(
                id.try_into()
                    .map_err(|_| ServerError::Bad("corrupt escrow id".into()))?,
            );
            let holder = DeviceKey(
                holder
                    .try_into()
                    .map_err(|_| ServerError::Bad("corrupt holder".into()))?,
            );
            if unspent > 0 {
                transfer(
                    &mut tx,
                    &escrow_account(&id),
                    &user(&holder),
                    unspent,
                    "release",
                    &id.to_hex(),
                    now,
                )
                .await?;
            }
            out.push((id, unspent));
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// Rows per multi-row statement (well under both engines' bind-parameter limits).
const ROWS_PER_STATEMENT: usize = 400;

fn placeholders(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn load_slots(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    allowance: &AllowanceId,
    counters: &[u32],
) -> Result<BTreeMap<u32, Slot>, ServerError> {
    let mut slots = BTreeMap::new();
    for chunk in counters.chunks(ROWS_PER_STATEMENT) {
        let list: Vec<String> = (2..chunk.len() + 2).map(|k| format!("${k}")).collect();
        let sql = format!(
            "SELECT counter, iou, digest, sig, amount, verdict FROM slots WHERE allowance = $1 AND counter IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(allowance.0.to_vec());
        for c in chunk {
            q = q.bind(i64::from(*c));
        }
        for r in q.fetch_all(&mut **tx).await? {
            let hash = |v: Vec<u8>| Hash(v.try_into().unwrap_or([0; 32]));
            let counter = u32::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0);
            let sig: Vec<u8> = r.try_get(3)?;
            let verdict: i64 = r.try_get(5)?;
            slots.insert(
                counter,
                Slot {
                    iou: hash(r.try_get(1)?),
                    digest: hash(r.try_get(2)?),
                    sig: meshpay_protocol::Signature(sig.try_into().unwrap_or([0; 64])),
                    amount: u(r.try_get(4)?),
                    verdict: if verdict == 0 {
                        SlotVerdict::Settled
                    } else {
                        SlotVerdict::Rejected(
                            Reason::from_code(u16::try_from(verdict).unwrap_or(0))
                                .unwrap_or(Reason::Malformed),
                        )
                    },
                },
            );
        }
    }
    Ok(slots)
}

async fn load_receipts(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    ids: &[Hash],
) -> Result<BTreeMap<Hash, SettlementReceipt>, ServerError> {
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let list: Vec<String> = (1..=chunk.len()).map(|k| format!("${k}")).collect();
        let sql = format!(
            "SELECT id, receipt FROM records WHERE id IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id.0.to_vec());
        }
        for r in q.fetch_all(&mut **tx).await? {
            let id: Vec<u8> = r.try_get(0)?;
            let bytes: Vec<u8> = r.try_get(1)?;
            let receipt = decode(&bytes)
                .map_err(|_| ServerError::Bad("a stored receipt is corrupt".into()))?;
            out.insert(Hash(id.try_into().unwrap_or([0; 32])), receipt);
        }
    }
    Ok(out)
}

async fn existing_accounts(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    names: &[String],
) -> Result<std::collections::BTreeSet<String>, ServerError> {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    let mut out = std::collections::BTreeSet::new();
    for chunk in names.chunks(ROWS_PER_STATEMENT) {
        let list: Vec<String> = (1..=chunk.len()).map(|k| format!("${k}")).collect();
        let sql = format!(
            "SELECT name FROM accounts WHERE name IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for n in chunk {
            q = q.bind(n.clone());
        }
        for r in q.fetch_all(&mut **tx).await? {
            out.insert(r.try_get::<String, _>(0)?);
        }
    }
    Ok(out)
}

async fn insert_slots(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    allowance: &AllowanceId,
    slots: &[(u32, Slot)],
) -> Result<(), ServerError> {
    for chunk in slots.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO slots (allowance, counter, iou, digest, sig, amount, verdict) VALUES {} ON CONFLICT DO NOTHING",
            placeholders(chunk.len(), 7)
        );
        let mut q = sqlx::query(&sql);
        for (counter, slot) in chunk {
            let verdict = match slot.verdict {
                SlotVerdict::Settled => 0,
                SlotVerdict::Rejected(r) => i64::from(r.code()),
            };
            q = q
                .bind(allowance.0.to_vec())
                .bind(i64::from(*counter))
                .bind(slot.iou.0.to_vec())
                .bind(slot.digest.0.to_vec())
                .bind(slot.sig.0.to_vec())
                .bind(i(slot.amount)?)
                .bind(verdict);
        }
        let r = q.execute(&mut **tx).await?;
        if usize::try_from(r.rows_affected()).unwrap_or(0) != chunk.len() {
            return Err(ServerError::Busy);
        }
    }
    Ok(())
}

async fn insert_records(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    records: &[(Hash, u16, Vec<u8>)],
    now: u64,
) -> Result<(), ServerError> {
    for chunk in records.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO records (id, status, receipt, decided_at) VALUES {} ON CONFLICT DO NOTHING",
            placeholders(chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for (id, status, receipt) in chunk {
            q = q
                .bind(id.0.to_vec())
                .bind(i64::from(*status))
                .bind(receipt.clone())
                .bind(i(now)?);
        }
        let r = q.execute(&mut **tx).await?;
        if usize::try_from(r.rows_affected()).unwrap_or(0) != chunk.len() {
            return Err(ServerError::Busy);
        }
    }
    Ok(())
}

/// Maps `f` over `items` on every core (scoped threads), keeping the order. Opening sealed
/// records and signing receipts are independent per record and dominate a batch's CPU time.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if threads < 2 || items.len() < 64 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("settlement worker threads do not panic"))
            .collect()
    })
}
