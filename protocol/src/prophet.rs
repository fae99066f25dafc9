//! PRoPHET delivery predictabilities (Lindgren, Doria and Schelén, "Probabilistic Routing in
//! Intermittently Connected Networks", SAPIR 2004; RFC 6693 §2.1.1), the state behind the
//! [`crate::sync::Routing::Prophet`] and [`crate::sync::Routing::SprayAndFocus`] routers.
//!
//! A node keeps, for every **endpoint** it has heard of, `P(me, endpoint)`: how likely it is
//! to deliver there. An endpoint is a device (the destination of a plain message) or an issuer
//! (a record goes to any gateway of its issuer, so meeting a gateway is meeting the issuers it
//! uploads for). Three rules keep the table:
//!
//! 1. **Encounter** (RFC 6693 eq. 1): meeting `b`,
//!    `P(a,b) ← P(a,b) + (1 − δ − P(a,b)) · P_encounter`. With `δ = 0` this is Lindgren's
//!    `P(a,b) ← P(a,b) + (1 − P(a,b)) · P_init`.
//! 2. **Ageing** (eq. 2): `P ← P · γ^k`, `k` the whole time units since the last ageing (the
//!    rest of a unit carries over).
//! 3. **Transitivity** (eq. 3) on meeting `b`, for each `c` in `b`'s vector other than the
//!    node itself: Lindgren's (and The ONE's) `P(a,c) ← P(a,c) + (1 − P(a,c)) · P(a,b) ·
//!    P(b,c) · β`, or RFC 6693's `P(a,c) ← max(P(a,c), P(a,b) · P(b,c) · β)`.
//!
//! The defaults are Lindgren's and The ONE's `ProphetRouter`: `P_encounter = 0.75`,
//! `β = 0.25`, `γ = 0.98`, `δ = 0`, a time unit of 30 s, additive transitivity.
//!
//! In a sync session the two sides exchange their vectors (SPEC.md §11.2: at most
//! [`MAX_PREDICTIONS`] entries, the highest first) and each then counts the meeting, in the
//! first session of a contact only ([`crate::sync::SessionConfig::encounter`]): sessions
//! repeat within a contact whenever a side has news, and counting each would push both sides'
//! predictabilities towards 1 through each other. An encounter is a contact, as in Lindgren et
//! al. and The ONE (RFC 6693 instead damps `P_encounter` for quick re-encounters).
//!
//! The table is soft state: it lives in the bundle store's memory and is not written; a node
//! that restarts learns it again. It keeps at most [`MAX_ENDPOINTS`] endpoints, the likeliest.
//! A peer can claim any predictability it likes and so attract copies (PRoPHET's known
//! weakness); the vector is bounded in size and costs the sender.

use crate::keys::{DeviceKey, IssuerId};
use crate::objects::{UnixTime, hash};
use crate::tags;
use std::collections::BTreeMap;

/// Most entries a predictability vector carries on the wire.
pub const MAX_PREDICTIONS: usize = 96;
/// Most endpoints a table keeps: past it, the least likely go. Peers can name endpoints at
/// will, so this bounds what they can make a node remember.
pub const MAX_ENDPOINTS: usize = 4096;
/// Bytes of one entry on the wire: the endpoint (`u64`, little-endian), then its
/// predictability in units of 2^-32 (`u32`, little-endian).
pub const PREDICTION_LEN: usize = 12;

/// The endpoint of a device: the first 8 bytes (little-endian) of
/// `SHA-256("meshpay/v1/prophet-device" || 0x00 || key)`.
pub fn device_endpoint(key: &DeviceKey) -> u64 {
    endpoint(tags::PROPHET_DEVICE, &key.0)
}

/// The endpoint of an issuer, reached at any of its gateways: the first 8 bytes
/// (little-endian) of `SHA-256("meshpay/v1/prophet-issuer" || 0x00 || issuer id)`.
pub fn issuer_endpoint(issuer: &IssuerId) -> u64 {
    endpoint(tags::PROPHET_ISSUER, &issuer.0)
}

fn endpoint(tag: &str, bytes: &[u8]) -> u64 {
    let h = hash(tag, bytes);
    u64::from_le_bytes(h.0[..8].try_into().expect("8 of 32 bytes"))
}

/// How a meeting carries predictabilities over to the endpoints the peer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transitivity {
    /// `P(a,c) + (1 − P(a,c)) · P(a,b) · P(b,c) · β` (Lindgren et al., The ONE).
    #[default]
    Additive,
    /// `max(P(a,c), P(a,b) · P(b,c) · β)` (RFC 6693 eq. 3).
    Max,
}

/// PRoPHET's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProphetParams {
    /// `P_encounter` (Lindgren's `P_init`).
    pub p_encounter: f64,
    /// `β`, the weight of transitivity.
    pub beta: f64,
    /// `γ`, the ageing factor per time unit.
    pub gamma: f64,
    /// `δ`, RFC 6693's bound below 1 (0: Lindgren's formula).
    pub delta: f64,
    /// Seconds in a time unit (at least 1).
    pub unit_s: u64,
    /// The transitivity rule.
    pub transitivity: Transitivity,
}

impl Default for ProphetParams {
    fn default() -> Self {
        Self {
            p_encounter: 0.75,
            beta: 0.25,
            gamma: 0.98,
            delta: 0.0,
            unit_s: 30,
            transitivity: Transitivity::Additive,
        }
    }
}

/// Predictabilities below this are forgotten (they encode as 0).
const FLOOR: f64 = 1.0 / 4_294_967_296.0;

/// One node's delivery predictabilities. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    params: ProphetParams,
    p: BTreeMap<u64, f64>,
    /// When each endpoint was last met (counted as an encounter).
    met: BTreeMap<u64, UnixTime>,
    /// The time the table is aged to.
    aged: Option<UnixTime>,
}

impl Predictions {
    /// An empty table with `params`.
    pub fn new(params: ProphetParams) -> Self {
        Self {
            params,
            ..Self::default()
        }
    }

    /// The parameters.
    pub fn params(&self) -> &ProphetParams {
        &self.params
    }

    /// `P(me, endpoint)` as of the last update (0 for an endpoint never heard of).
    pub fn get(&self, endpoint: u64) -> f64 {
        self.p.get(&endpoint).copied().unwrap_or(0.0)
    }

    /// When `endpoint` was last met, if ever.
    pub fn last_met(&self, endpoint: u64) -> Option<UnixTime> {
        self.met.get(&endpoint).copied()
    }

    /// Endpoints with a predictability.
    pub fn len(&self) -> usize {
        self.p.len()
    }

    /// True if no endpoint has a predictability.
    pub fn is_empty(&self) -> bool {
        self.p.is_empty()
    }

    /// `γ^k` for the whole time units from the last ageing to `now`, and `k`.
    fn decay(&self, now: UnixTime) -> (f64, u64) {
        let Some(aged) = self.aged else {
            return (1.0, 0);
        };
        let k = now.saturating_sub(aged) / self.params.unit_s.max(1);
        // Squaring, not `powi`: the same bits on every platform.
        let (mut f, mut base, mut e) = (1.0_f64, self.params.gamma, k);
        while e > 0 {
            if e & 1 == 1 {
                f *= base;
            }
            base *= base;
            e >>= 1;
        }
        (f, k)
    }

    /// Ages every predictability to `now` (eq. 2).
    pub fn age(&mut self, now: UnixTime) {
        let (f, k) = self.decay(now);
        match self.aged {
            None => self.aged = Some(now),
            Some(_) if k == 0 => {}
            Some(aged) => {
                self.aged = Some(aged + k * self.params.unit_s.max(1));
                self.p.retain(|_, p| {
                    *p *= f;
                    *p >= FLOOR
                });
            }
        }
    }

    /// An encounter with `endpoint` (eq. 1). Age the table first.
    pub fn encounter(&mut self, endpoint: u64, now: UnixTime) {
        let ProphetParams {
            p_encounter, delta, ..
        } = self.params;
        let p = self.p.entry(endpoint).or_insert(0.0);
        *p += (1.0 - delta - *p).max(0.0) * p_encounter;
        self.met.insert(endpoint, now);
    }

    /// Transitivity through the peer `via` from its vector `theirs` (eq. 3), skipping the
    /// endpoints in `skip` (this node's own).
    pub fn transit(&mut self, via: u64, theirs: &[(u64, f64)], skip: &[u64]) {
        let ab = self.get(via);
        let ProphetParams {
            beta, transitivity, ..
        } = self.params;
        for &(c, bc) in theirs {
            if skip.contains(&c) {
                continue;
            }
            let through = ab * bc * beta;
            let p = self.p.entry(c).or_insert(0.0);
            *p = match transitivity {
                Transitivity::Additive => *p + (1.0 - *p) * through,
                Transitivity::Max => p.max(through),
            };
        }
    }

    /// An encounter with a peer at `now`: `peer` are the endpoints the peer is (its device,
    /// then the issuers it is a gateway for), `theirs` its vector, `mine` this node's own
    /// endpoints. Ages the table, counts an encounter with each of `peer` and applies
    /// transitivity through the peer's device.
    pub fn meet(&mut self, peer: &[u64], theirs: &[(u64, f64)], mine: &[u64], now: UnixTime) {
        self.age(now);
        let Some(&device) = peer.first() else {
            return;
        };
        for &e in peer {
            self.encounter(e, now);
        }
        let mut skip = mine.to_vec();
        skip.extend_from_slice(peer);
        self.transit(device, theirs, &skip);
        self.trim();
    }

    /// Forgets the least likely endpoints past [`MAX_ENDPOINTS`] (ties: the larger endpoint).
    fn trim(&mut self) {
        if self.p.len() <= MAX_ENDPOINTS {
            return;
        }
        let mut all: Vec<(u64, f64)> = self.p.iter().map(|(&e, &p)| (e, p)).collect();
        all.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (e, _) in all.drain(MAX_ENDPOINTS..) {
            self.p.remove(&e);
            self.met.remove(&e);
        }
    }

    /// The vector to send at `now`, packed for the wire (SPEC.md §11.2): the
    /// [`MAX_PREDICTIONS`] highest predictabilities aged to `now` (ties: the smaller
    /// endpoint), ascending by endpoint.
    pub fn vector(&self, now: UnixTime) -> Vec<u8> {
        let (f, _) = self.decay(now);
        let mut top: Vec<(u64, u32)> = self
            .p
            .iter()
            .map(|(&e, &p)| (e, to_wire(p * f)))
            .filter(|&(_, v)| v > 0)
            .collect();
        top.sort_unstable_by_key(|&(e, v)| (std::cmp::Reverse(v), e));
        top.truncate(MAX_PREDICTIONS);
        top.sort_unstable();
        let mut out = Vec::with_capacity(top.len() * PREDICTION_LEN);
        for (e, v) in top {
            out.extend_from_slice(&e.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// A predictability on the wire: `round(p · 2^32)`, at most `2^32 − 1`.
// p is in [0, 1]: the product is in [0, 2^32].
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn to_wire(p: f64) -> u32 {
    (p.clamp(0.0, 1.0) * 4_294_967_296.0)
        .round()
        .min(f64::from(u32::MAX)) as u32
}

/// A packed vector's entries: (endpoint, predictability). The decoder has checked the
/// packing (SPEC.md §11.2); a trailing partial entry is ignored.
pub fn unpack(bytes: &[u8]) -> Vec<(u64, f64)> {
    bytes
        .chunks_exact(PREDICTION_LEN)
        .map(|c| {
            let e = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
            let v = u32::from_le_bytes(c[8..].try_into().expect("4 bytes"));
            (e, f64::from(v) / 4_294_967_296.0)
        })
        .collect()
}

#[cfg(test)]
mod tests;
