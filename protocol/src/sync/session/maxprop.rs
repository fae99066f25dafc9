//! MaxProp in a session: each side sends its meeting likelihoods and those it learned of
//! others in its first message (SPEC.md §11.2), takes the peer's on the peer's first message
//! ([`crate::maxprop::Likelihoods::learn`], counting the meeting in the first session of a
//! contact), and hands over what the peer lacks in MaxProp's order (`maxprop_order`).
//! The bundle bytes each message moved count towards the contact's sample of the hop-count
//! threshold once the other side's answer shows it arrived.
//!
//! Acknowledgements ([`crate::maxprop::acks`]): the destination of a plain message signs one
//! when it takes the message and sends it back to the giver; each side sends its newest
//! unasked; a side that knows the differences answers a key it lacks but holds a checked
//! acknowledgement of with the acknowledgement instead of asking for the bundle; a side
//! handed a message it holds an acknowledgement of does not take it and sends the
//! acknowledgement back. A side deletes a copy once an acknowledgement checks against the
//! destination the copy names, and never relays a message it holds a checked one of.

use super::{Routing, Session};
use crate::bundle::{BundleKind, Meta};
use crate::codec::Blob;
use crate::keys::DeviceSecret;
use crate::maxprop::acks::{ACK_LEN, Ack, FLOOD, MAX_SENT, MAX_TAKEN, pack, unpack};
use crate::objects::Hash;
use crate::prophet::device_endpoint;
use crate::store::{BundleStore, priority};
use crate::sync::message::SyncMessage;
use std::collections::HashSet;

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
    /// revocations, receipts) first; then what the peer is the
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

    /// Our newest acknowledgements go to the peer unasked, once a session, so they spread
    /// to the nodes that hold the messages.
    pub(super) fn flood_acks(&mut self, store: &BundleStore) {
        if !self.maxprop() || self.acks.flooded {
            return;
        }
        self.acks.flooded = true;
        for a in store.likelihoods().acks().newest(FLOOD, self.cfg.now) {
            self.acks.queue(*a);
        }
    }

    /// Keys we lack but hold a checked acknowledgement of are not wanted: the acknowledgement
    /// goes to the peer instead, which still holds a delivered message.
    pub(super) fn answer_with_acks(&mut self, store: &BundleStore) {
        let kept = store.likelihoods().acks();
        if !self.maxprop() || kept.is_empty() {
            return;
        }
        let acks = &mut self.acks;
        self.want.retain(|k| {
            kept.checked_for_key(*k).is_none_or(|a| {
                acks.queue(*a);
                false
            })
        });
    }

    /// Whether acknowledgement `a` confirms that the message `meta` was delivered: under
    /// MaxProp, `meta` is a plain message for another device, and that device signed `a`.
    fn confirms(&self, meta: &Meta, a: &Ack) -> bool {
        self.maxprop()
            && meta.kind == BundleKind::Message
            && meta.id == a.id
            && meta
                .to
                .is_some_and(|to| to != self.cfg.me && a.verify(&to).is_ok())
    }

    /// The peer's acknowledgements, at most [`MAX_TAKEN`] a session. One of a copy held here
    /// that it confirms deletes the copy and is kept as checked; one that does not is ignored
    /// (the peer may have passed on a forgery it could not check). One of a bundle not held
    /// here is kept unchecked, to pass on.
    pub(super) fn take_acks(&mut self, m: &SyncMessage, store: &mut BundleStore) {
        if !self.maxprop() || m.acks.0.is_empty() {
            return;
        }
        // The decoder checked the packing; a message built in memory may hold anything.
        for a in unpack(&m.acks.0).unwrap_or_default() {
            if self.acks.taken >= MAX_TAKEN {
                break;
            }
            self.acks.taken += 1;
            let held = store.get(&a.id).map(|e| *e.meta);
            match held {
                None => store.likelihoods_mut().acks_mut().add_unchecked(a),
                Some(meta) if self.confirms(&meta, &a) => {
                    store.remove(&a.id);
                    store
                        .likelihoods_mut()
                        .acks_mut()
                        .add_checked(a, meta.expires);
                }
                Some(_) => {}
            }
        }
    }

    /// Whether the bundle `bytes` (id `id`) the peer hands over is a message delivered
    /// already: we hold an acknowledgement of it (and not the message) that confirms it. Then
    /// it is not taken (nor makes room in the store), and the acknowledgement goes back to
    /// the peer; one that does not confirm it is forgotten.
    pub(super) fn delivered_already(
        &mut self,
        id: &Hash,
        bytes: &[u8],
        store: &mut BundleStore,
    ) -> bool {
        if !self.maxprop() || store.get(id).is_some() {
            return false;
        }
        let Some(a) = store.likelihoods().acks().get(id).map(|(a, _)| *a) else {
            return false;
        };
        // A bundle that does not decode is refused by the store as usual.
        let Ok(b) = crate::bundle::Bundle::decode(bytes) else {
            return false;
        };
        let acks = store.likelihoods_mut().acks_mut();
        if self.confirms(b.meta(), &a) {
            acks.add_checked(a, b.meta().expires);
            self.acks.queue(a);
            true
        } else {
            acks.forget_unchecked(id);
            false
        }
    }

    /// We took `meta`: a plain message for this device is acknowledged to the giver.
    pub(super) fn acknowledge(&mut self, meta: &Meta, key: &DeviceSecret, store: &mut BundleStore) {
        if self.maxprop() && meta.kind == BundleKind::Message && meta.to == Some(self.cfg.me) {
            let a = Ack::sign(meta.id, key);
            store
                .likelihoods_mut()
                .acks_mut()
                .add_checked(a, meta.expires);
            self.acks.queue(a);
        }
    }

    /// Puts the acknowledgements not sent yet into `m`, as many as fit in `room` bytes.
    pub(super) fn send_acks(&mut self, m: &mut SyncMessage, room: usize) {
        let a = &mut self.acks;
        let n = (a.out.len() - a.sent).min(room / ACK_LEN);
        if n > 0 {
            m.acks = Blob(pack(&a.out[a.sent..a.sent + n]));
            a.sent += n;
        }
    }

    /// Whether every acknowledgement to send is sent.
    pub(super) fn acks_sent(&self) -> bool {
        self.acks.sent >= self.acks.out.len()
    }
}

/// A session's acknowledgements (MaxProp).
#[derive(Debug, Default)]
pub(super) struct SessionAcks {
    /// To send, in order (at most [`MAX_SENT`]), and how many are sent.
    out: Vec<Ack>,
    sent: usize,
    /// The ids in `out`, so none goes twice.
    queued: HashSet<Hash>,
    /// How many of the peer's were looked at.
    taken: usize,
    /// Whether our newest were queued unasked.
    flooded: bool,
}

impl SessionAcks {
    fn queue(&mut self, a: Ack) {
        if self.out.len() < MAX_SENT && self.queued.insert(a.id) {
            self.out.push(a);
        }
    }
}
