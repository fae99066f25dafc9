//! # meshpay-sim
//!
//! A deterministic discrete-event simulator of the meshpay mesh for researchers: how fast do
//! records and messages cross a network of people who meet now and then, and which routing
//! wins. Every simulated node runs the protocol crate's own bundle store and sync session
//! (`meshpay_protocol::store`, `meshpay_protocol::sync`), not a model of them; the engine
//! only decides who meets whom, and when each sync message lands over the nodes' radios.
//!
//! - [`scenario`]: TOML scenario files.
//! - [`mobility`]: random waypoint, random walk and market-day contacts.
//! - [`map`]: shortest-path movement on road maps in The ONE's WKT files.
//! - [`trace`]: The ONE's connection and message-creation formats, in and out.
//! - [`engine`]: the event loop and its model of a contact.
//! - [`market`]: the payments workload: wallets, spend books, the issuer's ledger, clones.
//! - [`report`]: The ONE's `MessageStatsReport` statistics, JSON and CSV.
//! - [`one_reports`]: The ONE's per-message, contact-time and event-log reports, in its text
//!   formats.
//! - [`plot`]: SVG charts of delivery over time and the latency CDF.
//!
//! One seed reproduces a run byte for byte: there is no wall-clock read and no ambient
//! randomness anywhere in a run.

pub mod clock;
pub mod engine;
pub mod groups;
mod kinetic;
pub mod map;
pub mod market;
pub mod mobility;
pub mod one_reports;
pub mod plot;
pub mod report;
pub mod scenario;
mod setup;
pub mod trace;

pub use engine::{Outcome, Sim};
pub use report::Stats;
pub use scenario::Scenario;
