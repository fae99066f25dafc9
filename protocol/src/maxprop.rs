//! MaxProp meeting likelihoods and path costs (Burgess, Gallagher, Jensen and Levine,
//! "MaxProp: Routing for Vehicle-Based Disruption-Tolerant Networks", INFOCOM 2006), the state
//! behind [`crate::sync::Routing::MaxProp`].
//!
//! Every node keeps a vector `f` over the endpoints it has met (the same endpoints as PRoPHET's,
//! [`crate::prophet::device_endpoint`] and [`crate::prophet::issuer_endpoint`]): on meeting
//! `j` it adds `α` (1) to `f(j)` and divides the whole vector by `1 + α`, so it always sums to
//! 1 (the paper's incremental averaging; the first endpoint met starts at 1). Meeting a gateway
//! is meeting its device and each issuer it uploads for, one after the other.
//!
//! Nodes also pass on the vectors they have learned of others. In a sync session each side
//! sends, in its first message, its own vector and the newest it knows of others
//! ([`Likelihoods::pack`], SPEC.md §11.2), each stamped with its age; a receiver keeps a
//! learned vector if it is newer than the one it holds, and the peer's own always. As in The
//! ONE's `MaxPropRouter`, where both sides count the meeting before they exchange, a receiver
//! applies the meeting with itself to the peer's own vector in the first session of a contact.
//!
//! The **cost** of a destination from a node is the length of the shortest path over the known
//! vectors, an edge `i → j` costing `1 − f_i(j)` (Dijkstra, [`Likelihoods::costs`]).
//!
//! The **hop-count threshold** splits what a node sends first (new bundles, by hop count) from
//! the rest (by cost). The paper and The ONE adapt it to the bytes a contact carries: with `x`
//! the mean of the last ten non-zero samples and `b` the buffer size, `p = x` if `x < b/2`,
//! `min(x, b − x)` if `b/2 ≤ x < b` and no threshold otherwise; the threshold is one more than
//! the hop count of the bundle that fills the first `p` bytes of the buffer in hop-count order
//! ([`Likelihoods::threshold`]). A sample is the bundle bytes a contact moved both ways, as
//! far as the other side's answers confirm them ([`Likelihoods::moved`]), taken when the
//! contact ends ([`Likelihoods::parted`]) or, if the driver does not say, at the next encounter
//! with the same peer.
//!
//! Bounds: a node's own vector keeps fewer than [`MAX_OWN`] endpoints (The ONE's default
//! `probSetMaxSize`: a meeting that brings it to 50 drops the least likely); a vector on the
//! wire carries at most [`MAX_WIRE_ENTRIES`] entries and all of them at most
//! [`MAX_LIKELIHOOD_BYTES`] bytes; a node remembers at most [`MAX_KNOWN`] learned vectors, the
//! newest. Everything here is soft state,
//! never written, and only a routing hint: a peer can claim any likelihood and so attract
//! copies, but it cannot make a node keep more than these bounds or evict a bundle. What
//! deletes a copy is an acknowledgement ([`acks`]), which only the message's destination can
//! sign.

pub mod acks;

use crate::objects::UnixTime;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// `α`, what a meeting adds before renormalising (the paper's and The ONE's 1).
pub const ALPHA: f64 = 1.0;
/// The size at which a node's own vector drops its least likely endpoint (The ONE's default
/// `probSetMaxSize`): it keeps at most 49.
pub const MAX_OWN: usize = 50;
/// Most entries one vector carries on the wire (a sender sends its likeliest).
pub const MAX_WIRE_ENTRIES: usize = 32;
/// Most bytes of vectors one sync message carries (as many as PRoPHET's 96 predictions).
pub const MAX_LIKELIHOOD_BYTES: usize = 1152;
/// Most vectors learned of other nodes a node keeps (past it, the oldest go).
pub const MAX_KNOWN: usize = 256;
/// Transfer samples the threshold averages (The ONE's `BYTES_TRANSFERRED_AVG_SAMPLES`).
pub const SAMPLES: usize = 10;
/// Bytes of a vector's header on the wire: source endpoint (8), age in seconds (4), entries (1).
pub const VECTOR_HEADER: usize = 13;
/// Bytes of one entry on the wire: endpoint (8), likelihood in units of 2^-16 (2).
pub const ENTRY_LEN: usize = 10;

/// One node's meeting likelihoods as carried on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Vector {
    /// The node's device endpoint.
    pub source: u64,
    /// Seconds since the vector last changed, as of the sender's `now`.
    pub age: u32,
    /// Endpoints ascending, with their likelihoods.
    pub entries: Vec<(u64, f64)>,
}

#[derive(Debug, Clone)]
struct Learned {
    updated: UnixTime,
    f: Vec<(u64, f64)>,
}

/// A node's MaxProp state. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Likelihoods {
    own: BTreeMap<u64, f64>,
    own_updated: UnixTime,
    known: BTreeMap<u64, Learned>,
    samples: [u64; SAMPLES],
    next_sample: usize,
    /// This node's own endpoints, as its last session named them.
    mine: Vec<u64>,
    /// Bundle bytes moved so far in the current contact with each peer (by device endpoint).
    contacts: BTreeMap<u64, u64>,
    /// Acknowledgements of delivered messages made or checked here ([`acks`]).
    acks: acks::Acks,
}

impl Likelihoods {
    /// `f(endpoint)` in this node's own vector (0 if never met).
    pub fn get(&self, endpoint: u64) -> f64 {
        self.own.get(&endpoint).copied().unwrap_or(0.0)
    }

    /// This node's own vector, endpoints ascending.
    pub fn own(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.own.iter().map(|(&e, &f)| (e, f))
    }

    /// The vector learned of `source`, endpoints ascending, if any.
    pub fn learned(&self, source: u64) -> Option<&[(u64, f64)]> {
        self.known.get(&source).map(|l| l.f.as_slice())
    }

    /// This node's own endpoints (its device first, then the issuers it is a gateway for), as
    /// its last MaxProp session named them; empty before any.
    pub fn mine(&self) -> &[u64] {
        &self.mine
    }

    /// The acknowledgements of delivered messages kept here.
    pub fn acks(&self) -> &acks::Acks {
        &self.acks
    }

    /// The acknowledgements, to add to.
    pub fn acks_mut(&mut self) -> &mut acks::Acks {
        &mut self.acks
    }

    /// Vectors learned of other nodes.
    pub fn known(&self) -> usize {
        self.known.len()
    }

    /// A meeting with each of `endpoints` (a device, then the issuers it is a gateway for) at
    /// `now`: incremental averaging, one endpoint after the other.
    pub fn meet(&mut self, endpoints: &[u64], now: UnixTime) {
        for &e in endpoints {
            update(&mut self.own, e);
        }
        if !endpoints.is_empty() {
            self.own_updated = now;
        }
    }

    /// Takes the vectors `theirs` a peer sent at `now`. `peer_endpoints` are the peer's (its
    /// device first, then the issuers it is a gateway for), `mine` this node's own (the same
    /// way), and `encounter` says this is the first session of a contact: then the meeting is
    /// counted in this node's own vector for `peer_endpoints` and, as the peer counts it too,
    /// in the peer's vector for `mine`.
    pub fn learn(
        &mut self,
        theirs: &[Vector],
        peer_endpoints: &[u64],
        mine: &[u64],
        encounter: bool,
        now: UnixTime,
    ) {
        self.mine = mine.to_vec();
        let peer = peer_endpoints.first().copied();
        if encounter {
            self.meet(peer_endpoints, now);
            // A contact whose end the driver did not report is over now.
            if let Some(p) = peer {
                self.parted(p);
            }
        }
        for v in theirs {
            if mine.contains(&v.source) || Some(v.source) == peer {
                continue;
            }
            let updated = now.saturating_sub(u64::from(v.age));
            if self
                .known
                .get(&v.source)
                .is_some_and(|l| l.updated >= updated)
            {
                continue;
            }
            self.known.insert(
                v.source,
                Learned {
                    updated,
                    f: v.entries.clone(),
                },
            );
        }
        // The peer's own vector (none if it had met nobody), with this meeting counted.
        if let Some(peer) = peer.filter(|p| !mine.contains(p)) {
            let sent = theirs.iter().find(|v| v.source == peer);
            let mut f: BTreeMap<u64, f64> = sent
                .map(|v| v.entries.iter().copied().collect())
                .unwrap_or_default();
            if encounter {
                for &e in mine {
                    update(&mut f, e);
                }
            }
            if !f.is_empty() {
                let f = f.into_iter().collect();
                self.known.insert(peer, Learned { updated: now, f });
            }
        }
        while self.known.len() > MAX_KNOWN {
            // The oldest goes (ties: the larger source).
            let oldest = self
                .known
                .iter()
                .min_by_key(|(s, l)| (l.updated, Reverse(**s)))
                .map(|(s, _)| *s)
                .expect("over the bound, so not empty");
            self.known.remove(&oldest);
        }
    }

    /// The vectors to send at `now` from the node whose device endpoint is `me` to the one
    /// whose device endpoint is `to`, packed for the wire (SPEC.md §11.2): its own first,
    /// then the learned ones but `to`'s own (it has that) newest first (ties: the smaller
    /// source), each cut to its [`MAX_WIRE_ENTRIES`] likeliest, while they fit in
    /// [`MAX_LIKELIHOOD_BYTES`]; sent in ascending order of source.
    pub fn pack(&self, me: u64, to: u64, now: UnixTime) -> Vec<u8> {
        let mut learned: Vec<(&u64, &Learned)> =
            self.known.iter().filter(|(s, _)| **s != to).collect();
        learned.sort_by_key(|(s, l)| (Reverse(l.updated), **s));
        let candidates = std::iter::once((me, self.own_updated, self.own().collect::<Vec<_>>()))
            .chain(
                learned
                    .into_iter()
                    .map(|(&s, l)| (s, l.updated, l.f.clone())),
            );
        // Each chosen vector packed, by source.
        let mut chosen: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut bytes = 0;
        for (source, updated, f) in candidates {
            let mut top: Vec<(u64, u16)> = f
                .iter()
                .map(|&(e, f)| (e, to_wire(f)))
                .filter(|&(_, v)| v > 0)
                .collect();
            top.sort_unstable_by_key(|&(e, v)| (Reverse(v), e));
            top.truncate(MAX_WIRE_ENTRIES);
            let len = VECTOR_HEADER + top.len() * ENTRY_LEN;
            if top.is_empty() || bytes + len > MAX_LIKELIHOOD_BYTES {
                continue;
            }
            bytes += len;
            top.sort_unstable();
            let age = u32::try_from(now.saturating_sub(updated)).unwrap_or(u32::MAX);
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(&source.to_le_bytes());
            v.extend_from_slice(&age.to_le_bytes());
            v.push(u8::try_from(top.len()).expect("at most 32 entries"));
            for (e, f) in top {
                v.extend_from_slice(&e.to_le_bytes());
                v.extend_from_slice(&f.to_le_bytes());
            }
            chosen.insert(source, v);
        }
        chosen.into_values().flatten().collect()
    }

    /// The cost of reaching each endpoint from the nodes `from` (a device and the issuers it
    /// is a gateway for, all at cost 0): shortest paths over this node's own vector (as the
    /// node `me`) and those it learned, an edge `i → j` costing `1 − f_i(j)`. Endpoints with
    /// no known path are absent.
    pub fn costs(&self, me: u64, from: &[u64]) -> BTreeMap<u64, f64> {
        let own: Vec<(u64, f64)> = self.own().collect();
        let edges = |n: u64| -> &[(u64, f64)] {
            if n == me {
                &own
            } else {
                self.known.get(&n).map_or(&[], |l| l.f.as_slice())
            }
        };
        let mut dist: BTreeMap<u64, f64> = BTreeMap::new();
        let mut done: BTreeSet<u64> = BTreeSet::new();
        let mut heap = BinaryHeap::new();
        for &s in from {
            dist.insert(s, 0.0);
            heap.push(Reverse(Node(0.0, s)));
        }
        while let Some(Reverse(Node(d, n))) = heap.pop() {
            if !done.insert(n) {
                continue;
            }
            for &(j, f) in edges(n) {
                let nd = d + (1.0 - f);
                if !done.contains(&j) && dist.get(&j).is_none_or(|&old| nd < old) {
                    dist.insert(j, nd);
                    heap.push(Reverse(Node(nd, j)));
                }
            }
        }
        dist
    }

    /// Counts `bytes` of bundles moved (either way) in the current contact with `peer` (a
    /// device endpoint). At most [`MAX_KNOWN`] contacts are counted at once.
    pub fn moved(&mut self, peer: u64, bytes: u64) {
        if bytes == 0 || (self.contacts.len() >= MAX_KNOWN && !self.contacts.contains_key(&peer)) {
            return;
        }
        *self.contacts.entry(peer).or_default() += bytes;
    }

    /// The contact with `peer` ended: the bytes it moved are a sample.
    pub fn parted(&mut self, peer: u64) {
        if let Some(bytes) = self.contacts.remove(&peer) {
            self.sample(bytes);
        }
    }

    /// Records the bundle bytes one contact moved (both ways); zero is not a sample.
    pub fn sample(&mut self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.samples[self.next_sample] = bytes;
        self.next_sample = (self.next_sample + 1) % SAMPLES;
    }

    /// The mean of the recorded samples (0 before any).
    pub fn mean_transfer(&self) -> u64 {
        let taken: Vec<u64> = self.samples.iter().copied().filter(|&s| s > 0).collect();
        if taken.is_empty() {
            0
        } else {
            taken.iter().sum::<u64>() / taken.len() as u64
        }
    }

    /// The hop-count threshold for a buffer of `capacity` bytes holding bundles of the given
    /// (hop count, size): bundles with fewer hops go before the others, by hop count. 0 (no
    /// threshold) before any sample, or when a session carries the buffer's worth or more
    /// (then `held` is not read).
    pub fn threshold(&self, capacity: u64, held: impl IntoIterator<Item = (u8, u64)>) -> u32 {
        let x = self.mean_transfer();
        let b = capacity;
        let mut p = if x == 0 || x >= b {
            return 0;
        } else if x < b / 2 {
            x
        } else {
            x.min(b - x)
        };
        let mut held: Vec<(u8, u64)> = held.into_iter().collect();
        held.sort_unstable();
        let mut last = None;
        for (hops, size) in held {
            if p == 0 {
                break;
            }
            p = p.saturating_sub(size);
            last = Some(hops);
        }
        last.map_or(0, |h| u32::from(h) + 1)
    }
}

/// Incremental averaging: the first endpoint starts at 1; after that `f(e) += α` and the
/// vector is divided by `1 + α`. A vector that reaches [`MAX_OWN`] endpoints drops its least
/// likely (ties: the larger endpoint), as The ONE's `MeetingProbabilitySet` does.
fn update(f: &mut BTreeMap<u64, f64>, e: u64) {
    if f.is_empty() {
        f.insert(e, 1.0);
        return;
    }
    *f.entry(e).or_insert(0.0) += ALPHA;
    for v in f.values_mut() {
        *v /= 1.0 + ALPHA;
    }
    if f.len() >= MAX_OWN {
        let least = f
            .iter()
            .min_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(e, _)| *e)
            .expect("over the bound, so not empty");
        f.remove(&least);
    }
}

/// A node in the Dijkstra queue: (distance, endpoint), ordered by distance then endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Node(f64, u64);

impl Eq for Node {}

impl PartialOrd for Node {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Node {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// A likelihood on the wire: `round(f · 2^16)`, at most `2^16 − 1`.
// f is in [0, 1]: the product is in [0, 2^16].
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn to_wire(f: f64) -> u16 {
    (f.clamp(0.0, 1.0) * 65_536.0)
        .round()
        .min(f64::from(u16::MAX)) as u16
}

/// Why a packed set of vectors is refused (the sync message's `InvalidField` text).
pub type Malformed = &'static str;

/// The vectors of a packed field (SPEC.md §11.2), or why it is malformed: a vector or entry
/// cut short, more than [`MAX_LIKELIHOOD_BYTES`], an empty vector or one of more than
/// [`MAX_WIRE_ENTRIES`] entries, sources or endpoints not strictly ascending.
pub fn unpack(mut bytes: &[u8]) -> Result<Vec<Vector>, Malformed> {
    if bytes.len() > MAX_LIKELIHOOD_BYTES {
        return Err("likelihoods at most 1152 bytes");
    }
    let mut out: Vec<Vector> = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < VECTOR_HEADER {
            return Err("likelihood vector cut short");
        }
        let source = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let age = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let n = usize::from(bytes[12]);
        if n == 0 || n > MAX_WIRE_ENTRIES {
            return Err("1 to 32 likelihoods a vector");
        }
        if out.last().is_some_and(|v| v.source >= source) {
            return Err("likelihood vector sources ascending");
        }
        let body = bytes
            .get(VECTOR_HEADER..VECTOR_HEADER + n * ENTRY_LEN)
            .ok_or("likelihood vector cut short")?;
        let entries: Vec<(u64, f64)> = body
            .chunks_exact(ENTRY_LEN)
            .map(|c| {
                let e = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
                let v = u16::from_le_bytes(c[8..].try_into().expect("2 bytes"));
                (e, f64::from(v) / 65_536.0)
            })
            .collect();
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err("likelihood endpoints ascending");
        }
        out.push(Vector {
            source,
            age,
            entries,
        });
        bytes = &bytes[VECTOR_HEADER + n * ENTRY_LEN..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
