//! The BLE [`Link`]: every connection, whatever carries its packets (a GATT connection as
//! central or peripheral, or an emulated one), is a [`Pipe`] attached to the link, which runs
//! a [`Session`] over it in its own task. Once the handshake names the peer, requests to that
//! device key go over the session, and its requests reach the node as [`LinkEvent`]s.

use super::session::{Role, Session, SessionConfig, SessionError, SessionEvent};
use crate::{EventSender, Link, LinkError, LinkEvent, LinkKind, PeerInfo, Reply, ReplyAction};
use meshpay_protocol::{DeviceKey, DeviceSecret, PrintableKey as _};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use zeroize::Zeroizing;

/// Where a connection's outgoing packets go.
#[async_trait::async_trait]
pub trait PacketSink: Send + Sync {
    /// Sends one packet; waits while the radio is busy.
    async fn send(&self, packet: Vec<u8>) -> Result<(), LinkError>;
    /// The largest packet the connection carries now.
    fn max_packet(&self) -> usize;
    /// Drops the connection.
    fn close(&self);
}

/// One connection's packets, both ways.
pub struct Pipe {
    /// Outgoing.
    pub sink: Box<dyn PacketSink>,
    /// Incoming; ends when the connection drops.
    pub packets: mpsc::Receiver<Vec<u8>>,
    /// The peer's address on the radio.
    pub address: String,
}

/// BLE link settings.
#[derive(Debug, Clone)]
pub struct BleConfig {
    /// Session settings.
    pub session: SessionConfig,
    /// How long a request waits for its answer.
    pub request_timeout: Duration,
    /// How long a connection may take to finish its handshake.
    pub handshake_timeout: Duration,
    /// A connection on which nothing arrives for this long is closed.
    pub idle_timeout: Duration,
    /// Most requests a peer may have open on one connection; more ends the session.
    pub max_open_requests: usize,
}

impl Default for BleConfig {
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            request_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(300),
            max_open_requests: 32,
        }
    }
}

struct Handle {
    conn: u64,
    address: String,
    cmd: mpsc::Sender<Cmd>,
}

enum Cmd {
    Request {
        frame: Vec<u8>,
        done: oneshot::Sender<Result<Vec<u8>, LinkError>>,
    },
    Respond {
        id: u32,
        action: ReplyAction,
    },
    Close,
}

struct Inner {
    seed: Zeroizing<[u8; 32]>,
    device: DeviceKey,
    config: BleConfig,
    events: EventSender,
    peers: Mutex<HashMap<DeviceKey, Handle>>,
    addresses: Mutex<HashMap<String, u64>>,
    next_conn: AtomicU64,
}

/// The BLE link.
#[derive(Clone)]
pub struct BleLink {
    inner: Arc<Inner>,
}

impl BleLink {
    /// A link for the device whose Ed25519 seed is `seed`; events go to `events`.
    pub fn new(seed: &[u8; 32], config: BleConfig, events: EventSender) -> Self {
        Self {
            inner: Arc::new(Inner {
                seed: Zeroizing::new(*seed),
                device: DeviceSecret::from_seed(seed).public(),
                config,
                events,
                peers: Mutex::new(HashMap::new()),
                addresses: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
            }),
        }
    }

    /// Runs a session over a new connection until it ends; returns why it ended. Must be
    /// called inside a tokio runtime.
    pub fn attach(&self, pipe: Pipe, role: Role) -> tokio::task::JoinHandle<SessionError> {
        let conn = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        self.inner
            .addresses
            .lock()
            .expect("lock")
            .insert(pipe.address.clone(), conn);
        tokio::spawn(drive(self.inner.clone(), pipe, role, conn))
    }

    /// The first 8 bytes of this device's key, as advertised.
    pub fn device_prefix(&self) -> [u8; 8] {
        self.inner.device.0[..8].try_into().expect("8 bytes")
    }

    /// Whether a connection to this radio address is up (established or not).
    pub fn is_connected_to(&self, address: &str) -> bool {
        self.inner
            .addresses
            .lock()
            .expect("lock")
            .contains_key(address)
    }
}

#[async_trait::async_trait]
impl Link for BleLink {
    async fn request(&self, to: &DeviceKey, frame: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        let cmd = self
            .inner
            .peers
            .lock()
            .expect("lock")
            .get(to)
            .map(|h| h.cmd.clone())
            .ok_or_else(|| LinkError::Unreachable(to.short()))?;
        let (done, rx) = oneshot::channel();
        let asked = async move {
            cmd.send(Cmd::Request { frame, done })
                .await
                .map_err(|_| LinkError::Closed)?;
            rx.await.map_err(|_| LinkError::Closed)?
        };
        tokio::time::timeout(self.inner.config.request_timeout, asked)
            .await
            .unwrap_or(Err(LinkError::Timeout))
    }

    async fn disconnect(&self, device: &DeviceKey) {
        let cmd = self
            .inner
            .peers
            .lock()
            .expect("lock")
            .get(device)
            .map(|h| h.cmd.clone());
        if let Some(cmd) = cmd {
            let _ = cmd.send(Cmd::Close).await;
        }
    }

    async fn peers(&self) -> Vec<PeerInfo> {
        let mut all: Vec<PeerInfo> = self
            .inner
            .peers
            .lock()
            .expect("lock")
            .iter()
            .map(|(d, h)| PeerInfo {
                device: *d,
                link: LinkKind::Ble,
                address: h.address.clone(),
            })
            .collect();
        all.sort_by_key(|p| p.device.0);
        all
    }
}

// One loop over the pipe's packets, the framer's and the session's outputs and the timers.
#[allow(clippy::too_many_lines)]
async fn drive(inner: Arc<Inner>, pipe: Pipe, role: Role, conn: u64) -> SessionError {
    let Pipe {
        sink,
        mut packets,
        address,
    } = pipe;
    let start = Instant::now();
    let now = || start.elapsed();
    let mut config = inner.config.session.clone();
    config.framer.max_packet_in = sink.max_packet();
    let mut session = {
        let secret = DeviceSecret::from_seed(&inner.seed);
        Session::new(role, &secret, config)
    };
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Cmd>(64);
    let mut pending: HashMap<u32, oneshot::Sender<Result<Vec<u8>, LinkError>>> = HashMap::new();
    let mut waiting: VecDeque<Cmd> = VecDeque::new();
    let mut peer: Option<DeviceKey> = None;
    let handshake_deadline = start + inner.config.handshake_timeout;
    let mut last_heard = Instant::now();
    let mut open_inbound = 0usize;
    // After answering with "send and close": close once the answer is acknowledged.
    let mut closing: Option<Instant> = None;
    let why = loop {
        // Requests and answers held back by a full send buffer go, in order, as soon as there
        // is room.
        while let Some(c) = waiting.pop_front() {
            let len = match &c {
                Cmd::Request { frame, .. } => frame.len(),
                Cmd::Respond {
                    action: ReplyAction::Send(f) | ReplyAction::SendAndDrop(f),
                    ..
                } => f.len(),
                Cmd::Close => 0,
            };
            if !session.can_send(len) && session.is_established() {
                waiting.push_front(c);
                break;
            }
            match c {
                Cmd::Request { frame, done } => match session.request(&frame) {
                    Ok(id) => {
                        pending.insert(id, done);
                    }
                    Err(e) => {
                        let _ = done.send(Err(LinkError::Failed(e.to_string())));
                    }
                },
                Cmd::Respond { id, action } => {
                    open_inbound = open_inbound.saturating_sub(1);
                    let (frame, close) = match action {
                        ReplyAction::Send(f) => (f, false),
                        ReplyAction::SendAndDrop(f) => (f, true),
                    };
                    if let Err(e) = session.respond(id, &frame, close) {
                        tracing::debug!(error = %e, "BLE answer not sent");
                    }
                    if close {
                        closing = Some(Instant::now() + Duration::from_secs(2));
                    }
                }
                Cmd::Close => session.close(),
            }
        }
        // Between packets, whatever has arrived is taken in, so acknowledgements are not
        // stuck behind a long send.
        while let Some(p) = session.poll_transmit(now(), sink.max_packet()) {
            if sink.send(p).await.is_err() {
                // The radio link is gone.
                session.close();
                break;
            }
            while let Ok(p) = packets.try_recv() {
                session.receive(now(), &p);
            }
        }
        let mut ended = None;
        while let Some(ev) = session.poll_event() {
            match ev {
                SessionEvent::Established(device) => {
                    peer = Some(device);
                    let older = inner.peers.lock().expect("lock").insert(
                        device,
                        Handle {
                            conn,
                            address: address.clone(),
                            cmd: cmd_tx.clone(),
                        },
                    );
                    // One session per device: a newer connection replaces an older one
                    // (whose radio link may be half gone).
                    if let Some(older) = older {
                        let _ = older.cmd.try_send(Cmd::Close);
                    }
                    tracing::info!(peer = %device.short(), %address, "BLE session up");
                    let _ = inner
                        .events
                        .send(LinkEvent::PeerConnected(PeerInfo {
                            device,
                            link: LinkKind::Ble,
                            address: address.clone(),
                        }))
                        .await;
                }
                SessionEvent::Request { id, frame } => {
                    let Some(from) = peer else { continue };
                    open_inbound += 1;
                    if open_inbound > inner.config.max_open_requests {
                        session.fail(SessionError::Flood(inner.config.max_open_requests));
                        continue;
                    }
                    let (reply, rx) = Reply::new();
                    let back = cmd_tx.clone();
                    tokio::spawn(async move {
                        if let Ok(action) = rx.await {
                            let _ = back.send(Cmd::Respond { id, action }).await;
                        }
                    });
                    let _ = inner
                        .events
                        .send(LinkEvent::Request { from, frame, reply })
                        .await;
                }
                SessionEvent::Response { id, frame } => {
                    if let Some(done) = pending.remove(&id) {
                        let _ = done.send(Ok(frame));
                    }
                }
                SessionEvent::Closed(e) => ended = Some(e),
            }
        }
        if let Some(e) = ended {
            // The RESET, if any, goes out before the connection is dropped.
            while let Some(p) = session.poll_transmit(now(), sink.max_packet()) {
                if sink.send(p).await.is_err() {
                    break;
                }
            }
            break e;
        }
        if closing.is_some() && session.is_idle() {
            session.close();
            continue;
        }
        // Requests whose askers gave up (timed out) are forgotten.
        pending.retain(|_, done| !done.is_closed());
        let timer = session.poll_timeout().map(|t| start + t);
        tokio::select! {
            p = packets.recv() => match p {
                Some(p) => {
                    last_heard = Instant::now();
                    session.receive(now(), &p);
                }
                None => session.close(),
            },
            () = tokio::time::sleep_until(last_heard + inner.config.idle_timeout) => {
                session.fail(SessionError::Idle);
            }
            () = async { tokio::time::sleep_until(closing.expect("guarded")).await }, if closing.is_some() => {
                session.close();
            }
            Some(c) = cmd_rx.recv() => match c {
                Cmd::Request { frame, done } if frame.len() > inner.config.session.max_frame => {
                    let _ = done.send(Err(LinkError::TooLarge {
                        len: frame.len(),
                        limit: inner.config.session.max_frame,
                    }));
                }
                Cmd::Respond { id, action: ReplyAction::Send(f) | ReplyAction::SendAndDrop(f) }
                    if f.len() > inner.config.session.max_frame =>
                {
                    tracing::warn!(len = f.len(), "BLE answer over the frame limit; answering with an error");
                    let error = meshpay_protocol::message::Response::Error(
                        meshpay_protocol::message::ErrorCode::Unavailable,
                    )
                    .encode();
                    waiting.push_back(Cmd::Respond { id, action: ReplyAction::Send(error) });
                }
                Cmd::Close => session.close(),
                c => waiting.push_back(c),
            },
            () = async { tokio::time::sleep_until(timer.expect("guarded")).await }, if timer.is_some() => {
                session.handle_timeout(now());
            }
            () = tokio::time::sleep_until(handshake_deadline), if !session.is_established() => {
                session.close();
            }
        }
    };
    sink.close();
    for (_, done) in pending.drain() {
        let _ = done.send(Err(LinkError::Closed));
    }
    for c in waiting {
        if let Cmd::Request { done, .. } = c {
            let _ = done.send(Err(LinkError::Closed));
        }
    }
    {
        let mut addresses = inner.addresses.lock().expect("lock");
        if addresses.get(&address) == Some(&conn) {
            addresses.remove(&address);
        }
    }
    if let Some(device) = peer {
        let gone = {
            let mut peers = inner.peers.lock().expect("lock");
            if peers.get(&device).is_some_and(|h| h.conn == conn) {
                peers.remove(&device);
                true
            } else {
                false
            }
        };
        if why.is_misbehaviour() {
            tracing::warn!(peer = %device.short(), error = %why, "BLE peer dropped");
            let _ = inner
                .events
                .send(LinkEvent::PeerMisbehaved {
                    device,
                    what: why.to_string(),
                })
                .await;
        }
        if gone {
            let _ = inner
                .events
                .send(LinkEvent::PeerDisconnected { device })
                .await;
        }
    } else {
        tracing::debug!(%address, error = %why, "BLE connection ended before its handshake");
    }
    why
}
