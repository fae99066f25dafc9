//! The running node: wallet, spend book, storage and links, driven by link events and control
//! commands.
//!
//! Every payment follows the protocol crate's judge–persist–adopt contract: the payer commits
//! the IOU and its counter (and then the restore sentinel) before sending; the payee commits
//! the IOU, its sealed record and the ack before answering. Payments from this wallet are
//! serialised by the wallet lock; incoming payments by the spend-book lock.

use crate::config::{Config, Home, Sentinel};
use crate::store::{SentStatus, Store};
use meshpay_protocol::message::{Ask, ErrorCode, Pay, Request, Response};
use meshpay_protocol::payee::{SpendBook, Verdict};
use meshpay_protocol::wallet::{PayError, RestoreCheck, Wallet};
use meshpay_protocol::{
    AllowanceCert, DeviceKey, DeviceSecret, Iou, IssuerDescriptor, IssuerId, Nonce, PaymentAck,
    PaymentRequest, PrintableKey, Reason, SealedRecord, decode, encode,
};
use meshpay_transports::p2p::{P2pConfig, P2pLink};
use meshpay_transports::{LinkError, LinkEvent, Links, PeerInfo};
use rand_core::{OsRng, RngCore};
use std::collections::BTreeMap;
use std::sync::Arc;
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
}

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
    /// The issuer's server refused or could not be reached.
    #[error("issuer: {0}")]
    Issuer(String),
    /// The restore sentinel could not be written: the payment was committed but not sent.
    #[error("cannot write the restore sentinel: {0}")]
    Sentinel(std::io::Error),
}

/// The running node.
pub struct Node {
    /// This device's key.
    pub device: DeviceKey,
    secret: DeviceSecret,
    store: Store,
    _mesh: sled::Db,
    mesh_records: sled::Tree,
    wallet: Mutex<Wallet>,
    book: Mutex<SpendBook>,
    issuers: RwLock<BTreeMap<IssuerId, IssuerDescriptor>>,
    links: Links,
    p2p: P2pLink,
    config: Config,
    sentinel: Sentinel,
    fault: Option<Fault>,
    /// The restore check made at start.
    pub restore: RestoreCheck,
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
        let mesh = sled::open(home.mesh()).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the mesh store {} ({e}); is another meshpay daemon running on this home?",
                home.mesh().display()
            )
        })?;
        let mesh_records = mesh.open_tree("records")?;

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
        let p2p = P2pLink::start(&seed, &p2p_config, tx)?;
        let mut links = Links::new();
        links.add(Arc::new(p2p.clone()));
        let node = Arc::new(Self {
            device,
            secret,
            store,
            _mesh: mesh,
            mesh_records,
            wallet: Mutex::new(wallet),
            book: Mutex::new(book),
            issuers: RwLock::new(issuers),
            links,
            p2p,
            config,
            sentinel,
            fault: Fault::from_env(),
            restore,
        });
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
                    tokio::spawn(async move { node.resend_pending(&p.device).await });
                }
                LinkEvent::PeerDisconnected { device } => {
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
        let r = match req {
            Request::Ask(ask) => self.on_ask(from, &ask).await,
            Request::Pay(pay) => self.on_pay(from, *pay).await,
        };
        r.unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not serve a request");
            Response::Error(ErrorCode::Unavailable)
        })
    }

    async fn on_ask(&self, from: &DeviceKey, ask: &Ask) -> Result<Response, NodeError> {
        // Asks cost a durable write each: bound what one peer, and all peers, can keep open.
        let (open, by_peer) = self.store.open_requests(from, now()).await?;
        if by_peer >= MAX_OPEN_ASKS_PER_PEER || open >= MAX_OPEN_REQUESTS {
            tracing::warn!(peer = %from.short(), by_peer, open, "too many open requests; ask refused");
            return Ok(Response::Error(ErrorCode::Unavailable));
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
                let _ = self.mesh_records.insert(record.id.0, encode(&record));
                book.record_payment(&iou, &cert);
                drop(book);
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
                tracing::warn!(payer = %from.short(), %reason, "payment refused");
                Ok(Response::Refused(reason))
            }
            Verdict::Fork(proof) => {
                self.store.add_fraud(&proof, now).await?;
                let _ = book.add_fraud_proof(&proof);
                tracing::warn!(payer = %from.short(), allowance = %proof.allowance(), "double spend: fraud proof stored, allowance refused from now on");
                Ok(Response::Refused(Reason::CounterConflict))
            }
        }
    }

    /// Pays a request. Re-paying the same request re-sends the same IOU.
    pub async fn pay(&self, request: &PaymentRequest) -> Result<PayOutcome, NodeError> {
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
                    .commit_spend(&spend, &request.currency, &request.memo, now)
                    .await?;
                // Adopt the committed head first: whatever happens next, the next IOU of this
                // allowance takes the next counter.
                wallet.commit(&spend);
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
        Ok(self.deliver(&iou, &request.currency).await)
    }

    /// Sends a committed IOU and records the answer.
    async fn deliver(&self, iou: &Iou, currency: &str) -> PayOutcome {
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
                    .set_sent_outcome(&iou.id(), SentStatus::Acked, None, Some(&ack))
                    .await
                    .map(|()| outcome(iou, currency, SentStatus::Acked, None))
            }
            Ok(Response::Refused(reason)) => self
                .store
                .set_sent_outcome(&iou.id(), SentStatus::Refused, Some(reason.name()), None)
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

    /// Re-sends every pending IOU to `payee`.
    pub async fn resend_pending(&self, payee: &DeviceKey) {
        let Ok(pending) = self.store.pending(Some(payee)).await else {
            return;
        };
        for s in pending {
            let o = self.deliver(&s.iou, &s.currency).await;
            tracing::info!(iou = %o.iou, status = o.status, "re-sent pending payment");
        }
    }

    /// Asks `payee` for a request of `amount` and pays it.
    pub async fn pay_peer(
        &self,
        payee: &DeviceKey,
        amount: u64,
        currency: &str,
        memo: &str,
    ) -> Result<PayOutcome, NodeError> {
        // A payment to this peer for this amount that is still unanswered is sent again
        // rather than paid a second time.
        for s in self.store.pending(Some(payee)).await? {
            if s.iou.amount == amount && s.currency == currency {
                return Ok(self.deliver(&s.iou, currency).await);
            }
        }
        let ask = Request::Ask(Ask::new(amount, currency, memo));
        let answer = self.links.request(payee, ask.encode()).await?;
        match Response::decode(&answer) {
            Ok(Response::Request(req)) => {
                if req.payee != *payee || req.amount != amount || req.currency != currency {
                    return Err(NodeError::Peer(
                        "its payment request does not match what was asked".into(),
                    ));
                }
                self.pay(&req).await
            }
            Ok(Response::Refused(r)) => Err(NodeError::Peer(format!("it refused: {r}"))),
            Ok(Response::Error(e)) => Err(NodeError::Peer(e.to_string())),
            Ok(_) => Err(NodeError::Peer("not a payment request".into())),
            Err(e) => Err(NodeError::Peer(e.to_string())),
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

    /// Dials an address.
    pub async fn dial(&self, addr: &str) -> Result<(), NodeError> {
        let addr = addr
            .parse()
            .map_err(|e| NodeError::Input(format!("bad multiaddress {addr}: {e}")))?;
        Ok(self.p2p.dial(addr).await?)
    }

    /// Fetches and checks the descriptor of the issuer at `url`, which must be trusted.
    async fn trusted_issuer_at(
        &self,
        client: &reqwest::Client,
        url: &str,
    ) -> Result<IssuerDescriptor, NodeError> {
        let bytes = http_bytes(client.get(format!("{url}/.well-known/meshpay-issuer"))).await?;
        let d: IssuerDescriptor =
            decode(&bytes).map_err(|e| NodeError::Issuer(format!("bad descriptor: {e}")))?;
        d.verify()
            .map_err(|_| NodeError::Issuer("the descriptor's signature does not verify".into()))?;
        if !self.issuers.read().await.contains_key(&d.body().issuer) {
            return Err(NodeError::Input(format!(
                "the issuer at {url} is {}, which this node does not trust: `meshpay trust` its descriptor first",
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
        let url = url.trim_end_matches('/');
        let client = issuer_client(Duration::from_secs(30))?;
        let d = self.trusted_issuer_at(&client, url).await?;
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
        let bytes = http_bytes(
            client
                .post(format!("{url}/v1/allowances"))
                .header("content-type", "application/cbor")
                .body(encode(&req)),
        )
        .await?;
        let cert: AllowanceCert =
            decode(&bytes).map_err(|e| NodeError::Issuer(format!("bad certificate: {e}")))?;
        if cert.body().issuer != d.body().issuer || cert.body().limit != amount {
            return Err(NodeError::Issuer(
                "the certificate is not the one asked for".into(),
            ));
        }
        self.add_allowance(&cert).await?;
        Ok(cert)
    }

    /// Settles online: uploads this node's sealed records to the issuer at `url`, then fetches
    /// the issuer's receipts and marks this wallet's payments settled or rejected. Returns
    /// (records uploaded, payments updated).
    pub async fn sync_issuer(&self, url: &str) -> Result<(usize, usize), NodeError> {
        let url = url.trim_end_matches('/');
        let client = issuer_client(Duration::from_secs(60))?;
        let d = self.trusted_issuer_at(&client, url).await?;
        let issuer = d.body().issuer;
        let records = self.store.records().await?;
        let mut updated = 0;
        for chunk in records.chunks(1024) {
            let batch = meshpay_protocol::RecordBatch(
                chunk
                    .iter()
                    .cloned()
                    .map(meshpay_protocol::codec::Blob)
                    .collect(),
            );
            let bytes = http_bytes(
                client
                    .post(format!("{url}/v1/settle"))
                    .header("content-type", "application/cbor")
                    .body(encode(&batch)),
            )
            .await?;
            let answer: meshpay_protocol::ReceiptBatch =
                decode(&bytes).map_err(|e| NodeError::Issuer(format!("bad receipts: {e}")))?;
            for r in answer.0.iter().flatten() {
                updated += usize::from(self.take_receipt(&issuer, r).await?);
            }
        }
        // Receipts for payments this wallet made (the payees uploaded them).
        let key = format!("receipts_cursor:{}", issuer.to_hex());
        let mut since: i64 = self
            .store
            .meta(&key)
            .await?
            .and_then(|b| b.try_into().ok().map(i64::from_be_bytes))
            .unwrap_or(0);
        loop {
            let bytes =
                http_bytes(client.get(format!("{url}/v1/receipts?since={since}&limit=1000")))
                    .await?;
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| NodeError::Issuer(e.to_string()))?;
            let list = v["receipts"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                break;
            }
            for item in &list {
                let Some(r) = item["receipt"].as_str().and_then(|h| hex::decode(h).ok()) else {
                    continue;
                };
                if let Ok(receipt) = decode::<meshpay_protocol::SettlementReceipt>(&r) {
                    updated += usize::from(self.take_receipt(&issuer, &receipt).await?);
                }
            }
            since = v["next"].as_i64().unwrap_or(since);
            self.store.set_meta(&key, &since.to_be_bytes()).await?;
        }
        Ok((records.len(), updated))
    }

    async fn take_receipt(
        &self,
        issuer: &IssuerId,
        r: &meshpay_protocol::SettlementReceipt,
    ) -> Result<bool, NodeError> {
        if r.verify(issuer).is_err() || !r.status().is_final() {
            return Ok(false);
        }
        let status = match r.status() {
            meshpay_protocol::ReceiptStatus::Settled => "settled".to_owned(),
            meshpay_protocol::ReceiptStatus::Rejected(reason) => format!("rejected: {reason}"),
        };
        Ok(self.store.set_settlement(&r.body().record, &status).await?)
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

fn issuer_client(timeout: Duration) -> Result<reqwest::Client, NodeError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| NodeError::Issuer(e.to_string()))
}

async fn http_bytes(req: reqwest::RequestBuilder) -> Result<Vec<u8>, NodeError> {
    let resp = req
        .send()
        .await
        .map_err(|e| NodeError::Issuer(format!("unreachable: {e}")))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| NodeError::Issuer(e.to_string()))?;
    if !status.is_success() {
        let msg = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        return Err(NodeError::Issuer(msg));
    }
    Ok(bytes.to_vec())
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
    }
}
