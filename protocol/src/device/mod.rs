//! The device: one sans-IO state machine for everything a meshpay device does. It pays and
//! takes payments, makes payment requests, carries bundles and syncs them with peers, and acts
//! on what arrives (receipts, spend notices, fraud proofs, revocations). It owns the
//! [`Wallet`], the [`SpendBook`], the [`BundleStore`] and the sync [`Session`]s and composes
//! them; it reads no clock, no disk and no network.
//!
//! Two drivers run it: the node's tokio actor (real links, SQLite and sled) and the
//! simulator's event queue (a virtual clock, in-memory links). Both feed the same inputs and
//! carry out the same outputs, so a feature works in both or in neither.
//!
//! ## Driving contract
//!
//! Inputs are method calls, each with the time: [`Now`] holds a monotonic clock in
//! milliseconds for timers and the wall-clock time in seconds that IOUs, requests and
//! expiries are judged by.
//!
//! - [`Device::start`] once, before anything else: arms the timers.
//! - [`Device::handle_request`] for every request frame a peer sent, with an id the driver
//!   uses to send the answer back; [`Device::handle_response`] for the answer (or the
//!   failure) of every [`Output::Request`] the device asked to send.
//! - [`Device::peer_up`] / [`Device::peer_down`] as links connect and disconnect.
//! - [`Device::command`] for the user's commands; each carries an [`OpId`] and ends with
//!   exactly one [`Event::Done`] for it.
//! - [`Device::handle_timeout`] when the deadline of [`Device::poll_timeout`] has passed. A
//!   spurious or early call does nothing harmful: timers that are not due stay armed.
//!
//! **After every input, drain [`Device::poll_output`] until it returns `None`**, carrying out
//! each output in order:
//!
//! - [`Output::Commit`]: write the [`Change`] durably, then report the result with
//!   [`Device::committed`] **before polling the next output or feeding any other input**.
//!   Outputs that depend on a write (the IOU sent after its spend is committed, the ack after
//!   the payment is stored) are only produced after it is reported written; on a failed write
//!   the device changes nothing it has not already reported and answers with an error. This is
//!   the judge–persist–adopt contract of the wallet and the spend book, moved up one level.
//! - [`Output::Request`]: send the frame to the peer as a request and report the answer with
//!   [`Device::handle_response`] later (other inputs may come in between).
//! - [`Output::Reply`]: send the answer frame for the request the driver gave that id to; with
//!   `then_drop`, disconnect the peer after sending it (it broke the rules).
//! - [`Output::Disconnect`]: drop the link to a peer.
//! - [`Output::Event`]: tell the user, log, or measure.
//!
//! Then read [`Device::poll_timeout`] for the next deadline.
//!
//! Nothing here panics on peer input, and every pool a peer can grow is capped: open requests
//! per peer, sync sessions per peer, the bundle store's quotas.

mod carry;
mod pay;
mod state;
mod take;
#[cfg(test)]
mod tests;

pub use carry::ImportReport;
pub use carry::contact;
pub use state::{
    AnsweredBy, Change, Learned, MeshWrite, OpenRequest, PayOutcome, Put, ReceivedPayment,
    SentPayment, SentStatus,
};

use crate::bundle::{Content, FileError};
use crate::iou::{FraudProof, SpendNotice};
use crate::keys::{DeviceKey, DeviceSecret, IssuerId, PrintableKey as _};
use crate::message::{ErrorCode, Request};
use crate::objects::{
    AllowanceCert, AllowanceId, Amount, Hash, IssuerDescriptor, Nonce, PaymentRequest, Reason,
    SettlementReceipt, UnixTime,
};
use crate::payee::SpendBook;
use crate::store::BundleStore;
use crate::sync::{Routing, Session};
use crate::wallet::{PayError, Wallet};
use rand_core::{CryptoRngCore, RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The time of an input: a monotonic clock for timers and the wall clock for the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (from any origin); deadlines are in this clock.
    pub mono: u64,
    /// Wall-clock Unix seconds: signed into IOUs and judged against expiries.
    pub unix: UnixTime,
}

/// The id of a command, chosen by the driver; its [`Event::Done`] carries it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// The id of an outgoing request, chosen by the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// The id of an incoming request, chosen by the driver; the [`Output::Reply`] carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyId(pub u64);

/// The id of a write; [`Device::committed`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitId(pub u64);

/// A failed write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommitError {
    /// Whether the main write went through and only what follows it failed (the restore
    /// sentinel after a spend): the state is changed, but nothing may be sent.
    pub committed: bool,
    /// What failed.
    pub message: String,
}

/// Something for the driver to carry out, in order.
// A write is moved once, from the device to the driver: boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Write this durably, then report with [`Device::committed`] before anything else.
    Commit {
        /// Its id.
        id: CommitId,
        /// What to write.
        change: Change,
    },
    /// Send this request frame to `to`; report the answer with [`Device::handle_response`].
    Request {
        /// Its id.
        id: RequestId,
        /// The peer.
        to: DeviceKey,
        /// The encoded [`Request`].
        frame: Vec<u8>,
    },
    /// Answer the incoming request the driver called `to`.
    Reply {
        /// The driver's id for the request.
        to: ReplyId,
        /// The encoded [`crate::message::Response`].
        frame: Vec<u8>,
        /// Disconnect the peer once the answer is sent: it broke the rules.
        then_drop: bool,
    },
    /// Drop the link to this peer.
    Disconnect(DeviceKey),
    /// Something happened.
    Event(Event),
}

/// What happened, for the user, the log or a measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A command ended.
    Done {
        /// The command.
        op: OpId,
        /// Its answer, or why it failed.
        result: Result<Answer, DeviceError>,
    },
    /// A payment was accepted and acked.
    Received {
        /// The payer's link.
        from: DeviceKey,
        /// The IOU.
        iou: crate::iou::Iou,
    },
    /// An incoming IOU was refused.
    Refused {
        /// The peer that sent it.
        from: DeviceKey,
        /// Why.
        reason: Reason,
    },
    /// An automatic re-send of a pending payment got this answer.
    Resent(PayOutcome),
    /// An admitted bundle taught the device something.
    Learned(Learned),
    /// The issuer's decision on one of this device's payments is now known.
    Settled {
        /// The IOU.
        iou: Hash,
        /// The decision.
        status: crate::objects::ReceiptStatus,
    },
    /// A sync session with a peer ended.
    Synced {
        /// The peer.
        peer: DeviceKey,
        /// Bundles taken from it.
        took: usize,
        /// Bundles handed to it.
        gave: usize,
    },
    /// A sync session with a peer failed.
    SyncFailed {
        /// The peer.
        peer: DeviceKey,
        /// Why.
        why: String,
    },
    /// A peer broke the rules and is dropped.
    Misbehaved {
        /// The peer.
        peer: DeviceKey,
        /// What it did.
        what: String,
    },
    /// A write failed; the device carried on without it (bundles, settlement marks: the
    /// mesh holds other copies and the next round repeats them).
    WriteFailed {
        /// What failed.
        why: String,
    },
}

/// A user's command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Pay a request (from a QR code or text). Paying it again sends the same IOU again.
    Pay {
        /// The request.
        request: PaymentRequest,
        /// Idempotency key: a payment made under it before is answered instead.
        key: Option<String>,
    },
    /// Ask the connected peer `payee` for a request of `amount` and pay it.
    PayPeer {
        /// The payee.
        payee: DeviceKey,
        /// Minor units.
        amount: Amount,
        /// Currency.
        currency: String,
        /// Memo for the payee.
        memo: String,
        /// Pay even if the same payment was made moments ago.
        again: bool,
        /// Idempotency key.
        key: Option<String>,
    },
    /// Make a payment request to show.
    Request {
        /// Minor units.
        amount: Amount,
        /// Currency.
        currency: String,
        /// Memo.
        memo: String,
    },
    /// Trust an issuer.
    Trust(IssuerDescriptor),
    /// Add an allowance certificate issued to this device.
    AddAllowance(AllowanceCert),
    /// Sync with every connected peer now.
    SyncAll,
    /// Take in a bundle file.
    Import(Vec<u8>),
    /// Receipts from `issuer` (this device acting as its gateway, or reading its feed):
    /// they settle this device's payments, and with `carry` they go into the mesh too.
    Receipts {
        /// The issuer.
        issuer: IssuerId,
        /// Its receipts.
        receipts: Vec<SettlementReceipt>,
        /// Put them into the mesh for others.
        carry: bool,
    },
    /// Fraud proofs and revocations from `issuer`'s feeds, to put into the mesh. Others'
    /// are left out: a server cannot use a gateway to spread another issuer's alerts.
    Alerts {
        /// The issuer.
        issuer: IssuerId,
        /// Fraud proofs and revocations.
        alerts: Vec<Content>,
    },
}

/// What a command answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// A payment's state.
    Paid(PayOutcome),
    /// The request made.
    Requested(PaymentRequest),
    /// The issuer is trusted.
    Trusted,
    /// The allowance is held (`new`: it was not before).
    AllowanceAdded {
        /// Whether it is new.
        new: bool,
    },
    /// Sync with the connected peers ended.
    Synced {
        /// Peers synced with.
        peers: usize,
        /// Bundles taken.
        took: usize,
        /// Bundles given.
        gave: usize,
    },
    /// A bundle file was taken in.
    Imported(ImportReport),
    /// Receipts taken.
    Receipts {
        /// Final receipts of the issuer among them.
        taken: usize,
        /// This device's payments whose settlement changed.
        updated: Vec<Hash>,
        /// Receipts new to the mesh store.
        carried: usize,
    },
    /// Alerts taken.
    Alerts {
        /// New to the mesh store.
        added: usize,
    },
}

/// Why a command failed. Its `Display` is the line a user reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// A wallet rule refused the payment; nothing was spent.
    #[error("{0}")]
    Pay(#[from] PayError),
    /// An idempotency key came again for a different payment.
    #[error(
        "the idempotency key {key:?} was used for another payment ({amount} {currency} to {payee})"
    )]
    KeyReused {
        /// The key.
        key: String,
        /// The payment made under it.
        amount: Amount,
        /// Its currency.
        currency: String,
        /// Its payee, short form.
        payee: String,
    },
    /// The issuer is not trusted.
    #[error("issuer {0} is not trusted: `meshpay trust` its descriptor first")]
    Untrusted(String),
    /// The allowance names another holder.
    #[error("this allowance belongs to {0}, not to this device")]
    NotMine(String),
    /// A signature does not verify.
    #[error("the {0}'s signature does not verify")]
    BadSignature(&'static str),
    /// The allowance was spent from by an earlier copy of this wallet.
    #[error(
        "allowance {0} was spent from by an earlier copy of this wallet and cannot be used again; get a fresh one"
    )]
    SpentByEarlierCopy(AllowanceId),
    /// The peer could not be reached.
    #[error("{0}")]
    Link(String),
    /// The peer refused, or answered wrongly.
    #[error("the peer answered wrongly: {0}")]
    Peer(String),
    /// The write failed; nothing was changed.
    #[error("{0}")]
    Storage(String),
    /// The spend was written but the restore sentinel was not: the payment was not sent
    /// (it is re-sent as pending once the sentinel can be written... or on the next start).
    #[error("cannot write the restore sentinel: {0}")]
    Sentinel(String),
    /// A bundle file is broken or too large; nothing was taken.
    #[error(transparent)]
    File(#[from] FileError),
    /// The input does not pass the wire format's rules.
    #[error("{0}")]
    Invalid(#[from] crate::codec::DecodeError),
    /// This device is a relay: it carries bundles and takes no payments.
    #[error("this node is a relay: it carries bundles and makes no payments")]
    Relay,
}

/// Limits and cadences of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// A relay carries bundles and takes no payments.
    pub relay: bool,
    /// Record routing.
    pub routing: Routing,
    /// Bytes of bundles handed over per sync session at most.
    pub sync_budget: u64,
    /// How long a payment request stays open, seconds.
    pub request_ttl_secs: u64,
    /// Most unpaid requests one peer may have asked for.
    pub max_open_asks_per_peer: usize,
    /// Most unpaid requests in all.
    pub max_open_requests: usize,
    /// Re-send pending payments to connected payees this often (ms); `None`: only when a
    /// payee connects.
    pub resend_every: Option<u64>,
    /// Sync with every connected peer this often (ms), and drop expired bundles; `None`:
    /// only when a peer connects or on command.
    pub sync_every: Option<u64>,
    /// How long after an automatic re-send got a payment acknowledged the same `PayPeer` is
    /// taken as a retry of it rather than a new payment, seconds.
    pub retry_window_secs: u64,
    /// Steps one sync session may take before it is abandoned (a peer that never closes).
    pub max_session_steps: u32,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            relay: false,
            routing: Routing::Epidemic,
            sync_budget: 4 << 20,
            request_ttl_secs: 900,
            max_open_asks_per_peer: 16,
            max_open_requests: 10_000,
            resend_every: Some(30_000),
            sync_every: Some(10_000),
            retry_window_secs: 300,
            max_session_steps: 100_000,
        }
    }
}

/// A device's durable state, read back by the driver at start-up.
pub struct DeviceInit {
    /// The device key.
    pub secret: DeviceSecret,
    /// The wallet, opened with its restore check ([`Wallet::open`]).
    pub wallet: Wallet,
    /// Allowances an earlier copy of this wallet spent from (the restore sentinel's list).
    pub spent: BTreeSet<AllowanceId>,
    /// Trusted issuers.
    pub issuers: Vec<IssuerDescriptor>,
    /// Certificates of other wallets' allowances learned from payments.
    pub certs: Vec<AllowanceCert>,
    /// Spend notices kept with received payments.
    pub notices: Vec<SpendNotice>,
    /// Fraud proofs kept.
    pub frauds: Vec<FraudProof>,
    /// Payments made.
    pub sent: Vec<SentPayment>,
    /// Payments received.
    pub received: Vec<ReceivedPayment>,
    /// Unpaid requests.
    pub requests: Vec<OpenRequest>,
    /// The bundle store, restored.
    pub store: BundleStore,
    /// Seed of the device's own random choices (request nonces, session salts).
    pub seed: [u8; 32],
    /// Randomness for secrets (the ephemeral keys that seal records): the OS's on a node; a
    /// seeded generator in a simulation.
    pub secrets: Box<dyn CryptoRngCore + Send>,
}

/// What the device does once a write is reported.
enum Then {
    /// A write the device carries on without if it fails.
    Tolerated,
    /// Answer a request (with `failed` instead if the write failed).
    Reply {
        to: ReplyId,
        frame: Vec<u8>,
        failed: Vec<u8>,
        then_drop: bool,
    },
    /// Payer: the spend is written.
    Spent(Box<pay::Spending>),
    /// Payee: the payment is written.
    Received(Box<take::Receiving>),
    /// Payee: the request is written.
    Requested(Box<take::Requesting>),
    /// Payee: the proof of a fork found at payment is written.
    Forked(Box<take::Forked>),
    /// Payer: the answer to a sent IOU is written.
    Answered(Box<pay::Answering>),
    /// An allowance is written.
    Allowance { op: OpId, cert: AllowanceCert },
    /// An issuer is written.
    Trusted {
        op: OpId,
        descriptor: IssuerDescriptor,
    },
    /// The mesh changes of a step are written: carry on with the step.
    Mesh(Box<carry::AfterMesh>),
}

/// The device.
pub struct Device {
    key: DeviceSecret,
    me: DeviceKey,
    config: DeviceConfig,
    wallet: Wallet,
    book: SpendBook,
    store: BundleStore,
    issuers: BTreeMap<IssuerId, IssuerDescriptor>,
    spent: BTreeSet<AllowanceId>,
    /// Allowances whose fraud proof is kept durably.
    frauds_kept: BTreeSet<AllowanceId>,
    sent: BTreeMap<Hash, SentPayment>,
    /// Sent payments by (payee, request nonce), and by idempotency key.
    sent_for: BTreeMap<(DeviceKey, Nonce), Hash>,
    sent_by_key: BTreeMap<String, Hash>,
    /// Sent payments in the order made: (created, sequence) → IOU id.
    sent_order: BTreeMap<(UnixTime, u64), Hash>,
    received: BTreeMap<Hash, ReceivedPayment>,
    requests: BTreeMap<Nonce, OpenRequest>,
    peers: BTreeSet<DeviceKey>,
    gateway_for: Vec<IssuerId>,
    rng: rand_chacha::ChaCha20Rng,
    secrets: Secrets,
    outputs: VecDeque<Output>,
    then: BTreeMap<CommitId, Then>,
    exchanges: BTreeMap<RequestId, pay::Exchange>,
    initiators: BTreeMap<DeviceKey, carry::Initiator>,
    responders: BTreeMap<DeviceKey, Session>,
    sync_ops: BTreeMap<OpId, carry::SyncAll>,
    next_id: u64,
    next_resend: Option<u64>,
    next_sync: Option<u64>,
    next_purge: Option<u64>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("me", &self.me)
            .field("sent", &self.sent.len())
            .field("received", &self.received.len())
            .field("requests", &self.requests.len())
            .field("bundles", &self.store.len())
            .finish_non_exhaustive()
    }
}

/// The randomness for secrets, as a sized generator.
struct Secrets(Box<dyn CryptoRngCore + Send>);

impl RngCore for Secrets {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl rand_core::CryptoRng for Secrets {}

/// How often unpaid requests that expired a day ago are forgotten.
const PURGE_EVERY_MS: u64 = 3_600_000;

impl Device {
    /// A device from its durable state. The spend book is rebuilt from the certificates,
    /// notices, proofs and payments given.
    pub fn new(init: DeviceInit, config: DeviceConfig) -> Self {
        let me = init.secret.public();
        let issuers: BTreeMap<IssuerId, IssuerDescriptor> = init
            .issuers
            .into_iter()
            .map(|d| (d.body().issuer, d))
            .collect();
        let mut book = SpendBook::new(issuers.keys().copied());
        for cert in &init.certs {
            let _ = book.add_certificate(cert);
        }
        for notice in &init.notices {
            let _ = book.observe_notice(notice);
        }
        for proof in &init.frauds {
            let _ = book.add_fraud_proof(proof);
        }
        for r in &init.received {
            if let Some(cert) = book.certificate(&r.iou.allowance).cloned() {
                book.record_payment(&r.iou, &cert);
            }
        }
        let frauds_kept = init.frauds.iter().map(FraudProof::allowance).collect();
        let mut device = Self {
            frauds_kept,
            key: init.secret,
            me,
            config,
            wallet: init.wallet,
            book,
            store: init.store,
            issuers,
            spent: init.spent,
            sent: BTreeMap::new(),
            sent_for: BTreeMap::new(),
            sent_by_key: BTreeMap::new(),
            sent_order: BTreeMap::new(),
            received: init.received.into_iter().map(|r| (r.iou.id(), r)).collect(),
            requests: init
                .requests
                .into_iter()
                .map(|r| (r.request.nonce, r))
                .collect(),
            peers: BTreeSet::new(),
            gateway_for: Vec::new(),
            rng: rand_chacha::ChaCha20Rng::from_seed(init.seed),
            secrets: Secrets(init.secrets),
            outputs: VecDeque::new(),
            then: BTreeMap::new(),
            exchanges: BTreeMap::new(),
            initiators: BTreeMap::new(),
            responders: BTreeMap::new(),
            sync_ops: BTreeMap::new(),
            next_id: 0,
            next_resend: None,
            next_sync: None,
            next_purge: None,
        };
        for s in init.sent {
            device.remember_sent(s);
        }
        device
    }

    /// Arms the timers. Call once, before any other input.
    pub fn start(&mut self, now: Now) {
        self.next_resend = self.config.resend_every.map(|p| now.mono + p);
        self.next_sync = self.config.sync_every.map(|p| now.mono + p);
        self.next_purge = Some(now.mono);
    }

    /// This device's key.
    pub fn key(&self) -> DeviceKey {
        self.me
    }

    /// The wallet.
    pub fn wallet(&self) -> &Wallet {
        &self.wallet
    }

    /// The spend book.
    pub fn book(&self) -> &SpendBook {
        &self.book
    }

    /// The bundle store.
    pub fn store(&self) -> &BundleStore {
        &self.store
    }

    /// Trusted issuers.
    pub fn issuers(&self) -> &BTreeMap<IssuerId, IssuerDescriptor> {
        &self.issuers
    }

    /// Payments made, by IOU id.
    pub fn sent(&self) -> &BTreeMap<Hash, SentPayment> {
        &self.sent
    }

    /// Payments received, by IOU id.
    pub fn received(&self) -> &BTreeMap<Hash, ReceivedPayment> {
        &self.received
    }

    /// Unpaid requests, by nonce.
    pub fn requests(&self) -> &BTreeMap<Nonce, OpenRequest> {
        &self.requests
    }

    /// Connected peers.
    pub fn peers(&self) -> &BTreeSet<DeviceKey> {
        &self.peers
    }

    /// The configuration.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The issuers this device reached lately as a gateway (told to peers in sync sessions,
    /// so records for them flow here).
    pub fn gateway_for(&self) -> &[IssuerId] {
        &self.gateway_for
    }

    /// Sets the issuers this device is a gateway for.
    pub fn set_gateway_for(&mut self, issuers: Vec<IssuerId>) {
        self.gateway_for = issuers;
    }

    /// The next output to carry out, in order. See the driving contract.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next deadline (monotonic ms) at which [`Device::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<u64> {
        [self.next_resend, self.next_sync, self.next_purge]
            .into_iter()
            .flatten()
            .min()
    }

    /// The timers due at `now` fire: re-sends of pending payments to connected payees, a sync
    /// with every connected peer (after dropping expired bundles), forgetting requests that
    /// expired a day ago. Timers not due are left as they are.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.next_resend.is_some_and(|t| t <= now.mono) {
            self.next_resend = self.config.resend_every.map(|p| now.mono + p);
            let payees: BTreeSet<DeviceKey> = self
                .pending()
                .map(|s| s.iou.payee)
                .filter(|p| self.peers.contains(p))
                .collect();
            for p in payees {
                self.resend_pending(now, &p);
            }
        }
        if self.next_sync.is_some_and(|t| t <= now.mono) {
            self.next_sync = self.config.sync_every.map(|p| now.mono + p);
            self.store.expire(now.unix);
            self.flush_mesh(now, Then::Tolerated);
            let peers: Vec<DeviceKey> = self.peers.iter().copied().collect();
            for p in peers {
                self.sync_with(now, p, None);
            }
        }
        if self.next_purge.is_some_and(|t| t <= now.mono) {
            self.next_purge = Some(now.mono + PURGE_EVERY_MS);
            let before = now.unix.saturating_sub(86_400);
            let stale: Vec<Nonce> = self
                .requests
                .values()
                .filter(|r| r.request.expires < before)
                .map(|r| r.request.nonce)
                .collect();
            if !stale.is_empty() {
                for n in stale {
                    self.requests.remove(&n);
                }
                self.commit(Change::RequestsPurged { before }, Then::Tolerated);
            }
        }
    }

    /// A link to `peer` came up: pending payments to it are sent again, then a sync runs.
    pub fn peer_up(&mut self, now: Now, peer: DeviceKey) {
        self.peers.insert(peer);
        self.resend_pending(now, &peer);
        self.sync_with(now, peer, None);
    }

    /// The link to `peer` went down: its unfinished incoming session is forgotten.
    pub fn peer_down(&mut self, _now: Now, peer: DeviceKey) {
        self.peers.remove(&peer);
        self.responders.remove(&peer);
    }

    /// A user's command. It ends with one [`Event::Done`] carrying `op`.
    pub fn command(&mut self, now: Now, op: OpId, cmd: Command) {
        match cmd {
            Command::Pay { request, key } => self.pay_request(now, Some(op), &request, key),
            Command::PayPeer {
                payee,
                amount,
                currency,
                memo,
                again,
                key,
            } => self.pay_peer(now, op, payee, amount, currency, &memo, again, key),
            Command::Request {
                amount,
                currency,
                memo,
            } => self.make_request(now, amount, &currency, &memo, None, Ok(op)),
            Command::Trust(d) => self.trust(now, op, d),
            Command::AddAllowance(cert) => self.add_allowance(now, op, cert),
            Command::SyncAll => self.sync_all(now, op),
            Command::Import(file) => self.import(now, op, &file),
            Command::Receipts {
                issuer,
                receipts,
                carry,
            } => self.take_receipts(now, op, issuer, &receipts, carry),
            Command::Alerts { issuer, alerts } => self.take_alerts(now, op, issuer, alerts),
        }
    }

    /// A peer's request frame. The answer comes out as an [`Output::Reply`] to `reply`.
    pub fn handle_request(&mut self, now: Now, reply: ReplyId, from: DeviceKey, frame: &[u8]) {
        match Request::decode(frame) {
            Ok(Request::Sync(m)) => self.on_sync(now, reply, from, &m),
            Ok(Request::Ask(ask)) => self.on_ask(now, reply, from, &ask),
            Ok(Request::Pay(pay)) => self.on_pay(now, reply, from, *pay),
            Err(e) => {
                self.event(Event::Misbehaved {
                    peer: from,
                    what: format!("unreadable request: {e}"),
                });
                self.reply_error(reply, ErrorCode::BadMessage, true);
            }
        }
    }

    /// The answer to one of the device's requests, or why there is none.
    pub fn handle_response(&mut self, now: Now, id: RequestId, answer: Result<Vec<u8>, String>) {
        let Some(exchange) = self.exchanges.remove(&id) else {
            return;
        };
        match exchange {
            pay::Exchange::Sync { peer } => self.on_sync_answer(now, peer, answer),
            other => self.on_pay_answer(now, other, answer),
        }
    }

    /// A write's result. Call after every [`Output::Commit`], before anything else.
    pub fn committed(&mut self, now: Now, id: CommitId, result: Result<(), CommitError>) {
        if let Some(then) = self.then.remove(&id) {
            self.resume(now, then, result);
        }
    }

    /// Carries on after a write (or at once, when there was nothing to write).
    fn resume(&mut self, now: Now, then: Then, result: Result<(), CommitError>) {
        match (then, result) {
            (Then::Tolerated, Ok(())) => {}
            (Then::Tolerated, Err(e)) => self.event(Event::WriteFailed { why: e.message }),
            (
                Then::Reply {
                    to,
                    frame,
                    failed,
                    then_drop,
                },
                r,
            ) => {
                let frame = if r.is_ok() { frame } else { failed };
                self.reply(to, frame, then_drop);
            }
            (Then::Spent(s), r) => self.after_spend(now, *s, r),
            (Then::Received(r), result) => self.after_received(now, *r, &result),
            (Then::Requested(r), result) => self.after_request(now, *r, result),
            (Then::Forked(f), result) => self.after_fork(now, *f, &result),
            (Then::Answered(a), result) => self.after_answer(*a, result),
            (Then::Allowance { op, cert }, Ok(())) => {
                let new = !self.wallet.allowances().contains_key(&cert.id());
                self.wallet.add_allowance(cert);
                self.done(op, Ok(Answer::AllowanceAdded { new }));
            }
            (Then::Trusted { op, descriptor }, Ok(())) => {
                let issuer = descriptor.body().issuer;
                self.issuers.insert(issuer, descriptor);
                self.book.trust(issuer);
                self.done(op, Ok(Answer::Trusted));
            }
            (Then::Allowance { op, .. } | Then::Trusted { op, .. }, Err(e)) => {
                self.done(op, Err(DeviceError::Storage(e.message)));
            }
            (Then::Mesh(after), result) => self.after_mesh(now, *after, result),
        }
    }

    /// Trusts an issuer after checking its descriptor's self-signature.
    fn trust(&mut self, now: Now, op: OpId, d: IssuerDescriptor) {
        if d.verify().is_err() {
            self.done(op, Err(DeviceError::BadSignature("issuer descriptor")));
            return;
        }
        self.commit(
            Change::Trusted {
                descriptor: d.clone(),
                at: now.unix,
            },
            Then::Trusted { op, descriptor: d },
        );
    }

    /// Adds an allowance issued to this device by a trusted issuer.
    fn add_allowance(&mut self, now: Now, op: OpId, cert: AllowanceCert) {
        let b = cert.body();
        let refusal = if b.holder != self.me {
            Some(DeviceError::NotMine(b.holder.short()))
        } else if !self.issuers.contains_key(&b.issuer) {
            Some(DeviceError::Untrusted(b.issuer.short()))
        } else if cert.verify().is_err() {
            Some(DeviceError::BadSignature("allowance certificate"))
        } else if !self.wallet.allowances().contains_key(&cert.id())
            && self.spent.contains(&cert.id())
        {
            // Its counters may already be in other hands (SPEC.md §7).
            Some(DeviceError::SpentByEarlierCopy(cert.id()))
        } else {
            None
        };
        if let Some(e) = refusal {
            self.done(op, Err(e));
            return;
        }
        self.commit(
            Change::Allowance {
                cert: cert.clone(),
                at: now.unix,
            },
            Then::Allowance { op, cert },
        );
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn commit(&mut self, change: Change, then: Then) {
        let id = CommitId(self.fresh_id());
        self.then.insert(id, then);
        self.outputs.push_back(Output::Commit { id, change });
    }

    fn request(&mut self, to: DeviceKey, frame: Vec<u8>, exchange: pay::Exchange) {
        let id = RequestId(self.fresh_id());
        self.exchanges.insert(id, exchange);
        self.outputs.push_back(Output::Request { id, to, frame });
    }

    fn reply(&mut self, to: ReplyId, frame: Vec<u8>, then_drop: bool) {
        self.outputs.push_back(Output::Reply {
            to,
            frame,
            then_drop,
        });
    }

    fn reply_error(&mut self, to: ReplyId, code: ErrorCode, then_drop: bool) {
        self.reply(
            to,
            crate::message::Response::Error(code).encode(),
            then_drop,
        );
    }

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    fn done(&mut self, op: OpId, result: Result<Answer, DeviceError>) {
        self.event(Event::Done { op, result });
    }

    fn fresh_nonce(&mut self) -> Nonce {
        let mut n = [0u8; 16];
        self.rng.fill_bytes(&mut n);
        Nonce(n)
    }
}
