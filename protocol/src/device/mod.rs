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
mod memory;
mod pay;
mod state;
mod take;
#[cfg(test)]
mod tests;
mod types;

pub use carry::ImportReport;
pub use memory::{Exchange, Flight, contact};
pub use state::{
    AnsweredBy, Change, Learned, MeshWrite, OpenRequest, PayOutcome, Put, ReceivedPayment,
    SentPayment, SentStatus,
};
pub use types::{
    Answer, Command, CommitError, CommitId, DeviceConfig, DeviceError, Event, Now, OpId, Output,
    ReplyId, RequestId,
};

use crate::iou::{FraudProof, SpendNotice};
use crate::keys::{DeviceKey, DeviceSecret, IssuerId, PrintableKey as _};
use crate::message::{ErrorCode, Request};
use crate::objects::{AllowanceCert, AllowanceId, Hash, IssuerDescriptor, Nonce, UnixTime};
use crate::payee::SpendBook;
use crate::store::BundleStore;
use crate::sync::Session;
use crate::wallet::Wallet;
use rand_core::{CryptoRngCore, RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

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
    /// Peers met anew whose first sync session has not started yet (a PRoPHET encounter, a
    /// MaxProp meeting).
    fresh: BTreeSet<DeviceKey>,
    gateway_for: Vec<IssuerId>,
    rng: rand_chacha::ChaCha20Rng,
    secrets: Secrets,
    outputs: VecDeque<Output>,
    /// Writes handed to the driver and not yet reported, with what follows each: a few at a
    /// time (a step's writes are reported before the next step), so a list.
    then: Vec<(CommitId, Then)>,
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
            fresh: BTreeSet::new(),
            gateway_for: Vec::new(),
            rng: rand_chacha::ChaCha20Rng::from_seed(init.seed),
            secrets: Secrets(init.secrets),
            outputs: VecDeque::new(),
            then: Vec::new(),
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
        self.met(peer);
        self.resend_pending(now, &peer);
        self.sync_with(now, peer, None);
    }

    /// A new contact with `peer` began: the next sync session with it, either way, counts as
    /// an encounter under PRoPHET, spray-and-focus and MaxProp
    /// ([`crate::sync::SessionConfig`]).
    /// [`Device::peer_up`] does this itself; a driver that runs sessions through
    /// [`Exchange`] or [`contact`] calls it when a contact comes up.
    pub fn met(&mut self, peer: DeviceKey) {
        self.fresh.insert(peer);
    }

    /// The contact with `peer` ended: under MaxProp, the bundle bytes it moved are a sample
    /// of the hop-count threshold ([`crate::maxprop`]). [`Device::peer_down`] does this itself;
    /// a driver that runs sessions through [`Exchange`] or [`contact`] calls it when a contact
    /// ends.
    pub fn parted(&mut self, peer: DeviceKey) {
        self.store
            .likelihoods_mut()
            .parted(crate::prophet::device_endpoint(&peer));
    }

    /// The link to `peer` went down: its unfinished incoming session is forgotten.
    pub fn peer_down(&mut self, _now: Now, peer: DeviceKey) {
        self.parted(peer);
        self.peers.remove(&peer);
        self.fresh.remove(&peer);
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
        if let Some(at) = self.then.iter().position(|(c, _)| *c == id) {
            let (_, then) = self.then.swap_remove(at);
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
        self.then.push((id, then));
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
