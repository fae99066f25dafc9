//! Simulated time: milliseconds from the start of a run, and the wall clock the devices see.

use meshpay_protocol::device::Now;

/// The simulated clock's origin, Unix seconds (2027-01-15T08:00:00Z).
pub const EPOCH: u64 = 1_800_000_000;

/// The time of a simulated instant `t_ms`, for a device.
pub fn now(t_ms: u64) -> Now {
    Now {
        mono: t_ms,
        unix: EPOCH + t_ms / 1000,
    }
}
