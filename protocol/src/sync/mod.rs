//! Bundle sync between two peers in contact: reconcile the sets of bundle ids, then hand over
//! what each side lacks, most urgent first, within a byte budget.
//!
//! ## Reconciliation
//!
//! Set reconciliation with **rateless invertible Bloom lookup tables** (Yang, Gilad and
//! Alizadeh, "Practical Rateless Set Reconciliation", SIGCOMM 2024; the coder is
//! [`crate::riblt`]). Each side maps every bundle id to a 64-bit key. The initiator streams
//! *coded symbols* (count, XOR of keys, XOR of key checksums) over ever more indices; the
//! responder subtracts its own symbols and peels. Once every cell is zero the responder knows
//! both differences. The cost is about 1.4 to 2.5 symbols (17 bytes each) per difference
//! whatever the set sizes, and a few hundred bytes when the sets are equal.
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
//! paged; both sides then send what the other lacks in forwarding order
//! ([`crate::store::priority`]), filtered by the [`Routing`] choice, until each side is done
//! or its byte budget for the contact is spent. Each side closes with a signed [`HandOver`]
//! receipt for the bundles it took: the giver's proof of carriage.
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
//! 4. After each call, drain [`crate::store::BundleStore::take_changes`] to persist what arrived.
//!
//! A [`SyncError`] means the peer broke the protocol (or sent a forged bundle): drop the
//! session and the peer.
//!
//! ## Layout
//!
//! - `message`: the sync message and its wire rules;
//! - `session`: the session state machine (reconciliation in `session`, transfer and close
//!   in `session/transfer`);
//! - `contact`: runs a whole session between two stores in memory;
//! - the coder is [`crate::riblt`] and the hand-over receipt [`crate::objects::HandOver`], so
//!   the store can keep its coded symbols current without depending on sessions.

mod contact;
mod message;
mod session;

pub use crate::objects::{HandOver, HandOverBody, ids_digest};
pub use crate::riblt::{KEPT_SYMBOLS, coded_symbols, symbol_indices, sync_key};
pub use contact::{Contact, Party, contact};
pub use message::{Carried, MAX_SYNC, Step, SyncMessage};
pub use session::{
    FIRST_SYMBOLS, LIST_MAX, Order, Policy, Routing, Session, SessionConfig, Side, Spray, Stats,
    SyncError, kept_symbols,
};
