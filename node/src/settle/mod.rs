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
            ServerError::Busy => true,
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
        // Open every record (no database work yet).
        let mut opened: Vec<Option<Opened>> = Vec::with_capacity(inputs.len());
        for bytes in inputs {
            let Ok(record) = decode::<SealedRecord>(bytes) else {
                opened.push(None);
                continue;
            };
            opened.push(Some(match record.open(&self.issuer) {
                Ok(iou) => Opened::Iou(record.id, iou),
                Err(meshpay_protocol::record::OpenError::ForeignIssuer) => Opened::Decided(
                    self.receipt(record.id, ReceiptStatus::Rejected(Reason::ForeignIssuer)),
                ),
                Err(_) => Opened::Decided(
                    self.receipt(record.id, ReceiptStatus::Rejected(Reason::Malformed)),
                ),
            }));
        }
        let mut tx = self.db.begin().await?;
        // Certificates of the allowances named, and the batch signature check.
        let mut certs: BTreeMap<AllowanceId, AllowanceCert> = BTreeMap::new();
        let wanted: std::collections::BTreeSet<AllowanceId> = opened
            .iter()
            .flatten()
            .filter_map(|o| match o {
                Opened::Iou(_, iou) => Some(iou.allowance),
                Opened::Decided(_) => None,
            })
            .collect();
        // On PostgreSQL, lock the escrows of this batch in id order first: concurrent batches
        // over the same allowances then queue instead of deadlocking. (SQLite has one writer.)
        let select = match self.db.engine {
            db::Engine::Postgres => "SELECT cert FROM escrows WHERE id = $1 FOR UPDATE",
            db::Engine::Sqlite => "SELECT cert FROM escrows WHERE id = $1",
        };
        for allowance in wanted {
            if let Some(row) = sqlx::query(select)
                .bind(allowance.0.to_vec())
                .fetch_optional(&mut *tx)
                .await?
            {
                let bytes: Vec<u8> = row.try_get(0)?;
                if let Ok(c) = decode::<AllowanceCert>(&bytes) {
                    certs.insert(allowance, c);
                }
            }
        }
        let signed: Vec<(&Iou, DeviceKey)> = opened
            .iter()
            .flatten()
            .filter_map(|o| match o {
                Opened::Iou(_, iou) => certs.get(&iou.allowance).map(|c| (iou, c.body().holder)),
                Opened::Decided(_) => None,
            })
            .collect();
        let batch_ok = meshpay_protocol::iou::verify_batch(&signed).is_ok();

        let mut out = Vec::with_capacity(opened.len());
        for o in opened {
            let receipt = match o {
                None => None,
                Some(Opened::Decided(r)) => Some(r),
                Some(Opened::Iou(id, iou)) => Some(
                    self.apply(&mut tx, id, &iou, certs.get(&iou.allowance), batch_ok, now)
                        .await?,
                ),
            };
            out.push(receipt);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Judges and records one IOU inside `tx`.
    async fn apply(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        id: Hash,
        iou: &Iou,
        cert: Option<&AllowanceCert>,
        batch_ok: bool,
        now: u64,
    ) -> Result<SettlementReceipt, ServerError> {
        // Decided before (by this server or another): the same receipt again.
        if let Some(row) = sqlx::query("SELECT receipt FROM records WHERE id = $1")
            .bind(id.0.to_vec())
            .fetch_optional(&mut **tx)
            .await?
        {
            let bytes: Vec<u8> = row.try_get(0)?;
            self.metrics.repeated.fetch_add(1, Ordering::Relaxed);
            return decode(&bytes)
                .map_err(|_| ServerError::Bad("a stored receipt is corrupt".into()));
        }
        let Some(cert) = cert else {
            return self
                .record(
                    tx,
                    id,
                    ReceiptStatus::Rejected(Reason::UnknownAllowance),
                    now,
                )
                .await;
        };
        // The payee must have an account to be credited. Nothing is claimed, so the record
        // can be uploaded again once the account exists.
        if db::balance(tx, &user(&iou.payee)).await?.is_none() {
            self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
            return Ok(self.receipt(id, ReceiptStatus::Rejected(Reason::UnknownPayee)));
        }
        let row = sqlx::query("SELECT settled, released FROM escrows WHERE id = $1")
            .bind(iou.allowance.0.to_vec())
            .fetch_one(&mut **tx)
            .await?;
        let settled: i64 = row.try_get(0)?;
        let released: i64 = row.try_get(1)?;
        let slot_row = sqlx::query("SELECT iou, digest, sig, amount, verdict FROM slots WHERE allowance = $1 AND counter = $2")
            .bind(iou.allowance.0.to_vec())
            .bind(i64::from(iou.counter))
            .fetch_optional(&mut **tx)
            .await?;
        let mut slots = BTreeMap::new();
        let had_slot = slot_row.is_some();
        if let Some(r) = slot_row {
            let hash = |v: Vec<u8>| Hash(v.try_into().unwrap_or([0; 32]));
            let sig: Vec<u8> = r.try_get(2)?;
            let verdict: i64 = r.try_get(4)?;
            slots.insert(
                iou.counter,
                Slot {
                    iou: hash(r.try_get(0)?),
                    digest: hash(r.try_get(1)?),
                    sig: meshpay_protocol::Signature(sig.try_into().unwrap_or([0; 64])),
                    amount: u(r.try_get(3)?),
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
        let mut ledger = Ledger::new(self.issuer.id());
        ledger.restore(Escrow {
            cert: cert.clone(),
            slots,
            settled_total: u(settled),
            released: released != 0,
            fraud: None,
        });
        let checked = batch_ok || iou.verify(&cert.body().holder).is_ok();
        if !checked {
            return self
                .record(tx, id, ReceiptStatus::Rejected(Reason::BadSignature), now)
                .await;
        }
        let outcome = ledger.apply(iou, now, true);
        if let Some(proof) = outcome.fork() {
            self.store_fraud(tx, proof, now).await?;
        }
        match &outcome {
            Outcome::Settled { amount, payee, .. } => {
                let slot = (
                    iou.allowance.0.to_vec(),
                    i64::from(iou.counter),
                    id.0.to_vec(),
                    iou.digest().0.to_vec(),
                    iou.sig.0.to_vec(),
                    i(*amount)?,
                );
                let r = if had_slot {
                    sqlx::query("UPDATE slots SET iou = $3, digest = $4, sig = $5, amount = $6, verdict = 0 WHERE allowance = $1 AND counter = $2 AND verdict <> 0")
                } else {
                    sqlx::query("INSERT INTO slots (allowance, counter, iou, digest, sig, amount, verdict) VALUES ($1, $2, $3, $4, $5, $6, 0) ON CONFLICT DO NOTHING")
                }
                .bind(slot.0)
                .bind(slot.1)
                .bind(slot.2)
                .bind(slot.3)
                .bind(slot.4)
                .bind(slot.5)
                .execute(&mut **tx)
                .await?;
                if r.rows_affected() != 1 {
                    return Err(ServerError::Busy);
                }
                let r = sqlx::query("UPDATE escrows SET settled = settled + $2 WHERE id = $1 AND released = 0 AND settled + $2 <= limit_amount")
                    .bind(iou.allowance.0.to_vec())
                    .bind(i(*amount)?)
                    .execute(&mut **tx)
                    .await?;
                if r.rows_affected() != 1 {
                    return Err(ServerError::Busy);
                }
                transfer(
                    tx,
                    &escrow_account(&iou.allowance),
                    &user(payee),
                    *amount,
                    "settle",
                    &id.to_hex(),
                    now,
                )
                .await?;
            }
            Outcome::Rejected { reason, .. } => {
                if !had_slot {
                    let r = sqlx::query("INSERT INTO slots (allowance, counter, iou, digest, sig, amount, verdict) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING")
                        .bind(iou.allowance.0.to_vec())
                        .bind(i64::from(iou.counter))
                        .bind(id.0.to_vec())
                        .bind(iou.digest().0.to_vec())
                        .bind(iou.sig.0.to_vec())
                        .bind(i(iou.amount)?)
                        .bind(i64::from(reason.code()))
                        .execute(&mut **tx)
                        .await?;
                    if r.rows_affected() != 1 {
                        return Err(ServerError::Busy);
                    }
                }
            }
            Outcome::Conflict { amount, payee, .. } => {
                // The loss rule: the victim is repaid from the holder's account where funds allow.
                let holder = user(&cert.body().holder);
                let available = u(db::balance(tx, &holder).await?.unwrap_or(0));
                let repay = (*amount).min(available);
                if repay > 0 {
                    transfer(
                        tx,
                        &holder,
                        &user(payee),
                        repay,
                        "fraud-recovery",
                        &id.to_hex(),
                        now,
                    )
                    .await?;
                }
            }
            Outcome::AlreadySettled { .. } => {}
        }
        self.record(tx, id, outcome.receipt_status(), now).await
    }

    async fn record(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        id: Hash,
        status: ReceiptStatus,
        now: u64,
    ) -> Result<SettlementReceipt, ServerError> {
        let receipt = self.receipt(id, status);
        let r = sqlx::query("INSERT INTO records (id, status, receipt, decided_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(id.0.to_vec())
            .bind(i64::from(status.code()))
            .bind(encode(&receipt))
            .bind(i(now)?)
            .execute(&mut **tx)
            .await?;
        if r.rows_affected() != 1 {
            return Err(ServerError::Busy);
        }
        match status {
            ReceiptStatus::Settled => self.metrics.settled.fetch_add(1, Ordering::Relaxed),
            ReceiptStatus::Rejected(_) => self.metrics.rejected.fetch_add(1, Ordering::Relaxed),
        };
        Ok(receipt)
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
        let rows = sqlx::query("SELECT id, holder, limit_amount, settled FROM escrows WHERE released = 0 AND settle_by < $1")
            .bind(i(now)?)
            .fetch_all(&mut *tx)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let id: Vec<u8> = r.try_get(0)?;
            let holder: Vec<u8> = r.try_get(1)?;
            let unspent = u(r.try_get::<i64, _>(2)? - r.try_get::<i64, _>(3)?);
            let done =
                sqlx::query("UPDATE escrows SET released = 1 WHERE id = $1 AND released = 0")
                    .bind(id.clone())
                    .execute(&mut *tx)
                    .await?;
            if done.rows_affected() != 1 {
                continue;
            }
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
