//! Delivery predictabilities in a session (PRoPHET and spray-and-focus): each side sends its
//! vector in its first message (SPEC.md §11.2), counts the meeting in its own table on the
//! peer's first message ([`crate::prophet::Predictions::meet`]), and then hands a record on
//! only to a peer that is more likely to deliver it.

use super::{Routing, Session};
use crate::prophet::{self, device_endpoint, issuer_endpoint};
use crate::store::{BundleStore, Entry};
use crate::sync::message::SyncMessage;

impl Session {
    /// Whether the routing exchanges predictabilities.
    fn predicts(&self) -> bool {
        matches!(
            self.cfg.routing,
            Routing::Prophet | Routing::SprayAndFocus { .. }
        )
    }

    /// The peer's endpoints (SPEC.md §11.2): its device's, then those of the issuers it is a
    /// gateway for.
    pub(super) fn peer_endpoints(&self) -> Vec<u64> {
        std::iter::once(device_endpoint(&self.cfg.peer))
            .chain(self.peer_gateways.iter().map(issuer_endpoint))
            .collect()
    }

    /// This node's endpoints, likewise.
    pub(super) fn my_endpoints(&self) -> Vec<u64> {
        std::iter::once(device_endpoint(&self.cfg.me))
            .chain(self.cfg.gateway_for.iter().map(issuer_endpoint))
            .collect()
    }

    /// This side's vector as of now, packed (empty if the routing does not use one).
    pub(super) fn own_vector(&self, store: &BundleStore) -> Vec<u8> {
        if self.predicts() {
            store.predictions().vector(self.cfg.now)
        } else {
            Vec::new()
        }
    }

    /// The peer's first message `m`: keep its vector and, in the first session of a contact,
    /// count the meeting.
    pub(super) fn learn(&mut self, m: &SyncMessage, store: &mut BundleStore) {
        self.learn_likelihoods(m, store);
        if !self.predicts() {
            return;
        }
        let theirs = prophet::unpack(&m.predictions.0);
        self.peer_predictions = theirs.iter().copied().collect();
        self.own_endpoints = self.my_endpoints();
        if !self.cfg.encounter {
            store.predictions_mut().age(self.cfg.now);
            return;
        }
        let peer = self.peer_endpoints();
        store
            .predictions_mut()
            .meet(&peer, &theirs, &self.own_endpoints, self.cfg.now);
    }

    /// Whether the peer's predictability for `entry`'s destination (the issuer of a record,
    /// the addressee of a message) is greater than ours. Never when we are the destination.
    pub(super) fn peer_is_better(&self, entry: &Entry, store: &BundleStore) -> bool {
        let Some(to) = store.endpoint_of(entry) else {
            return false;
        };
        if self.own_endpoints.contains(&to) {
            return false;
        }
        // Compared as on the wire, so equal predictabilities stay equal.
        let theirs = self.peer_predictions.get(&to).copied().unwrap_or(0.0);
        prophet::to_wire(theirs) > prophet::to_wire(store.predictions().get(to))
    }

    /// Single copies handed on in messages the peer has not answered yet (spray-and-focus):
    /// if such a message is lost, the copy stays here.
    pub fn forwarding(&self) -> &[crate::objects::Hash] {
        &self.forwarding
    }
}
