//! MaxProp's acknowledgements (SPEC.md §11.4): the destination of a plain message signs its
//! bundle id when it takes the message, and the acknowledgement travels to the nodes that
//! still hold a copy, which delete it, so scarce contacts carry what is not delivered yet.
//!
//! An acknowledgement is `id ‖ signature` (96 bytes on the wire), the signature by the
//! message's destination device over `"meshpay/v1/maxprop-ack" ‖ 0x00 ‖ id`. A node checks it
//! against the destination its own copy names before it deletes or refuses a copy, so only
//! the device a message is addressed to can have it deleted: a peer cannot make a node drop a
//! copy by claiming it was delivered.
//!
//! A node keeps two pools ([`Acks`]): the **checked** ones (it made them, or checked them
//! against a copy it held), the last [`MAX_ACKS`], which answer a peer's want list; and the
//! **unchecked** ones peers passed on, the last [`MAX_UNCHECKED`], kept only to pass on and to
//! check a copy against when one arrives. Unchecked ones never push out checked ones, so a
//! peer sending junk can at worst crowd out other unchecked ones.

use crate::keys::{BadSignature, DeviceKey, DeviceSecret, Signature};
use crate::objects::{Hash, UnixTime};
use crate::riblt::key_of;
use crate::tags;
use std::collections::{HashMap, VecDeque};

/// Bytes of one acknowledgement on the wire: the bundle id (32), the signature (64).
pub const ACK_LEN: usize = 96;
/// Most checked acknowledgements a node keeps (past it, the oldest go).
pub const MAX_ACKS: usize = 4096;
/// Most unchecked acknowledgements a node keeps (past it, the oldest go).
pub const MAX_UNCHECKED: usize = 1024;
/// Acknowledgements a side sends unasked in a session: its newest, checked ones first.
pub const FLOOD: usize = 64;
/// Most acknowledgements a side takes from the peer in one session; the rest are ignored.
pub const MAX_TAKEN: usize = 4 * FLOOD;
/// Most acknowledgements a side queues for the peer in one session.
pub const MAX_SENT: usize = 4 * FLOOD;

/// One acknowledgement: a delivered message's bundle id and its destination's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The message's bundle id.
    pub id: Hash,
    /// The destination's signature over it.
    pub sig: Signature,
}

impl Ack {
    /// The destination `key` acknowledges the message whose bundle id is `id`.
    pub fn sign(id: Hash, key: &DeviceSecret) -> Self {
        Self {
            id,
            sig: key.sign(tags::MAXPROP_ACK, &id.0),
        }
    }

    /// Checks that device `to` signed this acknowledgement.
    pub fn verify(&self, to: &DeviceKey) -> Result<(), BadSignature> {
        crate::keys::verify(&to.0, tags::MAXPROP_ACK, &self.id.0, &self.sig)
    }
}

/// Packs acknowledgements for the wire.
pub fn pack(acks: &[Ack]) -> Vec<u8> {
    let mut out = Vec::with_capacity(acks.len() * ACK_LEN);
    for a in acks {
        out.extend_from_slice(&a.id.0);
        out.extend_from_slice(&a.sig.0);
    }
    out
}

/// Unpacks acknowledgements; `None` if `bytes` is not a whole number of them.
pub fn unpack(bytes: &[u8]) -> Option<Vec<Ack>> {
    if bytes.len() % ACK_LEN != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(ACK_LEN)
            .map(|c| Ack {
                id: Hash(c[..32].try_into().expect("32 of 96 bytes")),
                sig: Signature(c[32..].try_into().expect("64 of 96 bytes")),
            })
            .collect(),
    )
}

/// The last `cap` acknowledgements put in, by bundle id, oldest out.
#[derive(Debug, Clone, Default)]
struct Pool {
    /// By id: the acknowledgement, when it came, and when its message expires (if known).
    by_id: HashMap<Hash, (Ack, u64, UnixTime)>,
    /// Ids in the order they came, with when (an id taken out and put in again comes twice).
    order: VecDeque<(Hash, u64)>,
    next: u64,
}

impl Pool {
    /// Puts `ack` in (replacing one of the same id), its message expiring at `expires`; the
    /// ids pushed out past `cap`.
    fn put(&mut self, ack: Ack, expires: UnixTime, cap: usize) -> Vec<Hash> {
        self.by_id.insert(ack.id, (ack, self.next, expires));
        self.order.push_back((ack.id, self.next));
        self.next += 1;
        let mut out = Vec::new();
        while self.by_id.len() > cap || self.order.len() > 2 * cap {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            if self.by_id.get(&old).is_some_and(|k| k.1 == at) {
                self.by_id.remove(&old);
                out.push(old);
            }
        }
        out
    }

    fn get(&self, id: &Hash) -> Option<&Ack> {
        self.by_id.get(id).map(|k| &k.0)
    }

    /// Takes `id` out (its place in `order` goes when reached).
    fn remove(&mut self, id: &Hash) {
        self.by_id.remove(id);
    }

    /// Newest first, but those of messages expired by `now`.
    fn newest(&self, now: UnixTime) -> impl Iterator<Item = &Ack> {
        self.order
            .iter()
            .rev()
            .filter_map(move |(id, at)| self.by_id.get(id).filter(|k| k.1 == *at && k.2 >= now))
            .map(|k| &k.0)
    }
}

/// The acknowledgements a node keeps: checked and unchecked (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Acks {
    checked: Pool,
    /// Checked ids by sync key (SPEC.md §11.3), to answer a want list.
    by_key: HashMap<u64, Hash>,
    unchecked: Pool,
}

impl Acks {
    /// Keeps `ack` as checked: this node made it, or checked it against a copy it held,
    /// whose expiry is `expires`.
    pub fn add_checked(&mut self, ack: Ack, expires: UnixTime) {
        if self.checked.get(&ack.id) == Some(&ack) {
            return;
        }
        self.unchecked.remove(&ack.id);
        self.by_key.entry(key_of(&ack.id)).or_insert(ack.id);
        for old in self.checked.put(ack, expires, MAX_ACKS) {
            let key = key_of(&old);
            if self.by_key.get(&key) == Some(&old) {
                self.by_key.remove(&key);
            }
        }
    }

    /// Keeps `ack`, which a peer passed on, as unchecked, unless a checked one of its id is
    /// kept.
    pub fn add_unchecked(&mut self, ack: Ack) {
        if self.checked.get(&ack.id).is_none() {
            // Its message's expiry is unknown until a copy checks it.
            self.unchecked.put(ack, UnixTime::MAX, MAX_UNCHECKED);
        }
    }

    /// Forgets the unchecked acknowledgement of `id` (it did not check).
    pub fn forget_unchecked(&mut self, id: &Hash) {
        self.unchecked.remove(id);
    }

    /// The acknowledgement of bundle `id`, checked or not, and whether it is checked.
    pub fn get(&self, id: &Hash) -> Option<(&Ack, bool)> {
        self.checked
            .get(id)
            .map(|a| (a, true))
            .or_else(|| self.unchecked.get(id).map(|a| (a, false)))
    }

    /// Whether a checked acknowledgement of bundle `id` is kept.
    pub fn is_checked(&self, id: &Hash) -> bool {
        self.checked.get(id).is_some()
    }

    /// The checked acknowledgement of the bundle whose sync key is `key`, if kept.
    pub fn checked_for_key(&self, key: u64) -> Option<&Ack> {
        self.by_key.get(&key).and_then(|id| self.checked.get(id))
    }

    /// The newest `n` kept but those of messages expired by `now`: checked ones first, newest
    /// first, then unchecked ones.
    pub fn newest(&self, n: usize, now: UnixTime) -> impl Iterator<Item = &Ack> {
        self.checked
            .newest(now)
            .chain(self.unchecked.newest(now))
            .take(n)
    }

    /// How many are kept, checked and unchecked.
    pub fn len(&self) -> usize {
        self.checked.by_id.len() + self.unchecked.by_id.len()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_verifies_only_for_its_destination_and_id() {
        let bob = DeviceSecret::from_seed(&[2; 32]);
        let carol = DeviceSecret::from_seed(&[3; 32]);
        let a = Ack::sign(Hash([7; 32]), &bob);
        assert!(a.verify(&bob.public()).is_ok());
        assert!(a.verify(&carol.public()).is_err());
        let moved = Ack {
            id: Hash([8; 32]),
            ..a
        };
        assert!(moved.verify(&bob.public()).is_err());
        assert_eq!(unpack(&pack(&[a, moved])), Some(vec![a, moved]));
        assert_eq!(unpack(&[0; 95]), None);
    }

    #[test]
    fn checked_acks_are_bounded_oldest_out_and_junk_never_pushes_them_out() {
        let bob = DeviceSecret::from_seed(&[2; 32]);
        let mut acks = Acks::default();
        let id = |i: usize, tail: u8| {
            let mut h = [tail; 32];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Hash(h)
        };
        let first = Ack::sign(id(0, 0), &bob);
        acks.add_unchecked(first);
        assert_eq!(acks.get(&first.id), Some((&first, false)));
        assert_eq!(acks.checked_for_key(key_of(&first.id)), None);
        acks.add_checked(first, 100);
        acks.add_unchecked(first);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks.get(&first.id), Some((&first, true)));
        assert_eq!(acks.checked_for_key(key_of(&first.id)), Some(&first));
        // Junk with the same sync key, and a flood of junk, leave the checked one alone.
        for i in 0..=MAX_UNCHECKED {
            acks.add_unchecked(Ack {
                id: id(i, 9),
                sig: first.sig,
            });
        }
        assert_eq!(acks.checked_for_key(key_of(&first.id)), Some(&first));
        assert_eq!(acks.len(), 1 + MAX_UNCHECKED);
        assert_eq!(
            acks.newest(1, 100).next(),
            Some(&first),
            "checked ones go first"
        );
        assert_ne!(
            acks.newest(1, 101).next(),
            Some(&first),
            "not once its message expired"
        );
        assert!(acks.get(&id(0, 9)).is_none(), "the oldest junk went");
        acks.forget_unchecked(&id(1, 9));
        assert!(acks.get(&id(1, 9)).is_none());
        // Past the bound the oldest checked one goes, and its key with it.
        for i in 1..=MAX_ACKS {
            acks.add_checked(
                Ack {
                    id: id(i, 0),
                    sig: first.sig,
                },
                100,
            );
        }
        assert!(!acks.is_checked(&first.id));
        assert_eq!(acks.checked_for_key(key_of(&first.id)), None);
        assert!(acks.is_checked(&id(1, 0)));
        let newest: Vec<Hash> = acks.newest(2, 0).map(|a| a.id).collect();
        assert_eq!(newest, [id(MAX_ACKS, 0), id(MAX_ACKS - 1, 0)]);
    }
}
