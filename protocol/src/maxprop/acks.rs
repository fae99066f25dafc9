//! MaxProp's acknowledgements (SPEC.md §11.4): the destination of a plain message signs its
//! bundle id when it takes the message, and the acknowledgement travels back to the nodes that
//! still hold a copy, which delete it, so scarce contacts carry what is not delivered yet.
//!
//! An acknowledgement is `id ‖ signature` (96 bytes on the wire), the signature by the
//! message's destination device over `"meshpay/v1/maxprop-ack" ‖ 0x00 ‖ id`. A node checks it
//! against the destination its own copy names before it deletes or refuses a copy, so only
//! the device a message is addressed to can have it deleted: a peer cannot make a node drop a
//! copy by claiming it was delivered. A node keeps the last [`MAX_ACKS`] acknowledgements it
//! made, checked or was sent, passes its newest on, and answers a peer that still holds a
//! message with the acknowledgement.

use crate::keys::{BadSignature, DeviceKey, DeviceSecret, Signature};
use crate::objects::Hash;
use crate::riblt::key_of;
use crate::tags;
use std::collections::{HashMap, VecDeque};

/// Bytes of one acknowledgement on the wire: the bundle id (32), the signature (64).
pub const ACK_LEN: usize = 96;
/// Most acknowledgements a node keeps (past it, the oldest go).
pub const MAX_ACKS: usize = 4096;
/// Acknowledgements a side sends unasked in a session: its newest.
pub const FLOOD: usize = 64;

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

/// The acknowledgements a node keeps, by sync key (SPEC.md §11.3): the last [`MAX_ACKS`]
/// it made, checked or was sent. Only those made or checked here (**checked**) answer a
/// peer's want list; any may be passed on, and each is checked before it deletes or refuses a
/// copy.
#[derive(Debug, Clone, Default)]
pub struct Acks {
    /// By sync key: the acknowledgement, whether it is checked, and when it came.
    by_key: HashMap<u64, (Ack, bool, u64)>,
    /// Keys in the order they came, with when (a key forgotten and kept again comes twice).
    order: VecDeque<(u64, u64)>,
    next: u64,
}

impl Acks {
    /// Keeps `ack`, `checked` if this node made or checked it (the oldest goes past
    /// [`MAX_ACKS`]). An acknowledgement of an id already kept only marks it checked; one of
    /// a second id with the same sync key is not kept.
    pub fn add(&mut self, ack: Ack, checked: bool) {
        let key = key_of(&ack.id);
        if let Some(kept) = self.by_key.get_mut(&key) {
            if kept.0 == ack && checked {
                kept.1 = true;
            }
            return;
        }
        self.by_key.insert(key, (ack, checked, self.next));
        self.order.push_back((key, self.next));
        self.next += 1;
        while self.by_key.len() > MAX_ACKS || self.order.len() > 2 * MAX_ACKS {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            if self.by_key.get(&old).is_some_and(|k| k.2 == at) {
                self.by_key.remove(&old);
            }
        }
    }

    /// Forgets the acknowledgement of `id` (it did not check).
    pub fn remove(&mut self, id: &Hash) {
        let key = key_of(id);
        if self.by_key.get(&key).is_some_and(|k| k.0.id == *id) {
            self.by_key.remove(&key);
        }
    }

    /// The acknowledgement of bundle `id`, if kept.
    pub fn get(&self, id: &Hash) -> Option<&Ack> {
        self.by_key
            .get(&key_of(id))
            .map(|k| &k.0)
            .filter(|a| a.id == *id)
    }

    /// The checked acknowledgement of the bundle whose sync key is `key`, if kept.
    pub fn checked_for_key(&self, key: u64) -> Option<&Ack> {
        self.by_key.get(&key).filter(|k| k.1).map(|k| &k.0)
    }

    /// The last `n` kept, newest first.
    pub fn newest(&self, n: usize) -> impl Iterator<Item = &Ack> {
        self.order
            .iter()
            .rev()
            .filter_map(|(k, at)| self.by_key.get(k).filter(|kept| kept.2 == *at))
            .take(n)
            .map(|k| &k.0)
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
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
    fn the_kept_acks_are_bounded_oldest_out() {
        let bob = DeviceSecret::from_seed(&[2; 32]);
        let mut acks = Acks::default();
        let id = |i: usize| {
            let mut h = [0; 32];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Hash(h)
        };
        let first = Ack::sign(id(0), &bob);
        acks.add(first, false);
        assert_eq!(acks.checked_for_key(key_of(&first.id)), None);
        acks.add(first, true);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks.checked_for_key(key_of(&first.id)), Some(&first));
        acks.remove(&first.id);
        assert!(acks.is_empty());
        acks.add(first, true);
        for i in 1..=MAX_ACKS {
            acks.add(
                Ack {
                    id: id(i),
                    sig: first.sig,
                },
                false,
            );
        }
        assert_eq!(acks.len(), MAX_ACKS);
        assert!(acks.get(&first.id).is_none());
        assert!(acks.get(&id(1)).is_some());
        let newest: Vec<Hash> = acks.newest(2).map(|a| a.id).collect();
        assert_eq!(newest, [id(MAX_ACKS), id(MAX_ACKS - 1)]);
    }
}
