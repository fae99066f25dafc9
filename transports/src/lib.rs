//! # meshpay-transports
//!
//! Moves frames between meshpay devices. The libp2p (TCP/QUIC, Noise, Yamux) and Bluetooth LE
//! links land here with the node; until then this crate holds nothing but this notice, so the
//! workspace layout is fixed from the start.
