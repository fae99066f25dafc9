//! The sync session: the state machine one side of a contact runs, from the first message to
//! the hand-over receipts.
//!
//! A session first **reconciles** (the initiator streams coded symbols from the store's kept
//! ones, then from an encoder; the responder peels them with a [`crate::riblt`] decoder, or
//! either side lists its keys when that is cheaper), then **transfers** (want lists and
//! bundles in forwarding order, within the byte budget and the peer's room hint; see
//! `transfer`), then **closes** with a signed hand-over receipt each way. The driving contract
//! is in the [`crate::sync`] module docs; the state is private, and every input and output is
//! a [`SyncMessage`], so the node, the simulator and the tests drive the same code.

use crate::bundle::BundleError;
use crate::codec::{Blob, DecodeError};
use crate::keys::{DeviceKey, DeviceSecret, IssuerId};
use crate::objects::{HandOver, Hash, UnixTime};
use crate::riblt::{Decoder, Encoder, KeyIndex, Symbol};
use crate::store::{BundleStore, Origin};
use std::collections::BTreeSet;

use super::message::{Step, SyncMessage, pack_keys, unpack_keys};

mod maxprop;
mod predict;
mod transfer;

/// A side holding at most this many bundles lists its keys instead of sending symbols.
pub const LIST_MAX: usize = 64;
/// Coded symbols in the initiator's first message.
pub const FIRST_SYMBOLS: usize = 16;
/// Bytes of symbols, keys or bundles a message carries at most.
const ROOM: usize = 1700;

/// How records are handed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// To every peer that lacks them, until a receipt purges them.
    Epidemic,
    /// Spray-and-wait (Spyropoulos, Psounis and Raghavendra, WDTN 2005): a record starts with
    /// `copies` tokens and hands them out as `spray` says; a holder with one token waits for
    /// a gateway.
    SprayAndWait {
        /// Tokens a new record starts with.
        copies: u32,
        /// How a holder with more than one token shares them.
        spray: Spray,
    },
    /// Only from the node that made the record to a gateway.
    Direct,
    /// PRoPHET (Lindgren et al. 2004; RFC 6693): the two sides exchange their delivery
    /// predictabilities ([`crate::prophet`]), and a record goes to a peer only if the peer's
    /// predictability for its destination is greater than this node's (GRTR); the holder
    /// keeps its copy.
    Prophet,
    /// Spray-and-focus (Spyropoulos, Psounis and Raghavendra, PerCom Workshops 2007): binary
    /// spray while a holder has more than one of its `copies` tokens; with one, the holder
    /// hands its copy on (keeping none) to a peer whose utility for the destination is
    /// greater than its own. The utility is the PRoPHET predictability, exchanged as under
    /// [`Routing::Prophet`]: it rises with each meeting of the destination, decays with the
    /// time since, and passes on by transitivity, as the paper's last-encounter timers do.
    SprayAndFocus {
        /// Tokens a new record starts with.
        copies: u32,
    },
    /// MaxProp (Burgess et al., INFOCOM 2006): the two sides exchange meeting likelihoods
    /// ([`crate::maxprop`]) and hand over what the peer lacks, as epidemic does (the holder
    /// keeps its copy), in MaxProp's order: what the peer is the destination of, then bundles
    /// with fewer hops than the adaptive threshold by hop count, then the rest by the cost of
    /// their destination from the peer.
    MaxProp,
}

/// How spray-and-wait shares copy tokens with a peer that lacks the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spray {
    /// Binary: a holder of `n > 1` tokens gives `⌊n/2⌋` and keeps the rest, so relays spray
    /// too (the paper's faster variant).
    #[default]
    Binary,
    /// Source: a holder of `n > 1` tokens gives one and keeps `n − 1`. Only the source ever
    /// holds more than one, so relays wait from the start (the paper's source spray).
    Source,
}

impl Spray {
    /// Tokens a holder of `n > 1` gives a peer.
    pub fn give(self, n: u32) -> u32 {
        match self {
            Spray::Binary => n / 2,
            Spray::Source => n.min(1),
        }
    }
}

impl Routing {
    /// The routing a configuration file names: `"epidemic"`, `"spray-and-wait"` (with
    /// `spray` `"binary"` or `"source"`), `"direct"`, `"prophet"`, `"spray-and-focus"` or
    /// `"maxprop"`, the sprays with `copies` tokens (at least 1). `None` for any other name or mode.
    pub fn named(name: &str, copies: u32, spray: &str) -> Option<Self> {
        let copies = copies.max(1);
        Some(match name {
            "epidemic" => Routing::Epidemic,
            "spray-and-wait" => Routing::SprayAndWait {
                copies,
                spray: match spray {
                    "binary" => Spray::Binary,
                    "source" => Spray::Source,
                    _ => return None,
                },
            },
            "direct" => Routing::Direct,
            "prophet" => Routing::Prophet,
            "spray-and-focus" => Routing::SprayAndFocus { copies },
            "maxprop" => Routing::MaxProp,
            _ => return None,
        })
    }

    /// Copy tokens a record made on this node starts with (0: no limit).
    pub fn initial_copies(self) -> u32 {
        match self {
            Routing::SprayAndWait { copies, .. } | Routing::SprayAndFocus { copies } => {
                copies.max(1)
            }
            Routing::Epidemic | Routing::Direct | Routing::Prophet | Routing::MaxProp => 0,
        }
    }
}

/// The order a side hands over what the peer lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Forwarding order ([`crate::store::priority`]): urgent kinds first, then oldest made.
    #[default]
    Priority,
    /// In the order the bundles arrived here, first come first (The ONE's `FIFO`).
    Fifo,
    /// A fresh random order each session, drawn from its salt (The ONE's default `RANDOM`).
    Random,
}

/// How a side picks and hands over bundles. The default is meshpay's own; the other choices
/// exist so a simulation can reproduce the forwarding of other DTN simulators (The ONE's
/// `ActiveRouter`) on the same sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Each switch is one independent rule of another simulator's forwarding.
#[allow(clippy::struct_excessive_bools)]
pub struct Policy {
    /// Most bundles one transfer message carries (0: as many as fit). One a message makes a
    /// link that breaks mid-session lose at most the bundle on the air, as a store-and-forward
    /// radio that sends whole bundles does.
    pub per_message: u32,
    /// The order of what the peer lacks.
    pub order: Order,
    /// Bundles the peer is the destination of go first (messages addressed to it, records
    /// of an issuer it is a gateway for), each group in `order`, and, as in The ONE, before
    /// anything is relayed either way: a side relays only once the peer's last transfer
    /// message carried nothing for it (until then it sends its own deliveries, or nothing).
    pub destination_first: bool,
    /// A message that reached its destination is handed on from there (false: it stops
    /// there, as a delivered message does in The ONE).
    pub relay_delivered: bool,
    /// The side relaying keeps the link: it relays only while the peer's last transfer
    /// message carried no bundles, so one side hands over all it has before the other starts
    /// (The ONE's routers start their next transfer as soon as one ends). Deliveries under
    /// `destination_first` still go at once.
    pub keep_link: bool,
    /// Spray-and-wait gives up copies on a hand-over to the destination too, as on any other
    /// (The ONE's router does so on every transfer: half in binary mode, one in source mode);
    /// otherwise the holder keeps them all.
    pub halve_to_destination: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            per_message: 0,
            order: Order::Priority,
            destination_first: false,
            keep_link: false,
            relay_delivered: true,
            halve_to_destination: false,
        }
    }
}

/// A sync session's settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// This node's device key.
    pub me: DeviceKey,
    /// The peer's device key, as the link authenticated it.
    pub peer: DeviceKey,
    /// Issuers this node uploads for (it is their gateway now).
    pub gateway_for: Vec<IssuerId>,
    /// Routing of records.
    pub routing: Routing,
    /// Most bytes of bundles this side sends in the session.
    pub budget: u64,
    /// How this side picks what to hand over (meshpay's own by default).
    pub policy: Policy,
    /// The first session with the peer since their link came up: under PRoPHET and
    /// spray-and-focus it counts as an encounter (eq. 1 and transitivity, once per contact as
    /// in Lindgren et al. and The ONE), under MaxProp as a meeting (incremental averaging);
    /// later sessions over the same link only age the table and read the peer's vectors.
    pub encounter: bool,
    /// Wall-clock time, for expiry and the hand-over receipt.
    pub now: UnixTime,
}

/// The coded symbols a store keeps current ([`KEPT_SYMBOLS`] of them), packed as on the wire.
pub fn kept_symbols(store: &BundleStore) -> Vec<u8> {
    let mut out = Vec::new();
    for s in store.sync_head() {
        s.write(&mut out);
    }
    out
}

/// Why a session was abandoned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The peer's message does not decode.
    #[error("unreadable sync message: {0}")]
    Decode(#[from] DecodeError),
    /// The peer sent a step that does not fit the session's state.
    #[error("unexpected sync step {0:?}")]
    Unexpected(Step),
    /// The peer's symbols do not parse.
    #[error("malformed coded symbols")]
    BadSymbols,
    /// The peer kept sending symbols past any reasonable bound.
    #[error("the peer sent too many symbols")]
    TooManySymbols,
    /// The peer handed over a forged or malformed bundle.
    #[error("the peer handed over a bad bundle: {0}")]
    BadBundle(BundleError),
    /// The session is over.
    #[error("the session is over")]
    Finished,
}

/// Which end of the session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Sent the first message.
    Initiator,
    /// Answered it.
    Responder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Initiator: streaming symbols, waiting for the answer.
    Offering,
    /// Initiator: taking the responder's key pages.
    Listening,
    /// Responder: taking symbols.
    Decoding,
    /// Responder: listing its keys page by page.
    Listing,
    /// Both: handing bundles over.
    Transfer,
    /// Initiator: close sent. Responder: not used.
    Closing,
    /// Over.
    Finished,
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages this side sent.
    pub messages_sent: u32,
    /// Bytes this side sent (whole messages).
    pub bytes_sent: u64,
    /// Bytes this side received (whole messages).
    pub bytes_received: u64,
    /// Bytes of bundles among them, both ways.
    pub bundle_bytes: u64,
    /// Request–response pairs until the differences were known (counted by the initiator).
    pub reconcile_round_trips: u32,
    /// Coded symbols exchanged.
    pub symbols: u64,
}

/// A sync session with one peer. See the module docs for the driving contract.
// The flags are independent facts about the two directions of the transfer.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug)]
pub struct Session {
    side: Side,
    cfg: SessionConfig,
    salt: u64,
    state: State,
    /// Our keys at the start of the session.
    keys: KeyIndex,
    /// Symbols made but not sent yet.
    pending: std::collections::VecDeque<Symbol>,
    /// Symbols taken from the store's kept ones at the start.
    produced: usize,
    encoder: Option<Encoder>,
    decoder: Option<Decoder>,
    peer_count: u32,
    peer_keys: Vec<u64>,
    list_pos: usize,
    peer_gateways: Vec<IssuerId>,
    told_role: bool,
    /// Our room hint for the peer (what our store would take from it).
    room: u64,
    /// The peer's room hint, once known, and the bytes of non-urgent bundles sent against it.
    peer_room: Option<u64>,
    sent_against_room: u64,
    /// Non-urgent bundles held back because the peer has no room for them.
    held_back: u32,
    known: bool,
    to_send: Vec<Hash>,
    send_pos: usize,
    want: Vec<u64>,
    want_pos: usize,
    peer_want_done: bool,
    peer_done: bool,
    sent_done: bool,
    budget_spent: bool,
    spent: u64,
    given: Vec<Hash>,
    /// What a hand-over receipt covers, handed to the peer and taken from it.
    covered_given: transfer::Covered,
    covered_taken: transfer::Covered,
    admitted: Vec<Hash>,
    proof: Option<HandOver>,
    stats: Stats,
    /// The peer's delivery predictabilities, from its first message, and this node's own
    /// endpoints (it delivers there itself).
    peer_predictions: std::collections::BTreeMap<u64, f64>,
    own_endpoints: Vec<u64>,
    /// Responder: its predictability vector, for its first answer.
    first_vector: Vec<u8>,
    /// Responder: its likelihood vectors (MaxProp), for its first answer.
    first_likelihoods: Vec<u8>,
    /// MaxProp acknowledgements to send and taken.
    acks: maxprop::SessionAcks,
    /// Single copies handed on (spray-and-focus), dropped here once the peer answers.
    forwarding: Vec<Hash>,
    /// Under [`Policy::destination_first`] or [`Policy::keep_link`]: whether the peer's last
    /// transfer message carried any bundle, and any this node is the destination of (`None`
    /// before its first one).
    peer_carried: Option<(bool, bool)>,
    /// Bundle bytes of the last message sent, until the peer's answer shows it arrived.
    unconfirmed: u64,
}

impl Session {
    fn new(side: Side, cfg: SessionConfig, salt: u64, store: &BundleStore) -> Self {
        let keys = KeyIndex::new(store.sync_entries());
        let room = store.room_for(Origin::Peer(cfg.peer.0));
        Self {
            side,
            cfg,
            salt,
            state: State::Finished,
            keys,
            pending: std::collections::VecDeque::new(),
            produced: 0,
            encoder: None,
            decoder: None,
            peer_count: 0,
            peer_keys: Vec::new(),
            list_pos: 0,
            peer_gateways: Vec::new(),
            told_role: false,
            room,
            peer_room: None,
            sent_against_room: 0,
            held_back: 0,
            known: false,
            to_send: Vec::new(),
            send_pos: 0,
            want: Vec::new(),
            want_pos: 0,
            peer_want_done: false,
            peer_done: false,
            sent_done: false,
            budget_spent: false,
            spent: 0,
            given: Vec::new(),
            covered_given: transfer::Covered::default(),
            covered_taken: transfer::Covered::default(),
            admitted: Vec::new(),
            proof: None,
            stats: Stats::default(),
            peer_predictions: std::collections::BTreeMap::new(),
            own_endpoints: Vec::new(),
            first_vector: Vec::new(),
            first_likelihoods: Vec::new(),
            acks: maxprop::SessionAcks::default(),
            forwarding: Vec::new(),
            peer_carried: None,
            unconfirmed: 0,
        }
    }

    /// Starts a session as the initiator. `salt` goes into the reserved field of `open`.
    pub fn initiate(cfg: SessionConfig, store: &BundleStore, salt: u64) -> (Self, SyncMessage) {
        let mut s = Self::new(Side::Initiator, cfg, salt, store);
        let mut m = SyncMessage::new(Step::Open);
        m.salt = salt;
        m.count = u32::try_from(s.keys.len()).unwrap_or(u32::MAX);
        m.gateway_for = s.cfg.gateway_for.iter().take(4).copied().collect();
        m.room = s.room;
        m.predictions = Blob(s.own_vector(store));
        m.likelihoods = Blob(s.own_likelihoods(store));
        if s.keys.len() <= LIST_MAX {
            m.keys = pack_keys(&s.keys.keys().collect::<Vec<_>>());
            m.last = true;
        } else {
            // The first symbols are the store's, kept up to date as bundles come and go; the
            // encoder for the rest is made only if the peer asks for more.
            let head = store.sync_head();
            let mut packed = Vec::new();
            for sym in &head[..FIRST_SYMBOLS] {
                sym.write(&mut packed);
            }
            s.stats.symbols += FIRST_SYMBOLS as u64;
            m.symbols = Blob(packed);
            s.pending = head[FIRST_SYMBOLS..].iter().copied().collect();
            s.produced = head.len();
        }
        s.state = State::Offering;
        s.stats.reconcile_round_trips = 1;
        let m = s.sent(m);
        (s, m)
    }

    /// Answers an initiator's first message as the responder.
    pub fn accept(
        cfg: SessionConfig,
        store: &mut BundleStore,
        open: &SyncMessage,
    ) -> Result<(Self, SyncMessage), SyncError> {
        if open.step() != Step::Open {
            return Err(SyncError::Unexpected(open.step()));
        }
        let mut s = Self::new(Side::Responder, cfg, open.salt, store);
        s.received(open);
        s.peer_count = open.count;
        s.peer_gateways.clone_from(&open.gateway_for);
        s.peer_room = Some(open.room);
        // Our vector as it was before this meeting, as the initiator's is.
        s.first_vector = s.own_vector(store);
        s.first_likelihoods = s.own_likelihoods(store);
        s.learn(open, store);
        let theirs = open.symbols.0.is_empty();
        let answer = if theirs {
            // The initiator listed all its keys.
            s.peer_keys = unpack_keys(&open.keys);
            s.learn_from_list(store);
            s.transfer(store)
        } else {
            let n_mine = s.keys.len();
            let spread = n_mine.abs_diff(open.count as usize);
            s.decoder = Some(Decoder::new(store.sync_head()));
            if n_mine <= LIST_MAX || n_mine * 8 <= spread * 27 {
                s.state = State::Listing;
                s.list_page()
            } else {
                s.state = State::Decoding;
                s.take_symbols(&open.symbols, store)?
            }
        };
        let answer = s.sent(answer);
        Ok((s, answer))
    }

    /// Handles the peer's next message and returns the answer (`None`: the initiator is
    /// done; the session is over).
    pub fn handle(
        &mut self,
        msg: &SyncMessage,
        store: &mut BundleStore,
        key: &DeviceSecret,
    ) -> Result<Option<SyncMessage>, SyncError> {
        self.received(msg);
        self.count_moved(msg, store);
        // The peer answered: it has what we handed on.
        for id in std::mem::take(&mut self.forwarding) {
            store.remove(&id);
        }
        let step = msg.step();
        let answer = match (self.side, self.state, step) {
            (_, State::Finished, _) => return Err(SyncError::Finished),
            (Side::Initiator, State::Offering, Step::More) => {
                self.role_of(msg, store);
                self.stats.reconcile_round_trips += 1;
                if self.keys.len() <= LIST_MAX {
                    return Err(SyncError::Unexpected(step));
                }
                let keys = &self.keys;
                let kept = self.produced;
                let mut packed = Vec::new();
                let mut n = 0;
                // The store's kept symbols go first; after them, symbols are made a batch at a
                // time (one pass over the set per batch) and sent in order, as many as fit.
                while packed.len() + 26 <= ROOM {
                    if self.pending.is_empty() {
                        let enc = self.encoder.get_or_insert_with(|| {
                            let mut e = Encoder::new(keys.keys());
                            e.produce(kept);
                            e
                        });
                        self.pending.extend(enc.produce(64));
                    }
                    let sym = self.pending.pop_front().expect("just made");
                    sym.write(&mut packed);
                    n += 1;
                }
                self.stats.symbols += n;
                let mut m = SyncMessage::new(Step::Symbols);
                m.symbols = Blob(packed);
                Some(m)
            }
            (Side::Initiator, State::Offering | State::Listening, Step::Keys) => {
                self.role_of(msg, store);
                self.peer_keys.extend(unpack_keys(&msg.keys));
                if msg.last {
                    self.learn_from_list(store);
                    Some(self.transfer(store))
                } else {
                    self.stats.reconcile_round_trips += 1;
                    self.state = State::Listening;
                    Some(SyncMessage::new(Step::Pull))
                }
            }
            (Side::Initiator, State::Offering | State::Transfer, Step::Transfer) => {
                self.role_of(msg, store);
                self.take_transfer(msg, store, key)?;
                if self.sent_done && self.peer_done && self.nothing_left() {
                    self.state = State::Closing;
                    Some(self.close(key))
                } else {
                    Some(self.transfer(store))
                }
            }
            (Side::Initiator, State::Closing, Step::Close) => {
                self.take_close(msg);
                self.state = State::Finished;
                None
            }
            (Side::Responder, State::Decoding, Step::Symbols) => {
                Some(self.take_symbols(&msg.symbols, store)?)
            }
            (Side::Responder, State::Listing, Step::Pull) => Some(self.list_page()),
            (Side::Responder, State::Transfer, Step::Transfer) => {
                self.take_transfer(msg, store, key)?;
                Some(self.transfer(store))
            }
            (Side::Responder, State::Transfer, Step::Close) => {
                self.take_close(msg);
                self.state = State::Finished;
                Some(self.close(key))
            }
            _ => return Err(SyncError::Unexpected(step)),
        };
        Ok(answer.map(|m| self.sent(m)))
    }

    fn received(&mut self, m: &SyncMessage) {
        self.stats.bytes_received += m.encoded_len() as u64;
        self.stats.bundle_bytes += m.bundle_bytes() as u64;
    }

    fn sent(&mut self, mut m: SyncMessage) -> SyncMessage {
        if self.side == Side::Responder && !self.told_role {
            m.count = u32::try_from(self.keys.len()).unwrap_or(u32::MAX);
            m.gateway_for = self.cfg.gateway_for.iter().take(4).copied().collect();
            m.room = self.room;
            m.predictions = Blob(std::mem::take(&mut self.first_vector));
            m.likelihoods = Blob(std::mem::take(&mut self.first_likelihoods));
            self.told_role = true;
        }
        self.unconfirmed = m.bundle_bytes() as u64;
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += m.encoded_len() as u64;
        self.stats.bundle_bytes += m.bundle_bytes() as u64;
        m
    }

    /// Learns what the responder's first answer says of it: the issuers it is a gateway for,
    /// its room hint and its delivery predictabilities.
    fn role_of(&mut self, m: &SyncMessage, store: &mut BundleStore) {
        if self.peer_room.is_some() {
            return;
        }
        self.peer_room = Some(m.room);
        self.peer_gateways.clone_from(&m.gateway_for);
        self.learn(m, store);
    }

    /// Bytes of symbols, keys or bundles the next message may carry: less, in the
    /// responder's first answer, the predictability or likelihood vectors it carries.
    fn room(&self) -> usize {
        ROOM - self.first_vector.len() - self.first_likelihoods.len()
    }

    fn take_symbols(
        &mut self,
        packed: &Blob,
        store: &mut BundleStore,
    ) -> Result<SyncMessage, SyncError> {
        let mut bytes = packed.0.as_slice();
        let mut syms = Vec::new();
        while !bytes.is_empty() {
            syms.push(Symbol::read(&mut bytes).ok_or(SyncError::BadSymbols)?);
        }
        let dec = self
            .decoder
            .as_mut()
            .ok_or(SyncError::Unexpected(Step::Symbols))?;
        dec.add(&syms, &self.keys);
        self.stats.symbols += syms.len() as u64;
        if dec.done() {
            let found = dec.take_found();
            // +1: only the initiator has it (we want it); -1: only we have it.
            self.want = found.iter().filter(|f| f.1 > 0).map(|f| f.0).collect();
            self.answer_with_acks(store);
            let give: Vec<Hash> = found
                .iter()
                .filter(|f| f.1 < 0)
                .filter_map(|f| store.sync_id(f.0))
                .collect();
            self.known = true;
            self.peer_want_done = true;
            self.queue(give, store);
            return Ok(self.transfer(store));
        }
        // Listing our keys costs 8 bytes each; symbols about 17. Past that point, list.
        let taken = dec.taken();
        if taken * 17 > self.keys.len() * 8 + 2048 {
            self.state = State::Listing;
            return Ok(self.list_page());
        }
        let bound = 2 * (self.keys.len() + self.peer_count as usize) + 4096;
        if taken > bound {
            return Err(SyncError::TooManySymbols);
        }
        Ok(SyncMessage::new(Step::More))
    }

    fn list_page(&mut self) -> SyncMessage {
        let all: Vec<u64> = self
            .keys
            .keys()
            .skip(self.list_pos)
            .take(self.room() / 8)
            .collect();
        self.list_pos += all.len();
        let mut m = SyncMessage::new(Step::Keys);
        m.keys = pack_keys(&all);
        m.last = self.list_pos >= self.keys.len();
        if m.last {
            // The initiator computes the differences and opens the transfer.
            self.state = State::Transfer;
        }
        m
    }

    /// We hold the peer's whole key list: compute both differences.
    fn learn_from_list(&mut self, store: &BundleStore) {
        let theirs: BTreeSet<u64> = self.peer_keys.iter().copied().collect();
        self.want = theirs
            .iter()
            .filter(|k| !self.keys.contains_key(**k))
            .copied()
            .collect();
        self.answer_with_acks(store);
        let give: Vec<Hash> = self
            .keys
            .keys()
            .filter(|k| !theirs.contains(k))
            .filter_map(|k| store.sync_id(k))
            .collect();
        self.to_send = give;
        self.known = true;
        self.peer_want_done = true;
        self.peer_keys = Vec::new();
    }

    /// Bundles not handed over because the peer's room hint said it would refuse them.
    pub fn held_back(&self) -> u32 {
        self.held_back
    }

    /// True once the session is over.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The reserved `salt` value of the session's `open`.
    pub fn salt(&self) -> u64 {
        self.salt
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Bundles the peer handed over that the store kept.
    pub fn admitted(&self) -> &[Hash] {
        &self.admitted
    }

    /// Bundles handed to the peer.
    pub fn given(&self) -> &[Hash] {
        &self.given
    }

    /// The peer's signed receipt for what we gave, once the session closed.
    pub fn proof(&self) -> Option<&HandOver> {
        self.proof.as_ref()
    }

    /// The issuers the peer is a gateway for.
    pub fn peer_gateways(&self) -> &[IssuerId] {
        &self.peer_gateways
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }
}
