//! # meshpay-protocol
//!
//! The sans-IO core of meshpay: wire objects, keys and signatures, sealed settlement records,
//! and the rules of the three parties: the payer's [`wallet`], the payee's [`payee`] spend
//! book, and the issuer's settlement [`ledger`]. `protocol/SPEC.md` is the normative
//! description of the same things for other implementations.
//!
//! ## What this crate does not do
//!
//! No IO: no sockets, no files, no clocks, no threads, no ambient randomness. Every function
//! that needs the time takes it as an argument (wall-clock seconds, because times are signed
//! into IOUs); every function that needs randomness takes a generator (a CSPRNG for keys and
//! sealing, kept apart by its `CryptoRngCore` bound). The node and the simulator are two
//! drivers of the same code.
//!
//! ## Driving contract
//!
//! Each rule set is a value you feed and query; none of them persists anything. The pattern is
//! always **judge, persist, adopt**:
//!
//! - payer: [`wallet::Wallet::prepare`] → commit the IOU and the new head durably →
//!   [`wallet::Wallet::commit`] → send;
//! - payee: [`payee::SpendBook::check_payment`] → store IOU and sealed record durably →
//!   [`payee::SpendBook::record_payment`] → send the [`PaymentAck`];
//! - issuer: [`ledger::Ledger::apply`] on a working copy → commit the outcomes → answer with
//!   [`SettlementReceipt`]s.
//!
//! The module docs say exactly what to call after what.
//!
//! ## Encoding
//!
//! [`codec`] is the only module that knows CBOR. Everything on the wire goes through
//! [`codec::encode`] and [`codec::decode`], which enforces the per-type size limit and the
//! canonical-encoding rule.

pub mod bundle;
pub mod codec;
pub mod device;
pub mod iou;
pub mod keys;
pub mod ledger;
pub mod maxprop;
pub mod message;
pub mod objects;
pub mod payee;
pub mod prophet;
pub mod record;
pub mod riblt;
pub mod settlement;
pub mod store;
pub mod sync;
pub mod tags;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod wallet;

pub use codec::{DecodeError, Wire, decode, encode};
pub use iou::{FraudProof, Iou, IouDraft, SpendNotice, SpendStatement};
pub use keys::{DeviceKey, DeviceSecret, IssuerId, IssuerSecret, PrintableKey, SealKey, Signature};
pub use objects::{
    AllowanceBody, AllowanceCert, AllowanceId, Amount, DescriptorBody, Hash, IssuerDescriptor,
    Nonce, PaymentAck, PaymentRequest, Reason, ReceiptBatch, ReceiptStatus, RecordBatch,
    Revocation, RevocationReason, SettlementReceipt, UnixTime, WalletAction, WalletRequest,
};
pub use record::SealedRecord;
