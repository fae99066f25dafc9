//! The running node: the device machine driven by its own task ([`crate::actor`]), the links,
//! and the handle the control socket and the gateway use.
//!
//! Every payment follows the protocol crate's judge–persist–adopt contract, now held by the
//! device machine: the payer's spend (and then the restore sentinel) is written before the IOU
//! is sent; the payee's payment, sealed record and ack are written before the ack is sent.
//! The device's task is the only writer of the wallet's money state.

use crate::actor::{Actor, Fault, Msg};
use crate::config::{Config, Home, Sentinel};
use crate::issuer::{self, IssuerClient, IssuerError};
use crate::mesh::MeshDisk;
pub use crate::startup::StartError;
use crate::startup::{ble_config, load, open_mesh, open_wallet, p2p_config};
use crate::store::Store;
use meshpay_protocol::device::{Answer, Command, Device, DeviceConfig, DeviceError};
use meshpay_protocol::wallet::{HeldAllowance, PayError, RestoreCheck};
use meshpay_protocol::{
    AllowanceCert, DeviceKey, DeviceSecret, IssuerDescriptor, Nonce, PaymentRequest, PrintableKey,
    decode, encode,
};
use meshpay_transports::ble::BleLink;
use meshpay_transports::p2p::P2pLink;
use meshpay_transports::{LinkError, LinkEvent, Links, PeerInfo};
use rand_core::{OsRng, RngCore};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Wall-clock seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub use crate::api::PayOutcome;

impl From<meshpay_protocol::device::PayOutcome> for PayOutcome {
    fn from(o: meshpay_protocol::device::PayOutcome) -> Self {
        Self {
            status: o.status,
            iou: o.iou.to_hex(),
            payee: o.payee.to_text(),
            amount: o.amount,
            currency: o.currency,
            counter: o.counter,
            reason: o.reason,
            repeated: o.repeated,
        }
    }
}

/// A command failure, shown to the user as one line.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A wallet rule refused the payment; nothing was spent.
    #[error("{0}")]
    Pay(#[from] PayError),
    /// The device refused the command or could not carry it out.
    #[error(transparent)]
    Device(DeviceError),
    /// Storage failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The peer could not be reached or did not answer.
    #[error("{0}")]
    Link(#[from] LinkError),
    /// The user's input is wrong; nothing changed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The dialled peer's identity is not a device key.
    #[error("the peer answered wrongly: its peer id holds no Ed25519 device key")]
    NotADevice,
    /// The issuer's server is not one this node trusts.
    #[error(
        "the issuer at {url} is {issuer}, which this node does not trust: `meshpay trust` its descriptor first"
    )]
    UntrustedIssuer {
        /// The server.
        url: String,
        /// The issuer it speaks for, text form.
        issuer: String,
    },
    /// The device answered a command with an answer of another command (a bug).
    #[error("the device answered out of turn: {0}")]
    OutOfTurn(String),
    /// The issuer's server refused, could not be reached, or answered wrongly.
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopped,
}

/// Why a control request's input is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// An amount of zero.
    #[error("the amount must be positive")]
    Amount,
    /// `pay` with neither a request nor a payee and an amount.
    #[error("pay takes a request text, or a payee (--to) and a positive amount")]
    PayArguments,
    /// `topup` with a zero amount or validity.
    #[error("amount and days must be positive")]
    TopupArguments,
    /// An idempotency key of the wrong length.
    #[error("--id: 1 to 128 characters")]
    IdempotencyKey,
    /// A payee's device key that does not parse.
    #[error("payee: {0}")]
    Payee(meshpay_protocol::keys::KeyTextError),
    /// A payment request's text that does not parse.
    #[error("{0}")]
    RequestText(meshpay_protocol::objects::RequestTextError),
    /// Hex that is not hex.
    #[error("the {0} is not hex")]
    NotHex(&'static str),
    /// An object that does not decode.
    #[error("{0}")]
    Object(#[from] meshpay_protocol::DecodeError),
    /// A multiaddress that does not parse.
    #[error("bad multiaddress {address}: {why}")]
    Address {
        /// What was given.
        address: String,
        /// Why it does not parse.
        why: String,
    },
    /// A file that did not end within the read's deadline (a FIFO with no writer).
    #[error("{0}: no end of file within 60 s")]
    FileTimeout(String),
    /// A file that cannot be read.
    #[error("cannot read {path}: {why}")]
    Unreadable {
        /// The path.
        path: String,
        /// What the system said.
        why: String,
    },
    /// A bundle file over the size limit.
    #[error("{path} is over the limit of {limit_mib} MiB for a bundle file")]
    FileTooLarge {
        /// The path.
        path: String,
        /// The limit, MiB.
        limit_mib: usize,
    },
    /// `pair` on a node whose web app does not run.
    #[error(
        "this node runs no web app: start it with `meshpay run --ui 127.0.0.1:8080` (or `[ui] listen`)"
    )]
    NoUi,
    /// A file that cannot be written, or a bundle file that is refused.
    #[error("{path}: {why}")]
    File {
        /// The path.
        path: String,
        /// What went wrong.
        why: String,
    },
}

impl From<DeviceError> for NodeError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::Pay(e) => NodeError::Pay(e),
            e => NodeError::Device(e),
        }
    }
}

/// The running node.
pub struct Node {
    /// This device's key.
    pub device: DeviceKey,
    secret: DeviceSecret,
    store: Store,
    _sled: sled::Db,
    disk: Arc<MeshDisk>,
    jobs: mpsc::Sender<Msg>,
    /// The device's task, until [`Node::serve_links`] runs it.
    actor: std::sync::Mutex<Option<Actor>>,
    pub(crate) gateway: crate::gateway::Backoff,
    links: Links,
    p2p: P2pLink,
    /// The Bluetooth LE link, when it runs.
    ble: Option<BleLink>,
    /// The GATT roles on BlueZ, held while they run.
    #[cfg(all(feature = "ble", target_os = "linux"))]
    gatt: std::sync::Mutex<Option<meshpay_transports::ble::gatt::Gatt>>,
    config: Config,
    /// The restore check made at start.
    pub restore: RestoreCheck,
    /// A relay: carries bundles, takes no payments.
    pub relay: bool,
    /// What happened, for live watchers.
    pub notices: Arc<crate::notices::Notices>,
    /// The last round with a settlement server.
    pub(crate) last_gateway: std::sync::Mutex<Option<crate::api::GatewayContact>>,
    /// The web app's pairing, when it runs.
    #[cfg(feature = "ui")]
    pub(crate) ui: std::sync::OnceLock<Arc<crate::ui::access::Access>>,
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
    /// Serve the web app here (overrides `[ui] listen`).
    pub ui: Option<String>,
    /// … over HTTPS with this certificate chain and key (overrides `[ui] tls_cert`, `tls_key`).
    pub ui_tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Keep the restore sentinel here (overrides `[wallet] sentinel_dir`): an app gives a
    /// place outside its backups, such as its keystore-backed area.
    pub sentinel_dir: Option<std::path::PathBuf>,
}

impl Node {
    /// Opens the wallet in `home` with the device key unlocked by `passphrase`, starts the
    /// links, and returns the node and its link events.
    pub async fn start(
        home: &Home,
        passphrase: &str,
        opts: &RunOptions,
    ) -> Result<(Arc<Self>, mpsc::Receiver<LinkEvent>), StartError> {
        let mut config = Config::load(home)?;
        if let Some(dir) = &opts.sentinel_dir {
            config.wallet.sentinel_dir = Some(dir.clone());
        }
        let quota_bytes = opts
            .quota_kb
            .map_or(config.mesh.quota_mb << 20, |kb| kb << 10);
        if !home.wallet_db().exists() {
            return Err(StartError::NoWallet(home.dir.clone()));
        }
        let store = Store::open(&home.wallet_db(), false).await?;
        let blob = store
            .meta("device_secret")
            .await?
            .ok_or(StartError::NoDeviceKey)?;
        let seed = crate::keystore::open::<32>(&blob, passphrase)?;
        let secret = DeviceSecret::from_seed(&seed);
        let device = secret.public();
        let (sled_db, disk, mesh) = open_mesh(home, &config, quota_bytes)?;

        // Restore detection before anything can spend.
        let sentinel = Sentinel::new(&config.sentinel_dir(), &device.to_hex());
        let (wallet, restore) = open_wallet(&store, &sentinel).await?;
        let p2p_config = p2p_config(&config, opts)?;
        let device_config = DeviceConfig {
            relay: opts.relay,
            routing: config.mesh.routing()?,
            sync_budget: config.mesh.budget_kb << 10,
            request_ttl_secs: config.wallet.request_ttl_secs,
            resend_every: Some(30_000),
            sync_every: Some(config.mesh.sync_secs.max(1) * 1000),
            ..DeviceConfig::default()
        };
        let init = load(
            &store,
            DeviceSecret::from_seed(&seed),
            wallet,
            &sentinel,
            mesh,
        )
        .await?;
        let origin = Instant::now();
        let mut machine = Device::new(init, device_config);
        let start = meshpay_protocol::device::Now {
            mono: 0,
            unix: now(),
        };
        machine.start(start);
        // What a held bundle meant may not have been written when the process stopped.
        machine.act_on_held(start);

        let (tx, rx) = mpsc::channel(1024);
        let p2p = P2pLink::start(&seed, &p2p_config, tx.clone())?;
        let mut links = Links::new();
        links.add(Arc::new(p2p.clone()));
        let ble = (opts.ble || config.ble.enabled).then(|| {
            let timeout = Duration::from_secs(config.ble.request_timeout_secs.max(1));
            let link = BleLink::new(&seed, ble_config(timeout), tx);
            links.add(Arc::new(link.clone()));
            link
        });
        let disk = Arc::new(disk);
        let (jobs, jobs_rx) = mpsc::channel(256);
        let notices = Arc::new(crate::notices::Notices::default());
        let actor = Actor::new(
            machine,
            store.clone(),
            Arc::clone(&disk),
            sentinel,
            links.clone(),
            Fault::from_env(),
            jobs_rx,
            origin,
            Arc::clone(&notices),
        );
        let node = Arc::new(Self {
            device,
            secret,
            store,
            _sled: sled_db,
            disk,
            jobs,
            actor: std::sync::Mutex::new(Some(actor)),
            gateway: crate::gateway::Backoff::default(),
            links,
            p2p,
            ble,
            #[cfg(all(feature = "ble", target_os = "linux"))]
            gatt: std::sync::Mutex::new(None),
            config,
            restore,
            relay: opts.relay,
            notices,
            last_gateway: std::sync::Mutex::new(None),
            #[cfg(feature = "ui")]
            ui: std::sync::OnceLock::new(),
        });
        Ok((node, rx))
    }

    /// Runs the device's task on the link events until the links stop.
    pub async fn serve_links(self: Arc<Self>, events: mpsc::Receiver<LinkEvent>) {
        let actor = self
            .actor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(actor) = actor {
            actor.run(events).await;
        }
    }

    /// Runs a command on the device and waits for its answer.
    pub async fn command(&self, cmd: Command) -> Result<Answer, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Msg::Command(Box::new(cmd), tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        Ok(rx.await.map_err(|_| NodeError::Stopped)??)
    }

    /// Runs `f` on the device (a query, or a setting) and returns what it returns.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Device) -> R + Send + 'static,
    ) -> Result<R, NodeError> {
        let (tx, rx) = oneshot::channel();
        let job = Box::new(move |d: &mut Device| {
            let _ = tx.send(f(d));
        });
        self.jobs
            .send(Msg::With(job))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Makes and stores a new payment request.
    pub async fn new_request(
        &self,
        amount: u64,
        currency: &str,
        memo: &str,
    ) -> Result<PaymentRequest, NodeError> {
        match self
            .command(Command::Request {
                amount,
                currency: currency.to_owned(),
                memo: memo.to_owned(),
            })
            .await?
        {
            Answer::Requested(r) => Ok(r),
            other => Err(unexpected(&other)),
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
        paid(
            self.command(Command::Pay {
                request: request.clone(),
                key: key.map(str::to_owned),
            })
            .await?,
        )
    }

    /// Asks `payee` for a request of `amount` and pays it. A retry is not a second payment
    /// (see [`meshpay_protocol::device`]); `again` pays once more.
    pub async fn pay_peer(
        &self,
        payee: &DeviceKey,
        amount: u64,
        currency: &str,
        memo: &str,
        again: bool,
        key: Option<&str>,
    ) -> Result<PayOutcome, NodeError> {
        paid(
            self.command(Command::PayPeer {
                payee: *payee,
                amount,
                currency: currency.to_owned(),
                memo: memo.to_owned(),
                again,
                key: key.map(str::to_owned),
            })
            .await?,
        )
    }

    /// Trusts an issuer descriptor after checking its self-signature.
    pub async fn trust(&self, d: &IssuerDescriptor) -> Result<(), NodeError> {
        self.command(Command::Trust(d.clone())).await.map(drop)
    }

    /// Adds an allowance certificate issued to this device by a trusted issuer. Returns
    /// whether it is new.
    pub async fn add_allowance(&self, cert: &AllowanceCert) -> Result<bool, NodeError> {
        match self.command(Command::AddAllowance(cert.clone())).await? {
            Answer::AllowanceAdded { new } => Ok(new),
            other => Err(unexpected(&other)),
        }
    }

    /// The wallet's allowances.
    pub async fn allowances(&self) -> Vec<HeldAllowance> {
        self.with(|d| d.wallet().allowances().values().cloned().collect())
            .await
            .unwrap_or_default()
    }

    /// Syncs with every connected peer. Returns (peers, bundles taken, bundles given).
    pub async fn sync_all(&self) -> Result<(usize, usize, usize), NodeError> {
        match self.command(Command::SyncAll).await? {
            Answer::Synced { peers, took, gave } => Ok((peers, took, gave)),
            other => Err(unexpected(&other)),
        }
    }

    /// Imports a bundle file and acts on what it brought.
    pub async fn import(&self, file: Vec<u8>) -> Result<crate::mesh::ImportReport, NodeError> {
        match self.command(Command::Import(file)).await? {
            Answer::Imported(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// The mesh store's counts, bytes and tombstones.
    pub async fn mesh_summary(&self) -> Result<crate::api::MeshInfo, NodeError> {
        let errors = self.disk.write_errors();
        self.with(move |d| crate::mesh::summary(d.store(), errors))
            .await
    }

    /// Every held bundle as a bundle file, and how many there are.
    pub async fn export(&self) -> Result<(Vec<u8>, usize), NodeError> {
        self.with(|d| (crate::mesh::export(d.store()), d.store().len()))
            .await
    }

    /// Hand-over receipts peers signed for what this node carried to them, newest first.
    pub fn handovers(&self, limit: usize) -> Vec<meshpay_protocol::sync::HandOver> {
        self.disk.handovers(limit)
    }
    /// Starts the Bluetooth LE roles on BlueZ, when the BLE link runs. `None`: BLE is off;
    /// `Some(Ok(adapter))`: up; `Some(Err(why))`: unavailable, with what to do about it (the
    /// node keeps running on its other links).
    #[cfg_attr(
        not(all(feature = "ble", target_os = "linux")),
        allow(clippy::unused_async)
    )]
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

    /// The Bluetooth LE link, when it runs: a driver that carries packets itself (an app
    /// bridging its platform's radio) attaches its connections here.
    pub fn ble_link(&self) -> Option<&BleLink> {
        self.ble.as_ref()
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
        let addr = addr.parse().map_err(|e| InputError::Address {
            address: addr.to_owned(),
            why: format!("{e}"),
        })?;
        let peer = self.p2p.dial(addr, Duration::from_secs(10)).await?;
        meshpay_transports::p2p::device_of(&peer).ok_or(NodeError::NotADevice)
    }

    /// A client for the settlement server at `url`, with this node's `[issuer] ca_file`.
    pub(crate) fn issuer_client(&self, url: &str) -> Result<IssuerClient, NodeError> {
        Ok(IssuerClient::new(url, self.config.issuer.ca_file.as_ref())?)
    }

    /// Fetches and checks the descriptor of the issuer behind `client`, which must be trusted.
    pub(crate) async fn trusted_issuer_at(
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
        let issuer = d.body().issuer;
        if !self
            .with(move |dev| dev.issuers().contains_key(&issuer))
            .await?
        {
            return Err(NodeError::UntrustedIssuer {
                url: client.url().to_owned(),
                issuer: d.body().issuer.to_text(),
            });
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

    /// The store, for queries.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The web app's settings (`[ui]`).
    pub fn ui_settings(&self) -> &crate::config::UiSettings {
        &self.config.ui
    }

    /// The currency used when a command names none.
    pub fn currency(&self) -> &str {
        &self.config.wallet.currency
    }

    /// The configured gateway (`[mesh] gateway`).
    pub fn gateway_configured(&self) -> Option<&str> {
        self.config.mesh.gateway.as_deref()
    }

    /// The gateway URL: `--gateway`, else the config's.
    pub fn gateway_url(&self, opts: &RunOptions) -> Option<String> {
        opts.gateway
            .clone()
            .or_else(|| self.config.mesh.gateway.clone())
    }

    /// Seconds between gateway rounds.
    pub fn gateway_period(&self) -> Duration {
        Duration::from_secs(self.config.mesh.gateway_secs.max(1))
    }
}

fn paid(a: Answer) -> Result<PayOutcome, NodeError> {
    match a {
        Answer::Paid(o) => Ok(o.into()),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(a: &Answer) -> NodeError {
    NodeError::OutOfTurn(format!("{a:?}"))
}
