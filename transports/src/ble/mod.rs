//! Bluetooth LE: a Noise XX session over a reliable fragmenting framer, on GATT or on an
//! emulated connection. `docs/ble.md` is the interoperability reference.
//!
//! - [`framer`]: sans-IO fragmentation, reassembly, sequence numbers, acknowledgements and
//!   retransmission over packets of the negotiated size.
//! - [`session`]: sans-IO Noise XX handshake bound to the devices' Ed25519 keys, then
//!   encrypted requests and responses.
//! - [`link`]: the [`crate::Link`] that runs sessions over connections ([`link::Pipe`]s).
//! - [`emulated`]: an in-process connection with MTU, bit rate, latency, loss, corruption and
//!   disconnects, all seeded.
//! - `gatt` (feature `ble`, Linux): the GATT service on BlueZ through bluer (peripheral) and
//!   btleplug (central).

pub mod emulated;
pub mod framer;
#[cfg(all(feature = "ble", target_os = "linux"))]
pub mod gatt;
pub mod link;
pub mod session;

pub use link::{BleConfig, BleLink, PacketSink, Pipe};
pub use session::Role;

/// The meshpay GATT service.
pub const SERVICE_UUID: &str = "a8c30000-6d65-7368-7061-790000000001";
/// The characteristic the central writes packets to (write without response).
pub const RX_UUID: &str = "a8c30000-6d65-7368-7061-790000000002";
/// The characteristic the peripheral notifies packets on.
pub const TX_UUID: &str = "a8c30000-6d65-7368-7061-790000000003";
