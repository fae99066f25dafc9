//! What crosses the boundary: records and enums the bindings turn into Kotlin data classes,
//! Swift structs and Python dataclasses, built from the node's control answers (`api.rs`), so
//! the app shows what `meshpay --json` shows.

use meshpay_node::api;

/// Settings of an opened wallet.
#[derive(Debug, Clone, uniffi::Record)]
pub struct WalletSettings {
    /// Where the restore sentinel lives: outside anything backed up with the wallet's
    /// directory (Android: `noBackupFilesDir`; iOS: a directory excluded from backup, or the
    /// keystore-backed area). A wallet restored from a backup finds the sentinel ahead of its
    /// files and retires its allowances instead of reusing counters.
    pub sentinel_dir: String,
    /// libp2p listen addresses for local Wi-Fi (for example `/ip4/0.0.0.0/tcp/0`); empty:
    /// the config file's.
    pub listen: Vec<String>,
    /// Find peers on the local network by mDNS.
    pub mdns: bool,
    /// Run the Bluetooth LE link (bridged through the app's radio).
    pub ble: bool,
    /// Carry bundles only; take no payments.
    pub relay: bool,
}

/// This device.
#[derive(Debug, Clone, uniffi::Record)]
pub struct DeviceInfo {
    /// Its key, text form (`mpdev1…`).
    pub device_key: String,
    /// Its libp2p peer id.
    pub peer_id: Option<String>,
    /// libp2p listening addresses.
    pub listen: Vec<String>,
    /// The restore check made when the wallet opened.
    pub restore_check: String,
}

/// A payment request: its text is what the QR code shows.
#[derive(Debug, Clone, uniffi::Record)]
pub struct PaymentRequest {
    /// Text form (`mpreq1…`).
    pub text: String,
    /// The payee, text form.
    pub payee: String,
    /// Minor units.
    pub amount: u64,
    /// Currency.
    pub currency: String,
    /// Memo.
    pub memo: String,
    /// Nonce, hex.
    pub nonce: String,
    /// Open until (Unix seconds).
    pub expires: u64,
}

impl From<api::RequestInfo> for PaymentRequest {
    fn from(r: api::RequestInfo) -> Self {
        Self {
            text: r.text,
            payee: r.payee,
            amount: r.amount,
            currency: r.currency,
            memo: r.memo,
            nonce: r.nonce,
            expires: r.expires,
        }
    }
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PaymentStatus {
    /// Sent; no answer yet (it is sent again when the payee is back).
    Pending,
    /// The payee acknowledged it: paid.
    Acked,
    /// The payee refused it; nothing was spent.
    Refused,
}

impl From<meshpay_protocol::device::SentStatus> for PaymentStatus {
    fn from(s: meshpay_protocol::device::SentStatus) -> Self {
        use meshpay_protocol::device::SentStatus;
        match s {
            SentStatus::Pending => Self::Pending,
            SentStatus::Acked => Self::Acked,
            SentStatus::Refused => Self::Refused,
        }
    }
}

/// What became of a payment.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Payment {
    /// Pending, acked or refused.
    pub status: PaymentStatus,
    /// The IOU id, hex.
    pub iou: String,
    /// The payee, text form.
    pub payee: String,
    /// Minor units.
    pub amount: u64,
    /// Currency.
    pub currency: String,
    /// The IOU's counter in its allowance.
    pub counter: u32,
    /// Why it was refused, or why it is still pending.
    pub reason: Option<String>,
    /// Set when this answers a retry of an earlier payment instead of paying again.
    pub repeated: Option<String>,
}

impl From<api::PayOutcome> for Payment {
    fn from(p: api::PayOutcome) -> Self {
        Self {
            status: p.status.into(),
            iou: p.iou,
            payee: p.payee,
            amount: p.amount,
            currency: p.currency,
            counter: p.counter,
            reason: p.reason,
            repeated: p.repeated,
        }
    }
}

/// Money in one currency.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Balance {
    /// Currency.
    pub currency: String,
    /// Sum of the allowances' limits.
    pub allowance_limit: u64,
    /// What can still be paid now.
    pub spendable: u64,
    /// Paid and acknowledged.
    pub sent_acked: u64,
    /// Paid, not yet acknowledged.
    pub sent_pending: u64,
    /// Refused by the payee.
    pub sent_refused: u64,
    /// Received.
    pub received: u64,
}

/// One payment in the history.
#[derive(Debug, Clone, uniffi::Record)]
pub struct HistoryItem {
    /// Received (true) or sent.
    pub received: bool,
    /// The IOU id, hex.
    pub iou: String,
    /// The payee (sent) or the payer (received), text form.
    pub counterparty: String,
    /// Minor units.
    pub amount: u64,
    /// Currency.
    pub currency: String,
    /// Memo.
    pub memo: String,
    /// Its status (a received payment is acked).
    pub status: PaymentStatus,
    /// Why it was refused.
    pub reason: Option<String>,
    /// Allowance id, hex.
    pub allowance: String,
    /// Counter in the allowance.
    pub counter: u32,
    /// When (Unix seconds).
    pub time: u64,
    /// The issuer's decision: `settled` or `rejected: <reason>`, once known.
    pub settlement: Option<String>,
    /// The nonce of the payment request it pays, hex.
    pub nonce: String,
}

impl From<api::HistoryItem> for HistoryItem {
    fn from(h: api::HistoryItem) -> Self {
        Self {
            received: h.direction == api::Direction::Received,
            iou: h.iou,
            counterparty: h.counterparty,
            amount: h.amount,
            currency: h.currency,
            memo: h.memo,
            status: h.status.into(),
            reason: h.reason,
            allowance: h.allowance,
            counter: h.counter,
            time: h.time,
            settlement: h.settlement,
            nonce: h.nonce,
        }
    }
}

/// An allowance held: money an issuer locked for this device to spend offline.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Allowance {
    /// Id, hex.
    pub id: String,
    /// The issuer, text form.
    pub issuer: String,
    /// Currency.
    pub currency: String,
    /// Limit, minor units.
    pub limit: u64,
    /// Spent so far.
    pub spent: u64,
    /// What is left to spend.
    pub available: u64,
    /// The next counter.
    pub counter: u32,
    /// The largest single payment.
    pub max_payment: u64,
    /// Valid from (Unix seconds).
    pub valid_from: u64,
    /// Valid until (Unix seconds).
    pub valid_until: u64,
    /// Payees must settle by (Unix seconds).
    pub settle_by: u64,
    /// Retired (after a restore from a copy): never spent again.
    pub retired: bool,
    /// Spendable now.
    pub usable: bool,
}

impl From<api::Allowance> for Allowance {
    fn from(a: api::Allowance) -> Self {
        Self {
            id: a.id,
            issuer: a.issuer,
            currency: a.currency,
            limit: a.limit,
            spent: a.spent,
            available: a.available,
            counter: a.counter,
            max_payment: a.max_payment,
            valid_from: a.valid_from,
            valid_until: a.valid_until,
            settle_by: a.settle_by,
            retired: a.retired,
            usable: a.usable,
        }
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum AlertKind {
    /// An allowance spent twice: refused from then on.
    Fraud,
    /// The issuer revoked an allowance.
    Revoked,
    /// This wallet's files were restored from a copy; its allowances are retired.
    Restore,
    /// A peer broke the protocol's rules and was dropped.
    Misbehaved,
}

/// Something the user should know.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// When it was found (Unix seconds).
    pub at: u64,
    /// The allowance (hex) or the peer (text form) it concerns.
    pub subject: String,
    /// The line to show.
    pub detail: String,
}

impl From<api::Alert> for Alert {
    fn from(a: api::Alert) -> Self {
        Self {
            kind: match a.kind {
                api::AlertKind::Fraud => AlertKind::Fraud,
                api::AlertKind::Revoked => AlertKind::Revoked,
                api::AlertKind::Restore => AlertKind::Restore,
                api::AlertKind::Misbehaved => AlertKind::Misbehaved,
            },
            at: a.at,
            subject: a.subject,
            detail: a.detail,
        }
    }
}

/// A connected peer.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Peer {
    /// Its key, text form.
    pub device_key: String,
    /// `p2p` (Wi-Fi) or `ble`.
    pub link: String,
    /// Its address on that link.
    pub address: String,
}

/// What the mesh carries for others.
#[derive(Debug, Clone, uniffi::Record)]
pub struct MeshSummary {
    /// Bundles held.
    pub bundles: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The store's quota, bytes.
    pub max_bytes: u64,
    /// Settled records remembered (so they are not taken again).
    pub tombstones: u64,
    /// Hand-over receipts: peers that signed for bundles this device carried to them.
    pub handovers: u64,
    /// Writes to disk that failed since the wallet opened.
    pub write_errors: u64,
}

/// A round with a settlement server.
#[derive(Debug, Clone, uniffi::Record)]
pub struct IssuerRound {
    /// Records uploaded.
    pub uploaded: u64,
    /// Final receipts received for them.
    pub receipts: u64,
    /// This wallet's payments whose settlement state changed.
    pub updated: u64,
    /// New fraud proofs and revocations put into the mesh.
    pub alerts: u64,
}

/// An allowance added or topped up.
#[derive(Debug, Clone, uniffi::Record)]
pub struct AllowanceAdded {
    /// Id, hex.
    pub id: String,
    /// Not held before.
    pub new: bool,
    /// Limit.
    pub limit: u64,
    /// Currency.
    pub currency: String,
}

/// Something that happened, for the app to show.
#[derive(Debug, Clone, uniffi::Enum)]
pub enum Event {
    /// A payment was received and acknowledged: the vendor's "paid" screen.
    PaymentReceived {
        /// The IOU id, hex.
        iou: String,
        /// The payer, text form.
        payer: String,
        /// Minor units.
        amount: u64,
        /// The IOU's counter.
        counter: u32,
        /// Which request it pays (its nonce, hex).
        nonce: String,
        /// When (Unix seconds).
        at: u64,
    },
    /// An incoming payment was refused.
    PaymentRefused {
        /// The peer that sent it.
        payer: String,
        /// Why.
        reason: String,
        /// When (Unix seconds).
        at: u64,
    },
    /// A pending payment of this wallet got its answer.
    PaymentSent {
        /// What became of it.
        payment: Payment,
    },
    /// The issuer's decision on a payment is known.
    Settled {
        /// The IOU id, hex.
        iou: String,
        /// `settled` or `rejected: <reason>`.
        status: String,
    },
    /// An alert.
    Alert {
        /// It.
        alert: Alert,
    },
    /// The connected peers changed.
    PeersChanged,
    /// A sync with a peer moved bundles.
    Synced {
        /// The peer.
        peer: String,
        /// Bundles taken.
        took: u64,
        /// Bundles given.
        gave: u64,
    },
    /// A round with a settlement server ended.
    IssuerRoundEnded {
        /// The server.
        url: String,
        /// Why it failed, if it did.
        error: Option<String>,
    },
    /// Events were missed (the app read too slowly): read the lists again.
    Missed {
        /// How many.
        count: u64,
    },
}

fn n(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl From<api::Notice> for Event {
    fn from(notice: api::Notice) -> Self {
        match notice {
            api::Notice::Received {
                iou,
                payer,
                amount,
                counter,
                nonce,
                at,
            } => Event::PaymentReceived {
                iou,
                payer,
                amount,
                counter,
                nonce,
                at,
            },
            api::Notice::Refused { payer, reason, at } => {
                Event::PaymentRefused { payer, reason, at }
            }
            api::Notice::Sent(p) => Event::PaymentSent { payment: p.into() },
            api::Notice::Settled { iou, status } => Event::Settled { iou, status },
            api::Notice::Alert(a) => Event::Alert { alert: a.into() },
            api::Notice::Peers => Event::PeersChanged,
            api::Notice::Synced { peer, took, gave } => Event::Synced {
                peer,
                took: n(took),
                gave: n(gave),
            },
            api::Notice::Gateway(g) => Event::IssuerRoundEnded {
                url: g.url,
                error: g.error,
            },
        }
    }
}

impl From<api::MeshInfo> for MeshSummary {
    fn from(m: api::MeshInfo) -> Self {
        Self {
            bundles: n(m.bundles),
            bytes: m.bytes,
            max_bytes: m.max_bytes,
            tombstones: n(m.tombstones),
            handovers: n(m.carried.len()),
            write_errors: m.write_errors,
        }
    }
}

impl From<meshpay_node::gateway::GatewayRound> for IssuerRound {
    fn from(r: meshpay_node::gateway::GatewayRound) -> Self {
        Self {
            uploaded: n(r.uploaded),
            receipts: n(r.receipts),
            updated: n(r.updated),
            alerts: n(r.alerts),
        }
    }
}

/// Which end of a BLE connection this device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum BleRole {
    /// This device connected (it scanned and found the peer's advertisement); it writes the
    /// RX characteristic and receives TX notifications; it speaks first.
    Central,
    /// The peer connected to this device's advertised GATT service; it notifies on TX.
    Peripheral,
}

/// What the app must do next on its radio.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum BleAction {
    /// Send one packet on the connection: as central, a write without response to RX; as
    /// peripheral, a notification on TX.
    Write {
        /// The connection.
        conn: u64,
        /// The packet.
        bytes: Vec<u8>,
    },
    /// Drop the connection: its session ended.
    Disconnect {
        /// The connection.
        conn: u64,
    },
}

impl From<crate::radio::Action> for BleAction {
    fn from(a: crate::radio::Action) -> Self {
        match a {
            crate::radio::Action::Write { conn, bytes } => Self::Write { conn, bytes },
            crate::radio::Action::Disconnect { conn } => Self::Disconnect { conn },
        }
    }
}

/// What the app advertises and serves (`docs/ble.md`).
#[derive(Debug, Clone, uniffi::Record)]
pub struct BleService {
    /// The primary service's UUID.
    pub service_uuid: String,
    /// The characteristic the central writes (write without response, and write).
    pub rx_uuid: String,
    /// The characteristic the peripheral notifies on.
    pub tx_uuid: String,
    /// The advertisement's service data under the service UUID: flags (bit 0: this device
    /// also scans and connects) then the first 8 bytes of the device key.
    pub service_data: Vec<u8>,
    /// The advertised local name.
    pub local_name: String,
}
