//! # meshpay-node
//!
//! The `meshpay` daemon and command line: wallet storage (SQLite, durable), the mesh store
//! (sled), encrypted keys, the libp2p link, the control socket, and the payment logic that
//! drives the protocol crate's wallet and spend-book rules.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod dev;
pub mod httpd;
pub mod issuer;
pub mod keystore;
pub mod mesh;
pub mod qr;
pub mod settle;
pub mod store;
