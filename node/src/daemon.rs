//! The running node: wallet, spend book, storage and links, driven by link events and control
//! commands.
//!
//! Every payment follows the protocol crate's judge–persist–adopt contract: the payer commits
//! the IOU and its counter (and then the restore sentinel) before sending; the payee commits
//! the IOU, its sealed record and the ack before answering. Payments from this wallet are
//! serialised by the wallet lock; incoming payments by the spend-book lock.

use crate::config::{Config, Home, Sentinel};
use crate::issuer::{self, IssuerClient, IssuerError};
use crate::mesh::{Mesh, MeshError, SessionEnd};
use crate::store::{AnsweredBy, SentStatus, Store};
use meshpay_protocol::bundle::{Bundle, Content};
use meshpay_protocol::message::{Ask, ErrorCode, Pay, Request, Response};
use meshpay_protocol::payee::{SpendBook, Verdict};
use meshpay_protocol::store::{Origin, StoreConfig};
use meshpay_protocol::sync::{SessionConfig, SyncMessage};
use meshpay_protocol::wallet::{PayError, RestoreCheck, Wallet};
use meshpay_protocol::{
    AllowanceCert, DeviceKey, DeviceSecret, Iou, IssuerDescriptor, IssuerId, Nonce, PaymentAck,
    PaymentRequest, PrintableKey, Reason, SealedRecord, decode, encode,
};
use meshpay_transports::ble::{BleConfig, BleLink};
use meshpay_transports::p2p::{P2pConfig, P2pLink};
use meshpay_transports::{LinkError, LinkEvent, Links, PeerInfo};
use rand_core::{OsRng, RngCore};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, RwLock, mpsc};

/// Most open requests one peer may have asked this node for.
pub const MAX_OPEN_ASKS_PER_PEER: u64 = 16;
/// Most open requests this node keeps in all.
pub const MAX_OPEN_REQUESTS: u64 = 10_000;

/// Wall-clock seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Crash points for tests that prove durability (`MESHPAY_FAULT`). Each aborts the process,
/// like a power cut, at the named step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The payer aborts after committing an IOU, before sending it.
    PayerCrashAfterCommit,
    /// The payee aborts after committing a received IOU, before acking it.
    PayeeCrashAfterCommit,
}

impl Fault {
    fn from_env() -> Option<Self> {
        match std::env::var("MESHPAY_FAULT").ok()?.as_str() {
            "payer-crash-after-commit" => Some(Fault::PayerCrashAfterCommit),
            "payee-crash-after-commit" => Some(Fault::PayeeCrashAfterCommit),
            _ => None,
        }
    }
}

/// What became of a payment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PayOutcome {
    /// `acked`, `refused` or `pending`.
    pub status: &'static str,
    /// The IOU id.
    pub iou: String,
    /// The payee.
    pub payee: String,
    /// Amount in minor units.
    pub amount: u64,
    /// Currency.
    pub currency: String,
    /// The IOU's counter in its allowance.
    pub counter: u32,
    /// Refusal reason, or why it is still pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set when this answers a retry of an earlier payment instead of paying again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeated: Option<String>,
}

/// How long after an automatic re-send got a payment acknowledged the same `pay --to` is
/// taken as a retry of it rather than a new payment.
pub const RETRY_WINDOW_SECS: u64 = 300;

/// A command failure, shown to the user as one line.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A wallet rule refused the payment; nothing was spent.
    #[error("{0}")]
    Pay(#[from] PayError),
    /// Storage failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The peer could not be reached or did not answer.
    #[error("{0}")]
    Link(#[from] LinkError),
    /// The user's input is wrong.
    #[error("{0}")]
    Input(String),
    /// The peer answered something unexpected.
    #[error("the peer answered wrongly: {0}")]
    Peer(String),
    /// The issuer's server refused, could not be reached, or answered wrongly.
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    /// The mesh store could not write to disk.
    #[error("{0}")]
    Mesh(String),
    /// The restore sentinel could not be written: the payment was committed but not sent.
    #[error("cannot write the restore sentinel: {0}")]
    Sentinel(std::io::Error),
}

impl From<MeshError> for NodeError {
    fn from(e: MeshError) -> Self {
        NodeError::Mesh(e.to_string())
    }
}

/// The running node.
pub struct Node {
    /// This device's key.
    pub device: DeviceKey,
    secret: DeviceSecret,
    store: Store,
    _sled: sled::Db,
    mesh: Mesh,
    /// Peers an outgoing sync session is running with.
    syncing: std::sync::Mutex<BTreeSet<DeviceKey>>,
    /// Issuers this node reached recently as a gateway.
    gateway_for: RwLock<Vec<IssuerId>>,
    /// Gateway rounds run.
    gateway_rounds: AtomicU64,
    /// Records the issuer took no decision on: misses so far and the round to try again.
    upload_backoff: std::sync::Mutex<BTreeMap<meshpay_protocol::Hash, (u32, u64)>>,
    wallet: Mutex<Wallet>,
    book: Mutex<SpendBook>,
    issuers: RwLock<BTreeMap<IssuerId, IssuerDescriptor>>,
    links: Links,
    p2p: P2pLink,
    /// The Bluetooth LE link, when it runs.
    ble: Option<BleLink>,
    /// The GATT roles on BlueZ, held while they run.
    #[cfg(all(feature = "ble", target_os = "linux"))]
    gatt: std::sync::Mutex<Option<meshpay_transports::ble::gatt::Gatt>>,
    config: Config,
    sentinel: Sentinel,
    fault: Option<Fault>,
    /// The restore check made at start.
    pub restore: RestoreCheck,
    /// A relay: carries bundles, takes no payments.
    pub relay: bool,
}

/// A settlement server feed a gateway brings into the mesh: path, list key, item key, and
/// what an item is as a bundle.
type Feed = (
    &'static str,
    &'static str,
    &'static str,
    fn(&[u8], &IssuerId) -> Option<Content>,
);

/// Feed pages a gateway reads per feed and round; the rest waits for the next round.
const MAX_FEED_PAGES: usize = 100;

/// What a gateway round did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GatewayRound {
    /// Records uploaded.
    pub uploaded: usize,
    /// Final receipts received for them.
    pub receipts: usize,
    /// This wallet's payments whose settlement state changed.
    pub updated: usize,
    /// New fraud proofs and revocations put into the mesh.
    pub alerts: usize,
}

/// Options of `meshpay run` that override the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Listen addresses (replace the config's).
    pub listen: Vec<String>,
    /// Extra peers to dial.
    pub peers: Vec<String>,
    /// Switch mDNS off.
    pub no_mdns: bool,
    /// Act as a gateway to this settlement server (overrides `[mesh] gateway`).
    pub gateway: Option<String>,
    /// Run as a relay: carry bundles, take no payments.
    pub relay: bool,
    /// Mesh quota in kilobytes (overrides `[mesh] quota_mb`).
    pub quota_kb: Option<u64>,
    /// Run the Bluetooth LE link (as `[ble] enabled`).
    pub ble: bool,
}

impl Node {
    /// Opens the wallet in `home` with the device key unlocked by `passphrase`, starts the
    /// links, and returns the node and its link events.
    pub async fn start(
        home: &Home,
        passphrase: &str,
        opts: &RunOptions,
    ) -> anyhow::Result<(Arc<Self>, mpsc::Receiver<LinkEvent>)> {
        let config = Config::load(home)?;
        let quota_bytes = opts
            .quota_kb
            .map_or(config.mesh.quota_mb << 20, |kb| kb << 10);
        if !home.wallet_db().exists() {
            anyhow::bail!(
                "no wallet in {}: run `meshpay init` first (or pass --home)",
                home.dir.display()
            );
        }
        let store = Store::open(&home.wallet_db(), false).await?;
        let blob = store
            .meta("device_secret")
            .await?
            .ok_or_else(|| anyhow::anyhow!("the wallet has no device key"))?;
        let seed = crate::keystore::open::<32>(&blob, passphrase)?;
        let secret = DeviceSecret::from_seed(&seed);
        let device = secret.public();
        let sled_db = sled::Config::new()
            .path(home.mesh())
            .cache_capacity(8 << 20)
            .open()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the mesh store {} ({e}); is another meshpay daemon running on this home?",
                    home.mesh().display()
                )
            })?;
        let mesh = Mesh::open(
            &sled_db,
            StoreConfig {
                max_bytes: quota_bytes,
                max_bundles: usize::try_from(quota_bytes / 100).unwrap_or(usize::MAX),
                max_bytes_per_origin: (config.mesh.quota_per_peer_mb << 20).min(quota_bytes),
                issuers: None,
                bodies_in_memory: false,
                accept_messages: false,
            },
            config.mesh.routing()?,
            config.mesh.budget_kb << 10,
        )?;

        // Restore detection before anything can spend.
        let sentinel = Sentinel::new(&config.sentinel_dir(), &device.to_hex());
        let stored_epoch = store.epoch().await?;
        let sentinel_epoch = sentinel.read()?;
        let (wallet, restore) =
            Wallet::open(stored_epoch, store.allowances().await?, sentinel_epoch);
        if restore == RestoreCheck::Current {
            if sentinel_epoch != Some(wallet.epoch()) {
                sentinel.write(wallet.epoch())?;
            }
        } else {
            // Persist the retirement before the sentinel moves (SPEC.md §7).
            store.retire_all(wallet.epoch()).await?;
            sentinel.write(wallet.epoch())?;
            tracing::warn!(
                ?restore,
                "this wallet may be a restored copy: every allowance it held is retired; get a fresh allowance online"
            );
        }

        let issuers: BTreeMap<IssuerId, IssuerDescriptor> = store
            .issuers()
            .await?
            .into_iter()
            .map(|d| (d.body().issuer, d))
            .collect();
        let mut book = SpendBook::new(issuers.keys().copied());
        for cert in store.certs().await? {
            let _ = book.add_certificate(&cert);
        }
        for notice in store.notices().await? {
            let _ = book.observe_notice(&notice);
        }
        for (proof, _) in store.frauds().await? {
            let _ = book.add_fraud_proof(&proof);
        }
        for r in store.received().await? {
            if let Some(cert) = book.certificate(&r.iou.allowance).cloned() {
                book.record_payment(&r.iou, &cert);
            }
        }

        let mut listen = if opts.listen.is_empty() {
            config.network.listen.clone()
        } else {
            opts.listen.clone()
        };
        listen.dedup();
        let parse = |a: &String| {
            a.parse()
                .map_err(|e| anyhow::anyhow!("bad multiaddress {a}: {e}"))
        };
        let p2p_config = P2pConfig {
            listen: listen.iter().map(parse).collect::<anyhow::Result<_>>()?,
            peers: config
                .network
                .peers
                .iter()
                .chain(&opts.peers)
                .map(parse)
                .collect::<anyhow::Result<_>>()?,
            mdns: config.network.mdns && !opts.no_mdns,
            request_timeout: Duration::from_secs(config.network.request_timeout_secs),
            ..P2pConfig::default()
        };
        let (tx, rx) = mpsc::channel(1024);
        let p2p = P2pLink::start(&seed, &p2p_config, tx.clone())?;
        let mut links = Links::new();
        links.add(Arc::new(p2p.clone()));
        let ble = (opts.ble || config.ble.enabled).then(|| {
            let link = BleLink::new(
                &seed,
                BleConfig {
                    request_timeout: Duration::from_secs(config.ble.request_timeout_secs.max(1)),
                    ..BleConfig::default()
                },
                tx,
            );
            links.add(Arc::new(link.clone()));
            link
        });
        let node = Arc::new(Self {
            device,
            secret,
            store,
            _sled: sled_db,
            mesh,
            syncing: std::sync::Mutex::new(BTreeSet::new()),
            gateway_for: RwLock::new(Vec::new()),
            gateway_rounds: AtomicU64::new(0),
            upload_backoff: std::sync::Mutex::new(BTreeMap::new()),
            wallet: Mutex::new(wallet),
            book: Mutex::new(book),
            issuers: RwLock::new(issuers),
            links,
            p2p,
            ble,
            #[cfg(all(feature = "ble", target_os = "linux"))]
            gatt: std::sync::Mutex::new(None),
            config,
            sentinel,
            fault: Fault::from_env(),
            restore,
            relay: opts.relay,
        });
        let held: Vec<meshpay_protocol::Hash> = node.mesh.read(|s| s.ids().copied().collect());
        node.take_bundles(&held).await;
        Ok((node, rx))
    }

    /// Handles link events until the links stop.
    pub async fn serve_links(self: Arc<Self>, mut events: mpsc::Receiver<LinkEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                LinkEvent::Request { from, frame, reply } => {
                    let node = Arc::clone(&self);
                    tokio::spawn(async move {
                        match Request::decode(&frame) {
                            Ok(Request::Sync(m)) => match node.on_sync(&from, &m).await {
                                Ok(answer) => reply.send(Response::Sync(Box::new(answer)).encode()),
                                Err(MeshError::Sync(e)) => {
                                    tracing::warn!(peer = %from.short(), error = %e, "sync broke the rules; dropping the peer");
                                    reply.send_and_drop(
                                        Response::Error(ErrorCode::BadMessage).encode(),
                                    );
                                }
                                Err(e @ MeshError::Storage(_)) => {
                                    tracing::warn!(peer = %from.short(), error = %e, "sync step not served");
                                    reply.send(Response::Error(ErrorCode::Unavailable).encode());
                                }
                            },
                            Ok(req) => reply.send(node.answer(&from, req).await.encode()),
                            Err(e) => {
                                tracing::warn!(peer = %from.short(), error = %e, "unreadable request; dropping the peer");
                                reply
                                    .send_and_drop(Response::Error(ErrorCode::BadMessage).encode());
                            }
                        }
                    });
                }
                LinkEvent::PeerConnected(p) => {
                    tracing::info!(peer = %p.device.short(), link = p.link.name(), addr = %p.address, "peer connected");
                    let node = Arc::clone(&self);
                    tokio::spawn(async move {
                        node.resend_pending(&p.device).await;
                        if let Err(e) = node.sync_with(p.device).await {
                            tracing::info!(peer = %p.device.short(), error = %e, "sync did not finish");
                        }
                    });
                }
                LinkEvent::PeerDisconnected { device } => {
                    self.mesh.forget(&device);
                    tracing::info!(peer = %device.short(), "peer disconnected");
                }
                LinkEvent::PeerMisbehaved { device, what } => {
                    tracing::warn!(peer = %device.short(), %what, "peer broke the framing rules and was dropped");
                }
                LinkEvent::Listening { address } => tracing::info!(%address, "listening"),
                _ => {}
            }
        }
    }

    async fn answer(&self, from: &DeviceKey, req: Request) -> Response {
        if self.relay {
            // A relay holds no wallet: it neither asks for nor takes payments.
            return Response::Error(ErrorCode::Unsupported);
        }
        let r = match req {
            Request::Ask(ask) => self.on_ask(from, &ask).await,
            Request::Pay(pay) => self.on_pay(from, *pay).await,
            Request::Sync(_) => Ok(Response::Error(ErrorCode::Unsupported)),
        };
        r.unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not serve a request");
            Response::Error(ErrorCode::Unavailable)
        })
    }

    async fn on_ask(&self, from: &DeviceKey, ask: &Ask) -> Result<Response, NodeError> {
        let now = now();
        // Each ask gets a request of its own (a payer whose IOU was refused asks again and
        // must get a fresh nonce). Asks cost a durable write each: bound what one peer, and
        // all peers, can keep open. A request whose IOU was refused is closed and no longer
        // counts.
        let (open, by_peer) = self.store.open_requests(from, now).await?;
        if by_peer >= MAX_OPEN_ASKS_PER_PEER || open >= MAX_OPEN_REQUESTS {
            tracing::warn!(peer = %from.short(), by_peer, open, "too many open requests; ask refused");
            return Ok(Response::Error(if by_peer >= MAX_OPEN_ASKS_PER_PEER {
                ErrorCode::TooManyRequests
            } else {
                ErrorCode::Unavailable
            }));
        }
        let req = self
            .make_request(ask.amount, &ask.currency, &ask.memo, Some(from))
            .await?;
        Ok(Response::Request(req))
    }

    /// Makes and stores a new payment request.
    pub async fn new_request(
        &self,
        amount: u64,
        currency: &str,
        memo: &str,
    ) -> Result<PaymentRequest, NodeError> {
        self.make_request(amount, currency, memo, None).await
    }

    async fn make_request(
        &self,
        amount: u64,
        currency: &str,
        memo: &str,
        asked_by: Option<&DeviceKey>,
    ) -> Result<PaymentRequest, NodeError> {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let now = now();
        let mut req = PaymentRequest::new(
            self.device,
            amount,
            currency,
            Nonce(nonce),
            now + self.config.wallet.request_ttl_secs,
        );
        req.memo = memo.to_owned();
        // Name the accepted issuers when they fit the request's four slots; an empty list
        // means any issuer this node trusts (SPEC.md §4.4).
        let issuers = self.issuers.read().await;
        if issuers.len() <= 4 {
            req.issuers = issuers.keys().copied().collect();
        }
        drop(issuers);
        // Validate through the codec's own rules before storing.
        let req: PaymentRequest =
            decode(&encode(&req)).map_err(|e| NodeError::Input(e.to_string()))?;
        self.store.add_request(&req, asked_by, now).await?;
        Ok(req)
    }

    async fn on_pay(&self, from: &DeviceKey, pay: Pay) -> Result<Response, NodeError> {
        let iou = pay.iou;
        let now = now();
        let request = self.store.request(&iou.nonce).await?;
        let mut book = self.book.lock().await;
        let verdict =
            book.check_payment(&iou, pay.cert.as_ref(), request.as_ref(), &self.device, now);
        match verdict {
            Verdict::Accept => {
                let cert = pay
                    .cert
                    .filter(|c| c.id() == iou.allowance)
                    .or_else(|| book.certificate(&iou.allowance).cloned())
                    .expect("accepted IOUs have a certificate");
                let request = request.expect("accepted IOUs answer an open request");
                let issuer = self
                    .issuers
                    .read()
                    .await
                    .get(&cert.body().issuer)
                    .cloned()
                    .expect("accepted IOUs come from trusted issuers");
                let record = SealedRecord::seal(
                    &iou,
                    issuer.body().issuer,
                    &issuer.body().seal_key,
                    now,
                    cert.body().settle_by,
                    &mut OsRng,
                )
                .map_err(|e| NodeError::Peer(e.to_string()))?;
                let ack = PaymentAck::sign(&self.secret, iou.id(), now);
                self.store
                    .commit_received(&iou, &cert, &request, &record, &ack, now)
                    .await?;
                book.record_payment(&iou, &cert);
                drop(book);
                // Into the mesh: the record, to travel to a gateway; the spend notice, so a
                // fork is found before settlement.
                let copies = self.mesh.routing.initial_copies();
                for (bundle, copies) in [
                    (Bundle::new(Content::Record(record)), copies),
                    (Bundle::notice(cert.clone(), iou.notice()), 0),
                ] {
                    // The payment is committed in the wallet database, which a gateway round
                    // uploads from as well: a mesh store that cannot write delays nothing
                    // owed. The failure is counted and logged by the mesh.
                    let _ = self.mesh.insert(&bundle, Origin::Local, copies, now);
                }
                if self.fault == Some(Fault::PayeeCrashAfterCommit) {
                    std::process::abort();
                }
                tracing::info!(payer = %from.short(), amount = iou.amount, counter = iou.counter, "payment received");
                Ok(Response::Ack(ack))
            }
            Verdict::Duplicate => {
                let ack = self
                    .store
                    .received_ack(&iou.id())
                    .await?
                    .ok_or_else(|| NodeError::Peer("duplicate without a stored ack".into()))?;
                Ok(Response::Ack(ack))
            }
            Verdict::Reject(reason) => {
                drop(book);
                // The payer asked for this request and its IOU is refused: close it, so it
                // no longer counts against the payer's open asks. (Only the peer that asked
                // can close it; a request shown to all, asked by none, stays open.)
                self.store.close_asked_request(&iou.nonce, from).await?;
                tracing::warn!(payer = %from.short(), %reason, "payment refused");
                Ok(Response::Refused(reason))
            }
            Verdict::Fork(proof) => {
                self.store.add_fraud(&proof, now).await?;
                let _ = book.add_fraud_proof(&proof);
                // The proof travels first in the mesh, so every node refuses the allowance.
                let _ = self.mesh.insert(
                    &Bundle::new(Content::Fraud(Box::new((*proof).clone()))),
                    Origin::Local,
                    0,
                    now,
                );
                tracing::warn!(payer = %from.short(), allowance = %proof.allowance(), "double spend: fraud proof stored, allowance refused from now on");
                Ok(Response::Refused(Reason::CounterConflict))
            }
        }
    }

    /// Pays a request. Re-paying the same request re-sends the same IOU. With an idempotency
    /// `key`, a payment already made under it is answered instead (and a key used for another
    /// request is refused).
    pub async fn pay(
        &self,
        request: &PaymentRequest,
        key: Option<&str>,
    ) -> Result<PayOutcome, NodeError> {
        if let Some(k) = key {
            if let Some(sent) = self.store.sent_by_key(k).await? {
                if sent.iou.payee != request.payee || sent.iou.nonce != request.nonce {
                    return Err(NodeError::Input(format!(
                        "the idempotency key {k:?} was used for another payment ({} to {})",
                        sent.iou.amount,
                        sent.iou.payee.short()
                    )));
                }
            }
        }
        let iou = {
            let mut wallet = self.wallet.lock().await;
            if let Some(sent) = self.store.sent_for(&request.payee, &request.nonce).await? {
                if sent.status != SentStatus::Pending {
                    return Ok(outcome(&sent.iou, &sent.currency, sent.status, sent.reason));
                }
                sent.iou
            } else {
                let now = now();
                let spend = wallet.prepare(&self.secret, request, now)?;
                self.store
                    .commit_spend(&spend, &request.currency, &request.memo, key, now)
                    .await?;
                // Adopt the committed head first: whatever happens next, the next IOU of this
                // allowance takes the next counter.
                wallet.commit(&spend);
                if let Some(held) = wallet.allowances().get(&spend.iou.allowance) {
                    let _ = self.mesh.insert(
                        &Bundle::notice(held.cert.clone(), spend.iou.notice()),
                        Origin::Local,
                        0,
                        now,
                    );
                }
                if spend.next.counter == 1 {
                    self.sentinel
                        .record_spent(&spend.iou.allowance)
                        .map_err(NodeError::Sentinel)?;
                }
                self.sentinel
                    .write(spend.epoch)
                    .map_err(NodeError::Sentinel)?;
                spend.iou
            }
        };
        if self.fault == Some(Fault::PayerCrashAfterCommit) {
            std::process::abort();
        }
        Ok(self.deliver(&iou, &request.currency, AnsweredBy::Pay).await)
    }

    /// Sends a committed IOU and records the answer.
    async fn deliver(&self, iou: &Iou, currency: &str, by: AnsweredBy) -> PayOutcome {
        let cert: Option<AllowanceCert> = self
            .wallet
            .lock()
            .await
            .allowances()
            .get(&iou.allowance)
            .map(|a| a.cert.clone());
        let frame = Request::Pay(Box::new(Pay::new(iou.clone(), cert))).encode();
        let pending = |why: String| {
            let mut o = outcome(iou, currency, SentStatus::Pending, None);
            o.reason = Some(why);
            o
        };
        let answer = match self.links.request(&iou.payee, frame).await {
            Ok(a) => a,
            Err(e) => return pending(format!("{e}; it will be sent again when the payee is back")),
        };
        let result = match Response::decode(&answer) {
            Ok(Response::Ack(ack))
                if ack.body().iou == iou.id() && ack.verify(&iou.payee).is_ok() =>
            {
                self.store
                    .set_sent_outcome(&iou.id(), SentStatus::Acked, None, Some(&ack), by, now())
                    .await
                    .map(|()| outcome(iou, currency, SentStatus::Acked, None))
            }
            Ok(Response::Refused(reason)) => self
                .store
                .set_sent_outcome(
                    &iou.id(),
                    SentStatus::Refused,
                    Some(reason.name()),
                    None,
                    by,
                    now(),
                )
                .await
                .map(|()| {
                    outcome(
                        iou,
                        currency,
                        SentStatus::Refused,
                        Some(reason.name().to_owned()),
                    )
                }),
            Ok(Response::Error(code)) => return pending(code.to_string()),
            Ok(_) => return pending("the payee answered with an invalid ack".into()),
            Err(e) => return pending(format!("unreadable answer: {e}")),
        };
        result.unwrap_or_else(|e| pending(e.to_string()))
    }

    /// Housekeeping, every `period`: re-sends pending IOUs to payees that are connected (an
    /// answer lost on a live connection is not waited out until the next reconnect), and
    /// forgets unpaid requests that expired a day ago.
    pub async fn maintain(self: Arc<Self>, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let connected: Vec<DeviceKey> =
                self.peers().await.into_iter().map(|p| p.device).collect();
            if let Ok(pending) = self.store.pending(None).await {
                let mut payees: Vec<DeviceKey> = pending
                    .iter()
                    .map(|s| s.iou.payee)
                    .filter(|p| connected.contains(p))
                    .collect();
                payees.sort();
                payees.dedup();
                for p in payees {
                    self.resend_pending(&p).await;
                }
            }
            if let Err(e) = self
                .store
                .purge_requests(now().saturating_sub(86_400))
                .await
            {
                tracing::warn!(error = %e, "could not purge old requests");
            }
        }
    }

    /// Mesh housekeeping, every `period`: drops expired bundles and syncs with every
    /// connected peer.
    pub async fn mesh_loop(self: Arc<Self>, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            let _ = self.mesh.expire(now());
            self.sync_all().await;
        }
    }

    /// Gateway rounds against `url`, every `period`, for as long as the node runs. A round
    /// that cannot reach the server is tried again at the next tick.
    pub async fn gateway_loop(self: Arc<Self>, url: String, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            match self.sync_issuer(&url).await {
                Ok(r) if r.uploaded + r.alerts + r.updated > 0 => {
                    tracing::info!(url = %url, uploaded = r.uploaded, receipts = r.receipts, alerts = r.alerts, "gateway round");
                }
                Ok(_) => {}
                Err(e) => tracing::info!(url = %url, error = %e, "settlement server not reachable"),
            }
        }
    }

    /// The gateway URL: `--gateway`, else the config's.
    pub fn gateway_url(&self, opts: &RunOptions) -> Option<String> {
        opts.gateway
            .clone()
            .or_else(|| self.config.mesh.gateway.clone())
    }

    /// Seconds between mesh syncs and between gateway rounds.
    pub fn mesh_periods(&self) -> (Duration, Duration) {
        (
            Duration::from_secs(self.config.mesh.sync_secs.max(1)),
            Duration::from_secs(self.config.mesh.gateway_secs.max(1)),
        )
    }

    /// Re-sends every pending IOU to `payee`.
    pub async fn resend_pending(&self, payee: &DeviceKey) {
        let Ok(pending) = self.store.pending(Some(payee)).await else {
            return;
        };
        for s in pending {
            let o = self.deliver(&s.iou, &s.currency, AnsweredBy::Resend).await;
            tracing::info!(iou = %o.iou, status = o.status, "re-sent pending payment");
        }
    }

    /// Asks `payee` for a request of `amount` and pays it.
    ///
    /// A retry is not a second payment: unless `again`, the same payment (same payee, amount
    /// and currency) that is still pending, or that an automatic re-send got acknowledged in
    /// the last [`RETRY_WINDOW_SECS`], is answered instead of paid again. With an idempotency
    /// `key`, the payment made under that key is answered, whenever it was made.
    pub async fn pay_peer(
        &self,
        payee: &DeviceKey,
        amount: u64,
        currency: &str,
        memo: &str,
        again: bool,
        key: Option<&str>,
    ) -> Result<PayOutcome, NodeError> {
        if let Some(k) = key {
            if let Some(sent) = self.store.sent_by_key(k).await? {
                if sent.iou.payee != *payee
                    || sent.iou.amount != amount
                    || sent.currency != currency
                {
                    return Err(NodeError::Input(format!(
                        "the idempotency key {k:?} was used for another payment ({} {} to {})",
                        sent.iou.amount,
                        sent.currency,
                        sent.iou.payee.short()
                    )));
                }
                return Ok(self.state_of(sent).await);
            }
        }
        if !again && key.is_none() {
            if let Some(sent) = self.store.last_sent_to(payee, amount, currency).await? {
                let recent_resend = sent.answered_by_resend
                    && sent
                        .answered_at
                        .is_some_and(|t| t + RETRY_WINDOW_SECS >= now());
                if sent.status == SentStatus::Pending || recent_resend {
                    let mut o = self.state_of(sent).await;
                    o.repeated = Some(format!(
                        "this payment was made before (counter {}); it was not paid again. Pass --again to pay {amount} once more",
                        o.counter
                    ));
                    return Ok(o);
                }
            }
        }
        // Check the wallet before asking: an ask that ends in a local refusal leaves an open
        // request at the payee for nothing.
        self.wallet
            .lock()
            .await
            .can_pay(&self.device, amount, currency, now())?;
        let ask = Request::Ask(Ask::new(amount, currency, memo));
        let answer = self.links.request(payee, ask.encode()).await?;
        match Response::decode(&answer) {
            Ok(Response::Request(req)) => {
                if req.payee != *payee || req.amount != amount || req.currency != currency {
                    return Err(NodeError::Peer(
                        "its payment request does not match what was asked".into(),
                    ));
                }
                self.pay(&req, key).await
            }
            Ok(Response::Refused(r)) => Err(NodeError::Peer(format!("it refused: {r}"))),
            Ok(Response::Error(e)) => Err(NodeError::Peer(e.to_string())),
            Ok(_) => Err(NodeError::Peer("not a payment request".into())),
            Err(e) => Err(NodeError::Peer(e.to_string())),
        }
    }

    /// A stored payment's state, sending it again first if it is still pending.
    async fn state_of(&self, sent: crate::store::SentPayment) -> PayOutcome {
        if sent.status == SentStatus::Pending {
            self.deliver(&sent.iou, &sent.currency, AnsweredBy::Resend)
                .await
        } else {
            outcome(&sent.iou, &sent.currency, sent.status, sent.reason)
        }
    }

    /// Trusts an issuer descriptor after checking its self-signature.
    pub async fn trust(&self, d: &IssuerDescriptor) -> Result<(), NodeError> {
        d.verify().map_err(|_| {
            NodeError::Input("the issuer descriptor's signature does not verify".into())
        })?;
        self.store.add_issuer(d, now()).await?;
        // The descriptor first: an IOU the book accepts must find its issuer's seal key.
        self.issuers
            .write()
            .await
            .insert(d.body().issuer, d.clone());
        self.book.lock().await.trust(d.body().issuer);
        Ok(())
    }

    /// Adds an allowance certificate issued to this device by a trusted issuer.
    pub async fn add_allowance(&self, cert: &AllowanceCert) -> Result<bool, NodeError> {
        let b = cert.body();
        if b.holder != self.device {
            return Err(NodeError::Input(format!(
                "this allowance belongs to {}, not to this device",
                b.holder.short()
            )));
        }
        if !self.issuers.read().await.contains_key(&b.issuer) {
            return Err(NodeError::Input(format!(
                "issuer {} is not trusted: `meshpay trust` its descriptor first",
                b.issuer.short()
            )));
        }
        cert.verify().map_err(|_| {
            NodeError::Input("the allowance certificate's signature does not verify".into())
        })?;
        let mut wallet = self.wallet.lock().await;
        // An allowance an earlier copy of this wallet spent from is never spent from again:
        // its counters may already be in other hands (SPEC.md §7).
        let known = wallet.allowances().contains_key(&cert.id());
        if !known
            && self
                .sentinel
                .spent()
                .map_err(NodeError::Sentinel)?
                .contains(&cert.id())
        {
            return Err(NodeError::Input(format!(
                "allowance {} was spent from by an earlier copy of this wallet and cannot be used again; get a fresh one",
                cert.id()
            )));
        }
        let new = self.store.add_allowance(cert, now()).await?;
        wallet.add_allowance(cert.clone());
        Ok(new)
    }

    /// The wallet's allowances.
    pub async fn allowances(&self) -> Vec<meshpay_protocol::wallet::HeldAllowance> {
        self.wallet
            .lock()
            .await
            .allowances()
            .values()
            .cloned()
            .collect()
    }

    /// Starts the Bluetooth LE roles on BlueZ, when the BLE link runs. `None`: BLE is off;
    /// `Some(Ok(adapter))`: up; `Some(Err(why))`: unavailable, with what to do about it (the
    /// node keeps running on its other links).
    pub async fn start_ble(&self) -> Option<Result<String, String>> {
        let link = self.ble.clone()?;
        #[cfg(all(feature = "ble", target_os = "linux"))]
        {
            use meshpay_transports::ble::gatt::{self, GattConfig};
            let config = GattConfig {
                adapter: self.config.ble.adapter.clone(),
                peripheral: self.config.ble.peripheral,
                central: self.config.ble.central,
            };
            match gatt::start(link, config).await {
                Ok(g) => {
                    let up = format!("{} ({})", g.adapter, g.address);
                    *self.gatt.lock().expect("gatt lock") = Some(g);
                    Some(Ok(up))
                }
                Err(e) => Some(Err(e.to_string())),
            }
        }
        #[cfg(not(all(feature = "ble", target_os = "linux")))]
        {
            let _ = link;
            Some(Err(
                "this build has no Bluetooth LE roles (it needs Linux and the `ble` feature)"
                    .into(),
            ))
        }
    }

    /// Connected peers.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.links.peers().await
    }

    /// Listening addresses.
    pub async fn listen_addrs(&self) -> Vec<String> {
        self.p2p
            .listen_addrs()
            .await
            .into_iter()
            .map(|a| a.to_string())
            .collect()
    }

    /// Dials an address and waits (at most 10 s) until the connection is up; returns the
    /// device reached.
    pub async fn dial(&self, addr: &str) -> Result<DeviceKey, NodeError> {
        let addr = addr
            .parse()
            .map_err(|e| NodeError::Input(format!("bad multiaddress {addr}: {e}")))?;
        let peer = self.p2p.dial(addr, Duration::from_secs(10)).await?;
        meshpay_transports::p2p::device_of(&peer)
            .ok_or_else(|| NodeError::Peer("its peer id holds no Ed25519 device key".into()))
    }

    /// A client for the settlement server at `url`, with this node's `[issuer] ca_file`.
    fn issuer_client(&self, url: &str) -> Result<IssuerClient, NodeError> {
        Ok(IssuerClient::new(url, self.config.issuer.ca_file.as_ref())?)
    }

    /// Fetches and checks the descriptor of the issuer behind `client`, which must be trusted.
    async fn trusted_issuer_at(
        &self,
        client: &IssuerClient,
    ) -> Result<IssuerDescriptor, NodeError> {
        let bytes = client
            .get("/.well-known/meshpay-issuer", issuer::limits::DESCRIPTOR)
            .await?;
        let d: IssuerDescriptor =
            decode(&bytes).map_err(|e| IssuerError::Invalid(format!("its descriptor: {e}")))?;
        d.verify().map_err(|_| {
            IssuerError::Invalid("its descriptor's signature does not verify".into())
        })?;
        if !self.issuers.read().await.contains_key(&d.body().issuer) {
            return Err(NodeError::Input(format!(
                "the issuer at {} is {}, which this node does not trust: `meshpay trust` its descriptor first",
                client.url(),
                d.body().issuer.to_text()
            )));
        }
        Ok(d)
    }

    /// Tops up: asks the issuer at `url` to lock `amount` of this device's account in escrow
    /// and adds the allowance it returns.
    pub async fn topup(
        &self,
        url: &str,
        amount: u64,
        currency: &str,
        valid_secs: u64,
    ) -> Result<AllowanceCert, NodeError> {
        let client = self.issuer_client(url)?;
        let d = self.trusted_issuer_at(&client).await?;
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let req = meshpay_protocol::WalletRequest::sign(
            &self.secret,
            d.body().issuer,
            meshpay_protocol::WalletAction::Allowance { amount, valid_secs },
            currency,
            now(),
            Nonce(nonce),
        );
        let bytes = client
            .post_cbor("/v1/allowances", encode(&req), issuer::limits::CERTIFICATE)
            .await?;
        let cert: AllowanceCert =
            decode(&bytes).map_err(|e| IssuerError::Invalid(format!("its certificate: {e}")))?;
        if cert.body().issuer != d.body().issuer
            || cert.body().limit != amount
            || cert.body().holder != self.device
            || cert.verify().is_err()
        {
            return Err(
                IssuerError::Invalid("the certificate is not the one asked for".into()).into(),
            );
        }
        self.add_allowance(&cert).await?;
        Ok(cert)
    }

    /// Settles online, as a gateway: uploads the sealed records that have no decision yet
    /// (this wallet's and those the mesh store holds for the issuer at `url`), puts the
    /// issuer's receipts, fraud proofs and revocations into the mesh, and marks this wallet's
    /// payments settled or rejected.
    pub async fn sync_issuer(&self, url: &str) -> Result<GatewayRound, NodeError> {
        let client = self.issuer_client(url)?;
        let d = match self.trusted_issuer_at(&client).await {
            Ok(d) => d,
            Err(e) => {
                self.gateway_for.write().await.clear();
                return Err(e);
            }
        };
        let issuer = d.body().issuer;
        // This wallet's own records go first and in batches of their own: records carried
        // for strangers cannot crowd them out of a round or share a batch with them.
        let mut own: BTreeMap<meshpay_protocol::Hash, Vec<u8>> = BTreeMap::new();
        for bytes in self.store.undecided_records().await? {
            if let Ok(r) = decode::<SealedRecord>(&bytes) {
                if r.issuer == issuer {
                    own.insert(r.id, bytes);
                }
            }
        }
        let carried: BTreeMap<meshpay_protocol::Hash, Vec<u8>> = self
            .mesh
            .records_for(&issuer)
            .into_iter()
            .filter(|(id, _)| !own.contains_key(id))
            .collect();
        let round_no = self.gateway_rounds.fetch_add(1, Ordering::Relaxed);
        let due = |records: BTreeMap<meshpay_protocol::Hash, Vec<u8>>| {
            let backoff = self.lock_backoff();
            records
                .into_iter()
                .filter(|(id, _)| backoff.get(id).is_none_or(|(_, next)| *next <= round_no))
                .collect::<Vec<_>>()
        };
        let (own, carried) = (due(own), due(carried));
        let mut round = GatewayRound {
            uploaded: own.len() + carried.len(),
            ..GatewayRound::default()
        };
        let mut changed: BTreeSet<meshpay_protocol::Hash> = BTreeSet::new();
        let mut fresh = Vec::new();
        for chunk in own.chunks(1024).chain(carried.chunks(1024)) {
            let batch = meshpay_protocol::RecordBatch(
                chunk
                    .iter()
                    .map(|(_, b)| meshpay_protocol::codec::Blob(b.clone()))
                    .collect(),
            );
            let bytes = client
                .post_cbor("/v1/settle", encode(&batch), issuer::limits::RECEIPTS)
                .await?;
            let answer: meshpay_protocol::ReceiptBatch =
                decode(&bytes).map_err(|e| IssuerError::Invalid(format!("its receipts: {e}")))?;
            if answer.0.len() != chunk.len() {
                return Err(IssuerError::Invalid(format!(
                    "{} answers to {} records",
                    answer.0.len(),
                    chunk.len()
                ))
                .into());
            }
            for ((id, _), r) in chunk.iter().zip(&answer.0) {
                let decided = r.as_ref().filter(|r| {
                    r.body().record == *id && r.verify(&issuer).is_ok() && r.status().is_final()
                });
                let Some(r) = decided else {
                    // No decision (it did not open, or the issuer deferred it): ask again in
                    // a later round, later each time it stays undecided.
                    self.back_off(*id, round_no);
                    continue;
                };
                self.lock_backoff().remove(id);
                if self.take_receipt(&issuer, r).await? {
                    changed.insert(*id);
                }
                round.receipts += 1;
                let b = Bundle::new(Content::Receipt(r.clone()));
                if matches!(
                    self.mesh.insert(&b, Origin::Local, 0, now())?,
                    meshpay_protocol::store::Admission::Added(_)
                ) {
                    fresh.push(b.id());
                }
            }
        }
        // Receipts for payments this wallet made (the payees uploaded them), a page at a time.
        let mut cursor = self.feed_cursor(&issuer, "receipts").await?;
        let mut pages = 0;
        while pages < MAX_FEED_PAGES {
            let Some((items, next)) = self
                .feed_page(&client, "receipts", "receipts", "receipt", cursor)
                .await?
            else {
                break;
            };
            pages += 1;
            for bytes in items {
                if let Ok(receipt) = decode::<meshpay_protocol::SettlementReceipt>(&bytes) {
                    if self.take_receipt(&issuer, &receipt).await? {
                        changed.insert(receipt.body().record);
                    }
                }
            }
            cursor = next;
            self.set_feed_cursor(&issuer, "receipts", cursor).await?;
        }
        round.updated = changed.len();
        // Fraud proofs and revocations go into the mesh, to travel before anything else.
        // Only the issuer's own: a server cannot use this gateway to put another issuer's
        // alerts into the mesh.
        let feeds: [Feed; 2] = [
            ("fraud-proofs", "fraud_proofs", "proof", |b, issuer| {
                decode::<meshpay_protocol::FraudProof>(b)
                    .ok()
                    .filter(|p| p.cert.body().issuer == *issuer)
                    .map(|p| Content::Fraud(Box::new(p)))
            }),
            ("revocations", "revocations", "revocation", |b, issuer| {
                decode::<meshpay_protocol::Revocation>(b)
                    .ok()
                    .filter(|r| r.body().issuer == *issuer)
                    .map(Content::Revocation)
            }),
        ];
        for (path, list, item, content_of) in feeds {
            let mut cursor = self.feed_cursor(&issuer, path).await?;
            let mut pages = 0;
            while pages < MAX_FEED_PAGES {
                let Some((items, next)) = self.feed_page(&client, path, list, item, cursor).await?
                else {
                    break;
                };
                pages += 1;
                for bytes in items {
                    let Some(content) = content_of(&bytes, &issuer) else {
                        continue;
                    };
                    let b = Bundle::new(content);
                    if matches!(
                        self.mesh.insert(&b, Origin::Local, 0, now())?,
                        meshpay_protocol::store::Admission::Added(_)
                    ) {
                        round.alerts += 1;
                        fresh.push(b.id());
                    }
                }
                cursor = next;
                self.set_feed_cursor(&issuer, path, cursor).await?;
            }
        }
        self.take_bundles(&fresh).await;
        *self.gateway_for.write().await = vec![issuer];
        Ok(round)
    }

    fn lock_backoff(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<meshpay_protocol::Hash, (u32, u64)>> {
        self.upload_backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that the issuer took no decision on record `id` in round `round`: it is
    /// uploaded again after 2, 4, then every 8 rounds.
    fn back_off(&self, id: meshpay_protocol::Hash, round: u64) {
        const MAX_REMEMBERED: usize = 100_000;
        let mut map = self.lock_backoff();
        if map.len() >= MAX_REMEMBERED && !map.contains_key(&id) {
            // Full: forget the entries already due (they would be uploaded anyway); if that
            // frees less than half, start over. One scan per half-filling, not per record.
            map.retain(|_, (_, next)| *next > round);
            if map.len() > MAX_REMEMBERED / 2 {
                map.clear();
            }
        }
        let misses = map.get(&id).map_or(0, |(m, _)| *m) + 1;
        let wait = 1u64 << misses.min(3);
        map.insert(id, (misses, round + wait));
    }

    async fn feed_cursor(&self, issuer: &IssuerId, path: &str) -> Result<i64, NodeError> {
        Ok(self
            .store
            .meta(&format!("{path}_cursor:{}", issuer.to_hex()))
            .await?
            .and_then(|b| b.try_into().ok().map(i64::from_be_bytes))
            .unwrap_or(0))
    }

    async fn set_feed_cursor(
        &self,
        issuer: &IssuerId,
        path: &str,
        cursor: i64,
    ) -> Result<(), NodeError> {
        self.store
            .set_meta(
                &format!("{path}_cursor:{}", issuer.to_hex()),
                &cursor.to_be_bytes(),
            )
            .await?;
        Ok(())
    }

    /// Reads one page of a settlement server feed after `since`: its items' bytes and the
    /// cursor after them, or `None` at the end of the feed.
    async fn feed_page(
        &self,
        client: &IssuerClient,
        path: &str,
        list: &str,
        item: &str,
        since: i64,
    ) -> Result<Option<(Vec<Vec<u8>>, i64)>, NodeError> {
        let bytes = client
            .get(
                &format!("/v1/{path}?since={since}&limit=1000"),
                issuer::limits::FEED_PAGE,
            )
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| IssuerError::Invalid(format!("its {path} feed: {e}")))?;
        let items = v[list].as_array().cloned().unwrap_or_default();
        let next = v["next"].as_i64().unwrap_or(since);
        // An empty page, or a cursor that does not move forward, ends the feed: a server
        // cannot keep this node reading for ever.
        if items.is_empty() || next <= since {
            return Ok(None);
        }
        Ok(Some((
            items
                .iter()
                .filter_map(|i| i[item].as_str().and_then(|h| hex::decode(h).ok()))
                .collect(),
            next,
        )))
    }

    /// Records `issuer`'s receipt `r` on this wallet's payment, if `issuer` is trusted, the
    /// receipt is its own, final, and about a payment under an allowance of that issuer.
    /// Returns whether the payment's settlement changed. (A receipt from the mesh names its
    /// issuer itself: anyone can sign one under a key of their own.)
    async fn take_receipt(
        &self,
        issuer: &IssuerId,
        r: &meshpay_protocol::SettlementReceipt,
    ) -> Result<bool, NodeError> {
        if !self.issuers.read().await.contains_key(issuer)
            || r.verify(issuer).is_err()
            || !r.status().is_final()
        {
            return Ok(false);
        }
        let Some(allowance) = self.store.payment_allowance(&r.body().record).await? else {
            return Ok(false);
        };
        let allowance_issuer = match self.wallet.lock().await.allowances().get(&allowance) {
            Some(held) => Some(held.cert.body().issuer),
            None => self
                .book
                .lock()
                .await
                .certificate(&allowance)
                .map(|c| c.body().issuer),
        };
        if allowance_issuer != Some(*issuer) {
            return Ok(false);
        }
        let status = match r.status() {
            meshpay_protocol::ReceiptStatus::Settled => "settled".to_owned(),
            meshpay_protocol::ReceiptStatus::Rejected(reason) => format!("rejected: {reason}"),
        };
        Ok(self.store.set_settlement(&r.body().record, &status).await?)
    }

    fn session_config(&self, peer: DeviceKey, gateway_for: Vec<IssuerId>) -> SessionConfig {
        SessionConfig {
            me: self.device,
            peer,
            gateway_for,
            routing: self.mesh.routing,
            budget: self.mesh.budget,
            now: now(),
        }
    }

    /// Answers a peer's sync step.
    async fn on_sync(&self, from: &DeviceKey, msg: &SyncMessage) -> Result<SyncMessage, MeshError> {
        let cfg = self.session_config(*from, self.gateway_for.read().await.clone());
        let (answer, fresh, end) = self.mesh.respond(cfg, msg, &self.secret)?;
        self.take_bundles(&fresh).await;
        if let Some(end) = end {
            self.session_done(from, &end);
        }
        Ok(answer)
    }

    /// Runs one sync session with `peer` as initiator. One at a time per peer.
    pub async fn sync_with(&self, peer: DeviceKey) -> Result<SessionEnd, NodeError> {
        {
            let mut busy = self
                .syncing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !busy.insert(peer) {
                return Ok(SessionEnd::default());
            }
        }
        let result = self.sync_session(peer).await;
        self.syncing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&peer);
        let end = result?;
        self.session_done(&peer, &end);
        Ok(end)
    }

    async fn sync_session(&self, peer: DeviceKey) -> Result<SessionEnd, NodeError> {
        let cfg = self.session_config(peer, self.gateway_for.read().await.clone());
        let (mut session, mut msg) = self.mesh.initiate(cfg, OsRng.next_u64());
        // A session ends by itself; the bound only guards against a peer that never closes.
        for _ in 0..100_000 {
            let answer = self
                .links
                .request(&peer, Request::Sync(Box::new(msg)).encode())
                .await
                .map_err(|e| NodeError::Peer(e.to_string()))?;
            let reply = match Response::decode(&answer) {
                Ok(Response::Sync(m)) => m,
                Ok(Response::Error(code)) => return Err(NodeError::Peer(code.to_string())),
                Ok(_) => {
                    return Err(NodeError::Peer(
                        "the peer answered sync with something else".into(),
                    ));
                }
                Err(e) => return Err(NodeError::Peer(format!("unreadable sync answer: {e}"))),
            };
            let (step, fresh) = self.mesh.step(&mut session, &reply, &self.secret);
            self.take_bundles(&fresh).await;
            match step {
                Ok(Some(next)) => msg = next,
                Ok(None) => return Ok(crate::mesh::end_of(&session)),
                Err(MeshError::Sync(e)) => {
                    tracing::warn!(peer = %peer.short(), error = %e, "sync broke the rules; dropping the peer");
                    self.links.disconnect(&peer).await;
                    return Err(NodeError::Peer(e.to_string()));
                }
                Err(e @ MeshError::Storage(_)) => return Err(NodeError::Mesh(e.to_string())),
            }
        }
        Err(NodeError::Peer("the sync session did not end".into()))
    }

    fn session_done(&self, peer: &DeviceKey, end: &SessionEnd) {
        if let Some(proof) = &end.proof {
            self.mesh.record_handover(proof);
        }
        if !end.admitted.is_empty() || end.given > 0 {
            tracing::info!(peer = %peer.short(), took = end.admitted.len(), gave = end.given, "synced bundles");
        }
    }

    /// Syncs with every connected peer, one after the other. Returns (peers, bundles taken,
    /// bundles given).
    pub async fn sync_all(&self) -> (usize, usize, usize) {
        let peers: Vec<DeviceKey> = self.peers().await.into_iter().map(|p| p.device).collect();
        let (mut took, mut gave) = (0, 0);
        let mut n = 0;
        for p in peers {
            match self.sync_with(p).await {
                Ok(end) => {
                    n += 1;
                    took += end.admitted.len();
                    gave += end.given;
                }
                Err(e) => tracing::info!(peer = %p.short(), error = %e, "sync did not finish"),
            }
        }
        (n, took, gave)
    }

    /// Acts on bundles that arrived: receipts settle this wallet's payments, fraud proofs and
    /// revocations refuse allowances, notices feed fork detection.
    async fn take_bundles(&self, ids: &[meshpay_protocol::Hash]) {
        // Also whatever the store made or took meanwhile (a fraud proof from two notices).
        let mut ids = ids.to_vec();
        ids.extend(self.mesh.drain_fresh());
        ids.sort();
        ids.dedup();
        for id in &ids {
            let Some(bytes) = self.mesh.get(id) else {
                continue;
            };
            let Ok(b) = Bundle::decode(&bytes) else {
                continue;
            };
            tracing::debug!(bundle = %id, kind = b.meta().kind.name(), "acting on a bundle");
            let now = now();
            let r = match b.content() {
                Content::Receipt(r) => self
                    .take_receipt(&r.body().issuer, r)
                    .await
                    .map(|updated| {
                        if updated {
                            tracing::info!(record = %r.body().record, status = ?r.status(), "receipt arrived through the mesh");
                        }
                    }),
                Content::Fraud(p) => self.take_fraud(p, now).await,
                Content::Revocation(rev) => {
                    let _ = self.book.lock().await.add_revocation(rev);
                    Ok(())
                }
                Content::Notice(n) => {
                    let mut book = self.book.lock().await;
                    if book.trusts(&n.cert.body().issuer) {
                        let _ = book.add_certificate(&n.cert);
                        let outcome = book.observe_notice(&n.notice);
                        drop(book);
                        if let meshpay_protocol::payee::NoticeOutcome::Fork(p) = outcome {
                            let _ = self.take_fraud(&p, now).await;
                            let _ = self.mesh.insert(&Bundle::new(Content::Fraud(p)), Origin::Local, 0, now);
                        }
                    }
                    Ok(())
                }
                _ => Ok(()),
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not act on a bundle");
            }
        }
    }

    async fn take_fraud(
        &self,
        proof: &meshpay_protocol::FraudProof,
        now: u64,
    ) -> Result<(), NodeError> {
        let mut book = self.book.lock().await;
        if !book.trusts(&proof.cert.body().issuer) {
            return Ok(());
        }
        // The book may already hold it (it builds one itself when a notice forks); either way
        // make sure it is stored. Storing is idempotent and says whether it was new.
        let new = book.add_fraud_proof(proof).unwrap_or(false);
        let known = book.refuses(&proof.allowance());
        drop(book);
        if (new || known) && self.store.add_fraud(proof, now).await? {
            tracing::warn!(allowance = %proof.allowance(), "fraud proof: allowance refused from now on");
        }
        Ok(())
    }

    /// The mesh store.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// Imports a bundle file and acts on what it brought.
    pub async fn import(
        &self,
        file: &[u8],
    ) -> Result<crate::mesh::ImportReport, crate::mesh::ImportError> {
        let report = self.mesh.import(file, now())?;
        self.take_bundles(&report.ids).await;
        Ok(report)
    }

    /// The store, for queries.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Default currency.
    pub fn currency(&self) -> &str {
        &self.config.wallet.currency
    }
}

fn outcome(iou: &Iou, currency: &str, status: SentStatus, reason: Option<String>) -> PayOutcome {
    PayOutcome {
        status: match status {
            SentStatus::Pending => "pending",
            SentStatus::Acked => "acked",
            SentStatus::Refused => "refused",
        },
        iou: iou.id().to_hex(),
        payee: iou.payee.to_text(),
        amount: iou.amount,
        currency: currency.to_owned(),
        counter: iou.counter,
        reason,
        repeated: None,
    }
}
