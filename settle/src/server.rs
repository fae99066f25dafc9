//! The server's state and its calls outside settlement: accounts (admin), allowances and
//! statements (signed wallet requests), revocations, and the release of expired escrow.
//! [`Server::settle`] is in [`crate::batch`].

use crate::db::accounts::{escrow, spend_nonce};
use crate::db::{self, Db, DbError, settlement as rows, u};
use crate::error::{RequestError, ServerError};
use crate::limits::JunkBudget;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::risk::{Monitor, RiskRules};
use meshpay_protocol::codec::VERSION;
use meshpay_protocol::objects::amount_in_range;
use meshpay_protocol::{
    AllowanceBody, AllowanceCert, AllowanceId, IssuerDescriptor, IssuerSecret, PrintableKey as _,
    Revocation, RevocationReason, WalletAction, WalletRequest,
};
use rand_core::{OsRng, RngCore};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub use crate::db::accounts::user;

/// Now, in Unix seconds, from the system clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
            0 => unix_now(),
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

/// Escrows released per round of [`Server::release_expired`].
const RELEASES_PER_ROUND: i64 = 1000;

/// The settlement server's state.
pub struct Server {
    /// Storage.
    pub db: Db,
    pub(crate) issuer: Arc<IssuerSecret>,
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
    /// The live feed of settlement (the issuer console).
    pub live: Live,
    /// Allowance certificates read before (they never change).
    certs: Mutex<BTreeMap<AllowanceId, AllowanceCert>>,
    /// The risk rules' live signals.
    monitor: Mutex<Monitor>,
    /// Alerts per rule as last counted, and when (for `/metrics`).
    pub(crate) risk_counts: Mutex<crate::watch::CountsCache>,
    /// Held by the one request counting the alerts again for `/metrics`.
    pub(crate) risk_recount: tokio::sync::Mutex<()>,
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
            live: Live::default(),
            certs: Mutex::new(BTreeMap::new()),
            monitor: Mutex::new(Monitor::default()),
            risk_counts: Mutex::new(crate::watch::CountsCache::default()),
            risk_recount: tokio::sync::Mutex::new(()),
        }
    }

    /// Sets the risk rules' thresholds (the live signals counted so far are forgotten).
    pub fn set_risk_rules(&mut self, rules: RiskRules) {
        self.monitor = Mutex::new(Monitor::new(rules));
    }

    /// The risk rules' monitor.
    pub(crate) fn lock_monitor(&self) -> MutexGuard<'_, Monitor> {
        self.monitor.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cache of allowance certificates.
    pub(crate) fn lock_certs(&self) -> MutexGuard<'_, BTreeMap<AllowanceId, AllowanceCert>> {
        self.certs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens an account for a device (admin). Returns whether it was new.
    pub async fn open_account(
        &self,
        device: &meshpay_protocol::DeviceKey,
    ) -> Result<bool, ServerError> {
        let mut tx = self.db.begin().await?;
        let new = db::open_account(&mut tx, &user(device), self.clock.now()).await?;
        tx.commit().await?;
        Ok(new)
    }

    /// Credits (top-up from outside) or debits (withdrawal) an account (admin). Returns the
    /// balance after.
    pub async fn adjust(
        &self,
        device: &meshpay_protocol::DeviceKey,
        amount: u64,
        credit: bool,
        reference: &str,
    ) -> Result<u64, ServerError> {
        if amount == 0 || !amount_in_range(amount) {
            return Err(ServerError::AmountOutOfRange);
        }
        if reference.len() > 200 {
            return Err(ServerError::ReferenceTooLong);
        }
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let name = user(device);
        let r = if credit {
            db::transfer(&mut tx, "external", &name, amount, "credit", reference, now).await
        } else {
            db::transfer(&mut tx, &name, "external", amount, "debit", reference, now).await
        };
        r.map_err(|e| match e {
            DbError::NoAccount(a) => ServerError::NoAccount(a),
            DbError::Insufficient(a) => ServerError::Insufficient(a),
            DbError::Overflow(a) => ServerError::BooksFull(a),
            e => e.into(),
        })?;
        let balance = db::balance(&mut tx, &name).await?.unwrap_or(0);
        tx.commit().await?;
        Ok(u(balance))
    }

    /// An account's balance and statement (admin).
    pub async fn statement(
        &self,
        device: &meshpay_protocol::DeviceKey,
    ) -> Result<(u64, Vec<db::Entry>), ServerError> {
        let name = user(device);
        let mut tx = self.db.begin().await?;
        let Some(balance) = db::balance(&mut tx, &name).await? else {
            return Err(ServerError::NoAccount(device.to_text()));
        };
        let entries = db::statement(&mut tx, &name).await?;
        tx.commit().await?;
        Ok((u(balance), entries))
    }

    /// An account's balance alone (admin).
    pub async fn balance(&self, device: &meshpay_protocol::DeviceKey) -> Result<u64, ServerError> {
        let name = user(device);
        let mut tx = self.db.begin().await?;
        let Some(balance) = db::balance(&mut tx, &name).await? else {
            return Err(ServerError::NoAccount(device.to_text()));
        };
        tx.commit().await?;
        Ok(u(balance))
    }

    /// An account's balance, how many transfers its statement holds, and the newest `lines` of
    /// them, newest first (admin; what a page shows).
    pub async fn statement_tail(
        &self,
        device: &meshpay_protocol::DeviceKey,
        lines: usize,
    ) -> Result<(u64, u64, Vec<db::Entry>), ServerError> {
        let name = user(device);
        let mut tx = self.db.begin().await?;
        let Some(balance) = db::balance(&mut tx, &name).await? else {
            return Err(ServerError::NoAccount(device.to_text()));
        };
        let limit = i64::try_from(lines).unwrap_or(i64::MAX);
        let (count, entries) = db::statement_tail(&mut tx, &name, limit).await?;
        tx.commit().await?;
        Ok((u(balance), count, entries))
    }

    /// Checks a wallet request's signature, issuer and clock, then spends its nonce in a
    /// transaction of its own: a request is used once, whatever the answer to it.
    async fn spend_nonce(&self, req: &WalletRequest) -> Result<(), ServerError> {
        req.verify().map_err(|_| RequestError::Signature)?;
        let b = req.body();
        if b.issuer != self.issuer.id() {
            return Err(RequestError::OtherIssuer.into());
        }
        let now = self.clock.now();
        if b.time.abs_diff(now) > REQUEST_WINDOW_SECS {
            return Err(RequestError::Clock(b.time.abs_diff(now)).into());
        }
        let mut tx = self.db.begin().await?;
        if !spend_nonce(&mut tx, &b.device, &b.nonce, now).await? {
            return Err(ServerError::Replay);
        }
        tx.commit().await?;
        Ok(())
    }

    /// Issues an allowance: locks the amount in escrow and signs the certificate.
    pub async fn issue_allowance(&self, req: &WalletRequest) -> Result<AllowanceCert, ServerError> {
        let WalletAction::Allowance { amount, valid_secs } = req.action() else {
            return Err(RequestError::NotAllowance.into());
        };
        // What the request itself gets wrong is refused before its nonce is spent (the same
        // request is refused the same way again); from the nonce on, a refusal is final.
        let d = self.descriptor.body();
        let b = req.body();
        if !d.currencies.contains(&b.currency) {
            return Err(RequestError::Currency(b.currency.clone()).into());
        }
        if amount > d.max_allowance {
            return Err(RequestError::AmountTooLarge(d.max_allowance).into());
        }
        if valid_secs > self.policy.max_valid_secs {
            return Err(RequestError::ValidityTooLong(self.policy.max_valid_secs).into());
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
        let escrow = escrow(&cert.id());
        db::open_account(&mut tx, &escrow, now).await?;
        db::transfer(
            &mut tx,
            &user(&b.device),
            &escrow,
            amount,
            "escrow",
            &cert.id().to_hex(),
            now,
        )
        .await
        .map_err(|e| match e {
            DbError::NoAccount(_) => ServerError::NoDeviceAccount,
            DbError::Insufficient(_) => ServerError::CannotEscrow(amount),
            e => e.into(),
        })?;
        rows::insert_escrow(&mut tx, &cert, now).await?;
        tx.commit().await?;
        Metrics::add(&self.metrics.allowances, 1);
        Ok(cert)
    }

    /// Revokes an allowance this issuer granted (admin: a device reported lost, …).
    /// Revoking again answers the first revocation.
    pub async fn revoke(
        &self,
        allowance: &AllowanceId,
        reason: RevocationReason,
    ) -> Result<Revocation, ServerError> {
        let mut tx = self.db.begin().await?;
        if !rows::escrow_exists(&mut tx, allowance).await? {
            return Err(ServerError::NoAllowance(*allowance));
        }
        rows::lock_feeds(&mut tx).await?;
        let now = self.clock.now();
        let rev = Revocation::issue(&self.issuer, *allowance, reason, now);
        let rev = rows::insert_revocation(&mut tx, &rev, now).await?;
        let holder = rows::escrow_holder(&mut tx, allowance).await?;
        tx.commit().await?;
        if let Some(holder) = holder {
            self.revoked(allowance, &holder, &rev);
        }
        Ok(rev)
    }

    /// A wallet's own account statement, asked with a signed wallet request.
    pub async fn wallet_statement(
        &self,
        req: &WalletRequest,
    ) -> Result<(u64, Vec<db::Entry>), ServerError> {
        if req.action() != WalletAction::Statement {
            return Err(RequestError::NotStatement.into());
        }
        self.spend_nonce(req).await?;
        self.statement(&req.body().device)
            .await
            .map_err(|e| match e {
                ServerError::NoAccount(_) => ServerError::NoDeviceAccount,
                e => e,
            })
    }

    /// Returns the unspent escrow of every allowance past its settle-by time to its holder,
    /// and forgets wallet-request nonces too old to be replayed.
    pub async fn release_expired(&self) -> Result<Vec<(AllowanceId, u64)>, ServerError> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let mut out = Vec::new();
        for (id, holder) in rows::expired_escrows(&mut tx, now, RELEASES_PER_ROUND).await? {
            let Some(unspent) = rows::release_escrow(&mut tx, &id).await? else {
                continue;
            };
            if unspent > 0 {
                db::transfer(
                    &mut tx,
                    &escrow(&id),
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
        db::accounts::forget_nonces(&mut tx, now.saturating_sub(2 * REQUEST_WINDOW_SECS + 60))
            .await?;
        tx.commit().await?;
        Ok(out)
    }
}
