//! Pending-connection limits per source address (IPv4 address or IPv6 /64).

use crate::source_group;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::time::Duration;

/// Per-address limits on connections that have not finished their handshake.
///
/// A stranger who opens TCP connections and never speaks holds a pending slot until the
/// upgrade times out. With one global cap, a few dozen such connections from one address shut
/// every new peer out; capped per source address, a flood from one address holds at most
/// [`MAX_PENDING_PER_SOURCE`] slots and every other address still gets in, and the short
/// upgrade timeout ([`UPGRADE_TIMEOUT`]) turns the flooder's slots over quickly.
#[derive(Default)]
pub(super) struct SourceLimits {
    pending: HashMap<libp2p::swarm::ConnectionId, std::net::IpAddr>,
    per_source: HashMap<std::net::IpAddr, usize>,
}

/// Most handshakes in progress from one address.
pub const MAX_PENDING_PER_SOURCE: usize = 4;
/// Most handshakes in progress in all.
pub const MAX_PENDING: u32 = 64;
/// Longest time a new connection may take to finish its security and multiplexing
/// handshakes (libp2p's default is 10 s).
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(3);

/// The source a multiaddress counts against, if it has an IP address: see [`source_group`].
fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(a) => Some(std::net::IpAddr::V4(a)),
        libp2p::multiaddr::Protocol::Ip6(a) => Some(source_group(std::net::IpAddr::V6(a))),
        _ => None,
    })
}

impl SourceLimits {
    fn release(&mut self, id: libp2p::swarm::ConnectionId) {
        if let Some(ip) = self.pending.remove(&id) {
            if let Some(n) = self.per_source.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&ip);
                }
            }
        }
    }
}

impl libp2p::swarm::NetworkBehaviour for SourceLimits {
    type ConnectionHandler = libp2p::swarm::dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: libp2p::swarm::ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), libp2p::swarm::ConnectionDenied> {
        let Some(ip) = ip_of(remote) else {
            return Ok(());
        };
        let n = self.per_source.entry(ip).or_default();
        if *n >= MAX_PENDING_PER_SOURCE {
            return Err(libp2p::swarm::ConnectionDenied::new(format!(
                "{ip} already has {MAX_PENDING_PER_SOURCE} handshakes in progress"
            )));
        }
        *n += 1;
        self.pending.insert(id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: libp2p::swarm::ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<libp2p::swarm::THandler<Self>, libp2p::swarm::ConnectionDenied> {
        self.release(id);
        Ok(libp2p::swarm::dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: libp2p::swarm::ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: libp2p::core::Endpoint,
        _port_use: libp2p::core::transport::PortUse,
    ) -> Result<libp2p::swarm::THandler<Self>, libp2p::swarm::ConnectionDenied> {
        Ok(libp2p::swarm::dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: libp2p::swarm::FromSwarm<'_>) {
        match event {
            libp2p::swarm::FromSwarm::ListenFailure(f) => self.release(f.connection_id),
            libp2p::swarm::FromSwarm::ConnectionEstablished(e) => self.release(e.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: libp2p::swarm::ConnectionId,
        event: libp2p::swarm::THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<libp2p::swarm::ToSwarm<Self::ToSwarm, libp2p::swarm::THandlerInEvent<Self>>>
    {
        std::task::Poll::Pending
    }
}
