//! The discrete-event engine: a virtual clock in milliseconds, contact and message events in
//! time order, and at every contact the protocol crate's own sync session between the two
//! nodes' devices, bounded by what the contact can carry.
//!
//! Every node is a [`Device`], the machine a `meshpay` node runs; the engine is its driver.
//! It writes nothing (a simulated node never loses power), answers every write as done, and
//! carries the devices' frames over in-memory links between nodes in contact.
//!
//! ## Model
//!
//! - **Contacts** come from a mobility model or a trace, up and down in time order. When a
//!   contact comes up, the two nodes run one sync session right away ([`device::contact`]): every
//!   message of it goes through its encoding, as on a real link. A contact of `d` seconds on a
//!   radio of `r` bit/s with set-up time `s` can carry `(d − s) · r / 8` bytes, half each way;
//!   the sessions of one contact share that budget. A radio that loses a fraction `l` of its
//!   frames carries `1 − l` of that (the link layer resends). A bundle counts as arrived at
//!   `up + s + (bytes handed over so far in the contact) · 8 / r`.
//! - **Propagation inside a contact graph**: a node that took something new syncs again with
//!   its other peers in range (and a node that creates a message, with its peers in range),
//!   so a message crosses a chain of simultaneous contacts as it would in The ONE.
//! - **Time** never comes from the wall clock: runs are reproducible byte for byte from the
//!   seed, which also draws every key and session salt.

use crate::clock::{EPOCH, now};
use crate::market::{Market, Order, Role};
use crate::scenario::Scenario;
use crate::setup::{contacts, devices, sized_message, workload};
use crate::trace::{ContactEvent, Link, MessageEvent};
use meshpay_protocol::bundle::BundleKind;
use meshpay_protocol::device::{self, Change, Device, Output, ReplyId, RequestId};
use meshpay_protocol::store::{Admission, BundleStore};
use meshpay_protocol::sync::Routing;
use meshpay_protocol::{DeviceSecret, Hash};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One message's fate.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    /// Name (from the trace, or `M<n>`).
    pub name: String,
    /// Source node.
    pub from: u32,
    /// Destination node.
    pub to: u32,
    /// Created, ms.
    pub created_ms: u64,
    /// First arrival at the destination, ms.
    pub delivered_ms: Option<u64>,
    /// Hops of the copy that arrived first.
    pub hops: Option<u32>,
    /// Bundle id.
    pub id: Hash,
}

/// Counters of a run.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Contacts that came up.
    pub contacts: u64,
    /// Sum of contact durations, ms.
    pub contact_ms: u64,
    /// Sync sessions run.
    pub sessions: u64,
    /// Message copies handed over (The ONE's "relayed").
    pub relayed: u64,
    /// Message copies dropped from buffers (full or expired).
    pub dropped: u64,
    /// Bytes of sync messages sent, both ways, all sessions.
    pub bytes: u64,
    /// Bytes of bundles among them.
    pub bundle_bytes: u64,
    /// Largest number of bundles any node held.
    pub peak_buffer: usize,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Every message.
    pub messages: Vec<MessageRecord>,
    /// Counters.
    pub counters: Counters,
    /// Nodes.
    pub nodes: u32,
    /// Simulated duration, ms.
    pub duration_ms: u64,
    /// The contacts the run used (for export).
    pub contacts: Vec<ContactEvent>,
    /// The payments workload's statistics, if it ran.
    pub payments: Option<crate::market::PaymentStats>,
}

#[derive(Debug, Clone, Copy)]
struct Up {
    start_ms: u64,
    /// Bytes each side may still send.
    left: [u64; 2],
    /// Bytes handed over so far.
    carried: u64,
    /// The two stores' versions at the last session (smaller node first).
    synced: Option<(u64, u64)>,
}

pub(crate) struct Node {
    pub(crate) device: Device,
}

/// A frame on an in-memory link.
enum Frame {
    Request(RequestId, Vec<u8>),
    Response(RequestId, Result<Vec<u8>, String>),
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A trace file.
    #[error("{path}: {why}")]
    Trace {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The trace names a host beyond the scenario's node count.
    #[error("the trace names host {0}, but the scenario has {1} nodes")]
    Host(u32, u32),
    /// The scenario is invalid.
    #[error("{0}")]
    Scenario(String),
}

/// A simulation, ready to run.
pub struct Sim {
    scenario: Scenario,
    routing: Routing,
    nodes: Vec<Node>,
    keys: Vec<DeviceSecret>,
    market: Option<Market>,
    rng: ChaCha20Rng,
    /// Frames in flight: (to, from, frame).
    wire: VecDeque<(u32, u32, Frame)>,
    /// Requests a node is answering: its reply id → (asker, asker's request id).
    asked: BTreeMap<(u32, ReplyId), (u32, RequestId)>,
    next_reply: u64,
    up: BTreeMap<(u32, u32), Up>,
    peers: Vec<BTreeSet<u32>>,
    /// Bumped whenever a node's store gains bundles.
    version: Vec<u64>,
    /// Store versions at each pair's last session.
    met: BTreeMap<(u32, u32), (u64, u64)>,
    messages: Vec<MessageRecord>,
    by_id: BTreeMap<Hash, usize>,
    hops: BTreeMap<(u32, usize), u32>,
    counters: Counters,
    contacts: Vec<ContactEvent>,
    creations: Vec<MessageEvent>,
}

impl Sim {
    /// Prepares a run: contacts and messages are generated (or read) now, from the seed.
    pub fn new(scenario: &Scenario) -> Result<Self, RunError> {
        scenario
            .check()
            .map_err(|e| RunError::Scenario(e.to_string()))?;
        let routing = scenario.routing().expect("checked");
        let mut rng = ChaCha20Rng::seed_from_u64(scenario.seed);
        let n = scenario.nodes;
        let mut seeds: Vec<[u8; 32]> = (0..n)
            .map(|_| {
                let mut seed = [0u8; 32];
                rng.fill_bytes(&mut seed);
                seed
            })
            .collect();
        let pay = &scenario.payments;
        if pay.enabled {
            // A clone is a copy of a whole device: same key.
            let first = pay.vendors + pay.gateways;
            let clones = pay.clones.min(n.saturating_sub(first) / 2);
            for k in 0..clones {
                seeds[(n - clones + k) as usize] = seeds[(first + k) as usize];
            }
        }
        let keys: Vec<DeviceSecret> = seeds.iter().map(DeviceSecret::from_seed).collect();
        let market = pay
            .enabled
            .then(|| Market::new(pay, n, scenario.seed, &keys));
        let nodes = devices(scenario, routing, &seeds, market.as_ref());
        let duration_ms = ms(scenario.duration_s);
        let contacts = contacts(scenario, duration_ms)?;
        let creations = workload(scenario, &mut rng, duration_ms)?;
        Ok(Self {
            scenario: scenario.clone(),
            routing,
            nodes,
            keys,
            market,
            rng,
            wire: VecDeque::new(),
            asked: BTreeMap::new(),
            next_reply: 0,
            up: BTreeMap::new(),
            peers: vec![BTreeSet::new(); n as usize],
            version: vec![0; n as usize],
            met: BTreeMap::new(),
            messages: Vec::new(),
            by_id: BTreeMap::new(),
            hops: BTreeMap::new(),
            counters: Counters::default(),
            contacts,
            creations,
        })
    }

    /// The contacts this run will replay.
    pub fn contacts(&self) -> &[ContactEvent] {
        &self.contacts
    }

    /// The messages this run will create.
    pub fn creations(&self) -> &[MessageEvent] {
        &self.creations
    }

    /// Runs to the end. `progress` is called with the fraction of simulated time done, at most
    /// a hundred times.
    pub fn run(mut self, mut progress: impl FnMut(f64)) -> Outcome {
        let duration_ms = ms(self.scenario.duration_s);
        // Down before up before creation at equal times; then file order.
        let mut order: Vec<(u64, u8, usize)> = Vec::new();
        for (i, c) in self.contacts.iter().enumerate() {
            order.push((c.t_ms, u8::from(c.link != Link::Down), i));
        }
        for (i, m) in self.creations.iter().enumerate() {
            order.push((m.t_ms, 2, i));
        }
        let resync = ms(self.scenario.routing.resync_s);
        if resync > 0 {
            let mut t = resync;
            while t <= duration_ms {
                order.push((t, 3, 0));
                t += resync;
            }
        }
        order.sort_unstable();
        let ends = self.contact_ends();
        let mut next_tick = 0.01;
        for (t, kind, i) in order {
            if t > duration_ms {
                break;
            }
            // Milliseconds fit f64 exactly at these scales.
            #[allow(clippy::cast_precision_loss)]
            let done = t as f64 / duration_ms.max(1) as f64;
            if done >= next_tick {
                progress(done);
                next_tick += 0.01;
            }
            match kind {
                0 => {
                    let c = self.contacts[i];
                    if let Some(u) = self.up.remove(&(c.a, c.b)) {
                        self.counters.contact_ms += t.saturating_sub(u.start_ms);
                    }
                    self.peers[c.a as usize].remove(&c.b);
                    self.peers[c.b as usize].remove(&c.a);
                }
                1 => {
                    let c = self.contacts[i];
                    let end = ends[i].unwrap_or(duration_ms);
                    let capacity = self.capacity(end.saturating_sub(t));
                    self.up.insert(
                        (c.a, c.b),
                        Up {
                            start_ms: t,
                            left: [capacity / 2, capacity / 2],
                            carried: 0,
                            // Two nodes that met before and changed nothing since have
                            // nothing to say (contacts at the edge of range flicker).
                            synced: self.met.get(&(c.a, c.b)).copied(),
                        },
                    );
                    self.peers[c.a as usize].insert(c.b);
                    self.peers[c.b as usize].insert(c.a);
                    self.counters.contacts += 1;
                    self.meet(c.a, c.b, t);
                    self.spread(VecDeque::from([(c.a, c.b)]), t);
                }
                3 => {
                    let work = self.up.keys().copied().collect();
                    self.spread(work, t);
                }
                _ => {
                    let m = self.creations[i].clone();
                    self.create(&m, t);
                    let work = self.peers[m.from as usize]
                        .iter()
                        .map(|&p| (m.from, p))
                        .collect();
                    self.spread(work, t);
                }
            }
        }
        for ((_, _), u) in std::mem::take(&mut self.up) {
            self.counters.contact_ms += duration_ms.saturating_sub(u.start_ms);
        }
        progress(1.0);
        Outcome {
            payments: self.market.as_ref().map(crate::market::PaymentStats::of),
            messages: self.messages,
            counters: self.counters,
            nodes: self.scenario.nodes,
            duration_ms,
            contacts: self.contacts,
        }
    }

    /// A shopper meeting a vendor may pay: the shopper's device asks the vendor's for a
    /// request and pays it over the link between them.
    fn meet(&mut self, a: u32, b: u32, t: u64) {
        let Some(order) = self
            .market
            .as_mut()
            .and_then(|m| m.meet(a, b, t, &self.keys))
        else {
            return;
        };
        self.order(order, t);
        self.drive(&[a, b], t);
    }

    /// Gives a device the market's command.
    fn order(&mut self, o: Order, t: u64) {
        self.nodes[o.node as usize]
            .device
            .command(now(t), o.op, o.command);
    }

    /// Carries out the outputs of `nodes`' devices, and the frames between them, until all
    /// is quiet. A frame to a node not in contact fails as over a real link.
    fn drive(&mut self, nodes: &[u32], t: u64) {
        let mut orders = Vec::new();
        loop {
            let mut busy = false;
            for &n in nodes {
                while let Some(out) = self.nodes[n as usize].device.poll_output() {
                    busy = true;
                    self.carry_out(n, out, t);
                }
                if let Some(m) = self.market.as_mut().filter(|m| m.role(n) == Role::Gateway) {
                    orders.extend(m.gateway_round(n, t));
                }
            }
            for o in orders.drain(..) {
                busy = true;
                self.order(o, t);
            }
            if let Some((to, from, frame)) = self.wire.pop_front() {
                busy = true;
                let d = &mut self.nodes[to as usize].device;
                match frame {
                    Frame::Request(id, bytes) => {
                        self.next_reply += 1;
                        let reply = ReplyId(self.next_reply);
                        self.asked.insert((to, reply), (from, id));
                        let key = self.keys[from as usize].public();
                        d.handle_request(now(t), reply, key, &bytes);
                    }
                    Frame::Response(id, answer) => d.handle_response(now(t), id, answer),
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn carry_out(&mut self, n: u32, out: Output, t: u64) {
        match out {
            Output::Commit { id, change } => {
                if let Change::Mesh(w) = &change {
                    self.wrote(n, w);
                }
                self.nodes[n as usize].device.committed(now(t), id, Ok(()));
            }
            Output::Request { id, to, frame } => {
                // Clones share a key: a frame goes to the peer in contact that holds it.
                let peer = self.peers[n as usize]
                    .iter()
                    .copied()
                    .find(|&p| self.keys[p as usize].public() == to);
                if let Some(p) = peer {
                    self.wire.push_back((p, n, Frame::Request(id, frame)));
                } else {
                    let answer = Err("the peer is not in range".to_owned());
                    self.nodes[n as usize]
                        .device
                        .handle_response(now(t), id, answer);
                }
            }
            Output::Reply { to, frame, .. } => {
                if let Some((asker, id)) = self.asked.remove(&(n, to)) {
                    let answer = if self.peers[n as usize].contains(&asker) {
                        Ok(frame)
                    } else {
                        Err("the peer went out of range".to_owned())
                    };
                    self.wire.push_back((asker, n, Frame::Response(id, answer)));
                }
            }
            Output::Event(e) => {
                if let Some(m) = self.market.as_mut() {
                    m.on_event(n, &e, t);
                }
            }
            _ => {}
        }
    }

    /// Node `n`'s store changed: its version, drops, records carried, peak buffer.
    fn wrote(&mut self, n: u32, w: &device::MeshWrite) {
        if !w.put.is_empty() {
            self.version[n as usize] += 1;
        }
        let store = self.nodes[n as usize].device.store();
        if let Some(m) = self.market.as_mut() {
            for p in w.put.iter().filter(|p| p.body.is_some()) {
                if store
                    .get(&p.id)
                    .is_some_and(|e| e.meta.kind == BundleKind::Record)
                {
                    m.carried(p.id);
                }
            }
        }
        self.counters.peak_buffer = self.counters.peak_buffer.max(store.len());
        for id in &w.removed {
            if let Some(&idx) = self.by_id.get(id) {
                self.counters.dropped += 1;
                self.hops.remove(&(n, idx));
            }
        }
    }

    /// For every up event, when its contact goes down (`None` if not in the trace): one pass.
    fn contact_ends(&self) -> Vec<Option<u64>> {
        let mut ends = vec![None; self.contacts.len()];
        let mut open: BTreeMap<(u32, u32), usize> = BTreeMap::new();
        for (i, e) in self.contacts.iter().enumerate() {
            match e.link {
                Link::Up => {
                    open.insert((e.a, e.b), i);
                }
                Link::Down => {
                    if let Some(up) = open.remove(&(e.a, e.b)) {
                        ends[up] = Some(e.t_ms);
                    }
                }
            }
        }
        ends
    }

    /// Bytes a contact of `len_ms` can carry.
    // Contact lengths and rates are far below 2^53.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    fn capacity(&self, len_ms: u64) -> u64 {
        let r = &self.scenario.radio;
        if r.bitrate_bps == 0 {
            return u64::MAX / 4;
        }
        let usable = (len_ms as f64 / 1000.0 - r.setup_s).max(0.0);
        (usable * r.bitrate_bps as f64 * (1.0 - r.loss) / 8.0) as u64
    }

    fn create(&mut self, m: &MessageEvent, t: u64) {
        let idx = self.messages.len();
        let created = EPOCH + t / 1000;
        let ttl = self.scenario.workload.ttl_s;
        let expires = if ttl > 0.0 {
            created + ms(ttl) / 1000
        } else {
            EPOCH + ms(self.scenario.duration_s) / 1000 + 86_400
        };
        let bundle = sized_message(
            &self.keys[m.from as usize],
            &self.keys[m.to as usize],
            created,
            expires,
            idx as u64,
            m.size,
        );
        let id = bundle.id();
        self.messages.push(MessageRecord {
            name: m.id.clone(),
            from: m.from,
            to: m.to,
            created_ms: t,
            delivered_ms: None,
            hops: None,
            id,
        });
        self.by_id.insert(id, idx);
        self.hops.insert((m.from, idx), 0);
        let copies = self.routing.initial_copies();
        let node = &mut self.nodes[m.from as usize];
        if !matches!(
            node.device.carry(now(t), &bundle, copies),
            Admission::Added(_)
        ) {
            self.counters.dropped += 1;
        }
        self.drive(&[m.from], t);
    }

    /// Runs sessions over the pairs in `work`, and on from every node that took something new
    /// to its other peers in range, until nothing moves.
    fn spread(&mut self, mut work: VecDeque<(u32, u32)>, t: u64) {
        let mut rounds = 0usize;
        let bound = 64 + 8 * self.up.len();
        while let Some((x, y)) = work.pop_front() {
            // Nothing changed on either side since their last session: nothing to say.
            let key = (x.min(y), x.max(y));
            let now = (self.version[key.0 as usize], self.version[key.1 as usize]);
            if self.up.get(&key).is_none_or(|u| u.synced == Some(now)) {
                continue;
            }
            rounds += 1;
            if rounds > bound {
                break;
            }
            let (got_x, got_y) = self.session(x, y, t);
            let v = (self.version[key.0 as usize], self.version[key.1 as usize]);
            if let Some(u) = self.up.get_mut(&key) {
                u.synced = Some(v);
            }
            self.met.insert(key, v);
            if self.scenario.routing.resync_s > 0.0 {
                // Periodic re-sync: news waits for the next tick instead of cascading.
                continue;
            }
            for (node, got, other) in [(x, got_x, y), (y, got_y, x)] {
                if got {
                    for &p in &self.peers[node as usize] {
                        if p != other {
                            work.push_back((node, p));
                        }
                    }
                }
            }
        }
    }

    /// One sync session between `x` (initiator) and `y`. Returns whether each took something.
    // x and y are the two nodes, a and b their states: the names mirror each other.
    #[allow(clippy::many_single_char_names)]
    fn session(&mut self, x: u32, y: u32, t: u64) -> (bool, bool) {
        let key = (x.min(y), x.max(y));
        let Some(mut up) = self.up.get(&key).copied() else {
            return (false, false);
        };
        let (sx, sy) = if x < y { (0, 1) } else { (1, 0) };
        if up.left[sx] == 0 && up.left[sy] == 0 {
            return (false, false);
        }
        let salt = self.rng.next_u64();
        let (a, b) = pair(&mut self.nodes, x as usize, y as usize);
        a.device.expire(now(t));
        b.device.expire(now(t));
        let result = device::contact(
            &mut a.device,
            &mut b.device,
            now(t),
            [up.left[sx], up.left[sy]],
            salt,
        );
        self.counters.sessions += 1;
        let Ok(c) = result else {
            // Honest simulated peers never break the protocol.
            return (false, false);
        };
        let (si, sr) = (c.initiator.stats(), c.responder.stats());
        self.counters.bytes += si.bytes_sent + sr.bytes_sent;
        self.counters.bundle_bytes += si.bundle_bytes;
        let sent_x = bundle_bytes_given(self.nodes[x as usize].device.store(), c.initiator.given());
        let sent_y = bundle_bytes_given(self.nodes[y as usize].device.store(), c.responder.given());
        up.left[sx] = up.left[sx].saturating_sub(si.bytes_sent);
        up.left[sy] = up.left[sy].saturating_sub(sr.bytes_sent);
        let setup = ms(self.scenario.radio.setup_s);
        let rate = self.scenario.radio.bitrate_bps;
        let arrival = |carried: u64| -> u64 {
            let base = t.max(up.start_ms + setup);
            base + (carried * 8000).checked_div(rate).unwrap_or(0)
        };
        up.carried += sent_x + sent_y;
        let at = arrival(up.carried);
        let took_y = self.took(y, x, c.responder.admitted(), at);
        let took_x = self.took(x, y, c.initiator.admitted(), at);
        self.counters.relayed += count_messages(&self.by_id, c.initiator.given())
            + count_messages(&self.by_id, c.responder.given());
        self.up.insert(key, up);
        self.drive(&[x, y], at);
        (took_x, took_y)
    }

    /// Node `to` took `ids` from `from` at `at`: deliveries and hop counts.
    fn took(&mut self, to: u32, from: u32, ids: &[Hash], at: u64) -> bool {
        for id in ids {
            if let Some(&idx) = self.by_id.get(id) {
                let h = self.hops.get(&(from, idx)).copied().unwrap_or(0) + 1;
                self.hops.entry((to, idx)).or_insert(h);
                let m = &mut self.messages[idx];
                if m.to == to && m.delivered_ms.is_none() {
                    m.delivered_ms = Some(at.max(m.created_ms));
                    m.hops = Some(h);
                }
            }
        }
        !ids.is_empty()
    }
}

fn bundle_bytes_given(store: &BundleStore, given: &[Hash]) -> u64 {
    given
        .iter()
        .filter_map(|id| store.get(id).map(|e| u64::from(e.meta.size)))
        .sum()
}

fn count_messages(by_id: &BTreeMap<Hash, usize>, ids: &[Hash]) -> u64 {
    ids.iter().filter(|id| by_id.contains_key(id)).count() as u64
}

fn pair(nodes: &mut [Node], x: usize, y: usize) -> (&mut Node, &mut Node) {
    assert_ne!(x, y, "a node does not meet itself");
    if x < y {
        let (l, r) = nodes.split_at_mut(y);
        (&mut l[x], &mut r[0])
    } else {
        let (l, r) = nodes.split_at_mut(x);
        (&mut r[0], &mut l[y])
    }
}

/// Seconds to milliseconds.
// Scenario times are non-negative and far below 2^53 ms.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn ms(s: f64) -> u64 {
    (s.max(0.0) * 1000.0).round() as u64
}
