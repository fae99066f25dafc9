//! # meshpay-ffi
//!
//! meshpay inside a phone app: the wallet, the mesh store, the device machine and the
//! sessions of a node, behind a small API the app calls through UniFFI's Kotlin, Swift or
//! Python bindings. The app keeps the radio (Android's `BluetoothGatt` and
//! `BluetoothLeAdvertiser`, iOS's CoreBluetooth) and moves bytes; the library runs the BLE
//! framer and the Noise session over them (see [`radio`]), and libp2p over local Wi-Fi itself.
//!
//! ## Threads
//!
//! A [`Wallet`] owns one tokio runtime with two worker threads, named `meshpay`; it starts
//! with [`Wallet::open`] and stops with [`Wallet::close`] (or when the object is dropped).
//! The app hosts nothing. Every call is synchronous and safe from any app thread: short ones
//! return at once; network ones (pay, top up, sync) wait for their answer with the node's own
//! timeouts; [`Wallet::next_event`] and [`Wallet::ble_next_action`] wait at most the timeout
//! given. Call them from a background thread, never the UI thread. The library's timers
//! (retransmission, retries, syncs, expiry) run on its own threads: the app never needs to
//! wake it.
//!
//! ## Storage
//!
//! A wallet lives in a directory of the app's (`wallet.db` in SQLite, `mesh/` in sled,
//! `config.toml`); the restore sentinel lives where [`WalletSettings::sentinel_dir`] says,
//! which must be outside the app's backups.

pub mod radio;
mod types;

pub use radio::RadioError;
pub use types::*;

use meshpay_node::api::{self, Answer, ErrorKind, Request};
use meshpay_node::config::Home;
use meshpay_node::daemon::{Node, NodeError, RunOptions};
use meshpay_node::startup::StartError;
use meshpay_transports::ble::Role;
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::Duration;
use tokio::sync::broadcast;

/// Events kept for an app that is not reading; past this, it gets `Missed`.
pub const EVENT_QUEUE: usize = 1024;

uniffi::setup_scaffolding!("meshpay");

/// Why a call failed. Every variant's message is the line to show the user (Kotlin's
/// `MeshpayException.Input.message`, Swift's `MeshpayError.Input(message:)`, Python's
/// `str(e)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum MeshpayError {
    /// The input is wrong (an amount, a request's text, a file); nothing changed.
    #[error("{message}")]
    Input {
        /// What to show.
        message: String,
    },
    /// A wallet rule refused the payment (not enough left, an expired allowance, …); nothing
    /// was spent.
    #[error("{message}")]
    Pay {
        /// What to show.
        message: String,
    },
    /// The peer could not be reached, or answered wrongly.
    #[error("{message}")]
    Peer {
        /// What to show.
        message: String,
    },
    /// The issuer's server refused, could not be reached, or answered wrongly.
    #[error("{message}")]
    Issuer {
        /// What to show.
        message: String,
    },
    /// Storage failed; nothing was changed.
    #[error("{message}")]
    Storage {
        /// What to show.
        message: String,
    },
    /// The passphrase does not open this wallet.
    #[error("{message}")]
    WrongPassphrase {
        /// What to show.
        message: String,
    },
    /// There is no wallet in the directory, or there already is one.
    #[error("{message}")]
    NoWallet {
        /// What to show.
        message: String,
    },
    /// The radio call names a connection that is not open, or the packet is too large.
    #[error("{message}")]
    Radio {
        /// What to show.
        message: String,
    },
    /// The wallet was closed.
    #[error("{message}")]
    Closed {
        /// What to show.
        message: String,
    },
}

impl From<NodeError> for MeshpayError {
    fn from(e: NodeError) -> Self {
        let api = meshpay_node::control::api_error(&e);
        let message = api.message;
        match api.kind {
            ErrorKind::Pay => Self::Pay { message },
            ErrorKind::Peer => Self::Peer { message },
            ErrorKind::Issuer => Self::Issuer { message },
            ErrorKind::Storage => Self::Storage { message },
            ErrorKind::Stopped => Self::Closed { message },
            // The web app's kinds (authorize, forbidden, busy) do not arise here.
            _ => Self::Input { message },
        }
    }
}

impl From<StartError> for MeshpayError {
    fn from(e: StartError) -> Self {
        let message = e.to_string();
        match e {
            StartError::NoWallet(_) => Self::NoWallet { message },
            StartError::Keystore(meshpay_node::keystore::KeystoreError::WrongPassphrase) => {
                Self::WrongPassphrase { message }
            }
            StartError::Address(..) | StartError::Config(_) => Self::Input { message },
            _ => Self::Storage { message },
        }
    }
}

impl From<RadioError> for MeshpayError {
    fn from(e: RadioError) -> Self {
        Self::Radio {
            message: e.to_string(),
        }
    }
}

fn closed() -> MeshpayError {
    MeshpayError::Closed {
        message: "the wallet is closed".into(),
    }
}

/// Creates a wallet in `dir` (made owner-only), with a fresh device key sealed under
/// `passphrase` (at least 8 characters). Returns the device key, text form. Refuses a
/// directory that already holds one.
#[uniffi::export]
pub fn create_wallet(dir: String, passphrase: String) -> Result<String, MeshpayError> {
    if passphrase.chars().count() < meshpay_node::cli::MIN_PASSPHRASE {
        return Err(MeshpayError::Input {
            message: format!(
                "the passphrase must have at least {} characters",
                meshpay_node::cli::MIN_PASSPHRASE
            ),
        });
    }
    let home = Home {
        dir: std::path::PathBuf::from(dir),
    };
    if meshpay_node::cli::holds_wallet(&home) {
        return Err(MeshpayError::NoWallet {
            message: format!("{} already holds a wallet", home.dir.display()),
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| MeshpayError::Storage {
            message: e.to_string(),
        })?;
    let made = rt.block_on(meshpay_node::cli::create_wallet(
        &home,
        &passphrase,
        meshpay_node::keystore::Cost::default(),
    ));
    made.map(|key| meshpay_protocol::PrintableKey::to_text(&key))
        .map_err(|e| MeshpayError::Storage {
            message: format!("{e:#}"),
        })
}

struct Running {
    rt: tokio::runtime::Runtime,
    node: Arc<Node>,
}

/// An open, unlocked wallet: a running meshpay device.
#[derive(uniffi::Object)]
pub struct Wallet {
    /// Calls hold it shared for as long as they run; `shutdown` takes it alone, so it waits
    /// for calls in flight and none starts on a stopped runtime.
    running: RwLock<Option<Running>>,
    radio: Arc<radio::Bridge>,
    /// Events, forwarded from the node by a task on the runtime; the app's thread waits on
    /// this queue without touching the runtime.
    events: Mutex<mpsc::Receiver<Event>>,
    device_key: String,
}

impl Wallet {
    /// Runs `f` on the node, inside the wallet's runtime.
    fn run<T, F>(&self, f: impl FnOnce(Arc<Node>) -> F) -> Result<T, MeshpayError>
    where
        F: Future<Output = Result<T, MeshpayError>>,
    {
        let running = self
            .running
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = running.as_ref().ok_or_else(closed)?;
        r.rt.block_on(f(Arc::clone(&r.node)))
    }

    /// One control request, as the CLI and the web app make it.
    fn call(&self, request: Request) -> Result<Answer, MeshpayError> {
        self.run(|node| async move { Ok(meshpay_node::control::run(&node, request).await?) })
    }
}

fn unexpected(a: &Answer) -> MeshpayError {
    MeshpayError::Storage {
        message: format!("unexpected answer {a:?}"),
    }
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
}

#[uniffi::export]
impl Wallet {
    /// Opens the wallet in `dir`, unlocking its device key with `passphrase`, and starts it:
    /// its links, its timers, and its restore check.
    #[uniffi::constructor]
    pub fn open(
        dir: String,
        passphrase: String,
        settings: WalletSettings,
    ) -> Result<Arc<Self>, MeshpayError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("meshpay")
            .enable_all()
            .build()
            .map_err(|e| MeshpayError::Storage {
                message: e.to_string(),
            })?;
        let home = Home {
            dir: std::path::PathBuf::from(dir),
        };
        let opts = RunOptions {
            listen: settings.listen,
            no_mdns: !settings.mdns,
            relay: settings.relay,
            ble: settings.ble,
            sentinel_dir: Some(settings.sentinel_dir.into()),
            ..RunOptions::default()
        };
        let (node, link_events) = rt.block_on(Node::start(&home, &passphrase, &opts))?;
        rt.spawn(Arc::clone(&node).serve_links(link_events));
        let (tx, rx) = mpsc::sync_channel(EVENT_QUEUE);
        rt.spawn(forward(node.notices.subscribe(), tx));
        Ok(Arc::new(Self {
            device_key: meshpay_protocol::PrintableKey::to_text(&node.device),
            running: RwLock::new(Some(Running { rt, node })),
            radio: Arc::new(radio::Bridge::default()),
            events: Mutex::new(rx),
        }))
    }

    /// Stops the wallet (named so it does not shadow the bindings' own `close`/`destroy`, which free the object): its links and timers end and its files are closed. Every later call
    /// fails with `Closed`. Closing twice is harmless.
    pub fn shutdown(&self) {
        let running = self
            .running
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(Running { rt, node }) = running {
            rt.block_on(node.store().close());
            drop(node);
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }

    /// This device's key, text form (`mpdev1…`).
    pub fn device_key(&self) -> String {
        self.device_key.clone()
    }

    /// This device: key, libp2p id and addresses, restore check.
    pub fn info(&self) -> Result<DeviceInfo, MeshpayError> {
        match self.call(Request::Id)? {
            Answer::Id(i) => Ok(DeviceInfo {
                device_key: i.device_key,
                peer_id: i.peer_id,
                listen: i.listen,
                restore_check: i.restore_check,
            }),
            a => Err(unexpected(&a)),
        }
    }

    /// Trusts an issuer: `descriptor` is the issuer's descriptor file, as its operator hands
    /// it out. Returns the issuer's name.
    pub fn trust_issuer(&self, descriptor: Vec<u8>) -> Result<String, MeshpayError> {
        match self.call(Request::Trust {
            descriptor: hex::encode(descriptor),
        })? {
            Answer::Trusted(t) => Ok(t.name),
            a => Err(unexpected(&a)),
        }
    }

    /// Adds an allowance certificate (the file an issuer issued to this device).
    pub fn add_allowance(&self, certificate: Vec<u8>) -> Result<AllowanceAdded, MeshpayError> {
        match self.call(Request::AddAllowance {
            cert: hex::encode(certificate),
        })? {
            Answer::AllowanceAdded(a) => Ok(AllowanceAdded {
                id: a.id,
                new: a.new,
                limit: a.limit,
                currency: a.currency,
            }),
            a => Err(unexpected(&a)),
        }
    }

    /// Online: gets a new allowance of `amount` for `days` from the trusted issuer at `url`.
    pub fn top_up(
        &self,
        url: String,
        amount: u64,
        currency: Option<String>,
        days: u64,
    ) -> Result<AllowanceAdded, MeshpayError> {
        match self.call(Request::Topup {
            url,
            amount,
            currency,
            days,
        })? {
            Answer::ToppedUp(t) => Ok(AllowanceAdded {
                id: t.id,
                new: true,
                limit: t.limit,
                currency: t.currency,
            }),
            a => Err(unexpected(&a)),
        }
    }

    /// Online: uploads the records of received payments to the issuer at `url` and fetches
    /// its decisions, revocations and fraud proofs.
    pub fn sync_issuer(&self, url: String) -> Result<IssuerRound, MeshpayError> {
        match self.call(Request::SyncIssuer { url })? {
            Answer::GatewayRound(r) => Ok(r.into()),
            a => Err(unexpected(&a)),
        }
    }

    /// A payment request for `amount` minor units (currency: the config's when `None`).
    /// Show its `text` as a QR code.
    pub fn request_payment(
        &self,
        amount: u64,
        currency: Option<String>,
        memo: Option<String>,
    ) -> Result<PaymentRequest, MeshpayError> {
        match self.call(Request::Request {
            amount,
            currency,
            memo,
        })? {
            Answer::Request(r) => Ok(r.into()),
            a => Err(unexpected(&a)),
        }
    }

    /// Reads a request's text (from a QR code) without paying it: show this to the user
    /// before [`Wallet::pay`].
    pub fn read_request(&self, text: String) -> Result<PaymentRequest, MeshpayError> {
        let req = meshpay_protocol::PaymentRequest::from_text(text.trim()).map_err(|e| {
            MeshpayError::Input {
                message: format!("not a payment request: {e}"),
            }
        })?;
        Ok(meshpay_node::control::request_info(&req).into())
    }

    /// Pays a request (its text), over whatever link reaches the payee. Paying the same
    /// request again re-sends the same IOU: it is never paid twice. With `key` (an
    /// idempotency key of the app's), a payment already made under it is answered instead.
    pub fn pay(&self, request: String, key: Option<String>) -> Result<Payment, MeshpayError> {
        match self.call(Request::Pay {
            request: Some(request),
            to: None,
            amount: None,
            currency: None,
            memo: None,
            again: false,
            id: key,
        })? {
            Answer::Paid(p) => Ok(p.into()),
            a => Err(unexpected(&a)),
        }
    }

    /// Balances per currency.
    pub fn balances(&self) -> Result<Vec<Balance>, MeshpayError> {
        match self.call(Request::Balance)? {
            Answer::Balance(map) => Ok(map
                .into_iter()
                .map(|(currency, b)| Balance {
                    currency,
                    allowance_limit: b.allowance_limit,
                    spendable: b.spendable,
                    sent_acked: b.sent_acked,
                    sent_pending: b.sent_pending,
                    sent_refused: b.sent_refused,
                    received: b.received,
                })
                .collect()),
            a => Err(unexpected(&a)),
        }
    }

    /// Payments sent and received, newest first.
    pub fn history(&self) -> Result<Vec<HistoryItem>, MeshpayError> {
        match self.call(Request::History)? {
            Answer::History(h) => Ok(h.into_iter().map(Into::into).collect()),
            a => Err(unexpected(&a)),
        }
    }

    /// Allowances held.
    pub fn allowances(&self) -> Result<Vec<Allowance>, MeshpayError> {
        match self.call(Request::Allowances)? {
            Answer::Allowances(list) => Ok(list.into_iter().map(Into::into).collect()),
            a => Err(unexpected(&a)),
        }
    }

    /// What needs the user's attention, newest first.
    pub fn alerts(&self) -> Result<Vec<Alert>, MeshpayError> {
        match self.call(Request::Alerts)? {
            Answer::Alerts(list) => Ok(list.into_iter().map(Into::into).collect()),
            a => Err(unexpected(&a)),
        }
    }

    /// What the mesh carries for others.
    pub fn mesh(&self) -> Result<MeshSummary, MeshpayError> {
        match self.call(Request::Mesh)? {
            Answer::Mesh(m) => Ok(m.into()),
            a => Err(unexpected(&a)),
        }
    }

    /// Connected peers, over Wi-Fi and BLE.
    pub fn peers(&self) -> Result<Vec<Peer>, MeshpayError> {
        match self.call(Request::Peers)? {
            Answer::Peers(list) => Ok(list
                .into_iter()
                .map(|p| Peer {
                    device_key: p.device_key,
                    link: p.link,
                    address: p.address,
                })
                .collect()),
            a => Err(unexpected(&a)),
        }
    }

    /// Connects over libp2p to a multiaddress with the peer id
    /// (`/ip4/…/tcp/…/p2p/12D3…`); returns the device reached.
    pub fn dial(&self, address: String) -> Result<String, MeshpayError> {
        match self.call(Request::Dial { addr: address })? {
            Answer::Dialed(d) => Ok(d.device_key),
            a => Err(unexpected(&a)),
        }
    }

    /// Syncs the mesh with every connected peer now (it also runs on its own timer).
    pub fn sync_peers(&self) -> Result<u64, MeshpayError> {
        match self.call(Request::Sync)? {
            Answer::Synced(s) => Ok(u64::try_from(s.took + s.gave).unwrap_or(u64::MAX)),
            a => Err(unexpected(&a)),
        }
    }

    /// Waits up to `timeout_ms` for the next event; `None` when none came. Events are kept
    /// for the app while it is not reading, up to a bound; past it the app gets `Missed` and
    /// should read the lists again.
    pub fn next_event(&self, timeout_ms: u32) -> Result<Option<Event>, MeshpayError> {
        let events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match events.recv_timeout(ms(timeout_ms)) {
            Ok(e) => Ok(Some(e)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(closed()),
        }
    }

    /// What the app advertises and serves for BLE.
    pub fn ble_service(&self) -> Result<BleService, MeshpayError> {
        let prefix = self.run(|node| async move {
            node.ble_link()
                .map(meshpay_transports::ble::BleLink::device_prefix)
                .ok_or_else(ble_off)
        })?;
        let mut service_data = vec![0x01];
        service_data.extend_from_slice(&prefix);
        Ok(BleService {
            service_uuid: meshpay_transports::ble::SERVICE_UUID.into(),
            rx_uuid: meshpay_transports::ble::RX_UUID.into(),
            tx_uuid: meshpay_transports::ble::TX_UUID.into(),
            service_data,
            local_name: "meshpay".into(),
        })
    }

    /// A BLE connection is up at ATT `mtu` (23 until the stack negotiates more): `address`
    /// is the peer's radio address, `role` which end this device is. Returns the
    /// connection's id for the other radio calls. As central, subscribe to TX before the
    /// first write.
    pub fn ble_connected(
        &self,
        address: String,
        role: BleRole,
        mtu: u32,
    ) -> Result<u64, MeshpayError> {
        let radio = Arc::clone(&self.radio);
        self.run(|node| async move {
            let link = node.ble_link().ok_or_else(ble_off)?;
            let (conn, pipe) = radio.open(&address, mtu)?;
            let role = match role {
                BleRole::Central => Role::Initiator,
                BleRole::Peripheral => Role::Responder,
            };
            drop(link.attach(pipe, role));
            Ok(conn)
        })
    }

    /// The connection's ATT MTU changed.
    pub fn ble_mtu_changed(&self, conn: u64, mtu: u32) -> Result<(), MeshpayError> {
        Ok(self.radio.set_mtu(conn, mtu)?)
    }

    /// Bytes arrived on the connection: one write to RX (peripheral) or one TX
    /// notification (central).
    pub fn ble_received(&self, conn: u64, bytes: Vec<u8>) -> Result<(), MeshpayError> {
        Ok(self.radio.received(conn, bytes)?)
    }

    /// The connection is gone.
    pub fn ble_disconnected(&self, conn: u64) -> Result<(), MeshpayError> {
        Ok(self.radio.closed(conn)?)
    }

    /// Waits up to `timeout_ms` for the next thing to do on the radio: a packet to send, or
    /// a connection to drop. Send packets of one connection in the order given, one at a
    /// time (wait for Android's `onCharacteristicWrite` / `onNotificationSent`, or iOS's
    /// `peripheralIsReady`, before the next).
    pub fn ble_next_action(&self, timeout_ms: u32) -> Option<BleAction> {
        self.radio.next_action(ms(timeout_ms)).map(Into::into)
    }
}

/// Moves the node's notices to the app's queue until the node stops, counting what a full
/// queue (an app not reading) or a lagging subscription missed.
async fn forward(mut notices: broadcast::Receiver<api::Notice>, tx: mpsc::SyncSender<Event>) {
    let mut missed = 0u64;
    loop {
        let next = match notices.recv().await {
            Ok(n) => Event::from(n),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                missed += n;
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        // What was missed is told first, then this event; a full queue misses it too.
        let missed_first = (missed > 0).then_some(Event::Missed { count: missed });
        for event in missed_first.into_iter().chain([next]) {
            match tx.try_send(event) {
                Ok(()) => missed = 0,
                Err(mpsc::TrySendError::Full(_)) => {
                    missed += 1;
                    break;
                }
                Err(mpsc::TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

fn ble_off() -> MeshpayError {
    MeshpayError::Input {
        message: "Bluetooth LE is off for this wallet: open it with `ble` set".into(),
    }
}

impl Drop for Wallet {
    fn drop(&mut self) {
        self.shutdown();
    }
}
