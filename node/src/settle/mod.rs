//! The settlement server: the issuer's side of meshpay.
//!
//! It holds the issuer's keys, keeps accounts (double-entry, see [`db`]), locks escrow for
//! allowances that wallets ask for online, and settles the sealed records gateways upload.
//!
//! ## A batch, step by step
//!
//! 1. **Open** ([`Server::settle`]): every record is opened (HPKE) on the CPU pool, a chunk
//!    at a time. Bytes that are not a record of this issuer, or do not open, are charged to
//!    the uploading source's budget ([`JunkBudget`]); once it is spent, the rest of the batch
//!    is left undecided. Nothing is signed for bytes that do not open: anyone can make them.
//! 2. **Load** ([`load`]): one transaction reads the escrows, slots and stored receipts the
//!    batch needs.
//! 3. **Judge** ([`judge`]): signatures are batch-verified on the CPU pool (strict single
//!    verification where a batch fails), then every record is judged in upload order by the
//!    protocol crate's [`Ledger`], which reports what it changed.
//! 4. **Sign and write** ([`write`]): new receipts are signed on the CPU pool, and the
//!    ledger's changes, the transfers and the receipts are written conditionally on the state
//!    read in step 2, then committed.
//!
//! Several servers may share one PostgreSQL database. Every write that settles or claims a
//! slot is conditional (`INSERT … ON CONFLICT DO NOTHING`, `UPDATE … WHERE settled = before`);
//! if another server got there first, the transaction rolls back and the batch is judged
//! again, so a record settles once whatever the number of servers and uploads.
//!
//! **One record never fails a batch.** Amounts are bounded on the wire
//! ([`meshpay_protocol::objects::MAX_AMOUNT`]), so no value of a valid record can overflow the
//! database; if a batch still fails in the database, it is split in halves and each half
//! judged alone, down to the single record that fails, which is answered `retry_later` while
//! the rest settle.

pub mod cli;
pub mod db;
pub mod http;
pub mod limits;

use crate::keystore;
use db::{Db, DbError, i, transfer, u};
use meshpay_protocol::codec::VERSION;
use meshpay_protocol::ledger::{Escrow, Ledger, LedgerChanges, Outcome};
use meshpay_protocol::objects::amount_in_range;
use meshpay_protocol::{
    AllowanceBody, AllowanceCert, AllowanceId, DeviceKey, FraudProof, Hash, Iou, IssuerDescriptor,
    IssuerSecret, Reason, ReceiptStatus, Revocation, RevocationReason, SealedRecord,
    SettlementReceipt, WalletAction, WalletRequest, decode, encode,
};
use rand_core::{OsRng, RngCore};
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use limits::JunkBudget;

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
    /// The CPU pool stopped (the server is shutting down).
    #[error("the server is shutting down")]
    Stopping,
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

    /// Whether the database refused a statement for what one record of the batch holds (a
    /// constraint, a value out of range, a trigger), as opposed to failing as a whole (out
    /// of disk or of reach): only such a failure is isolated by splitting the batch.
    fn is_record_failure(&self) -> bool {
        match self {
            ServerError::Db(DbError::TooLarge(_) | DbError::Overflow(_)) => true,
            ServerError::Db(DbError::Sql(sqlx::Error::Database(e))) => {
                let code = e.code().unwrap_or_default();
                match code.parse::<i32>() {
                    // SQLite: constraints (CHECK, NOT NULL, a trigger's RAISE, …) but unique
                    // keys (a race, judged again), and values too big, mistyped or out of range.
                    Ok(n) => {
                        (n & 0xff == 19 && n != 2067 && n != 1555) || matches!(n, 18 | 20 | 25)
                    }
                    // PostgreSQL: data exceptions, constraints but unique keys, RAISE.
                    Err(_) => {
                        code.starts_with("22")
                            || (code.starts_with("23") && code != "23505")
                            || code == "P0001"
                    }
                }
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
    /// Inputs that were not a record of this issuer or did not open (no receipt).
    pub unopened: AtomicU64,
    /// Records left undecided because their source's budget was spent.
    pub deferred: AtomicU64,
    /// Records answered `retry_later` because the database refused them.
    pub retry_later: AtomicU64,
    /// Upload batches.
    pub batches: AtomicU64,
    /// Uploads refused before reading (budget spent, queue full).
    pub uploads_refused: AtomicU64,
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

/// Seconds a wallet request's clock may be off the server's.
pub const REQUEST_WINDOW_SECS: u64 = 300;

/// Records opened per step of the open phase; the source's budget is checked between steps.
const OPEN_CHUNK: usize = 256;

/// The settlement server's state.
pub struct Server {
    /// Storage.
    pub db: Db,
    issuer: Arc<IssuerSecret>,
    /// The signed descriptor.
    pub descriptor: IssuerDescriptor,
    /// The clock.
    pub clock: Clock,
    /// Counters.
    pub metrics: Metrics,
    /// Policy.
    pub policy: Policy,
    /// What each source may upload that does not open.
    pub junk: JunkBudget,
    /// Allowance certificates read before (they never change).
    certs: std::sync::Mutex<BTreeMap<AllowanceId, AllowanceCert>>,
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

/// Runs CPU-bound work (HPKE, signatures) on tokio's blocking pool, off the async workers, so
/// that `/healthz` and every other route keep answering while batches are judged.
async fn cpu<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ServerError::Stopping)
}

/// One input of an upload after the open phase.
#[derive(Debug, Clone)]
enum Input {
    /// Opened: the record id and its IOU.
    Record(Hash, Iou),
    /// A record that does not open (sealed to another issuer, or altered): only its id (a
    /// stored receipt for that id still answers it).
    Unopened(Hash),
    /// Not a sealed record at all, or left undecided (the source's budget was spent).
    Nothing,
}

/// What an input is answered with, before new receipts are signed.
enum Answer {
    /// A receipt made before (stored), or none.
    Ready(Option<SettlementReceipt>),
    /// A new decision, to sign.
    Fresh(Hash, ReceiptStatus),
    /// The same record earlier in the batch.
    SameAs(usize),
}

/// What is worked out once for a whole batch before it is judged.
struct Prepared {
    now: u64,
    certs: BTreeMap<AllowanceId, AllowanceCert>,
    bad: BTreeSet<Hash>,
    /// `settled` receipts signed ahead, by record id.
    hoped: BTreeMap<Hash, SettlementReceipt>,
}

/// The state a batch is judged against, read in its transaction.
struct Loaded {
    ledger: Ledger,
    /// Holder of every allowance that exists.
    holders: BTreeMap<AllowanceId, DeviceKey>,
    /// Receipts already stored, by record id.
    decided: BTreeMap<Hash, SettlementReceipt>,
    /// Payees that have an account.
    payees: BTreeSet<DeviceKey>,
}

/// The verdicts on a batch, before signing.
struct Judged {
    answers: Vec<Answer>,
    changes: LedgerChanges,
    /// Credits to payees: (allowance, payee) → (amount, records).
    credits: BTreeMap<(AllowanceId, DeviceKey), (u64, usize)>,
    /// Double spends refused: holder, victim, amount, record.
    conflicts: Vec<(DeviceKey, DeviceKey, u64, Hash)>,
    frauds: BTreeMap<AllowanceId, FraudProof>,
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
            issuer: Arc::new(issuer),
            descriptor,
            clock,
            metrics: Metrics::default(),
            policy,
            junk: JunkBudget::default(),
            certs: std::sync::Mutex::new(BTreeMap::new()),
        }
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
        if amount == 0 || !amount_in_range(amount) {
            return Err(ServerError::Bad(format!(
                "amount must be 1 to {} minor units",
                meshpay_protocol::objects::MAX_AMOUNT
            )));
        }
        if reference.len() > 200 {
            return Err(ServerError::Bad("reference: at most 200 bytes".to_owned()));
        }
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
            Err(DbError::Overflow(a)) => {
                return Err(ServerError::Bad(format!(
                    "the books cannot take this amount: {a} would pass the largest balance they hold"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let balance = db::balance(&mut tx, &name).await?.unwrap_or(0);
        tx.commit().await?;
        Ok(u(balance))
    }

    /// Checks a wallet request's signature, issuer and clock, then spends its nonce in a
    /// transaction of its own: a request is used once, whatever the answer to it.
    async fn spend_nonce(&self, req: &WalletRequest) -> Result<(), ServerError> {
        req.verify()
            .map_err(|_| ServerError::Bad("the request's signature does not verify".into()))?;
        let b = req.body();
        if b.issuer != self.issuer.id() {
            return Err(ServerError::Bad("the request is for another issuer".into()));
        }
        let now = self.clock.now();
        if b.time.abs_diff(now) > REQUEST_WINDOW_SECS {
            return Err(ServerError::Bad(format!(
                "the request's time is {}s off the server's clock (at most {REQUEST_WINDOW_SECS}s)",
                b.time.abs_diff(now)
            )));
        }
        let mut tx = self.db.begin().await?;
        let r = sqlx::query(
            "INSERT INTO nonces (device, nonce, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(b.device.0.to_vec())
        .bind(b.nonce.0.to_vec())
        .bind(i(now)?)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Err(ServerError::Replay("this request was already used".into()));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Issues an allowance: locks the amount in escrow and signs the certificate.
    pub async fn issue_allowance(&self, req: &WalletRequest) -> Result<AllowanceCert, ServerError> {
        let WalletAction::Allowance { amount, valid_secs } = req.action() else {
            return Err(ServerError::Bad("not an allowance request".into()));
        };
        // What the request itself gets wrong is refused before its nonce is spent (the same
        // request is refused the same way again); from the nonce on, a refusal is final.
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
        self.spend_nonce(req).await?;
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

    /// Settles an upload from `source`: one answer per input, `None` where the issuer takes
    /// no decision (not a sealed record of this issuer, a record that does not open, or one
    /// left for later because the source's budget for such inputs is spent).
    pub async fn settle(
        self: &Arc<Self>,
        inputs: Vec<Vec<u8>>,
        source: Option<IpAddr>,
    ) -> Result<Vec<Option<SettlementReceipt>>, ServerError> {
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        let inputs = self.open_all(inputs, source).await?;
        let answers = self.decide(&inputs).await?;
        // Records that open but name no allowance here, or carry a bad signature, are junk
        // anyone can seal to the public seal key: no decision, no signature, and their source
        // pays for them like for bytes that do not open.
        let junk = inputs
            .iter()
            .zip(&answers)
            .filter(|(i, a)| matches!(i, Input::Record(..)) && a.is_none())
            .count();
        if junk > 0 {
            self.junk.charge(source, junk as u64);
            self.metrics
                .unopened
                .fetch_add(junk as u64, Ordering::Relaxed);
        }
        Ok(answers)
    }

    /// Step 1: opens every input on the CPU pool, a chunk at a time, charging `source` for
    /// what does not open and stopping when its budget is spent.
    async fn open_all(
        self: &Arc<Self>,
        inputs: Vec<Vec<u8>>,
        source: Option<IpAddr>,
    ) -> Result<Vec<Input>, ServerError> {
        let total = inputs.len();
        let inputs = Arc::new(inputs);
        let mut out = Vec::with_capacity(total);
        let mut start = 0;
        while start < total {
            if !self.junk.allows(source) {
                let left = total - start;
                self.metrics
                    .deferred
                    .fetch_add(left as u64, Ordering::Relaxed);
                out.resize(total, Input::Nothing);
                break;
            }
            let end = (start + OPEN_CHUNK).min(total);
            let (server, all) = (Arc::clone(self), Arc::clone(&inputs));
            let part = cpu(move || par_map(&all[start..end], |b| server.open(b))).await?;
            let junk = part
                .iter()
                .filter(|p| !matches!(p, Input::Record(..)))
                .count();
            self.junk.charge(source, junk as u64);
            self.metrics
                .unopened
                .fetch_add(junk as u64, Ordering::Relaxed);
            out.extend(part);
            start = end;
        }
        Ok(out)
    }

    fn open(&self, bytes: &[u8]) -> Input {
        let Ok(record) = decode::<SealedRecord>(bytes) else {
            return Input::Nothing;
        };
        // A record sealed to another issuer, or one that does not open, gets no decision; but
        // a record id this issuer decided is always answered with its stored receipt.
        match record.open(&self.issuer) {
            Ok(iou) => Input::Record(record.id, iou),
            Err(_) => Input::Unopened(record.id),
        }
    }

    /// Steps 2 to 4. What does not change while a batch is judged (certificates, bad
    /// signatures, receipts signed ahead) is worked out once for the whole batch.
    async fn decide(
        &self,
        inputs: &[Input],
    ) -> Result<Vec<Option<SettlementReceipt>>, ServerError> {
        let now = self.clock.now();
        // Certificates never change once issued: read them, and check the signatures they
        // name, before any transaction. Receipts are signed ahead too, for the records not
        // decided yet, as if they settle (as nearly all do): the database then waits on no CPU
        // work. A record that turns out otherwise is signed again with its status.
        let certs = self.certificates(inputs).await?;
        let bad = self.bad_signatures(inputs, &certs).await?;
        let decided = self.stored_receipts(inputs).await?;
        let hoped = self
            .sign_hopefully(inputs, &certs, &bad, &decided, now)
            .await?;
        let prepared = Prepared {
            now,
            certs,
            bad,
            hoped,
        };
        self.decide_parts(inputs, &prepared, decided).await
    }

    /// Decides `inputs` with retries, splitting them to isolate a record the database
    /// refuses.
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
                    let mid = inputs.len() / 2;
                    let (a, b) = inputs.split_at(mid);
                    let first_decided = self.stored_receipts(a).await?;
                    let mut first = Box::pin(self.decide_parts(a, prepared, first_decided)).await?;
                    let second_decided = self.stored_receipts(b).await?;
                    first.extend(Box::pin(self.decide_parts(b, prepared, second_decided)).await?);
                    return Ok(first);
                }
                tracing::error!(error = %e, "the database refused a record; answered retry_later");
                self.metrics.retry_later.fetch_add(1, Ordering::Relaxed);
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

    async fn decide_with_retries(
        &self,
        inputs: &[Input],
        prepared: &Prepared,
        mut decided: BTreeMap<Hash, SettlementReceipt>,
    ) -> Result<Vec<Option<SettlementReceipt>>, ServerError> {
        for _ in 0..8 {
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

    async fn decide_once(
        &self,
        inputs: &[Input],
        prepared: &Prepared,
        decided: BTreeMap<Hash, SettlementReceipt>,
    ) -> Result<Vec<Option<SettlementReceipt>>, ServerError> {
        let now = prepared.now;
        let mut tx = self.db.begin().await?;
        let mut loaded = load(&mut tx, self, inputs, &prepared.certs, decided).await?;
        let judged = judge(inputs, &mut loaded, &prepared.bad, now);
        let fresh: Vec<(Hash, ReceiptStatus)> = judged
            .answers
            .iter()
            .filter_map(|a| match a {
                Answer::Fresh(id, status) => Some((*id, *status)),
                _ => None,
            })
            .collect();
        let hoped = &prepared.hoped;
        let to_sign: Vec<(Hash, ReceiptStatus)> = fresh
            .iter()
            .filter(|(id, status)| !(*status == ReceiptStatus::Settled && hoped.contains_key(id)))
            .copied()
            .collect();
        let mut late = if to_sign.is_empty() {
            Vec::new()
        } else {
            let issuer = Arc::clone(&self.issuer);
            cpu(move || {
                par_map(&to_sign, |(id, status)| {
                    SettlementReceipt::issue(&issuer, *id, *status, now)
                })
            })
            .await?
        }
        .into_iter();
        let signed: Vec<SettlementReceipt> = fresh
            .iter()
            .map(|(id, status)| match hoped.get(id) {
                Some(r) if *status == ReceiptStatus::Settled => r.clone(),
                _ => late
                    .next()
                    .expect("one late signature per receipt not signed before"),
            })
            .collect();
        let (out, counts) = write(&mut tx, self, judged, signed, now).await?;
        tx.commit().await?;
        self.metrics.settled.fetch_add(counts.0, Ordering::Relaxed);
        self.metrics.rejected.fetch_add(counts.1, Ordering::Relaxed);
        self.metrics.repeated.fetch_add(counts.2, Ordering::Relaxed);
        self.metrics.frauds.fetch_add(counts.3, Ordering::Relaxed);
        Ok(out)
    }

    /// The stored receipts of the records among `inputs` (read outside any transaction: a
    /// stored decision never changes; one made by another server after this read makes the
    /// batch's conditional insert fail, and the batch is judged again). A stored receipt that
    /// does not decode is signed again from its stored status and time: signatures are
    /// deterministic, so it is the same receipt.
    async fn stored_receipts(
        &self,
        inputs: &[Input],
    ) -> Result<BTreeMap<Hash, SettlementReceipt>, ServerError> {
        let ids: Vec<Hash> = inputs
            .iter()
            .filter_map(|i| match i {
                Input::Record(id, _) | Input::Unopened(id) => Some(*id),
                Input::Nothing => None,
            })
            .collect();
        let rows = db::load_receipts(&self.db, &ids).await?;
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
        now: u64,
    ) -> Result<BTreeMap<Hash, SettlementReceipt>, ServerError> {
        let candidates: BTreeSet<Hash> = inputs
            .iter()
            .filter_map(|i| match i {
                Input::Record(id, iou)
                    if certs.contains_key(&iou.allowance) && !bad.contains(id) =>
                {
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        let ids: Vec<Hash> = candidates
            .into_iter()
            .filter(|id| !decided.contains_key(id))
            .collect();
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
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
        const CACHED: usize = 100_000;
        let wanted: BTreeSet<AllowanceId> = inputs
            .iter()
            .filter_map(|i| match i {
                Input::Record(_, iou) => Some(iou.allowance),
                _ => None,
            })
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
            let read = db::certificates(&self.db, &missing).await?;
            let mut cache = self.lock_certs();
            if cache.len() + read.len() > CACHED {
                cache.clear();
            }
            for (id, c) in read {
                cache.insert(id, c.clone());
                found.insert(id, c);
            }
        }
        Ok(found)
    }

    fn lock_certs(&self) -> std::sync::MutexGuard<'_, BTreeMap<AllowanceId, AllowanceCert>> {
        self.certs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The records whose signature does not verify under their allowance's holder key:
    /// batch verification on the CPU pool, and strict single verification of each record
    /// only when a batch fails.
    async fn bad_signatures(
        &self,
        inputs: &[Input],
        certs: &BTreeMap<AllowanceId, AllowanceCert>,
    ) -> Result<BTreeSet<Hash>, ServerError> {
        let items: Vec<(Hash, Iou, DeviceKey)> = inputs
            .iter()
            .filter_map(|i| match i {
                Input::Record(id, iou) => certs
                    .get(&iou.allowance)
                    .map(|c| (*id, iou.clone(), c.body().holder)),
                _ => None,
            })
            .collect();
        cpu(move || {
            let bad: Vec<Vec<Hash>> = par_parts(&items, |part| {
                let refs: Vec<(&Iou, DeviceKey)> = part.iter().map(|(_, i, h)| (i, *h)).collect();
                if meshpay_protocol::iou::verify_batch(&refs).is_ok() {
                    return Vec::new();
                }
                part.iter()
                    .filter(|(_, iou, holder)| iou.verify(holder).is_err())
                    .map(|(id, _, _)| *id)
                    .collect()
            });
            bad.into_iter().flatten().collect()
        })
        .await
    }

    async fn store_fraud(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        proof: &FraudProof,
        now: u64,
    ) -> Result<bool, ServerError> {
        let r = sqlx::query("INSERT INTO frauds (allowance, proof, found_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(proof.allowance().0.to_vec())
            .bind(encode(proof))
            .bind(i(now)?)
            .execute(&mut **tx)
            .await?;
        if r.rows_affected() == 1 {
            // A proven fork revokes the allowance: nodes that get the revocation refuse it.
            self.store_revocation(tx, &proof.allowance(), RevocationReason::Fraud, now)
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn store_revocation(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        allowance: &AllowanceId,
        reason: RevocationReason,
        now: u64,
    ) -> Result<Revocation, ServerError> {
        let rev = Revocation::issue(&self.issuer, *allowance, reason, now);
        let r = sqlx::query("INSERT INTO revocations (allowance, revocation, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(allowance.0.to_vec())
            .bind(encode(&rev))
            .bind(i(now)?)
            .execute(&mut **tx)
            .await?;
        if r.rows_affected() == 1 {
            return Ok(rev);
        }
        // Revoked before: the first revocation stands (it is the one the mesh carries).
        let row = sqlx::query("SELECT revocation FROM revocations WHERE allowance = $1")
            .bind(allowance.0.to_vec())
            .fetch_one(&mut **tx)
            .await?;
        let bytes: Vec<u8> = row.try_get(0)?;
        decode(&bytes).map_err(|_| ServerError::Bad("a stored revocation is corrupt".into()))
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
        if self.db.engine == db::Engine::Postgres {
            // The revocations feed pages by sequence number: one writer at a time (as in
            // settlement) so that rows become visible in sequence order.
            sqlx::query("SELECT pg_advisory_xact_lock(7434)")
                .execute(&mut *tx)
                .await?;
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
    ) -> Result<(u64, Vec<db::Entry>), ServerError> {
        if req.action() != WalletAction::Statement {
            return Err(ServerError::Bad("not a statement request".into()));
        }
        self.spend_nonce(req).await?;
        let name = user(&req.body().device);
        let mut tx = self.db.begin().await?;
        let Some(balance) = db::balance(&mut tx, &name).await? else {
            return Err(ServerError::NotFound(
                "this device has no account here".into(),
            ));
        };
        let entries = db::statement(&mut tx, &name).await?;
        tx.commit().await?;
        Ok((u(balance), entries))
    }

    /// Returns the unspent escrow of every allowance past its settle-by time to its holder,
    /// and forgets wallet-request nonces too old to be replayed.
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
        // A nonce outside every request's clock window can never be replayed.
        sqlx::query("DELETE FROM nonces WHERE at < $1")
            .bind(i(now.saturating_sub(2 * REQUEST_WINDOW_SECS + 60))?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// Step 2: reads, in the batch's transaction, the escrows, slots and payee accounts the batch
/// needs (certificates and stored receipts, which never change, were read before it).
async fn load(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    server: &Server,
    inputs: &[Input],
    certs: &BTreeMap<AllowanceId, AllowanceCert>,
    decided: BTreeMap<Hash, SettlementReceipt>,
) -> Result<Loaded, ServerError> {
    let mut by_allowance: BTreeMap<AllowanceId, Vec<u32>> = BTreeMap::new();
    for input in inputs {
        if let Input::Record(_, iou) = input {
            by_allowance
                .entry(iou.allowance)
                .or_default()
                .push(iou.counter);
        }
    }
    let mut ledger = Ledger::new(server.issuer.id());
    let mut holders = BTreeMap::new();
    // On PostgreSQL, lock the escrows of this batch in id order first: concurrent batches
    // over the same allowances then queue instead of deadlocking. (SQLite has one writer.)
    let select = match server.db.engine {
        db::Engine::Postgres => "SELECT settled, released FROM escrows WHERE id = $1 FOR UPDATE",
        db::Engine::Sqlite => "SELECT settled, released FROM escrows WHERE id = $1",
    };
    for (allowance, cert) in certs {
        let (allowance, cert) = (*allowance, cert.clone());
        let Some(row) = sqlx::query(select)
            .bind(allowance.0.to_vec())
            .fetch_optional(&mut **tx)
            .await?
        else {
            continue;
        };
        let counters = by_allowance.get(&allowance).map_or(&[][..], Vec::as_slice);
        holders.insert(allowance, cert.body().holder);
        ledger.restore(Escrow {
            cert,
            slots: db::load_slots(tx, &allowance, counters).await?,
            settled_total: u(row.try_get(0)?),
            released: row.try_get::<i64, _>(1)? != 0,
            fraud: None,
        });
    }
    let wanted: Vec<String> = inputs
        .iter()
        .filter_map(|i| match i {
            Input::Record(_, iou) => Some(user(&iou.payee)),
            _ => None,
        })
        .collect();
    let existing = db::existing_accounts(tx, &wanted).await?;
    let payees = inputs
        .iter()
        .filter_map(|i| match i {
            Input::Record(_, iou) if existing.contains(&user(&iou.payee)) => Some(iou.payee),
            _ => None,
        })
        .collect();
    Ok(Loaded {
        ledger,
        holders,
        decided,
        payees,
    })
}

/// Step 3: judges every input in upload order, with the protocol's ledger rules. Pure: no IO.
fn judge(inputs: &[Input], loaded: &mut Loaded, bad: &BTreeSet<Hash>, now: u64) -> Judged {
    let mut answers: Vec<Answer> = Vec::with_capacity(inputs.len());
    let mut this_batch: BTreeMap<Hash, usize> = BTreeMap::new();
    let mut credits: BTreeMap<(AllowanceId, DeviceKey), (u64, usize)> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut frauds: BTreeMap<AllowanceId, FraudProof> = BTreeMap::new();
    for input in inputs {
        let answer = match input {
            Input::Nothing => Answer::Ready(None),
            Input::Unopened(id) => Answer::Ready(loaded.decided.get(id).cloned()),
            Input::Record(id, iou) => {
                if let Some(r) = loaded.decided.get(id) {
                    Answer::Ready(Some(r.clone()))
                } else if let Some(k) = this_batch.get(id) {
                    Answer::SameAs(*k)
                } else {
                    let status = match loaded.holders.get(&iou.allowance) {
                        // Junk anyone can seal: no decision, nothing signed (the source pays).
                        None => {
                            answers.push(Answer::Ready(None));
                            continue;
                        }
                        // No account to credit: nothing is claimed or stored, so the record
                        // settles when uploaded again once the payee has an account.
                        Some(_) if !loaded.payees.contains(&iou.payee) => {
                            ReceiptStatus::Rejected(Reason::UnknownPayee)
                        }
                        Some(_) if bad.contains(id) => {
                            answers.push(Answer::Ready(None));
                            continue;
                        }
                        Some(holder) => {
                            let outcome = loaded.ledger.apply(iou, now, true);
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
                                    conflicts.push((*holder, *payee, *amount, *id));
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
        changes: loaded.ledger.take_changes(),
        credits,
        conflicts,
        frauds,
    }
}

/// Counts of one batch: settled, rejected, repeated, new fraud proofs.
type Counts = (u64, u64, u64, u64);

/// Step 4: writes the ledger's changes, the transfers and the new receipts. Every write is
/// conditional on the state read in step 2; if another server changed it meanwhile, the
/// batch is judged again.
async fn write(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    server: &Server,
    judged: Judged,
    signed: Vec<SettlementReceipt>,
    now: u64,
) -> Result<(Vec<Option<SettlementReceipt>>, Counts), ServerError> {
    let mut signed = signed.into_iter();
    let mut out: Vec<Option<SettlementReceipt>> = Vec::with_capacity(judged.answers.len());
    let mut new_records: Vec<(Hash, u16, Vec<u8>)> = Vec::new();
    let mut counts: Counts = (0, 0, 0, 0);
    for a in &judged.answers {
        let r = match a {
            Answer::Ready(r) => {
                counts.2 += u64::from(r.is_some());
                r.clone()
            }
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
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
                Some(r)
            }
        };
        out.push(r);
    }
    let changes = &judged.changes;
    for (allowance, counter, slot) in &changes.settled_slots {
        if db::settle_refused_slot(tx, allowance, *counter, slot)
            .await?
            .is_err()
        {
            return Err(ServerError::Busy);
        }
    }
    if db::insert_slots(tx, &changes.new_slots).await?.is_err() {
        return Err(ServerError::Busy);
    }
    for (allowance, before, after) in &changes.totals {
        if db::move_settled_total(tx, allowance, *before, *after)
            .await?
            .is_err()
        {
            return Err(ServerError::Busy);
        }
    }
    for ((allowance, payee), (amount, n)) in &judged.credits {
        let reference = format!("settle {n} record(s)");
        transfer(
            tx,
            &escrow_account(allowance),
            &user(payee),
            *amount,
            "settle",
            &reference,
            now,
        )
        .await?;
    }
    for (holder, victim, amount, id) in &judged.conflicts {
        // The loss rule: the victim is repaid from the holder's account where funds allow.
        let holder = user(holder);
        let available = u(db::balance(tx, &holder).await?.unwrap_or(0));
        let repay = (*amount).min(available);
        if repay > 0 {
            transfer(
                tx,
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
    if server.db.engine == db::Engine::Postgres
        && (!new_records.is_empty() || !judged.frauds.is_empty())
    {
        // Feeds page by sequence number: make rows become visible in sequence order by
        // letting one batch at a time add to them.
        sqlx::query("SELECT pg_advisory_xact_lock(7434)")
            .execute(&mut **tx)
            .await?;
    }
    for proof in judged.frauds.values() {
        counts.3 += u64::from(server.store_fraud(tx, proof, now).await?);
    }
    if db::insert_records(tx, &new_records, now).await?.is_err() {
        return Err(ServerError::Busy);
    }
    Ok((out, counts))
}

/// Runs `f` on one part of `items` per core at once (scoped threads), keeping the order.
/// Call it from the CPU pool, never from an async worker. (The settlement benchmark measures
/// the crypto pipeline with it too, so both use the cores the same way.)
pub fn par_parts<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if threads < 2 || items.len() < 64 {
        return vec![f(items)];
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| f(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("settlement worker threads do not panic"))
            .collect()
    })
}

/// Maps `f` over `items` on every core, keeping the order (see [`par_parts`]).
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    par_parts(items, |part| part.iter().map(&f).collect::<Vec<R>>())
        .into_iter()
        .flatten()
        .collect()
}
