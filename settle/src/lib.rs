//! # meshpay-settle
//!
//! The settlement server: the issuer's side of meshpay. It holds the issuer's keys, keeps
//! accounts (double-entry, see [`db`]), locks escrow for allowances that wallets ask for online,
//! settles the sealed records gateways upload, and shows the issuer's staff what happens (the
//! issuer console, risk alerts). The `meshpay` binary serves it as
//! `meshpay settle serve` ([`serve::run`]); `docs/api.md` is the reference of its HTTP API.
//!
//! The rules of settlement are not here: they are the protocol crate's
//! [`meshpay_protocol::settlement`] (open, verify, judge) over its
//! [`meshpay_protocol::ledger::Ledger`], the same code the simulator settles with. This crate
//! adds what a server needs around them: storage, the CPU pool, limits and HTTP.
//!
//! ## Layout
//!
//! - [`Server`] ([`server`]): accounts, allowances, revocations, statements, escrow release;
//!   [`Server::settle`] ([`batch`]) settles an upload, phase by phase (open, prepare, load,
//!   judge, sign and write).
//! - [`db`]: every SQL statement, over SQLite or PostgreSQL.
//! - [`http`]: the axum routes and their OpenAPI description; [`httpd`]: serving them to
//!   strangers with connection limits and timeouts; [`limits`]: what one source may cost.
//! - [`metrics`]: the Prometheus counters; [`cpu`]: CPU work off the async workers.
//! - What the issuer watches ([`watch`]): the risk rules and their live signals ([`risk`]),
//!   offline exposure ([`exposure`]), and the live feed of settlement ([`live`]); the issuer
//!   console that shows them is [`http::console`].
//! - [`serve`]: running it all until shut down (`meshpay settle serve`).
//! - [`error`]: why a call failed, typed.
//!
//! ## Several servers, one record settled once
//!
//! Several servers may share one PostgreSQL database. Every write that settles or claims a
//! slot is conditional (`INSERT … ON CONFLICT DO NOTHING`, `UPDATE … WHERE settled = before`);
//! if another server got there first, the transaction rolls back and the batch is judged
//! again, so a record settles once whatever the number of servers and uploads.
//!
//! **One record never fails a batch.** Amounts are bounded on the wire
//! ([`meshpay_protocol::objects::MAX_AMOUNT`]), so no value of a valid record can overflow the
//! database; if a batch still fails in the database, it is split in halves and each half
//! judged alone, down to the single record that fails, which is answered `retry_later` while
//! the rest settle.

pub mod batch;
pub mod cpu;
pub mod db;
pub mod error;
pub mod exposure;
pub mod http;
pub mod httpd;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod risk;
pub mod serve;
pub mod server;
pub mod watch;

pub use error::{RequestError, ServerError};
pub use limits::JunkBudget;
pub use metrics::Metrics;
pub use risk::RiskRules;
pub use server::{Clock, Policy, REQUEST_WINDOW_SECS, Server, unix_now, user};
