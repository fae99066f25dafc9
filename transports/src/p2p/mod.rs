//! The libp2p link: TCP and QUIC, Noise, Yamux, identify, ping, mDNS, and a request–response
//! protocol `/meshpay/1` whose frames are a 4-byte big-endian length and that many bytes.
//!
//! [`P2pLink::start`] spawns one tokio task that owns the swarm; the handle talks to it over a
//! channel. Incoming requests become [`LinkEvent::Request`]s; the node's [`crate::Reply`] goes
//! back through the same task.

use crate::{EventSender, LinkError, LinkEvent, LinkKind, PeerInfo, Reply, ReplyAction};
use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::request_response::{
    self, InboundRequestId, OutboundRequestId, ProtocolSupport, ResponseChannel,
};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identify, identity, mdns, noise, ping, tcp, yamux,
};
use meshpay_protocol::DeviceKey;
use meshpay_protocol::message::{ErrorCode, Response};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

mod codec;
mod limits;

pub use crate::source_group;
use codec::{FrameCodec, InFrame};
use limits::SourceLimits;
pub use limits::{MAX_PENDING, MAX_PENDING_PER_SOURCE, UPGRADE_TIMEOUT};

/// The request–response protocol name.
pub const PROTOCOL: &str = "/meshpay/1";

/// The libp2p peer id of a device key.
pub fn peer_id_of(device: &DeviceKey) -> Option<PeerId> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(&device.0).ok()?;
    Some(identity::PublicKey::from(pk).to_peer_id())
}

/// The device key inside a peer id (peer ids of Ed25519 keys embed the key).
pub fn device_of(peer: &PeerId) -> Option<DeviceKey> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    Some(DeviceKey(pk.try_into_ed25519().ok()?.to_bytes()))
}

/// Test-only misbehaviour of the sending side of the codec, for proving that receivers drop
/// bad peers. Never set it outside tests.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Announce the frame's true length but send only half of it, then close the stream.
    Truncate,
    /// Send raw bytes with no length prefix.
    NoPrefix,
}

/// How the link is set up.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start.
    pub peers: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// How long to wait for an answer.
    pub request_timeout: Duration,
    /// Largest frame sent or accepted.
    pub max_frame: usize,
    /// Test-only: misbehave when sending requests.
    #[doc(hidden)]
    pub misbehave: Option<Misbehaviour>,
}

impl Default for P2pConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid"),
                "/ip4/0.0.0.0/udp/0/quic-v1".parse().expect("valid"),
            ],
            peers: Vec::new(),
            mdns: true,
            request_timeout: Duration::from_secs(10),
            max_frame: meshpay_protocol::message::MAX_MESSAGE,
            misbehave: None,
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    sources: SourceLimits,
    limits: libp2p::connection_limits::Behaviour,
    rr: request_response::Behaviour<FrameCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

enum Command {
    Request {
        to: PeerId,
        frame: Vec<u8>,
        done: oneshot::Sender<Result<Vec<u8>, LinkError>>,
    },
    Respond {
        id: InboundRequestId,
        action: ReplyAction,
    },
    Dial {
        addr: Multiaddr,
        done: oneshot::Sender<Result<PeerId, LinkError>>,
    },
    Peers {
        done: oneshot::Sender<Vec<PeerInfo>>,
    },
    Listening {
        done: oneshot::Sender<Vec<Multiaddr>>,
    },
    Disconnect {
        peer: PeerId,
    },
    DialIfAlone {
        peer: PeerId,
        addr: Multiaddr,
    },
}

/// A running libp2p link.
#[derive(Clone)]
pub struct P2pLink {
    cmd: mpsc::Sender<Command>,
    peer_id: PeerId,
}

impl P2pLink {
    /// Starts the link with the device's Ed25519 secret seed as its identity. Events go to
    /// `events`. Must be called inside a tokio runtime.
    pub fn start(
        seed: &[u8; 32],
        config: &P2pConfig,
        events: EventSender,
    ) -> Result<Self, LinkError> {
        let mut seed = *seed;
        let keypair = identity::Keypair::ed25519_from_bytes(&mut seed)
            .map_err(|e| LinkError::Failed(e.to_string()))?;
        let peer_id = keypair.public().to_peer_id();
        let codec = FrameCodec {
            max: config.max_frame,
            misbehave: config.misbehave,
        };
        let mdns_on = config.mdns;
        let timeout = config.request_timeout;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| LinkError::Failed(e.to_string()))?
            .with_quic()
            .with_behaviour(|key| {
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config {
                            // Devices meet for minutes at a stall: look often (the default is 5 min).
                            query_interval: Duration::from_secs(5),
                            ..mdns::Config::default()
                        },
                        key.public().to_peer_id(),
                    )?)
                } else {
                    None
                };
                Ok(Behaviour {
                    sources: SourceLimits::default(),
                    // A market has tens of devices, not thousands: bound what strangers can
                    // open, so a flood of connections cannot starve the node.
                    limits: libp2p::connection_limits::Behaviour::new(
                        libp2p::connection_limits::ConnectionLimits::default()
                            .with_max_pending_incoming(Some(MAX_PENDING))
                            .with_max_established_incoming(Some(128))
                            .with_max_established(Some(256))
                            .with_max_established_per_peer(Some(4)),
                    ),
                    rr: request_response::Behaviour::with_codec(
                        codec,
                        [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                        request_response::Config::default().with_request_timeout(timeout),
                    ),
                    identify: identify::Behaviour::new(
                        identify::Config::new("/meshpay/1.0.0".into(), key.public())
                            .with_agent_version(format!("meshpay/{}", env!("CARGO_PKG_VERSION"))),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    mdns: Toggle::from(mdns),
                })
            })
            .map_err(|e| LinkError::Failed(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .with_connection_timeout(UPGRADE_TIMEOUT)
            .build();
        // Every fixed port is probed before libp2p takes any: its own listeners would
        // otherwise be found "in use" by a later probe.
        for addr in &config.listen {
            probe_listen(addr)?;
        }
        for addr in &config.listen {
            swarm.listen_on(addr.clone()).map_err(|e| {
                LinkError::Failed(format!(
                    "cannot listen on {addr}: {}",
                    crate::deepest_cause(&e)
                ))
            })?;
        }
        for addr in &config.peers {
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial peer");
            }
        }
        let (tx, rx) = mpsc::channel(256);
        let mut driver = Driver::new(swarm, rx, tx.clone(), events);
        // Peers given with their id (`…/p2p/<id>`) can be asked at once, before the dial ends.
        for addr in &config.peers {
            if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
                driver.known.insert(peer, addr.clone());
            }
        }
        tokio::spawn(driver.run());
        Ok(Self { cmd: tx, peer_id })
    }

    /// This link's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Dials an address and waits until the connection is up (the peer it reached) or failed,
    /// at most `timeout`.
    pub async fn dial(&self, addr: Multiaddr, timeout: Duration) -> Result<PeerId, LinkError> {
        let (done, rx) = oneshot::channel();
        self.send(Command::Dial { addr, done }).await?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(LinkError::Timeout),
            Ok(r) => r.map_err(|_| stopped())?,
        }
    }

    /// The addresses the link listens on.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (done, rx) = oneshot::channel();
        if self.send(Command::Listening { done }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    async fn send(&self, c: Command) -> Result<(), LinkError> {
        self.cmd.send(c).await.map_err(|_| stopped())
    }
}

/// Checks that a fixed port is free before libp2p listens on it. libp2p's TCP listeners set
/// `SO_REUSEPORT`, so a second process would share the port with the first (and take half of
/// its connections) instead of failing; a plain bind fails when the port is taken.
fn probe_listen(addr: &Multiaddr) -> Result<(), LinkError> {
    use libp2p::multiaddr::Protocol;
    let mut ip = None;
    let mut probe: Option<(bool, u16)> = None;
    for p in addr {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(port) if port != 0 => probe = Some((true, port)),
            Protocol::Udp(port) if port != 0 => probe = Some((false, port)),
            _ => {}
        }
    }
    let (Some(ip), Some((tcp, port))) = (ip, probe) else {
        return Ok(());
    };
    // Bound the way libp2p binds: an IPv6 socket is v6-only, so an IPv4 listener on the same
    // port (this node's own, or another program's) is no conflict.
    let at = std::net::SocketAddr::new(ip, port);
    let probe = || -> std::io::Result<()> {
        use socket2::{Domain, Protocol as P, Socket, Type};
        let (kind, proto) = if tcp {
            (Type::STREAM, P::TCP)
        } else {
            (Type::DGRAM, P::UDP)
        };
        let s = Socket::new(Domain::for_address(at), kind, Some(proto))?;
        if at.is_ipv6() {
            s.set_only_v6(true)?;
        }
        if tcp {
            // As std and libp2p do: a port whose last connections linger in TIME_WAIT (a
            // node restarted at once) is free.
            s.set_reuse_address(true)?;
        }
        s.bind(&at.into())?;
        if tcp {
            s.listen(1)?;
        }
        Ok(())
    };
    probe().map_err(|e| {
        LinkError::Failed(format!(
            "cannot listen on {addr}: {e} (is another program, maybe another meshpay node, using it?)"
        ))
    })
}

fn stopped() -> LinkError {
    LinkError::Failed("the libp2p task has stopped".into())
}

#[async_trait::async_trait]
impl crate::Link for P2pLink {
    async fn request(&self, to: &DeviceKey, frame: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        let peer = peer_id_of(to).ok_or_else(|| LinkError::Unreachable(hex_short(to)))?;
        let (done, rx) = oneshot::channel();
        self.send(Command::Request {
            to: peer,
            frame,
            done,
        })
        .await?;
        rx.await.map_err(|_| stopped())?
    }

    async fn disconnect(&self, device: &DeviceKey) {
        if let Some(peer) = peer_id_of(device) {
            let _ = self.send(Command::Disconnect { peer }).await;
        }
    }

    async fn peers(&self) -> Vec<PeerInfo> {
        let (done, rx) = oneshot::channel();
        if self.send(Command::Peers { done }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

fn hex_short(d: &DeviceKey) -> String {
    use meshpay_protocol::PrintableKey as _;
    d.short()
}

fn kind_of(addr: &Multiaddr) -> LinkKind {
    if addr
        .iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1))
    {
        LinkKind::Quic
    } else {
        LinkKind::Tcp
    }
}

struct Driver {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    own: mpsc::Sender<Command>,
    events: EventSender,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, LinkError>>>,
    inbound: HashMap<InboundRequestId, (PeerId, ResponseChannel<Vec<u8>>)>,
    /// Peers to disconnect once their response is sent.
    drop_after: HashMap<InboundRequestId, PeerId>,
    connected: HashMap<PeerId, (Multiaddr, usize)>,
    known: HashMap<PeerId, Multiaddr>,
    listening: Vec<Multiaddr>,
    /// Dials asked for by the user, waiting for their outcome.
    dials: HashMap<libp2p::swarm::ConnectionId, oneshot::Sender<Result<PeerId, LinkError>>>,
}

impl Driver {
    fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        own: mpsc::Sender<Command>,
        events: EventSender,
    ) -> Self {
        Self {
            swarm,
            commands,
            own,
            events,
            pending: HashMap::new(),
            inbound: HashMap::new(),
            drop_after: HashMap::new(),
            connected: HashMap::new(),
            known: HashMap::new(),
            listening: Vec::new(),
            dials: HashMap::new(),
        }
    }

    async fn run(mut self) {
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event).await,
                cmd = self.commands.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => return,
                },
            }
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Request { to, frame, done } => {
                let addrs: Vec<Multiaddr> = self.known.get(&to).cloned().into_iter().collect();
                let id = self.swarm.behaviour_mut().rr.send_request_with_addresses(
                    &to,
                    InFrame::Data(frame),
                    addrs,
                );
                self.pending.insert(id, done);
            }
            Command::Respond { id, action } => {
                let Some((peer, channel)) = self.inbound.remove(&id) else {
                    return;
                };
                let (frame, drop) = match action {
                    ReplyAction::Send(f) => (f, false),
                    ReplyAction::SendAndDrop(f) => (f, true),
                };
                let sent = self.swarm.behaviour_mut().rr.send_response(channel, frame);
                if drop {
                    // The peer learns why from the response, then is dropped.
                    if sent.is_ok() {
                        self.drop_after.insert(id, peer);
                    } else {
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
            }
            Command::Dial { addr, done } => {
                let opts = libp2p::swarm::dial_opts::DialOpts::unknown_peer_id()
                    .address(addr.clone())
                    .build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, done);
                    }
                    Err(e) => {
                        let _ = done.send(Err(LinkError::Unreachable(format!(
                            "{addr}: {}",
                            crate::deepest_cause(&e)
                        ))));
                    }
                }
            }
            Command::Peers { done } => {
                let mut peers: Vec<PeerInfo> = self
                    .connected
                    .iter()
                    .filter_map(|(p, (addr, _))| {
                        Some(PeerInfo {
                            device: device_of(p)?,
                            link: kind_of(addr),
                            address: addr.to_string(),
                        })
                    })
                    .collect();
                peers.sort_by_key(|p| p.device);
                let _ = done.send(peers);
            }
            Command::Listening { done } => {
                let _ = done.send(self.listening.clone());
            }
            Command::Disconnect { peer } => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::DialIfAlone { peer, addr } => {
                if !self.connected.contains_key(&peer) {
                    let _ = self.swarm.dial(addr);
                }
            }
        }
    }

    async fn emit(&mut self, e: LinkEvent) {
        let _ = self.events.send(e).await;
    }

    /// Keeps the address book bounded: past its size, addresses of peers not connected are
    /// forgotten first.
    fn trim_known(&mut self) {
        const MAX_KNOWN: usize = 1024;
        if self.known.len() > MAX_KNOWN {
            let stale: Vec<PeerId> = self
                .known
                .keys()
                .filter(|p| !self.connected.contains_key(p))
                .take(self.known.len() - MAX_KNOWN)
                .copied()
                .collect();
            for p in stale {
                self.known.remove(&p);
            }
        }
    }

    // One arm per swarm event.
    #[allow(clippy::too_many_lines)]
    async fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.trim_known();
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                self.listening.push(address.clone());
                self.emit(LinkEvent::Listening {
                    address: address.to_string(),
                })
                .await;
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(done) = self.dials.remove(&connection_id) {
                    let _ = done.send(Err(LinkError::Unreachable(crate::deepest_cause(&error))));
                }
            }
            SwarmEvent::ListenerClosed {
                addresses,
                reason: Err(e),
                ..
            } => {
                tracing::error!(?addresses, error = %crate::deepest_cause(&e), "a listener closed");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                connection_id,
                ..
            } => {
                if let Some(done) = self.dials.remove(&connection_id) {
                    let _ = done.send(Ok(peer_id));
                }
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                if matches!(endpoint, ConnectedPoint::Dialer { .. }) {
                    self.known.insert(peer_id, addr.clone());
                }
                let entry = self.connected.entry(peer_id).or_insert((addr.clone(), 0));
                entry.1 = num_established.get() as usize;
                if num_established.get() == 1 {
                    if let Some(device) = device_of(&peer_id) {
                        self.emit(LinkEvent::PeerConnected(PeerInfo {
                            device,
                            link: kind_of(&addr),
                            address: addr.to_string(),
                        }))
                        .await;
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
                if let Some(device) = device_of(&peer_id) {
                    self.emit(LinkEvent::PeerDisconnected { device }).await;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, addr) in gone {
                    if !self.connected.contains_key(&peer) && self.known.get(&peer) == Some(&addr) {
                        self.known.remove(&peer);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                let me = *self.swarm.local_peer_id();
                for (peer, addr) in found {
                    self.known.entry(peer).or_insert_with(|| addr.clone());
                    if self.connected.contains_key(&peer) || peer == me {
                        continue;
                    }
                    // Two devices usually discover each other at the same instant, and two
                    // simultaneous dials can both fail. The smaller peer id dials at once; the
                    // other dials only if no connection came in meanwhile.
                    if me < peer {
                        let _ = self.swarm.dial(addr);
                    } else {
                        let own = self.own.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                            let _ = own.send(Command::DialIfAlone { peer, addr }).await;
                        });
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if let Some(addr) = info
                    .listen_addrs
                    .iter()
                    .find(|a| !a.to_string().contains("/0.0.0.0/"))
                {
                    self.known.entry(peer_id).or_insert_with(|| addr.clone());
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(e)) => self.on_rr(e).await,
            _ => {}
        }
    }

    // One arm per request-response event.
    #[allow(clippy::too_many_lines)]
    async fn on_rr(&mut self, e: request_response::Event<InFrame, Vec<u8>>) {
        match e {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => {
                    let Some(from) = device_of(&peer) else {
                        let _ = self.swarm.disconnect_peer_id(peer);
                        return;
                    };
                    let request = match request {
                        InFrame::Data(frame) => frame,
                        InFrame::Broken(what) => {
                            // The peer breaks the framing rules: drop it, keep serving others.
                            drop(channel);
                            let _ = self.swarm.disconnect_peer_id(peer);
                            self.emit(LinkEvent::PeerMisbehaved { device: from, what })
                                .await;
                            return;
                        }
                    };
                    self.inbound.insert(request_id, (peer, channel));
                    let (reply, rx) = Reply::new();
                    let own = self.own.clone();
                    tokio::spawn(async move {
                        // A node that dropped the reply failed internally: say so, keep the peer.
                        let action = rx.await.unwrap_or_else(|_| {
                            ReplyAction::Send(Response::Error(ErrorCode::Unavailable).encode())
                        });
                        let _ = own
                            .send(Command::Respond {
                                id: request_id,
                                action,
                            })
                            .await;
                    });
                    self.emit(LinkEvent::Request {
                        from,
                        frame: request,
                        reply,
                    })
                    .await;
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(done) = self.pending.remove(&request_id) {
                        let _ = done.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(done) = self.pending.remove(&request_id) {
                    let err = match error {
                        request_response::OutboundFailure::DialFailure => {
                            LinkError::Unreachable(peer.to_string())
                        }
                        request_response::OutboundFailure::Timeout => LinkError::Timeout,
                        request_response::OutboundFailure::ConnectionClosed => LinkError::Closed,
                        other => LinkError::Failed(other.to_string()),
                    };
                    let _ = done.send(Err(err));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.inbound.remove(&request_id);
                if let Some(peer) = self.drop_after.remove(&request_id) {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                if let request_response::InboundFailure::Io(io_err) = error {
                    // An unreadable frame: the peer breaks the protocol. Drop it.
                    let _ = self.swarm.disconnect_peer_id(peer);
                    if let Some(device) = device_of(&peer) {
                        self.emit(LinkEvent::PeerMisbehaved {
                            device,
                            what: io_err.to_string(),
                        })
                        .await;
                    }
                }
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                if let Some(peer) = self.drop_after.remove(&request_id) {
                    // Give the answer a moment to reach the peer before closing on it.
                    let own = self.own.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let _ = own.send(Command::Disconnect { peer }).await;
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{probe_listen, source_group};
    use std::net::IpAddr;

    #[test]
    fn a_taken_port_is_found_and_ipv4_and_ipv6_do_not_collide() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let addr = |s: String| s.parse::<libp2p::Multiaddr>().unwrap();
        let taken = probe_listen(&addr(format!("/ip4/127.0.0.1/tcp/{port}")));
        assert!(
            taken.unwrap_err().to_string().contains("in use"),
            "the port is taken"
        );
        // The same port number on IPv6 is another socket, as libp2p binds it (v6-only).
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            assert!(probe_listen(&addr(format!("/ip6/::1/tcp/{port}"))).is_ok());
        }
        drop(v4);
        assert!(probe_listen(&addr(format!("/ip4/127.0.0.1/tcp/{port}"))).is_ok());
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(source_group(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_group(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            source_group(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            source_group(ip("2001:db8:1:2::1")),
            source_group(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            source_group(ip("2001:db8:1:2::1")),
            source_group(ip("2001:db8:1:3::1"))
        );
    }
}
