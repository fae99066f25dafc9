//! The discrete-event engine: a virtual clock in milliseconds, contact and message events in
//! time order, and at every contact the protocol crate's own sync session between the two
//! nodes' devices, a message at a time over the nodes' simulated radios.
//!
//! Every node is a [`Device`], the machine a `meshpay` node runs; the engine is its driver.
//! It writes nothing (a simulated node never loses power), answers every write as done, and
//! carries the devices' frames over in-memory links between nodes in contact.
//!
//! ## Model
//!
//! - **Contacts** come from a mobility model or a trace, up and down in time order. The engine
//!   learns that a contact ended when it ends, never before.
//! - **Sessions, a message at a time.** When a contact has been up for the radio's set-up
//!   time, one node opens a sync session with the other ([`device::Exchange`]): the protocol
//!   crate's session machines, every message through its encoding. Each message goes on the
//!   air when the radios of both ends are free, and lands after `bytes · 8 / (rate · (1 −
//!   loss))`; the receiver handles it and answers, and so on until the session closes. With
//!   `control_on_air = false` only bundle bytes take air time (The ONE's link model).
//! - **One radio per node**, shared by all its contacts: half-duplex, it sends or receives one
//!   message at a time; full-duplex, it sends one and receives one. Messages waiting for a
//!   radio go in the order they became ready (with `destination_first`, those that reach
//!   their destination first).
//! - **A contact that ends** takes the message on the air with it (an aborted transfer) and
//!   ends its session; the sender takes back the spray-and-wait copies it gave with it. What
//!   was not handed over goes at a later contact.
//! - **Propagation inside a contact graph**: a node that took something new opens sessions
//!   with its other peers in range (and a node that creates a message, with its peers in
//!   range), so a message crosses a chain of simultaneous contacts as it would in The ONE; a
//!   pair that changed during a session syncs again when it ends.
//! - **Expiry** runs on a timer, at each message's expiry, at every node: `dropped` counts
//!   copies that expire where nobody meets them again.
//! - **Time** never comes from the wall clock: runs are reproducible byte for byte from the
//!   seed, which also draws every key and session salt.

use crate::clock::{EPOCH, now};
use crate::groups::Hosts;
use crate::market::{Market, Order, Role};
use crate::scenario::{Duplex, Scenario};
use crate::setup::{check_sizes, contacts, devices, workload};
use crate::trace::{ContactEvent, Link, MessageEvent};
use meshpay_protocol::bundle::BundleKind;
use meshpay_protocol::device::{
    self, Change, Device, Exchange, Flight, Output, ReplyId, RequestId,
};
use meshpay_protocol::sync::Routing;
use meshpay_protocol::{DeviceSecret, Hash};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

mod events;
mod messages;
mod radio;

pub use events::{Arrival, Event, Logged};

/// One message's fate.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    /// Name (from the trace, or `M<n>`).
    pub name: String,
    /// Source node.
    pub from: u32,
    /// Destination node.
    pub to: u32,
    /// Size, bytes.
    pub size: u32,
    /// Bundles it travels in (1 up to 981 bytes, the largest message bundle; more for a
    /// larger message, which is delivered when its last bundle arrives).
    pub fragments: u32,
    /// Created, ms.
    pub created_ms: u64,
    /// First arrival at the destination, ms.
    pub delivered_ms: Option<u64>,
    /// Hops of the copy that arrived first.
    pub hops: Option<u32>,
    /// Size of the response it asks for (0: none).
    pub response_size: u32,
    /// The request it answers, if it is a response (an index into the messages).
    pub request: Option<usize>,
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
    /// Transfers cut off by the end of their contact (messages with bundles lost on the air).
    pub aborted: u64,
    /// Message copies dropped from buffers (full or expired).
    pub dropped: u64,
    /// Bytes of sync messages sent, both ways, all sessions.
    pub bytes: u64,
    /// Bytes of bundles among them.
    pub bundle_bytes: u64,
    /// Largest number of bundles any node held.
    pub peak_buffer: usize,
    /// How long each copy that left a buffer had been in it, ms.
    pub buffer_ms: Vec<u64>,
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
    /// The hosts' groups, for their names.
    pub hosts: Hosts,
    /// The run's events in order, if recorded ([`Sim::record_events`]).
    pub events: Vec<Logged>,
}

/// A contact that is up.
struct Up {
    start_ms: u64,
    /// Set-up done: messages may go on the air.
    ready: bool,
    /// The session running over it.
    running: Option<Box<Running>>,
    /// The two stores' versions after the last session (smaller node first).
    synced: Option<(u64, u64)>,
    /// A session over it finished: under PRoPHET, spray-and-focus and MaxProp, the encounter.
    encountered: bool,
}

/// A sync session over a link, a message at a time.
struct Running {
    exchange: Exchange,
    /// Initiator and responder.
    ends: (u32, u32),
    /// The two stores' versions when it opened (smaller node first), and how much the
    /// session itself bumped them since.
    opened: (u64, u64),
    own: (u64, u64),
    /// Bundles each side had admitted so far (initiator, responder).
    seen: (usize, usize),
    /// Its message on the air.
    on_air: Option<Air>,
    /// Its message waiting for the radios: (since, sequence).
    queued: Option<(u64, u64)>,
    /// Start over once the message on the air lands (news for the peer came in).
    hurry: bool,
}

impl Running {
    /// Sender and receiver of `f`.
    fn direction(&self, f: Flight) -> (u32, u32) {
        if f.to_responder {
            self.ends
        } else {
            (self.ends.1, self.ends.0)
        }
    }
}

/// A message on the air.
#[derive(Clone, Copy)]
struct Air {
    /// Its landing event's sequence number.
    seq: u64,
    /// It holds both radios (it has bytes to send).
    reserved: bool,
}

/// The engine's own events, made as the run goes: (time, kind, sequence, pair).
type Due = std::cmp::Reverse<(u64, u8, u64, (u32, u32))>;

/// Event kinds, in the order they are handled at equal times.
const LAND: u8 = 0;
const DOWN: u8 = 1;
const UP: u8 = 2;
const READY: u8 = 3;
const CREATE: u8 = 4;
const RESYNC: u8 = 5;
const EXPIRE: u8 = 6;
const RESPOND: u8 = 7;

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
    hosts: Hosts,
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
    /// Events made as the run goes: messages landing, set-ups done.
    due: BinaryHeap<Due>,
    seq: u64,
    /// Links whose next message waits for a radio: (since, sequence, pair).
    waiting: BTreeSet<(u64, u64, (u32, u32))>,
    /// Radios sending and receiving now.
    sending: Vec<bool>,
    receiving: Vec<bool>,
    peers: Vec<BTreeSet<u32>>,
    /// Bumped whenever a node's store gains bundles.
    version: Vec<u64>,
    /// Store versions at each pair's last session.
    met: BTreeMap<(u32, u32), (u64, u64)>,
    messages: Vec<MessageRecord>,
    by_id: FxHashMap<Hash, usize>,
    /// Bundles of each message at its destination so far, and which.
    parts: Vec<u32>,
    at_destination: FxHashSet<Hash>,
    /// Each copy a node holds ([`copy`]): its hops from the source and when it arrived (ms),
    /// for its time in the buffer when it leaves ([`held`]).
    held: FxHashMap<u64, u64>,
    counters: Counters,
    contacts: Vec<ContactEvent>,
    creations: Vec<MessageEvent>,
    /// Copies a node handed on in a message its peer is answering now (spray-and-focus):
    /// they leave its store without being dropped.
    handed_on: BTreeSet<(u32, Hash)>,
    /// Responses made on delivery, with the request each answers.
    responses: Vec<(usize, MessageEvent)>,
    /// The run's events, if recorded.
    log: Option<Vec<Logged>>,
}

impl Sim {
    /// Prepares a run: contacts and messages are generated (or read) now, from the seed.
    pub fn new(scenario: &Scenario) -> Result<Self, RunError> {
        let hosts = scenario
            .check_hosts()
            .map_err(|e| RunError::Scenario(e.to_string()))?;
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
        let nodes = devices(scenario, &hosts, &seeds, market.as_ref());
        let duration_ms = ms(scenario.duration_s);
        let contacts = contacts(scenario, &hosts, duration_ms)?;
        let creations = workload(scenario, &mut rng, duration_ms)?;
        check_sizes(&creations)?;
        Ok(Self {
            scenario: scenario.clone(),
            hosts,
            nodes,
            keys,
            market,
            rng,
            wire: VecDeque::new(),
            asked: BTreeMap::new(),
            next_reply: 0,
            up: BTreeMap::new(),
            due: BinaryHeap::new(),
            seq: 0,
            waiting: BTreeSet::new(),
            sending: vec![false; n as usize],
            receiving: vec![false; n as usize],
            peers: vec![BTreeSet::new(); n as usize],
            version: vec![0; n as usize],
            met: BTreeMap::new(),
            messages: Vec::new(),
            by_id: FxHashMap::default(),
            parts: Vec::new(),
            at_destination: FxHashSet::default(),
            held: FxHashMap::default(),
            counters: Counters::default(),
            contacts,
            creations,
            handed_on: BTreeSet::new(),
            responses: Vec::new(),
            log: None,
        })
    }

    /// Whether either node of `pair` keeps routing state that changes at every encounter
    /// (PRoPHET's delivery predictabilities, MaxProp's meeting likelihoods).
    fn predicts(&self, (a, b): (u32, u32)) -> bool {
        let by = |n: u32| {
            matches!(
                self.hosts.of_host(n).routing,
                Routing::Prophet | Routing::SprayAndFocus { .. } | Routing::MaxProp
            )
        };
        by(a) || by(b)
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
        // At equal times: landings, downs, ups, creations, re-syncs, expiries; then file order.
        let mut order: Vec<(u64, u8, usize)> = Vec::new();
        for (i, c) in self.contacts.iter().enumerate() {
            order.push((c.t_ms, if c.link == Link::Down { DOWN } else { UP }, i));
        }
        let mut expiries = BTreeSet::new();
        for (i, m) in self.creations.iter().enumerate() {
            order.push((m.t_ms, CREATE, i));
            expiries.extend(self.expiry_tick(m.t_ms));
        }
        order.extend(expiries.into_iter().map(|t| (t, EXPIRE, 0)));
        let resync = ms(self.scenario.routing.resync_s);
        if resync > 0 {
            let mut t = resync;
            while t <= duration_ms {
                order.push((t, RESYNC, 0));
                t += resync;
            }
        }
        order.sort_unstable();
        let mut next = 0;
        let mut next_tick = 0.01;
        loop {
            let fixed = order.get(next).map(|&(t, kind, _)| (t, kind));
            let made = self.due.peek().map(|d| (d.0.0, d.0.1));
            let (t, kind, i, pair) = match (fixed, made) {
                (None, None) => break,
                (Some(f), Some(m)) if m < f => {
                    let std::cmp::Reverse((t, kind, seq, pair)) = self.due.pop().expect("peeked");
                    (t, kind, usize::try_from(seq).unwrap_or(usize::MAX), pair)
                }
                (None, Some(_)) => {
                    let std::cmp::Reverse((t, kind, seq, pair)) = self.due.pop().expect("peeked");
                    (t, kind, usize::try_from(seq).unwrap_or(usize::MAX), pair)
                }
                (Some(_), _) => {
                    let (t, kind, i) = order[next];
                    next += 1;
                    (t, kind, i, (0, 0))
                }
            };
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
            self.handle(kind, i, pair, t);
            self.pump(t);
        }
        for u in std::mem::take(&mut self.up).into_values() {
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
            hosts: self.hosts,
            events: self.log.unwrap_or_default(),
        }
    }

    /// One event: `i` is the contact or creation for fixed events, the sequence number or
    /// the opening node for the engine's own.
    fn handle(&mut self, kind: u8, i: usize, pair: (u32, u32), t: u64) {
        match kind {
            LAND => self.land(pair, i as u64, t),
            DOWN => self.down(i, t),
            UP => self.up(i, t),
            READY => {
                if let Some(u) = self
                    .up
                    .get_mut(&pair)
                    .filter(|u| u.start_ms + ms(self.scenario.radio.setup_s) == t)
                {
                    u.ready = true;
                    let first = u32::try_from(i).expect("a node index");
                    self.kick(first, if first == pair.0 { pair.1 } else { pair.0 }, t);
                }
            }
            CREATE | RESPOND => {
                let (request, m) = if kind == CREATE {
                    (None, self.creations[i].clone())
                } else {
                    let (request, m) = self.responses[i].clone();
                    (Some(request), m)
                };
                self.create(&m, request, t);
                if self.scenario.routing.destination_first
                    && self.peers[m.from as usize].contains(&m.to)
                {
                    self.hurry(m.from, m.to, t);
                }
                let peers: Vec<u32> = self.peers[m.from as usize].iter().copied().collect();
                for p in peers {
                    self.kick(m.from, p, t);
                }
            }
            RESYNC => {
                let pairs: Vec<(u32, u32)> = self.up.keys().copied().collect();
                for (a, b) in pairs {
                    self.kick(a, b, t);
                }
            }
            _ => {
                for n in 0..self.scenario.nodes {
                    if self.expire_due(n, t) {
                        self.drive(&[n], t);
                    }
                }
            }
        }
    }

    /// Runs node `n`'s expiry at `t` if it holds something past its expiry; whether it did.
    pub(super) fn expire_due(&mut self, n: u32, t: u64) -> bool {
        let at = now(t);
        let device = &mut self.nodes[n as usize].device;
        let due = device.store().next_expiry().is_some_and(|e| e < at.unix);
        if due {
            device.expire(at);
        }
        due
    }

    fn later(&mut self, t: u64, kind: u8, seq: u64, pair: (u32, u32)) {
        self.due.push(std::cmp::Reverse((t, kind, seq, pair)));
    }

    /// A contact comes up: a payment may happen at once; sync starts after the set-up.
    fn up(&mut self, i: usize, t: u64) {
        let c = self.contacts[i];
        let pair = (c.a.min(c.b), c.a.max(c.b));
        if self.up.contains_key(&pair) || c.a == c.b {
            return;
        }
        let setup = ms(self.scenario.radio.setup_s);
        self.up.insert(
            pair,
            Up {
                start_ms: t,
                ready: false,
                running: None,
                // Two nodes that met before and changed nothing since have nothing to say
                // (contacts at the edge of range flicker), unless their routing counts
                // encounters: then a session tells each the other's predictabilities or meeting
                // likelihoods.
                synced: if self.predicts(pair) {
                    None
                } else {
                    self.met.get(&pair).copied()
                },
                encountered: false,
            },
        );
        self.peers[c.a as usize].insert(c.b);
        self.peers[c.b as usize].insert(c.a);
        self.connection(c, t);
        // A new contact: its first session is an encounter for both (PRoPHET, MaxProp).
        let (ka, kb) = (
            self.keys[c.a as usize].public(),
            self.keys[c.b as usize].public(),
        );
        self.nodes[c.a as usize].device.met(kb);
        self.nodes[c.b as usize].device.met(ka);
        self.counters.contacts += 1;
        self.meet(c.a, c.b, t);
        // The node named first opens the session.
        self.later(t + setup, READY, u64::from(c.a), pair);
    }

    /// A contact goes down: the message on the air, if any, is lost with its session.
    fn down(&mut self, index: usize, t: u64) {
        let contact = self.contacts[index];
        let (a, b) = (contact.a, contact.b);
        let pair = (a.min(b), a.max(b));
        let Some(link) = self.up.remove(&pair) else {
            return;
        };
        self.counters.contact_ms += t.saturating_sub(link.start_ms);
        self.connection(contact, t);
        self.peers[a as usize].remove(&b);
        self.peers[b as usize].remove(&a);
        if let Some(running) = link.running {
            self.stop(pair, running, t);
        }
        // The contact is over: under MaxProp, what it moved is a threshold sample.
        let (ka, kb) = (
            self.keys[a as usize].public(),
            self.keys[b as usize].public(),
        );
        self.nodes[a as usize].device.parted(kb);
        self.nodes[b as usize].device.parted(ka);
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
                    self.wrote(n, w, t);
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

    /// Node `n`'s store changed at `t`: its version, drops, records carried, peak buffer, and
    /// how long each copy that left had been there (The ONE's buffer time).
    fn wrote(&mut self, n: u32, w: &device::MeshWrite, t: u64) {
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
                let acked = self.nodes[n as usize]
                    .device
                    .store()
                    .likelihoods()
                    .acks()
                    .is_checked(id);
                // Not dropped but removed: a copy handed on (spray-and-focus), one deleted on an
                // acknowledgement (MaxProp), and the destination's own copy of a message
                // delivered (The ONE keeps none, so never drops one).
                let m = &self.messages[idx];
                let delivered_here = m.to == n && m.delivered_ms.is_some();
                let dropped = !self.handed_on.remove(&(n, *id)) && !acked && !delivered_here;
                self.counters.dropped += u64::from(dropped);
                self.deleted(n, idx, dropped, t);
                if let Some((_, since)) = self.held.remove(&copy(n, idx)).map(held) {
                    self.counters.buffer_ms.push(t.saturating_sub(since));
                }
            }
        }
    }
}

/// The key of node `n`'s copy of message `idx` (a run has fewer than 2³² messages).
fn copy(n: u32, idx: usize) -> u64 {
    u64::from(n) << 32 | u64::try_from(idx).expect("a message index")
}

/// A held copy's hops (at most 65,535 counted) and arrival (ms), packed.
fn holding(hops: u32, at: u64) -> u64 {
    at << 16 | u64::from(hops.min(0xffff))
}

/// [`holding`] unpacked.
fn held(packed: u64) -> (u32, u64) {
    (
        u32::try_from(packed & 0xffff).expect("16 bits"),
        packed >> 16,
    )
}

fn pair_mut(nodes: &mut [Node], x: usize, y: usize) -> (&mut Node, &mut Node) {
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
