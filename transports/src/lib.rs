//! # meshpay-transports
//!
//! Moves meshpay's link messages between devices. A **link** is an encrypted, authenticated,
//! framed request–response pipe to peers that are named by their device key; the node sees
//! only [`LinkEvent`]s and the [`Link`] trait, so a new radio is a new `Link` and nothing else.
//!
//! - [`p2p`]: libp2p over TCP and QUIC with Noise and Yamux, identify, ping, mDNS discovery.
//!   The device's Ed25519 key is the libp2p identity, so a peer id names a device key.
//! - [`ble`]: Bluetooth LE, a Noise XX session over a fragmenting framer, on GATT or on an
//!   emulated connection.
//! - [`http`] (feature `http`): serving HTTP to strangers within limits, for the settlement
//!   server and the node's web app.
//!
//! Frames are at most [`meshpay_protocol::message::MAX_MESSAGE`] bytes by default. A peer that
//! sends a frame that is oversized, truncated or otherwise unreadable is disconnected and
//! reported with [`LinkEvent::PeerMisbehaved`]; the link keeps serving everyone else.

pub mod ble;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "p2p")]
pub mod p2p;

use meshpay_protocol::DeviceKey;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The kind of link a peer is reached over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum LinkKind {
    /// libp2p over TCP.
    Tcp,
    /// libp2p over QUIC.
    Quic,
    /// Bluetooth LE.
    Ble,
}

impl LinkKind {
    /// Short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Tcp => "tcp",
            LinkKind::Quic => "quic",
            LinkKind::Ble => "ble",
        }
    }
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its device key.
    pub device: DeviceKey,
    /// The link it is on.
    pub link: LinkKind,
    /// Its address on that link.
    pub address: String,
}

/// What a link reports to the node.
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkEvent {
    /// The link listens on an address.
    Listening {
        /// The address.
        address: String,
    },
    /// A peer connected.
    PeerConnected(PeerInfo),
    /// A peer's last connection closed.
    PeerDisconnected {
        /// Its device key.
        device: DeviceKey,
    },
    /// A peer sent a request; answer it through `reply`.
    Request {
        /// Who asked.
        from: DeviceKey,
        /// The frame.
        frame: Vec<u8>,
        /// Where the answer goes.
        reply: Reply,
    },
    /// A peer broke the framing rules and was disconnected.
    PeerMisbehaved {
        /// Its device key.
        device: DeviceKey,
        /// What it did.
        what: String,
    },
}

/// Why a request over a link failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The peer is not connected and could not be reached.
    #[error("peer {0} is not reachable")]
    Unreachable(String),
    /// No answer in time.
    #[error("the peer did not answer in time")]
    Timeout,
    /// The connection closed before the answer came.
    #[error("the connection closed before the peer answered")]
    Closed,
    /// The frame is over the link's limit.
    #[error("the message is {len} bytes, over the link's limit of {limit}")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The link itself failed (a transport error, the link task ended).
    #[error("link failure: {0}")]
    Failed(String),
}

/// Answers one incoming request.
#[derive(Debug)]
pub struct Reply(oneshot::Sender<ReplyAction>);

/// What the node does with a request.
#[derive(Debug)]
pub(crate) enum ReplyAction {
    /// Send this frame.
    Send(Vec<u8>),
    /// Send this frame, then disconnect the peer (it sent something unreadable).
    SendAndDrop(Vec<u8>),
}

impl Reply {
    pub(crate) fn new() -> (Self, oneshot::Receiver<ReplyAction>) {
        let (tx, rx) = oneshot::channel();
        (Self(tx), rx)
    }

    /// Sends the answer.
    pub fn send(self, frame: Vec<u8>) {
        let _ = self.0.send(ReplyAction::Send(frame));
    }

    /// Sends the answer and disconnects the peer: for a peer that sent an unreadable request.
    pub fn send_and_drop(self, frame: Vec<u8>) {
        let _ = self.0.send(ReplyAction::SendAndDrop(frame));
    }
}

/// A link: a way to reach peers by device key.
#[async_trait::async_trait]
pub trait Link: Send + Sync {
    /// Sends a request frame to `to` and waits for the answer frame.
    async fn request(&self, to: &DeviceKey, frame: Vec<u8>) -> Result<Vec<u8>, LinkError>;
    /// Drops the connection to a peer (one that broke the protocol above the framing).
    async fn disconnect(&self, device: &DeviceKey);
    /// The peers connected on this link.
    async fn peers(&self) -> Vec<PeerInfo>;
}

/// All the node's links behind one handle: requests go over the first link the peer is
/// connected on, else over the first link that can reach it.
#[derive(Clone, Default)]
pub struct Links {
    links: Vec<Arc<dyn Link>>,
}

impl Links {
    /// No links yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a link.
    pub fn add(&mut self, link: Arc<dyn Link>) {
        self.links.push(link);
    }

    /// Sends a request frame to `to` and waits for the answer.
    pub async fn request(&self, to: &DeviceKey, frame: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        // With one link there is nothing to choose: skip asking it for its peer list.
        if let [only] = self.links.as_slice() {
            return only.request(to, frame).await;
        }
        let mut order: Vec<&Arc<dyn Link>> = Vec::new();
        for link in &self.links {
            if link.peers().await.iter().any(|p| p.device == *to) {
                order.insert(0, link);
            } else {
                order.push(link);
            }
        }
        let mut last = LinkError::Unreachable(to.short());
        for link in order {
            match link.request(to, frame.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(e @ LinkError::Unreachable(_)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Drops a peer on every link.
    pub async fn disconnect(&self, device: &DeviceKey) {
        for link in &self.links {
            link.disconnect(device).await;
        }
    }

    /// Every connected peer on every link.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        let mut all = Vec::new();
        for link in &self.links {
            all.extend(link.peers().await);
        }
        all
    }
}

/// The channel the links report on.
pub type EventSender = mpsc::Sender<LinkEvent>;

use meshpay_protocol::PrintableKey as _;

/// The deepest cause of an error, which says what happened ("Address already in use",
/// "connection refused", "invalid peer certificate: UnknownIssuer") where the outer layers say
/// little or nothing (libp2p's transport errors print empty; HTTP clients say "error sending
/// request").
pub fn deepest_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() {
            last = text;
        }
        source = s.source();
    }
    if last.is_empty() {
        format!("{e:?}")
    } else {
        last
    }
}

/// The source a peer's address counts against in per-source limits: an IPv4 address
/// (unwrapped from an IPv4-mapped IPv6 one) or an IPv6 /64 network. One IPv6 host is
/// usually given a whole /64, so counting single IPv6 addresses would let it take every
/// slot.
pub fn source_group(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(
            || {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            },
            IpAddr::V4,
        ),
        v4 @ IpAddr::V4(_) => v4,
    }
}
