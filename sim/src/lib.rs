//! # meshpay-sim
//!
//! The network simulator: a deterministic discrete-event engine that runs the protocol
//! crate's state machines on a virtual clock. It is built after the store-and-forward sync
//! machine it drives; until then this crate holds nothing but this notice.
