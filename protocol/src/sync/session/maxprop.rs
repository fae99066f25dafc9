//! MaxProp in a session: each side sends its meeting likelihoods and those it learned of
//! others in its first message (SPEC.md §11.2), takes the peer's on the peer's first message
//! ([`crate::maxprop::Likelihoods::learn`], counting the meeting in the first session of a
//! contact), and hands over what the peer lacks in MaxProp's order (`maxprop_order`).
//! The bundle bytes each message moved count towards the contact's sample of the hop-count
//! threshold once the other side's answer shows it arrived.

use super::{Routing, Session};
use crate::objects::Hash;
use crate::prophet::device_endpoint;
use crate::store::{BundleStore, priority};
use crate::sync::message::SyncMessage;

impl Session {
    /// Whether the routing is MaxProp.
    fn maxprop(&self) -> bool {
        self.cfg.routing == Routing::MaxProp
    }

    /// This side's likelihood vectors as of now, packed (empty unless under MaxProp).
    pub(super) fn own_likelihoods(&self, store: &BundleStore) -> Vec<u8> {
        if self.maxprop() {
            store.likelihoods().pack(
                device_endpoint(&self.cfg.me),
                device_endpoint(&self.cfg.peer),
                self.cfg.now,
            )
        } else {
            Vec::new()
        }
    }

    /// The peer's first message `m`: take its vectors and, in the first session of a contact,
    /// count the meeting.
    pub(super) fn learn_likelihoods(&mut self, m: &SyncMessage, store: &mut BundleStore) {
        if !self.maxprop() {
            return;
        }
        // The decoder refused malformed vectors; a message built in memory may still hold any.
        let theirs = crate::maxprop::unpack(&m.likelihoods.0).unwrap_or_default();
        let (peer, mine) = (self.peer_endpoints(), self.my_endpoints());
        store
            .likelihoods_mut()
            .learn(&theirs, &peer, &mine, self.cfg.encounter, self.cfg.now);
    }

    /// The peer's message `m` arrived, so the one we sent before it did too: under MaxProp,
    /// the bundle bytes of both count for this contact's threshold sample.
    pub(super) fn count_moved(&mut self, m: &SyncMessage, store: &mut BundleStore) {
        let confirmed = std::mem::take(&mut self.unconfirmed);
        if self.maxprop() {
            store.likelihoods_mut().moved(
                device_endpoint(&self.cfg.peer),
                m.bundle_bytes() as u64 + confirmed,
            );
        }
    }

    /// Puts `ids` in MaxProp's order for this peer: the urgent kinds (fraud proofs,
    /// revocations, receipts: MaxProp's acknowledgements) first; then what the peer is the
    /// destination of; then bundles with fewer hops than the threshold, fewest first; then the
    /// rest by the cost of their destination from the peer (fewest hops, then the policy's
    /// order, on equal costs). Costs are shortest paths from the peer (its device and the
    /// issuers it is a gateway for) over the known vectors, as in The ONE.
    pub(super) fn maxprop_order(&self, ids: &mut [Hash], store: &BundleStore) {
        let from = self.peer_endpoints();
        let costs = store
            .likelihoods()
            .costs(device_endpoint(&self.cfg.me), &from);
        let threshold = store.hop_threshold();
        ids.sort_by_cached_key(|id| {
            store.get(id).map(|e| {
                (
                    e.meta.kind.class() != 0,
                    !self.to_destination(e),
                    store.hop_cost_rank(e, &costs, threshold),
                    self.order_rank(e),
                    priority(&e.meta),
                )
            })
        });
    }
}
