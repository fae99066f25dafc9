//! The transfer and close phases of a session: queue what the peer lacks in forwarding order,
//! filter it by [`Routing`], hand it over within the budget and the peer's room hint, admit
//! what the peer hands over, and exchange the signed hand-over receipts (SPEC.md §11.4).

use super::{Order, Routing, Session, State, SyncError};
use crate::bundle::{BundleError, BundleKind, MAX_BUNDLE};
use crate::codec::{Blob, DecodeError, VERSION};
use crate::keys::{DeviceKey, DeviceSecret, IssuerId};
use crate::objects::{HandOverBody, Hash, Signed, ids_digest};
use crate::store::{Admission, BundleStore, Entry, Origin, priority};
use crate::sync::message::{Carried, Step, SyncMessage, pack_keys, unpack_keys};

impl Session {
    /// Adds `more` to what is to be sent, in forwarding order once the transfer has started
    /// (entering it, [`Session::transfer`] orders everything queued before).
    pub(super) fn queue(&mut self, more: Vec<Hash>, store: &BundleStore) {
        if self.state != State::Transfer {
            self.to_send.extend(more);
            return;
        }
        if more.is_empty() && self.cfg.routing != Routing::MaxProp {
            // The order's keys are fixed for the session (MaxProp's move with the store):
            // what is queued is in order already.
            return;
        }
        let mut rest: Vec<Hash> = self.to_send.split_off(self.send_pos);
        rest.extend(more);
        rest.sort_unstable();
        rest.dedup();
        if rest.len() < 2 {
            // Nothing to order.
        } else if self.cfg.routing == Routing::MaxProp {
            self.maxprop_order(&mut rest, store);
        } else {
            let first = self.cfg.policy.destination_first;
            rest.sort_by_cached_key(|id| {
                store.get(id).map(|e| {
                    let later = first && !self.to_destination(e);
                    (later, self.order_rank(e), priority(&e.meta))
                })
            });
        }
        self.to_send.truncate(self.send_pos);
        self.to_send.extend(rest);
    }

    /// Whether this node is `entry`'s destination: a gateway of a record's issuer, the
    /// addressee of a message.
    fn to_me(&self, entry: &Entry) -> bool {
        destined(entry, &self.cfg.gateway_for, &self.cfg.me)
    }

    /// `entry`'s place in the policy's [`Order`] (0 for all under [`Order::Priority`]).
    pub(super) fn order_rank(&self, entry: &Entry) -> u64 {
        match self.cfg.policy.order {
            Order::Priority => 0,
            Order::Fifo => entry.arrival,
            Order::Random => shuffle(self.salt, &entry.meta.id),
        }
    }

    /// Whether the peer is `entry`'s destination: the gateway of a record's issuer, the
    /// addressee of a message.
    pub(super) fn to_destination(&self, entry: &Entry) -> bool {
        destined(entry, &self.peer_gateways, &self.cfg.peer)
    }

    /// Copies to give with `entry` to this peer and to keep, or `None` if routing keeps it
    /// here. Records go to gateways of their issuer, messages to their destination, whatever
    /// the routing. Keeping 0 of a limited number of copies hands the copy on: it leaves this
    /// node once the peer answers.
    pub(super) fn offer(&self, entry: &Entry, store: &BundleStore) -> Option<(u32, u32)> {
        if !matches!(entry.meta.kind, BundleKind::Record | BundleKind::Message) {
            return Some((0, entry.copies));
        }
        if !self.cfg.policy.relay_delivered
            && entry.meta.kind == BundleKind::Message
            && entry.meta.to == Some(self.cfg.me)
        {
            return None;
        }
        if self.cfg.routing == Routing::MaxProp
            && store.likelihoods().acks().is_checked(&entry.meta.id)
        {
            // Delivered: its acknowledgement goes instead.
            return None;
        }
        if self.to_destination(entry) {
            let keep = match self.cfg.routing {
                Routing::SprayAndWait { spray, .. }
                    if self.cfg.policy.halve_to_destination && entry.copies > 1 =>
                {
                    entry.copies - spray.give(entry.copies)
                }
                _ => entry.copies,
            };
            return Some((entry.copies.min(1), keep));
        }
        match self.cfg.routing {
            Routing::Epidemic | Routing::MaxProp => Some((0, entry.copies)),
            Routing::Direct => None,
            Routing::SprayAndWait { spray, .. } => match entry.copies {
                0 => Some((0, 0)),
                1 => None,
                n => Some((spray.give(n), n - spray.give(n))),
            },
            Routing::Prophet => self
                .peer_is_better(entry, store)
                .then_some((0, entry.copies)),
            Routing::SprayAndFocus { .. } => match entry.copies {
                0 => Some((0, 0)),
                1 => self.peer_is_better(entry, store).then_some((1, 0)),
                n => Some((n / 2, n - n / 2)),
            },
        }
    }

    pub(super) fn nothing_left(&self) -> bool {
        self.want_pos >= self.want.len()
            && self.acks_sent()
            && self.peer_want_done
            && (self.send_pos >= self.to_send.len() || self.budget_spent)
    }

    pub(super) fn transfer(&mut self, store: &mut BundleStore) -> SyncMessage {
        if self.state != State::Transfer {
            // Entering the transfer: put what we know to send in forwarding order.
            self.state = State::Transfer;
            let give = std::mem::take(&mut self.to_send);
            self.queue(give, store);
        }
        self.flood_acks(store);
        let mut m = SyncMessage::new(Step::Transfer);
        let mut room = self.room();
        if self.want_pos < self.want.len() {
            let page: Vec<u64> = self.want[self.want_pos..]
                .iter()
                .take(room / 8)
                .copied()
                .collect();
            self.want_pos += page.len();
            room -= page.len() * 8;
            m.keys = pack_keys(&page);
        }
        m.last = self.want_pos >= self.want.len();
        let most = match self.cfg.policy.per_message {
            0 => usize::MAX,
            n => n as usize,
        };
        // Deliveries first, both ways: relay only once the peer has shown it has none left;
        // keeping the link, only once it sends nothing.
        let policy = self.cfg.policy;
        let may_relay = match self.peer_carried {
            _ if !policy.destination_first && !policy.keep_link => true,
            Some((any, for_me)) => !(policy.keep_link && any || policy.destination_first && for_me),
            None => false,
        };
        while self.send_pos < self.to_send.len() && !self.budget_spent && m.bundles.len() < most {
            let id = self.to_send[self.send_pos];
            let Some(entry) = store.get(&id) else {
                // Purged or evicted meanwhile.
                self.send_pos += 1;
                continue;
            };
            if !(may_relay || policy.destination_first && self.to_destination(entry)) {
                break;
            }
            let Some((give, keep)) = self.offer(entry, store) else {
                self.send_pos += 1;
                continue;
            };
            let entry_copies = entry.copies;
            let hops = entry.hops;
            let urgent = entry.meta.kind.class() == 0;
            let covered = entry.meta.kind != BundleKind::Message;
            let Some(body) = store.body(&id) else {
                // The driver lost the body: skip it (the mesh has other copies).
                self.send_pos += 1;
                continue;
            };
            let len = body.len();
            if self.spent + len as u64 > self.cfg.budget {
                self.budget_spent = true;
                break;
            }
            if len + 12 > room {
                break;
            }
            // The peer said how much it would take: do not hand over what it would refuse.
            // Urgent kinds go anyway (they may take the place of less urgent bundles there).
            if !urgent {
                let hint = self.peer_room.unwrap_or(u64::MAX);
                if self.sent_against_room + len as u64 > hint {
                    self.held_back += 1;
                    self.send_pos += 1;
                    continue;
                }
                self.sent_against_room += len as u64;
            }
            room -= len + 12;
            self.spent += len as u64;
            m.bundles.push(Carried {
                copies: give,
                bundle: Blob(body.to_vec()),
                hops,
            });
            self.given.push(id);
            if covered {
                self.covered_given.add(id, len);
            }
            if keep == 0 && entry_copies > 0 {
                self.forwarding.push(id);
            } else if keep != entry_copies {
                store.set_copies(&id, keep);
            }
            self.send_pos += 1;
        }
        // Acknowledgements take the room the bundles left.
        self.send_acks(&mut m, room);
        m.done = self.nothing_left();
        self.sent_done = m.done;
        m
    }

    pub(super) fn take_transfer(
        &mut self,
        m: &SyncMessage,
        store: &mut BundleStore,
        key: &DeviceSecret,
    ) -> Result<(), SyncError> {
        self.take_acks(m, store);
        if !self.known {
            // The peer knows the differences: its want list tells us what to send.
            let want = unpack_keys(&m.keys);
            let give: Vec<Hash> = want.iter().filter_map(|k| store.sync_id(*k)).collect();
            self.queue(give, store);
            if m.last {
                self.peer_want_done = true;
            }
        }
        let before = self.admitted.len();
        for c in &m.bundles {
            if c.bundle.0.len() > MAX_BUNDLE {
                return Err(SyncError::BadBundle(BundleError::Decode(
                    DecodeError::TooLarge {
                        kind: "bundle",
                        len: c.bundle.0.len(),
                        limit: MAX_BUNDLE,
                    },
                )));
            }
            let id = crate::bundle::bundle_id(&c.bundle.0);
            if self.delivered_already(&id, &c.bundle.0, store) {
                continue;
            }
            let admission = store.insert_as(
                &id,
                &c.bundle.0,
                Origin::Peer(self.cfg.peer.0),
                c.copies,
                self.cfg.now,
            );
            let kind = match &admission {
                Admission::Added(meta) => Some(meta.kind),
                Admission::Duplicate => store.get(&id).map(|e| e.meta.kind),
                _ => None,
            }
            .or_else(|| crate::bundle::kind_of(&c.bundle.0));
            if kind != Some(BundleKind::Message) {
                self.covered_taken.add(id, c.bundle.0.len());
            }
            match admission {
                Admission::Added(meta) => {
                    store.set_hops(&id, c.hops.saturating_add(1));
                    self.admitted.push(id);
                    self.acknowledge(&meta, key, store);
                }
                Admission::Refused(
                    e @ (BundleError::Decode(_)
                    | BundleError::BadSignature(_)
                    | BundleError::ProvisionalReceipt),
                ) => return Err(SyncError::BadBundle(e)),
                _ => {}
            }
        }
        self.peer_done = m.done;
        if self.cfg.policy.destination_first || self.cfg.policy.keep_link {
            let for_me = self.admitted[before..]
                .iter()
                .any(|id| store.get(id).is_some_and(|e| self.to_me(e)));
            self.peer_carried = Some((!m.bundles.is_empty(), for_me));
        }
        Ok(())
    }

    pub(super) fn close(&mut self, key: &DeviceSecret) -> SyncMessage {
        let mut m = SyncMessage::new(Step::Close);
        if !self.covered_taken.ids.is_empty() {
            let taken = &self.covered_taken;
            m.handover = Some(Signed::by_device(
                HandOverBody {
                    version: VERSION,
                    giver: self.cfg.peer,
                    taker: self.cfg.me,
                    count: u32::try_from(taken.ids.len()).unwrap_or(u32::MAX),
                    bytes: taken.bytes,
                    ids: ids_digest(&taken.ids),
                    at: self.cfg.now,
                },
                key,
            ));
        }
        m
    }

    pub(super) fn take_close(&mut self, m: &SyncMessage) {
        // Keep the peer's receipt only if it names both sides and covers exactly what we
        // gave. Its signature is checked where the receipt is relied on (SPEC.md §11.4): the
        // bundles are handed over already, so checking it now would change nothing else.
        if let Some(h) = &m.handover {
            let b = h.body();
            if b.taker == self.cfg.peer
                && b.giver == self.cfg.me
                && self.covered_given.is_covered_by(b)
            {
                self.proof = Some(h.clone());
            }
        }
    }
}

/// The bundles a hand-over receipt covers (SPEC.md §11.4: every bundle a session moved but
/// plain messages), one way, and their bytes.
#[derive(Debug, Default)]
pub(super) struct Covered {
    ids: Vec<Hash>,
    bytes: u64,
}

impl Covered {
    fn add(&mut self, id: Hash, len: usize) {
        self.ids.push(id);
        self.bytes += len as u64;
    }

    /// Whether receipt body `b` covers exactly these bundles.
    fn is_covered_by(&self, b: &HandOverBody) -> bool {
        b.count as usize == self.ids.len()
            && b.bytes == self.bytes
            && b.ids == ids_digest(&self.ids)
    }
}

/// Whether `entry` is for the device `device`, a gateway of `gateways`: a record of one of
/// their issuers, or a message addressed to it.
fn destined(entry: &Entry, gateways: &[IssuerId], device: &DeviceKey) -> bool {
    match entry.meta.kind {
        BundleKind::Record => gateways.contains(&entry.meta.issuer),
        BundleKind::Message => entry.meta.to == Some(*device),
        _ => false,
    }
}

/// A position in a random order drawn from `salt`: splitmix64 of the salt and the id.
fn shuffle(salt: u64, id: &Hash) -> u64 {
    let mut x = salt ^ u64::from_le_bytes(id.0[..8].try_into().expect("8 of 32 bytes"));
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
