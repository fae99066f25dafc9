//! # meshpay-node
//!
//! The `meshpay` daemon and command line: the driver of the protocol crate's device machine
//! (one task owns it, [`actor`]), wallet storage (SQLite, durable), the mesh store (sled),
//! encrypted keys, the libp2p and BLE links, the control socket, and the gateway rounds. With
//! the `settle` feature (on by default) the binary also runs an issuer's settlement server,
//! the `meshpay-settle` crate (its command line is the module `settle_cli`).

pub mod actor;
pub mod api;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod dev;
pub mod gateway;
pub mod issuer;
pub mod keystore;
pub mod mesh;
pub mod notices;
pub mod qr;
pub mod render;
#[cfg(feature = "settle")]
pub mod settle_cli;
pub mod startup;
pub mod store;
#[cfg(feature = "ui")]
pub mod ui;
