//! The rateless set-reconciliation coder: coded symbols of a set of 64-bit keys, produced
//! without end, from which a peer holding an overlapping set recovers both differences.
//!
//! This is a **rateless invertible Bloom lookup table** (Yang, Gilad and Alizadeh, "Practical
//! Rateless Set Reconciliation", SIGCOMM 2024). Each item is a 64-bit key; coded symbol `i` is
//! `(count, XOR of keys, XOR of key checksums)` over the keys mapped to it. Every key maps to
//! symbol 0 and then to a sparser and sparser pseudo-random sequence of indices (`Mapping`:
//! a key is in symbol `i` with probability about `1 / (1 + i/2)`), so the stream has no fixed
//! length: the sender goes on producing symbols until the receiver has enough. The receiver
//! subtracts its own symbols for the same indices and *peels*: a cell holding exactly one key
//! (count ±1 and a matching checksum) reveals that key, which is then removed from every cell
//! it maps to, freeing more cells. Once every cell is zero both differences are known. The cost
//! is about 1.4 to 2.5 symbols (17 bytes each) per difference, whatever the set sizes, and a
//! few hundred bytes when the sets are equal.
//!
//! Why this scheme: it needs no estimate of the difference beforehand (a fixed-size IBLT must
//! be sized for the difference, and fails or wastes bytes when the guess is off); the sender
//! simply keeps streaming until the receiver is done. And a symbol is a sum, so adding or
//! removing a key updates it in place: the store keeps its first [`KEPT_SYMBOLS`] current as
//! bundles come and go, and a session with few differences costs no pass over the store.
//!
//! Keys are a mix of the first 8 bytes of the bundle id ([`sync_key`]), the same in every
//! session. The exact mapping, checksum and symbol packing are normative: SPEC.md §11.3, with
//! test vectors in `sync.json`.
//!
//! This module knows nothing of bundles beyond their ids, nor of sessions or messages: the
//! store uses it to keep its symbols current and [`crate::sync`] to reconcile, and it depends
//! on neither of them.

use crate::objects::Hash;
use std::sync::Arc;

/// Coded symbols a store keeps current (enough to decode about 80 differences without a
/// pass over the store).
pub const KEPT_SYMBOLS: usize = 128;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn checksum(key: u64) -> u64 {
    let mut s = key ^ 0x6D65_7368_7061_7921;
    splitmix(&mut s)
}

/// The indices of the coded symbols an item is part of: 0, then a sparser and sparser
/// sequence (item in symbol `i` with probability about `1 / (1 + i/2)`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mapping {
    state: u64,
    pub(crate) index: u64,
}

impl Mapping {
    pub(crate) fn new(key: u64) -> Self {
        Self {
            state: key,
            index: 0,
        }
    }

    // f64 arithmetic here is exact where it must be (u64 → f64 of 53-bit values) and IEEE
    // correctly rounded elsewhere, so every implementation computes the same indices.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    pub(crate) fn advance(&mut self) {
        let r = splitmix(&mut self.state);
        let u = ((r >> 11) as f64 + 1.0) / 9_007_199_254_740_992.0;
        let gap = ((self.index as f64 + 1.5) * (1.0 / u.sqrt() - 1.0)).ceil();
        let gap = if gap >= 1.8e19 { u64::MAX } else { gap as u64 };
        self.index = self.index.saturating_add(gap.max(1));
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Symbol {
    count: i64,
    key: u64,
    check: u64,
}

impl Symbol {
    pub(crate) fn add(&mut self, key: u64, sign: i64) {
        self.count += sign;
        self.key ^= key;
        self.check ^= checksum(key);
    }

    fn pure(&self) -> Option<i64> {
        ((self.count == 1 || self.count == -1) && checksum(self.key) == self.check)
            .then_some(self.count)
    }

    fn is_zero(&self) -> bool {
        *self == Symbol::default()
    }

    /// Appends the packed symbol (SPEC.md §11.3).
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key.to_le_bytes());
        out.extend_from_slice(&self.check.to_le_bytes());
        // Zigzag, then LEB128.
        #[allow(clippy::cast_sign_loss)]
        let mut z = ((self.count << 1) ^ (self.count >> 63)) as u64;
        loop {
            let b = u8::try_from(z & 0x7f).expect("7 bits");
            z >>= 7;
            if z == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }

    /// Reads one packed symbol off the front of `bytes`.
    pub(crate) fn read(bytes: &mut &[u8]) -> Option<Self> {
        if bytes.len() < 17 {
            return None;
        }
        let key = u64::from_le_bytes(bytes[..8].try_into().ok()?);
        let check = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
        *bytes = &bytes[16..];
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = bytes.split_first()?;
            *bytes = rest;
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                #[allow(clippy::cast_possible_wrap)]
                let count = ((z >> 1) as i64) ^ -((z & 1) as i64);
                return Some(Self { count, key, check });
            }
        }
        None
    }
}

/// Produces a set's coded symbols, in index order, a batch at a time.
#[derive(Debug)]
pub(crate) struct Encoder {
    items: Vec<(u64, Mapping)>,
    produced: u64,
}

impl Encoder {
    /// An encoder for the set of `keys`, before its first symbol.
    pub(crate) fn new(keys: impl Iterator<Item = u64>) -> Self {
        Self {
            items: keys.map(|k| (k, Mapping::new(k))).collect(),
            produced: 0,
        }
    }

    /// The next `n` symbols.
    pub(crate) fn produce(&mut self, n: usize) -> Vec<Symbol> {
        let start = self.produced;
        let end = start + n as u64;
        let mut out = vec![Symbol::default(); n];
        for (key, m) in &mut self.items {
            while m.index < end {
                out[usize::try_from(m.index - start).expect("within batch")].add(*key, 1);
                m.advance();
            }
        }
        self.produced = end;
        out
    }
}

/// The responder's side: the initiator's symbols minus its own, peeled.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// Our first symbols, from the store.
    head: Vec<Symbol>,
    /// Our encoder for the symbols after those, made when needed.
    own: Option<Encoder>,
    cells: Vec<Symbol>,
    /// Keys found, with +1 (only the initiator has it) or -1 (only we have it), and where
    /// their mapping continues.
    found: Vec<(u64, i64, Mapping)>,
}

impl Decoder {
    /// A decoder whose own first symbols are `head` (the store's kept ones); the symbols
    /// after those are made from the key index when the peer's go further.
    pub(crate) fn new(head: Vec<Symbol>) -> Self {
        Self {
            head,
            own: None,
            cells: Vec::new(),
            found: Vec::new(),
        }
    }

    /// Takes the peer's next symbols (`theirs`, continuing the sequence), subtracts ours for
    /// the same indices and peels what it can.
    pub(crate) fn add(&mut self, theirs: &[Symbol], keys: &KeyIndex) {
        let start = self.cells.len();
        let n = theirs.len();
        let head_len = self.head.len();
        let from_head = head_len.saturating_sub(start).min(n);
        let mut mine: Vec<Symbol> =
            self.head[start.min(head_len)..start.min(head_len) + from_head].to_vec();
        if from_head < n {
            let enc = self.own.get_or_insert_with(|| {
                let mut e = Encoder::new(keys.keys());
                e.produce(head_len);
                e
            });
            mine.extend(enc.produce(n - from_head));
        }
        for (t, m) in theirs.iter().zip(&mine) {
            self.cells.push(Symbol {
                count: t.count.wrapping_sub(m.count),
                key: t.key ^ m.key,
                check: t.check ^ m.check,
            });
        }
        let end = self.cells.len() as u64;
        for (key, sign, m) in &mut self.found {
            while m.index < end {
                self.cells[usize::try_from(m.index).expect("index")].add(*key, -*sign);
                m.advance();
            }
        }
        let mut queue: Vec<usize> = (start..self.cells.len())
            .filter(|&j| self.cells[j].pure().is_some())
            .collect();
        while let Some(j) = queue.pop() {
            let Some(sign) = self.cells[j].pure() else {
                continue;
            };
            let key = self.cells[j].key;
            let mut m = Mapping::new(key);
            while m.index < end {
                let i = usize::try_from(m.index).expect("index");
                self.cells[i].add(key, -sign);
                if self.cells[i].pure().is_some() {
                    queue.push(i);
                }
                m.advance();
            }
            self.found.push((key, sign, m));
        }
    }

    /// True once every cell taken is zero: both differences are known.
    pub(crate) fn done(&self) -> bool {
        self.cells.iter().all(Symbol::is_zero)
    }

    /// How many of the peer's symbols it has taken.
    pub(crate) fn taken(&self) -> usize {
        self.cells.len()
    }

    /// Takes the keys found so far, each with +1 (only the peer has it) or -1 (only we do).
    pub(crate) fn take_found(&mut self) -> Vec<(u64, i64)> {
        std::mem::take(&mut self.found)
            .into_iter()
            .map(|(key, sign, _)| (key, sign))
            .collect()
    }
}

/// The sync key of bundle `id` (SPEC.md §11.3).
pub fn sync_key(id: &Hash) -> u64 {
    key_of(id)
}

/// The indices below `below` of the coded symbols that contain `key` (SPEC.md §11.3).
pub fn symbol_indices(key: u64, below: u64) -> Vec<u64> {
    let mut m = Mapping::new(key);
    let mut out = Vec::new();
    while m.index < below {
        out.push(m.index);
        m.advance();
    }
    out
}

/// The first `n` coded symbols of a set of keys, packed as on the wire (SPEC.md §11.3).
pub fn coded_symbols(keys: &[u64], n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for s in Encoder::new(keys.iter().copied()).produce(n) {
        s.write(&mut out);
    }
    out
}

/// A session's keys, sorted: the store's as the session opened.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex(Arc<Vec<u64>>);

impl KeyIndex {
    /// An index over `keys`, sorted (as the store's `sync_entries` lists them). The ids they
    /// stand for are the store's to tell (`BundleStore::sync_id`).
    pub(crate) fn new(keys: Arc<Vec<u64>>) -> Self {
        Self(keys)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().copied()
    }

    pub(crate) fn contains_key(&self, key: u64) -> bool {
        self.0.binary_search(&key).is_ok()
    }
}

pub(crate) fn key_of(id: &Hash) -> u64 {
    // Bundle ids are SHA-256 outputs, so their first 8 bytes are uniform, and aiming a bundle
    // at someone else's prefix is a 64-bit second preimage. Keys need no per-session salt, so
    // the store keeps them, and the first symbols, up to date as bundles come and go.
    let mut state = u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"));
    splitmix(&mut state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn symbols_round_trip_through_their_packing() {
        for count in [0, 1, -1, 63, -64, 1 << 40, i64::MIN, i64::MAX] {
            let s = Symbol {
                count,
                key: 7,
                check: 9,
            };
            let mut out = Vec::new();
            s.write(&mut out);
            let mut slice = out.as_slice();
            assert_eq!(Symbol::read(&mut slice), Some(s));
            assert!(slice.is_empty());
        }
    }

    #[test]
    fn the_decoder_finds_both_differences() {
        let a: Vec<u64> = (0..5000).map(|i| i * 7 + 1).collect();
        let mut b: Vec<u64> = a[30..].to_vec();
        b.extend((0..70).map(|i| 1_000_000 + i));
        let mut enc = Encoder::new(a.iter().copied());
        let mut dec = Decoder {
            head: Vec::new(),
            own: Some(Encoder::new(b.iter().copied())),
            cells: Vec::new(),
            found: Vec::new(),
        };
        let mut sent = 0;
        loop {
            dec.add(&enc.produce(10), &KeyIndex::default());
            sent += 10;
            if dec.done() {
                break;
            }
            assert!(sent < 1000, "does not converge");
        }
        let only_a: BTreeSet<u64> = dec.found.iter().filter(|f| f.1 > 0).map(|f| f.0).collect();
        let only_b: BTreeSet<u64> = dec.found.iter().filter(|f| f.1 < 0).map(|f| f.0).collect();
        assert_eq!(only_a, a[..30].iter().copied().collect());
        assert_eq!(only_b, (0..70).map(|i| 1_000_000 + i).collect());
        assert!(sent <= 300, "100 differences took {sent} symbols");
    }
}
