//! MaxProp in a session: each side sends its meeting likelihoods and those it learned of
//! others in its first message (SPEC.md §11.2), takes the peer's on the peer's first message
//! ([`crate::maxprop::Likelihoods::learn`], counting the meeting in the first session of a
//! contact), and hands over what the peer lacks in MaxProp's order (`maxprop_order`).
//! The bundle bytes each message moved count towards the contact's sample of the hop-count
//! threshold once the other side's answer shows it arrived.
//!
//! Acknowledgements ([`crate::maxprop::acks`]): the destination of a plain message signs one
//! when it takes the message and sends it back to the giver; a side that knows the
//! differences answers a key it lacks but holds an acknowledgement of with the
//! acknowledgement instead of asking for the bundle; a side handed a message it holds an
//! acknowledgement of does not take it and sends the acknowledgement back. A side deletes a
//! copy once the acknowledgement checks against the destination the copy names.

use super::{Routing, Session};
use crate::bundle::{BundleKind, Meta};
use crate::codec::Blob;
use crate::keys::DeviceSecret;
use crate::maxprop::acks::{ACK_LEN, Ack, FLOOD, pack, unpack};
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

    /// Entering the transfer: our newest acknowledgements go to the peer unasked, so they
    /// spread to the nodes that hold the messages.
    pub(super) fn flood_acks(&mut self, store: &BundleStore) {
        if self.maxprop() {
            self.acks_out
                .extend(store.likelihoods().acks().newest(FLOOD).copied());
        }
    }

    /// Keys we lack but hold a checked acknowledgement of are not wanted: the acknowledgement
    /// goes to the peer instead, which still holds a delivered message.
    pub(super) fn answer_with_acks(&mut self, store: &BundleStore) {
        let acks = store.likelihoods().acks();
        if !self.maxprop() || acks.is_empty() {
            return;
        }
        let out = &mut self.acks_out;
        self.want.retain(|k| {
            acks.checked_for_key(*k).is_none_or(|a| {
                out.push(*a);
                false
            })
        });
    }

    /// The peer's acknowledgements. One of a plain message held here for another device is
    /// checked against the destination the copy names: if it checks, the copy is deleted and
    /// the acknowledgement kept as checked; if not, it is dropped (the peer may have passed
    /// on a forgery unknowingly). One of a bundle not held here is kept to pass on.
    pub(super) fn take_acks(&mut self, m: &SyncMessage, store: &mut BundleStore) {
        if !self.maxprop() || m.acks.0.is_empty() {
            return;
        }
        // The decoder checked the packing; a message built in memory may hold anything.
        for a in unpack(&m.acks.0).unwrap_or_default() {
            let Some(e) = store.get(&a.id) else {
                store.likelihoods_mut().acks_mut().add(a, false);
                continue;
            };
            let to = match (e.meta.kind, e.meta.to) {
                (BundleKind::Message, Some(to)) if to != self.cfg.me => to,
                _ => continue,
            };
            if a.verify(&to).is_ok() {
                store.remove(&a.id);
                store.likelihoods_mut().acks_mut().add(a, true);
            }
        }
    }

    /// We just took the message `meta` from the peer: if we hold an acknowledgement of it
    /// that checks, it was delivered already, so it is deleted again and the
    /// acknowledgement goes back to the peer; one that does not check is forgotten.
    pub(super) fn delivered_already(&mut self, meta: &Meta, store: &mut BundleStore) -> bool {
        if !self.maxprop() || meta.kind != BundleKind::Message {
            return false;
        }
        let (Some(to), Some(a)) = (meta.to, store.likelihoods().acks().get(&meta.id).copied())
        else {
            return false;
        };
        if to == self.cfg.me {
            return false;
        }
        if a.verify(&to).is_err() {
            store.likelihoods_mut().acks_mut().remove(&meta.id);
            return false;
        }
        store.remove(&meta.id);
        store.likelihoods_mut().acks_mut().add(a, true);
        self.acks_out.push(a);
        true
    }

    /// We took `meta`: a plain message for this device is acknowledged to the giver.
    pub(super) fn acknowledge(&mut self, meta: &Meta, key: &DeviceSecret, store: &mut BundleStore) {
        if self.maxprop() && meta.kind == BundleKind::Message && meta.to == Some(self.cfg.me) {
            let a = Ack::sign(meta.id, key);
            store.likelihoods_mut().acks_mut().add(a, true);
            self.acks_out.push(a);
        }
    }

    /// Puts the acknowledgements not sent yet into `m`, as many as fit in `room` bytes; the
    /// bytes they take.
    pub(super) fn send_acks(&mut self, m: &mut SyncMessage, room: usize) -> usize {
        let n = (self.acks_out.len() - self.acks_pos).min(room / ACK_LEN);
        if n > 0 {
            let mut packed = std::mem::take(&mut m.acks.0);
            packed.extend(pack(&self.acks_out[self.acks_pos..self.acks_pos + n]));
            m.acks = Blob(packed);
            self.acks_pos += n;
        }
        n * ACK_LEN
    }

    /// Whether every acknowledgement to send is sent.
    pub(super) fn acks_sent(&self) -> bool {
        self.acks_pos >= self.acks_out.len()
    }
}
