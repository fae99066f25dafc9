//! What the store is configured with and reports: origins, configuration, held entries and
//! their forwarding order, admission outcomes, and the changes a driver mirrors to disk.

use crate::bundle::{BundleError, BundleKind, Content, Meta};
use crate::keys::IssuerId;
use crate::objects::{Hash, UnixTime};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Where a bundle came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// Made by this node (its own records, notices, fraud proofs it built, what its gateway
    /// fetched). Never evicted for others' bundles; not counted against a per-origin limit.
    Local,
    /// Handed over by the peer with this device key.
    Peer([u8; 32]),
    /// Imported from a file.
    File,
}

/// Limits of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most bytes of bundles held.
    pub max_bytes: u64,
    /// Most bundles held.
    pub max_bundles: usize,
    /// Most bytes held from any one origin other than [`Origin::Local`].
    pub max_bytes_per_origin: u64,
    /// Carry only these issuers' bundles (`None`: any issuer).
    pub issuers: Option<BTreeSet<IssuerId>>,
    /// Keep record bodies in memory (`false`: the driver stores them and installs a
    /// [`BodyLoader`]).
    pub bodies_in_memory: bool,
    /// Carry plain messages (simulation traffic; nodes do not).
    pub accept_messages: bool,
}

/// Reads a bundle body the driver stored (see [`StoreConfig::bodies_in_memory`]).
pub type BodyLoader = Box<dyn Fn(&Hash) -> Option<Arc<[u8]>> + Send + Sync>;

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            max_bundles: 200_000,
            max_bytes_per_origin: 16 << 20,
            issuers: None,
            bodies_in_memory: true,
            accept_messages: false,
        }
    }
}

/// Forwarding order: smaller goes first.
pub type Priority = (u8, UnixTime, Hash);

/// The forwarding priority of a bundle.
pub fn priority(meta: &Meta) -> Priority {
    (rank(meta.kind), meta.created, meta.id)
}

/// One held bundle.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The encoding, unless the driver keeps it ([`BundleStore::body`] reads it either way).
    pub bytes: Option<Arc<[u8]>>,
    /// Its metadata (one copy, shared by the stores of a [`super::BodyPool`] that hold it).
    pub meta: Arc<Meta>,
    /// Who handed it over.
    pub origin: Origin,
    /// Copies this node may still hand out under spray-and-wait (0: no limit).
    pub copies: u32,
    /// When it arrived, in this store's own order (1, 2, 3, …): what eviction ranks by.
    pub arrival: u64,
    /// Hand-overs it made before it reached this node, at most 255: 0 for its own, the
    /// giver's count plus one for a bundle a sync session took ([`super::BundleStore::set_hops`]),
    /// 1 for others' bundles read back from disk (soft state, not written). MaxProp orders by
    /// it.
    pub hops: u8,
}

/// Eviction key of an entry: its kind's rank and its arrival (the greatest goes first).
pub(super) type EvictKey = (u8, u64, Hash);

pub(super) fn rank(kind: BundleKind) -> u8 {
    match kind {
        BundleKind::Fraud => 0,
        BundleKind::Revocation => 1,
        BundleKind::Receipt => 2,
        _ => 3,
    }
}

/// What a call changed, for the driver to persist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Bundles added (or whose copy count changed).
    pub added: Vec<Hash>,
    /// Bundles removed.
    pub removed: Vec<Hash>,
    /// Tombstones added: issuer, record id and expiry.
    pub tombstoned: Vec<(IssuerId, Hash, UnixTime)>,
    /// Tombstones expired: issuer and record id.
    pub untombstoned: Vec<(IssuerId, Hash)>,
    /// Bodies of the bundles added since the last call (the driver stores them).
    pub bodies: Vec<(Hash, Arc<[u8]>)>,
    /// What was admitted since the last call, decoded, in order: the bundles offered and
    /// kept, and those the store made itself (a fraud proof from two notices). A driver acts
    /// on these without reading and decoding the bodies again.
    pub admitted: Vec<Admitted>,
}

/// A bundle the store took in, with its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// Its metadata.
    pub meta: Meta,
    /// Where it came from.
    pub origin: Origin,
    /// What it holds.
    pub content: Content,
}

impl Changes {
    /// True if nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.tombstoned.is_empty()
            && self.untombstoned.is_empty()
    }
}

/// The result of offering a bundle to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Kept.
    Added(Meta),
    /// Already held.
    Duplicate,
    /// A record already settled: its tombstone is still there.
    Settled,
    /// Refused: invalid, forged or expired.
    Refused(BundleError),
    /// Refused: the origin is over its quota, or the store is full of more urgent bundles.
    Full,
    /// Refused: an issuer this store does not carry.
    ForeignIssuer,
}
