//! The meshpay GATT service on Linux, through BlueZ: the peripheral role with bluer
//! (advertise the service, serve the GATT application) and the central role with btleplug
//! (scan for the service, connect, subscribe, write). Every connection becomes a
//! [`Pipe`] attached to the [`BleLink`], which runs the Noise session over it.
//!
//! Advertisement: the service UUID, and service data under it of 9 bytes: a flags byte
//! (bit 0: this device also scans and connects as a central) and the first 8 bytes of the
//! device key. Two devices that both scan would otherwise connect to each other twice; the
//! one whose key prefix is smaller connects, unless the other side does not scan.

use super::link::{BleLink, PacketSink, Pipe};
use super::session::Role;
use super::{RX_UUID, SERVICE_UUID, TX_UUID};
use crate::LinkError;
use bluer::adv::{Advertisement, AdvertisementHandle};
use bluer::gatt::local::{
    Application, ApplicationHandle, Characteristic, CharacteristicControlEvent,
    CharacteristicNotify, CharacteristicNotifyMethod, CharacteristicWrite,
    CharacteristicWriteMethod, Service, characteristic_control,
};
use bluer::gatt::{CharacteristicReader, CharacteristicWriter};
use bluer::{Address, DeviceEvent, DeviceProperty};
use btleplug::api::{
    Central as _, CentralEvent, Manager as _, Peripheral as _, ScanFilter, WriteType,
};
use btleplug::platform::{
    Adapter as BtAdapter, Manager as BtManager, Peripheral as BtPeripheral, PeripheralId,
};
use futures::{StreamExt, pin_mut};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Service data flag: the advertiser also connects as a central.
pub const FLAG_CENTRAL: u8 = 0x01;

/// The smallest packet this side sends (bluer reports 18 bytes for notifications at ATT MTU
/// 23); an ACK (11 bytes) and a DATA packet with payload fit.
const MIN_LINK_PACKET: usize = 16;

/// Why BLE cannot run here, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Bluetooth LE is unavailable: {0}")]
pub struct BleUnavailable(pub String);

/// Which roles to run and on which adapter.
#[derive(Debug, Clone)]
pub struct GattConfig {
    /// The adapter, by name (`hci0`) or address; the default adapter when `None`.
    pub adapter: Option<String>,
    /// Advertise and serve the GATT application.
    pub peripheral: bool,
    /// Scan and connect.
    pub central: bool,
}

impl Default for GattConfig {
    fn default() -> Self {
        Self {
            adapter: None,
            peripheral: true,
            central: true,
        }
    }
}

/// The running GATT roles; dropping it stops advertising and serving.
#[allow(dead_code)] // The handles are held for their drop.
pub struct Gatt {
    advertisement: Option<AdvertisementHandle>,
    application: Option<ApplicationHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The adapter in use.
    pub adapter: String,
    /// Its address.
    pub address: String,
}

impl Drop for Gatt {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn uuid(s: &str) -> Uuid {
    s.parse().expect("valid UUID constant")
}

fn explain(e: &bluer::Error) -> BleUnavailable {
    let text = e.to_string();
    let hint = if text.contains("ServiceUnknown") || text.contains("org.bluez") {
        "BlueZ is not running (no org.bluez on the system D-Bus): install the `bluez` package and start it (`systemctl start bluetooth`)"
    } else if matches!(
        e.kind,
        bluer::ErrorKind::NotAuthorized | bluer::ErrorKind::NotPermitted
    ) || text.contains("AccessDenied")
    {
        "not permitted to use Bluetooth: run as a member of the `bluetooth` group, or allow this user in BlueZ's D-Bus policy"
    } else if text.contains("NotReady") || text.contains("rfkill") {
        "the adapter is not ready: unblock it (`rfkill unblock bluetooth`) and power it on"
    } else {
        "BlueZ refused the request"
    };
    BleUnavailable(format!("{hint} ({text})"))
}

/// Finds the adapter by name or address, or the default one.
async fn pick_adapter(
    session: &bluer::Session,
    wanted: Option<&str>,
) -> Result<bluer::Adapter, BleUnavailable> {
    let names = session.adapter_names().await.map_err(|e| explain(&e))?;
    if names.is_empty() {
        return Err(BleUnavailable(
            "no Bluetooth adapter found: plug one in, or check `rfkill list` and `bluetoothctl list`"
                .into(),
        ));
    }
    let Some(wanted) = wanted else {
        return session.default_adapter().await.map_err(|e| explain(&e));
    };
    for name in names {
        let a = session.adapter(&name).map_err(|e| explain(&e))?;
        let addr = a.address().await.map_err(|e| explain(&e))?;
        if name == wanted || addr.to_string().eq_ignore_ascii_case(wanted) {
            return Ok(a);
        }
    }
    Err(BleUnavailable(format!(
        "no Bluetooth adapter named {wanted} (see `bluetoothctl list`)"
    )))
}

/// Starts the roles in `config` for `link`. Must be called inside a tokio runtime.
pub async fn start(link: BleLink, config: GattConfig) -> Result<Gatt, BleUnavailable> {
    let session = bluer::Session::new().await.map_err(|e| {
        BleUnavailable(format!(
            "cannot reach the system D-Bus ({e}): start dbus and BlueZ (`systemctl start dbus bluetooth`)"
        ))
    })?;
    let adapter = pick_adapter(&session, config.adapter.as_deref()).await?;
    adapter.set_powered(true).await.map_err(|e| explain(&e))?;
    let name = adapter.name().to_string();
    let address = adapter
        .address()
        .await
        .map_err(|e| explain(&e))?
        .to_string();
    let prefix = link.device_prefix();
    let mut gatt = Gatt {
        advertisement: None,
        application: None,
        tasks: Vec::new(),
        adapter: name.clone(),
        address,
    };
    if config.peripheral {
        let mut data = vec![if config.central { FLAG_CENTRAL } else { 0 }];
        data.extend_from_slice(&prefix);
        let adv = Advertisement {
            service_uuids: [uuid(SERVICE_UUID)].into_iter().collect(),
            service_data: [(uuid(SERVICE_UUID), data)].into_iter().collect(),
            local_name: Some("meshpay".into()),
            discoverable: Some(true),
            ..Advertisement::default()
        };
        gatt.advertisement = Some(adapter.advertise(adv).await.map_err(|e| explain(&e))?);
        let (rx_control, rx_handle) = characteristic_control();
        let (tx_control, tx_handle) = characteristic_control();
        let app = Application {
            services: vec![Service {
                uuid: uuid(SERVICE_UUID),
                primary: true,
                characteristics: vec![
                    Characteristic {
                        uuid: uuid(RX_UUID),
                        write: Some(CharacteristicWrite {
                            write: true,
                            write_without_response: true,
                            method: CharacteristicWriteMethod::Io,
                            ..CharacteristicWrite::default()
                        }),
                        control_handle: rx_handle,
                        ..Characteristic::default()
                    },
                    Characteristic {
                        uuid: uuid(TX_UUID),
                        notify: Some(CharacteristicNotify {
                            notify: true,
                            method: CharacteristicNotifyMethod::Io,
                            ..CharacteristicNotify::default()
                        }),
                        control_handle: tx_handle,
                        ..Characteristic::default()
                    },
                ],
                ..Service::default()
            }],
            ..Application::default()
        };
        gatt.application = Some(
            adapter
                .serve_gatt_application(app)
                .await
                .map_err(|e| explain(&e))?,
        );
        gatt.tasks.push(tokio::spawn(peripheral(
            link.clone(),
            adapter.clone(),
            rx_control,
            tx_control,
        )));
    }
    if config.central {
        let central = btleplug_adapter(&name).await?;
        gatt.tasks.push(tokio::spawn(central_role(
            link,
            central,
            prefix,
            config.peripheral,
        )));
    }
    tracing::info!(adapter = %gatt.adapter, address = %gatt.address, "Bluetooth LE up");
    Ok(gatt)
}

/// btleplug names adapters `hciN (…)` without their address: match bluer's name.
async fn btleplug_adapter(name: &str) -> Result<BtAdapter, BleUnavailable> {
    let manager = BtManager::new()
        .await
        .map_err(|e| BleUnavailable(format!("btleplug cannot reach BlueZ: {e}")))?;
    let adapters = manager
        .adapters()
        .await
        .map_err(|e| BleUnavailable(format!("btleplug cannot list adapters: {e}")))?;
    for a in adapters {
        let info = a.adapter_info().await.unwrap_or_default();
        if info.split_whitespace().next() == Some(name) {
            return Ok(a);
        }
    }
    Err(BleUnavailable(format!(
        "btleplug does not see adapter {name}"
    )))
}

// ---------------------------------------------------------------------------------------------
// Peripheral

struct NotifySink {
    writer: Arc<tokio::sync::Mutex<Option<CharacteristicWriter>>>,
    max: Arc<AtomicUsize>,
    adapter: bluer::Adapter,
    device: Address,
}

#[async_trait::async_trait]
impl PacketSink for NotifySink {
    async fn send(&self, packet: Vec<u8>) -> Result<(), LinkError> {
        let guard = self.writer.lock().await;
        // Before the central subscribes, packets are dropped; the framer sends them again.
        let Some(w) = guard.as_ref() else {
            return Ok(());
        };
        if packet.len() > w.mtu() {
            return Err(LinkError::TooLarge {
                len: packet.len(),
                limit: w.mtu(),
            });
        }
        match w.send(&packet).await {
            Ok(()) => Ok(()),
            Err(e) if w.is_closed().unwrap_or(true) => Err(LinkError::Failed(e.to_string())),
            Err(e) => {
                tracing::debug!(error = %e, "BLE notification not sent");
                Ok(())
            }
        }
    }

    fn max_packet(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    fn close(&self) {
        let adapter = self.adapter.clone();
        let device = self.device;
        tokio::spawn(async move {
            if let Ok(d) = adapter.device(device) {
                let _ = d.disconnect().await;
            }
        });
    }
}

struct CentralConn {
    packets: mpsc::Sender<Vec<u8>>,
    writer: Arc<tokio::sync::Mutex<Option<CharacteristicWriter>>>,
    max: Arc<AtomicUsize>,
    readers: mpsc::UnboundedSender<CharacteristicReader>,
}

enum PeriphEvent {
    Data(Address, Vec<u8>),
    Gone(Address),
}

async fn peripheral(
    link: BleLink,
    adapter: bluer::Adapter,
    rx_control: bluer::gatt::local::CharacteristicControl,
    tx_control: bluer::gatt::local::CharacteristicControl,
) {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<PeriphEvent>();
    let mut conns: HashMap<Address, CentralConn> = HashMap::new();
    pin_mut!(rx_control);
    pin_mut!(tx_control);
    loop {
        tokio::select! {
            Some(ev) = rx_control.next() => {
                if let CharacteristicControlEvent::Write(req) = ev {
                    let dev = req.device_address();
                    // The write's MTU is the ATT MTU: a value is 3 bytes less.
                    let mtu = req.mtu().saturating_sub(3);
                    let conn = conn_for(&mut conns, &link, &adapter, &ev_tx, dev, mtu);
                    match req.accept() {
                        Ok(reader) => {
                            let _ = conn.readers.send(reader);
                        }
                        Err(e) => tracing::debug!(error = %e, "BLE write not accepted"),
                    }
                }
            }
            Some(ev) = tx_control.next() => {
                if let CharacteristicControlEvent::Notify(writer) = ev {
                    let dev = writer.device_address();
                    let mtu = writer.mtu();
                    let conn = conn_for(&mut conns, &link, &adapter, &ev_tx, dev, mtu);
                    // bluer reports what a notification may carry, which at the smallest MTU
                    // is less than 20 bytes: packets are cut to it.
                    conn.max.fetch_min(mtu.clamp(MIN_LINK_PACKET, 512), Ordering::Relaxed);
                    *conn.writer.lock().await = Some(writer);
                }
            }
            Some(ev) = ev_rx.recv() => match ev {
                PeriphEvent::Data(dev, data) => {
                    if let Some(c) = conns.get(&dev)
                        && c.packets.try_send(data).is_err()
                    {
                        tracing::debug!(%dev, "BLE packet dropped: session busy or gone");
                    }
                }
                PeriphEvent::Gone(dev) => {
                    // Dropping the packet channel ends the session.
                    conns.remove(&dev);
                }
            },
            else => return,
        }
        conns.retain(|_, c| !c.packets.is_closed());
    }
}

/// The connection state of a central, created on its first write or subscription, with its
/// session and a watch on its connection.
fn conn_for<'a>(
    conns: &'a mut HashMap<Address, CentralConn>,
    link: &BleLink,
    adapter: &bluer::Adapter,
    ev_tx: &mpsc::UnboundedSender<PeriphEvent>,
    dev: Address,
    mtu: usize,
) -> &'a CentralConn {
    conns.entry(dev).or_insert_with(|| {
        let (packets_tx, packets_rx) = mpsc::channel(1024);
        let writer = Arc::new(tokio::sync::Mutex::new(None));
        let max = Arc::new(AtomicUsize::new(mtu.clamp(MIN_LINK_PACKET, 512)));
        let (readers_tx, readers_rx) = mpsc::unbounded_channel();
        tokio::spawn(read_writes(dev, readers_rx, ev_tx.clone()));
        watch(adapter, ev_tx, dev);
        link.attach(
            Pipe {
                sink: Box::new(NotifySink {
                    writer: writer.clone(),
                    max: max.clone(),
                    adapter: adapter.clone(),
                    device: dev,
                }),
                packets: packets_rx,
                address: format!("ble:{dev}"),
            },
            Role::Responder,
        );
        CentralConn {
            packets: packets_tx,
            writer,
            max,
            readers: readers_tx,
        }
    })
}

/// Reads a central's writes in order. BlueZ hands over one socket per central; some BlueZ
/// implementations (and the bluezoo mock) hand over a new one per write without closing the
/// old: whatever the old one still holds is read before switching.
async fn read_writes(
    dev: Address,
    mut readers: mpsc::UnboundedReceiver<CharacteristicReader>,
    events: mpsc::UnboundedSender<PeriphEvent>,
) {
    let mut current: Option<CharacteristicReader> = None;
    loop {
        tokio::select! {
            biased;
            r = async { current.as_ref().expect("guarded").recv().await }, if current.is_some() => match r {
                Ok(v) if !v.is_empty() => {
                    let _ = events.send(PeriphEvent::Data(dev, v));
                }
                _ => current = None,
            },
            next = readers.recv() => {
                let Some(next) = next else { return };
                if let Some(old) = current.take() {
                    while let Ok(v) = old.try_recv() {
                        if v.is_empty() {
                            break;
                        }
                        let _ = events.send(PeriphEvent::Data(dev, v));
                    }
                }
                current = Some(next);
            }
        }
    }
}

/// Watches a central's `Connected` property: when it drops, so does the session.
fn watch(adapter: &bluer::Adapter, events: &mpsc::UnboundedSender<PeriphEvent>, dev: Address) {
    let adapter = adapter.clone();
    let events = events.clone();
    tokio::spawn(async move {
        // Whatever ends the watch (the device object went away, or its events), the central
        // is treated as gone: its session ends rather than lingering unwatched.
        if let Ok(d) = adapter.device(dev)
            && let Ok(changes) = d.events().await
        {
            pin_mut!(changes);
            while let Some(event) = changes.next().await {
                if let DeviceEvent::PropertyChanged(DeviceProperty::Connected(false)) = event {
                    break;
                }
            }
        }
        let _ = events.send(PeriphEvent::Gone(dev));
    });
}

// ---------------------------------------------------------------------------------------------
// Central

struct WriteSink {
    peripheral: BtPeripheral,
    rx: btleplug::api::Characteristic,
    max: usize,
}

#[async_trait::async_trait]
impl PacketSink for WriteSink {
    async fn send(&self, packet: Vec<u8>) -> Result<(), LinkError> {
        self.peripheral
            .write(&self.rx, &packet, WriteType::WithoutResponse)
            .await
            .map_err(|e| LinkError::Failed(e.to_string()))
    }

    fn max_packet(&self) -> usize {
        self.max
    }

    fn close(&self) {
        let p = self.peripheral.clone();
        tokio::spawn(async move {
            let _ = p.disconnect().await;
        });
    }
}

/// Whether this device connects to an advertiser with `data` as its service data.
fn should_connect(own: [u8; 8], data: Option<&Vec<u8>>, own_advertises: bool) -> bool {
    let Some(data) = data.filter(|d| d.len() == 9) else {
        // Not a meshpay advertisement this version reads (a phone may leave it out): connect.
        return true;
    };
    let theirs: [u8; 8] = data[1..].try_into().expect("8 bytes");
    if theirs == own {
        return false;
    }
    // If it scans too and this device advertises, the smaller key prefix connects.
    !(own_advertises && data[0] & FLAG_CENTRAL != 0 && own > theirs)
}

async fn central_role(link: BleLink, adapter: BtAdapter, prefix: [u8; 8], advertising: bool) {
    let mut events = match adapter.events().await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "BLE central: no events");
            return;
        }
    };
    let filter = ScanFilter {
        services: vec![uuid(SERVICE_UUID)],
    };
    if let Err(e) = adapter.start_scan(filter).await {
        tracing::error!(error = %e, "BLE central: cannot scan");
        return;
    }
    let busy: Arc<Mutex<HashSet<PeripheralId>>> = Arc::new(Mutex::new(HashSet::new()));
    while let Some(ev) = events.next().await {
        let (CentralEvent::DeviceDiscovered(id) | CentralEvent::DeviceUpdated(id)) = ev else {
            continue;
        };
        if busy.lock().expect("lock").contains(&id) {
            continue;
        }
        let Ok(p) = adapter.peripheral(&id).await else {
            continue;
        };
        let Ok(Some(props)) = p.properties().await else {
            continue;
        };
        let svc = uuid(SERVICE_UUID);
        if !props.services.contains(&svc)
            || !should_connect(prefix, props.service_data.get(&svc), advertising)
        {
            continue;
        }
        busy.lock().expect("lock").insert(id.clone());
        let link = link.clone();
        let busy = busy.clone();
        tokio::spawn(async move {
            if let Err(e) = connect(&link, p.clone()).await {
                tracing::info!(error = %e, "BLE connection failed");
                let _ = p.disconnect().await;
            }
            // Let the radio settle before trying this device again.
            tokio::time::sleep(Duration::from_secs(2)).await;
            busy.lock().expect("lock").remove(&id);
        });
    }
}

/// Connects, subscribes, and runs a session until it ends.
async fn connect(link: &BleLink, p: BtPeripheral) -> Result<(), String> {
    let address = format!("ble:{}", p.address());
    tokio::time::timeout(Duration::from_secs(15), p.connect())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    p.discover_services().await.map_err(|e| e.to_string())?;
    let chars = p.characteristics();
    let rx = chars
        .iter()
        .find(|c| c.uuid == uuid(RX_UUID))
        .cloned()
        .ok_or("no meshpay RX characteristic")?;
    let tx = chars
        .iter()
        .find(|c| c.uuid == uuid(TX_UUID))
        .cloned()
        .ok_or("no meshpay TX characteristic")?;
    let mut notifications = p.notifications().await.map_err(|e| e.to_string())?;
    p.subscribe(&tx).await.map_err(|e| e.to_string())?;
    let (packets_tx, packets_rx) = mpsc::channel(1024);
    let tx_uuid = tx.uuid;
    let pump = tokio::spawn(async move {
        while let Some(n) = notifications.next().await {
            if n.uuid == tx_uuid && packets_tx.send(n.value).await.is_err() {
                return;
            }
        }
    });
    // btleplug does not report the ATT MTU: send what the peripheral says it takes (its
    // acknowledgements carry it), up to the largest attribute value.
    let session = link.attach(
        Pipe {
            sink: Box::new(WriteSink {
                peripheral: p.clone(),
                rx,
                max: super::framer::MAX_PACKET,
            }),
            packets: packets_rx,
            address,
        },
        Role::Initiator,
    );
    // The notification stream does not end on disconnect: watch the connection.
    let watcher = {
        let p = p.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if !p.is_connected().await.unwrap_or(false) {
                    return;
                }
            }
        }
    };
    tokio::select! {
        why = session => {
            tracing::debug!(why = ?why, "BLE session ended");
        }
        () = watcher => {}
    }
    pump.abort();
    let _ = p.disconnect().await;
    Ok(())
}
