//! Sync messages and their wire rules (SPEC.md §11.2): one message type for every step of a
//! session, with the fields a step does not use left empty, so any request–response link
//! carries sync as one more message kind. Decoding checks the version, the step code, the key
//! packing, the number of gateway issuers, the packing of the predictability and likelihood
//! vectors and the hand-over receipt's fields; the session ([`super::Session`]) decides whether a step fits
//! its state.

use crate::codec::{self, Blob, DecodeError, VERSION, Wire, check_version};
use crate::keys::IssuerId;
use crate::objects::{Body, HandOver};
use crate::prophet::{self, MAX_PREDICTIONS, PREDICTION_LEN};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

/// Largest sync message, in bytes (it travels inside a link message of at most 2 KiB).
pub const MAX_SYNC: usize = 2000;

/// A bundle handed over, with the spray-and-wait tokens that go with it (0: no limit) and
/// the hops it has made so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Carried {
    /// Copy tokens.
    pub copies: u32,
    /// The bundle's encoding.
    pub bundle: Blob,
    /// Hand-overs from the node that made it to the sender, at most 255 (MaxProp orders by
    /// it; the taker holds it at one more).
    pub hops: u8,
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
    /// Open, and the responder's first answer, under PRoPHET or spray-and-focus: the sender's
    /// delivery predictabilities, packed ([`crate::prophet`]: 12 bytes an entry, at most
    /// [`crate::prophet::MAX_PREDICTIONS`], endpoints ascending). Empty otherwise.
    pub predictions: Blob,
    /// Open, and the responder's first answer, under MaxProp: the sender's meeting
    /// likelihoods and those it learned of other nodes, packed ([`crate::maxprop::unpack`]:
    /// vectors of 13 bytes and 10 an entry, at most [`crate::maxprop::MAX_LIKELIHOOD_BYTES`]).
    /// Empty otherwise.
    pub likelihoods: Blob,
    /// Transfer, under MaxProp: acknowledgements of delivered plain messages, packed
    /// ([`crate::maxprop::acks::unpack`]: 96 bytes each). Empty otherwise.
    pub acks: Blob,
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
        let p = &self.predictions.0;
        if p.len() % PREDICTION_LEN != 0 {
            return Err(bad("predictions are 12 bytes each"));
        }
        if p.len() > MAX_PREDICTIONS * PREDICTION_LEN {
            return Err(bad("at most 96 predictions"));
        }
        if !prophet::unpack(p).windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(bad("prediction endpoints ascending"));
        }
        crate::maxprop::unpack(&self.likelihoods.0).map_err(bad)?;
        if self.acks.0.len() % crate::maxprop::acks::ACK_LEN != 0 {
            return Err(bad("acknowledgements are 96 bytes each"));
        }
        if let Some(h) = &self.handover {
            Body::check(h.body())?;
        }
        Ok(())
    }
}

impl SyncMessage {
    pub(super) fn new(step: Step) -> Self {
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
            predictions: Blob(Vec::new()),
            likelihoods: Blob(Vec::new()),
            acks: Blob(Vec::new()),
        }
    }

    /// The step.
    pub fn step(&self) -> Step {
        Step::from_code(self.step).expect("checked at decode and construction")
    }

    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode_into(self, Vec::with_capacity(self.encoded_len()))
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
            .map(|c| 1 + uint(u64::from(c.copies)) + bstr(c.bundle.0.len()) + uint(c.hops.into()))
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
            + bstr(self.predictions.0.len())
            + bstr(self.likelihoods.0.len())
            + bstr(self.acks.0.len())
    }

    /// Bytes of bundles it carries.
    pub fn bundle_bytes(&self) -> usize {
        self.bundles.iter().map(|c| c.bundle.0.len()).sum()
    }
}

pub(super) fn pack_keys(keys: &[u64]) -> Blob {
    Blob(keys.iter().flat_map(|k| k.to_le_bytes()).collect())
}

pub(super) fn unpack_keys(blob: &Blob) -> Vec<u64> {
    blob.0
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}
