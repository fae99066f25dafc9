//! Bundle sync between two peers in contact: reconcile the sets of bundle ids, then hand over
//! what each side lacks, most urgent first, within a byte budget.
//!
//! ## Reconciliation
//!
//! Set reconciliation with **rateless invertible Bloom lookup tables** (Yang, Gilad and
//! Alizadeh, "Practical Rateless Set Reconciliation", SIGCOMM 2024; the coder is
//! [`crate::riblt`]). Each side maps every
//! bundle id to a 64-bit key. The initiator streams *coded symbols* (count, XOR of keys,
//! XOR of key checksums) over ever more indices; the responder subtracts its own symbols and
//! peels. Once every cell is zero the responder knows both differences. The cost is about 1.4
//! to 2.5 symbols (17 bytes each) per difference whatever the set sizes, and a few hundred
//! bytes when the sets are equal.
//!
//! When listing keys is cheaper (a side holds at most [`LIST_MAX`] bundles, or the counts
//! differ by much more than the smaller set), the smaller side lists its keys instead, and so
//! does the responder if the symbols it has taken already cost more than listing would. Either
//! way the session always ends with exact differences.
//!
//! Keys are a mix of the first 8 bytes of the bundle id, the same in every session, so the
//! store keeps its first coded symbols up to date and a session between two nodes that hold
//! the same bundles costs no pass over either store. Ids sharing a key are left out of sync:
//! only a bundle's own maker can arrange that (a 2^32 birthday search), and it only hides its
//! own bundles; hiding someone else's takes a 64-bit second preimage.
//!
//! ## Transfer
//!
//! The side that knows the differences sends the other its *want list* (the keys it lacks),
//! paged; both sides then send what the other lacks in forwarding order ([`store::priority`]),
//! filtered by the [`Routing`] choice, until each side is done or its byte budget for the
//! contact is spent. Each side closes with a signed [`HandOver`] receipt for the bundles it
//! took: the giver's proof of carriage.
//!
//! ## Driving contract
//!
//! Messages strictly alternate: the initiator sends, the responder answers, one message at a
//! time, so any request–response link carries them. Every message fits in [`MAX_SYNC`] bytes.
//!
//! 1. Initiator: [`Session::initiate`] → send the message.
//! 2. Responder: on the first message, [`Session::accept`] → send the answer.
//! 3. Either side: on every further message, [`Session::handle`]; send what it returns. The
//!    initiator gets `None` when the session is over; the responder is over after answering a
//!    close ([`Session::is_finished`]).
//! 4. After each call, drain [`BundleStore::take_changes`] to persist what arrived.
//!
//! A [`SyncError`] means the peer broke the protocol (or sent a forged bundle): drop the
//! session and the peer.

use crate::bundle::{BundleError, BundleKind, MAX_BUNDLE};
use crate::codec::{self, Blob, DecodeError, VERSION, Wire, check_version};
use crate::keys::{DeviceKey, DeviceSecret, IssuerId};
use crate::objects::{Body, Hash, Signed, UnixTime};
use crate::riblt::{Decoder, Encoder, KeyIndex, Symbol};
use crate::store::{Admission, BundleStore, Entry, Origin, priority};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};
use std::collections::BTreeSet;

pub use crate::objects::{HandOver, HandOverBody, ids_digest};
pub use crate::riblt::{KEPT_SYMBOLS, coded_symbols, symbol_indices, sync_key};

/// Largest sync message, in bytes (it travels inside a link message of at most 2 KiB).
pub const MAX_SYNC: usize = 2000;
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
    /// Binary spray-and-wait (Spyropoulos et al. 2005): a record starts with `copies` tokens;
    /// a holder with `n > 1` gives `n / 2` to a peer that lacks it; with one token it waits
    /// for a gateway.
    SprayAndWait {
        /// Tokens a new record starts with.
        copies: u32,
    },
    /// Only from the node that made the record to a gateway.
    Direct,
}

impl Routing {
    /// Copy tokens a record made on this node starts with (0: no limit).
    pub fn initial_copies(self) -> u32 {
        match self {
            Routing::SprayAndWait { copies } => copies.max(1),
            Routing::Epidemic | Routing::Direct => 0,
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


// ---------------------------------------------------------------------------------------------
// Messages

/// A bundle handed over, with the spray-and-wait tokens that go with it (0: no limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Carried {
    /// Copy tokens.
    pub copies: u32,
    /// The bundle's encoding.
    pub bundle: Blob,
}

/// Message steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Initiator: salt, count, first symbols (or all keys).
    Open,
    /// Initiator: more symbols.
    Symbols,
    /// Responder: send more symbols.
    More,
    /// Responder: a page of its keys.
    Keys,
    /// Initiator: send the next page of keys.
    Pull,
    /// Either: want list page and bundles.
    Transfer,
    /// Either: the end, with the hand-over receipt.
    Close,
}

impl Step {
    fn code(self) -> u8 {
        match self {
            Step::Open => 1,
            Step::Symbols => 2,
            Step::More => 3,
            Step::Keys => 4,
            Step::Pull => 5,
            Step::Transfer => 6,
            Step::Close => 7,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => Step::Open,
            2 => Step::Symbols,
            3 => Step::More,
            4 => Step::Keys,
            5 => Step::Pull,
            6 => Step::Transfer,
            7 => Step::Close,
            _ => return None,
        })
    }
}

/// One sync message. Fields a step does not use are empty (SPEC.md §11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct SyncMessage {
    /// Format version.
    pub version: u8,
    /// [`Step`] code.
    pub step: u8,
    /// Open: reserved (receivers ignore it).
    pub salt: u64,
    /// Open, and the responder's first answer: how many bundles the sender holds.
    pub count: u32,
    /// Open, and the responder's first answer: issuers the sender is a gateway for.
    pub gateway_for: Vec<IssuerId>,
    /// Open, Symbols: coded symbols, packed.
    pub symbols: Blob,
    /// Open, Keys: the sender's keys; Transfer: its want list page. 8 bytes each.
    pub keys: Blob,
    /// Keys, Transfer: this is the last page of keys.
    pub last: bool,
    /// Transfer: bundles.
    pub bundles: Vec<Carried>,
    /// Transfer: the sender has nothing more to send.
    pub done: bool,
    /// Close: receipt for the bundles the sender took.
    pub handover: Option<HandOver>,
    /// Open, and the responder's first answer: the room hint, how many bytes of bundles
    /// other than fraud proofs, revocations and receipts the sender will take from the other
    /// side in this session. A full carrier says 0, and is not offered bundles it would refuse.
    pub room: u64,
}

impl Wire for SyncMessage {
    const KIND: &'static str = "sync message";
    const MAX_SIZE: usize = MAX_SYNC;
    fn check(&self) -> Result<(), DecodeError> {
        let bad = |field| DecodeError::InvalidField {
            kind: Self::KIND,
            field,
        };
        check_version(Self::KIND, self.version)?;
        Step::from_code(self.step).ok_or(bad("unknown step"))?;
        if self.keys.0.len() % 8 != 0 {
            return Err(bad("keys are 8 bytes each"));
        }
        if self.gateway_for.len() > 4 {
            return Err(bad("at most 4 gateway issuers"));
        }
        if let Some(h) = &self.handover {
            Body::check(h.body())?;
        }
        Ok(())
    }
}

impl SyncMessage {
    fn new(step: Step) -> Self {
        Self {
            version: VERSION,
            step: step.code(),
            salt: 0,
            count: 0,
            gateway_for: Vec::new(),
            symbols: Blob(Vec::new()),
            keys: Blob(Vec::new()),
            last: false,
            bundles: Vec::new(),
            done: false,
            handover: None,
            room: 0,
        }
    }

    /// The step.
    pub fn step(&self) -> Step {
        Step::from_code(self.step).expect("checked at decode and construction")
    }

    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The length of [`SyncMessage::encode`]'s output, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        fn uint(n: u64) -> usize {
            match n {
                0..=23 => 1,
                24..=0xff => 2,
                0x100..=0xffff => 3,
                0x1_0000..=0xffff_ffff => 5,
                _ => 9,
            }
        }
        fn bstr(len: usize) -> usize {
            uint(len as u64) + len
        }
        let bundles: usize = self
            .bundles
            .iter()
            .map(|c| 1 + uint(u64::from(c.copies)) + bstr(c.bundle.0.len()))
            .sum();
        1 + uint(u64::from(self.version))
            + uint(u64::from(self.step))
            + uint(self.salt)
            + uint(u64::from(self.count))
            + uint(self.gateway_for.len() as u64)
            + self.gateway_for.len() * bstr(32)
            + bstr(self.symbols.0.len())
            + bstr(self.keys.0.len())
            + 1
            + uint(self.bundles.len() as u64)
            + bundles
            + 1
            + self.handover.as_ref().map_or(1, |h| codec::encode(h).len())
            + uint(self.room)
    }

    /// Bytes of bundles it carries.
    pub fn bundle_bytes(&self) -> usize {
        self.bundles.iter().map(|c| c.bundle.0.len()).sum()
    }
}

fn pack_keys(keys: &[u64]) -> Blob {
    Blob(keys.iter().flat_map(|k| k.to_le_bytes()).collect())
}

fn unpack_keys(blob: &Blob) -> Vec<u64> {
    blob.0
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The session

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
    given_bytes: u64,
    taken: Vec<Hash>,
    taken_bytes: u64,
    admitted: Vec<Hash>,
    proof: Option<HandOver>,
    stats: Stats,
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
            given_bytes: 0,
            taken: Vec::new(),
            taken_bytes: 0,
            admitted: Vec::new(),
            proof: None,
            stats: Stats::default(),
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
        let theirs = open.symbols.0.is_empty();
        let answer = if theirs {
            // The initiator listed all its keys.
            s.peer_keys = unpack_keys(&open.keys);
            s.learn_from_list();
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
        let step = msg.step();
        let answer = match (self.side, self.state, step) {
            (_, State::Finished, _) => return Err(SyncError::Finished),
            (Side::Initiator, State::Offering, Step::More) => {
                self.role_of(msg);
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
                self.role_of(msg);
                self.peer_keys.extend(unpack_keys(&msg.keys));
                if msg.last {
                    self.learn_from_list();
                    Some(self.transfer(store))
                } else {
                    self.stats.reconcile_round_trips += 1;
                    self.state = State::Listening;
                    Some(SyncMessage::new(Step::Pull))
                }
            }
            (Side::Initiator, State::Offering | State::Transfer, Step::Transfer) => {
                self.role_of(msg);
                self.take_transfer(msg, store)?;
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
                self.take_transfer(msg, store)?;
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
            self.told_role = true;
        }
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += m.encoded_len() as u64;
        self.stats.bundle_bytes += m.bundle_bytes() as u64;
        m
    }

    /// Learns what the responder's first answer says of it: the issuers it is a gateway for
    /// and its room hint.
    fn role_of(&mut self, m: &SyncMessage) {
        if self.peer_room.is_none() {
            self.peer_room = Some(m.room);
        }
        if self.peer_gateways.is_empty() && !m.gateway_for.is_empty() {
            self.peer_gateways.clone_from(&m.gateway_for);
        }
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
            let give: Vec<Hash> = found
                .iter()
                .filter(|f| f.1 < 0)
                .filter_map(|f| self.keys.get(f.0).copied())
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
            .take(ROOM / 8)
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
    fn learn_from_list(&mut self) {
        let theirs: BTreeSet<u64> = self.peer_keys.iter().copied().collect();
        self.want = theirs
            .iter()
            .filter(|k| !self.keys.contains_key(**k))
            .copied()
            .collect();
        let give: Vec<Hash> = self
            .keys
            .iter()
            .filter(|(k, _)| !theirs.contains(k))
            .map(|(_, id)| *id)
            .collect();
        self.to_send = give;
        self.known = true;
        self.peer_want_done = true;
        self.peer_keys = Vec::new();
    }

    fn queue(&mut self, more: Vec<Hash>, store: &BundleStore) {
        let mut rest: Vec<Hash> = self.to_send.split_off(self.send_pos);
        rest.extend(more);
        rest.sort_by_cached_key(|id| store.get(id).map(|e| priority(&e.meta)));
        rest.dedup();
        self.to_send.truncate(self.send_pos);
        self.to_send.extend(rest);
    }

    /// Copies to give with `entry` to this peer, or `None` if routing keeps it here. Records go
    /// to gateways of their issuer, messages to their destination, whatever the routing.
    fn offer(&self, entry: &Entry, store: &BundleStore) -> Option<(u32, u32)> {
        let destination = match entry.meta.kind {
            BundleKind::Record => self.peer_gateways.contains(&entry.meta.issuer),
            BundleKind::Message => store
                .destination(&entry.meta.id)
                .is_some_and(|to| to == self.cfg.peer),
            _ => return Some((0, entry.copies)),
        };
        if destination {
            return Some((entry.copies.min(1), entry.copies));
        }
        match self.cfg.routing {
            Routing::Epidemic => Some((0, entry.copies)),
            Routing::Direct => None,
            Routing::SprayAndWait { .. } => match entry.copies {
                0 => Some((0, 0)),
                1 => None,
                n => Some((n / 2, n - n / 2)),
            },
        }
    }

    fn nothing_left(&self) -> bool {
        self.want_pos >= self.want.len()
            && self.peer_want_done
            && (self.send_pos >= self.to_send.len() || self.budget_spent)
    }

    fn transfer(&mut self, store: &mut BundleStore) -> SyncMessage {
        if self.state != State::Transfer {
            // Entering the transfer: put what we know to send in forwarding order.
            self.state = State::Transfer;
            let give = std::mem::take(&mut self.to_send);
            self.queue(give, store);
        }
        let mut m = SyncMessage::new(Step::Transfer);
        let mut room = ROOM;
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
        while self.send_pos < self.to_send.len() && !self.budget_spent {
            let id = self.to_send[self.send_pos];
            let Some(entry) = store.get(&id) else {
                // Purged or evicted meanwhile.
                self.send_pos += 1;
                continue;
            };
            let Some((give, keep)) = self.offer(entry, store) else {
                self.send_pos += 1;
                continue;
            };
            let entry_copies = entry.copies;
            let urgent = entry.meta.kind.class() == 0;
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
            });
            self.given.push(id);
            self.given_bytes += len as u64;
            if keep != entry_copies {
                store.set_copies(&id, keep);
            }
            self.send_pos += 1;
        }
        m.done = self.nothing_left();
        self.sent_done = m.done;
        m
    }

    fn take_transfer(&mut self, m: &SyncMessage, store: &mut BundleStore) -> Result<(), SyncError> {
        if !self.known {
            // The peer knows the differences: its want list tells us what to send.
            let want = unpack_keys(&m.keys);
            let give: Vec<Hash> = want
                .iter()
                .filter_map(|k| self.keys.get(*k).copied())
                .collect();
            self.queue(give, store);
            if m.last {
                self.peer_want_done = true;
            }
        }
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
            self.taken.push(id);
            self.taken_bytes += c.bundle.0.len() as u64;
            match store.insert(
                &c.bundle.0,
                Origin::Peer(self.cfg.peer.0),
                c.copies,
                self.cfg.now,
            ) {
                Admission::Added(_) => self.admitted.push(id),
                Admission::Refused(
                    e @ (BundleError::Decode(_)
                    | BundleError::BadSignature(_)
                    | BundleError::ProvisionalReceipt),
                ) => return Err(SyncError::BadBundle(e)),
                _ => {}
            }
        }
        self.peer_done = m.done;
        Ok(())
    }

    fn close(&mut self, key: &DeviceSecret) -> SyncMessage {
        let mut m = SyncMessage::new(Step::Close);
        if !self.taken.is_empty() {
            m.handover = Some(Signed::by_device(
                HandOverBody {
                    version: VERSION,
                    giver: self.cfg.peer,
                    taker: self.cfg.me,
                    count: u32::try_from(self.taken.len()).unwrap_or(u32::MAX),
                    bytes: self.taken_bytes,
                    ids: ids_digest(&self.taken),
                    at: self.cfg.now,
                },
                key,
            ));
        }
        m
    }

    fn take_close(&mut self, m: &SyncMessage) {
        // Keep the peer's receipt only if it is theirs and covers exactly what we gave.
        if let Some(h) = &m.handover {
            let b = h.body();
            if b.taker == self.cfg.peer
                && b.giver == self.cfg.me
                && b.count as usize == self.given.len()
                && b.bytes == self.given_bytes
                && b.ids == ids_digest(&self.given)
                && h.verify().is_ok()
            {
                self.proof = Some(h.clone());
            }
        }
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

/// One side of an in-memory contact (see [`contact`]).
#[derive(Debug)]
pub struct Party<'a> {
    /// Its bundle store.
    pub store: &'a mut BundleStore,
    /// Its session settings.
    pub cfg: SessionConfig,
    /// Its device key, for hand-over receipts.
    pub key: &'a DeviceSecret,
}

/// What an in-memory contact did.
#[derive(Debug)]
pub struct Contact {
    /// The initiator's session.
    pub initiator: Session,
    /// The responder's session.
    pub responder: Session,
    /// Messages exchanged, both ways.
    pub messages: u32,
    /// False if the contact ended (after `max_messages`) before the session closed.
    pub completed: bool,
}

/// Runs a whole session between two stores in memory, every message through its encoding,
/// for at most `max_messages` messages (a contact that breaks off early keeps what arrived).
/// The simulator, the tests and the benchmarks drive sync through this.
pub fn contact(
    a: Party<'_>,
    b: Party<'_>,
    salt: u64,
    max_messages: u32,
) -> Result<Contact, SyncError> {
    fn wire(m: &SyncMessage) -> Result<SyncMessage, SyncError> {
        Ok(codec::decode(&m.encode())?)
    }
    let (mut init, first) = Session::initiate(a.cfg, a.store, salt);
    let mut messages = 1;
    if max_messages < 2 {
        let (resp, _) = Session::accept(b.cfg, b.store, &wire(&first)?)?;
        return Ok(Contact {
            initiator: init,
            responder: resp,
            messages,
            completed: false,
        });
    }
    let (mut resp, mut answer) = Session::accept(b.cfg, b.store, &wire(&first)?)?;
    messages += 1;
    loop {
        if messages >= max_messages {
            break;
        }
        let Some(next) = init.handle(&wire(&answer)?, a.store, a.key)? else {
            break;
        };
        messages += 1;
        if messages >= max_messages {
            break;
        }
        answer = resp
            .handle(&wire(&next)?, b.store, b.key)?
            .ok_or(SyncError::Finished)?;
        messages += 1;
    }
    let completed = init.is_finished() && resp.is_finished();
    Ok(Contact {
        initiator: init,
        responder: resp,
        messages,
        completed,
    })
}
