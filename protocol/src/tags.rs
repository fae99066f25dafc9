//! Signature and hash domain tags (SPEC.md §3.3).
//!
//! Every signature is over `tag || 0x00 || bytes` and every tagged hash over the same input,
//! with one tag per object type, so a signature or hash made for one kind of object can never
//! be passed off as another's. The tags live in their own module because both the key types
//! ([`crate::keys`], which sign link keys) and the signed objects ([`crate::objects`]) name
//! them, and neither should depend on the other for it.

/// Issuer descriptor signature.
pub const DESCRIPTOR: &str = "meshpay/v1/issuer-descriptor";
/// Allowance certificate signature.
pub const ALLOWANCE: &str = "meshpay/v1/allowance";
/// Spend statement signature (IOUs and spend notices).
pub const SPEND: &str = "meshpay/v1/spend";
/// Digest of an IOU's fields other than allowance id and counter.
pub const IOU_REST: &str = "meshpay/v1/iou-rest";
/// Spend id (hash of a spend statement), which the next IOU names as `prev`.
pub const SPEND_ID: &str = "meshpay/v1/spend-id";
/// IOU id (hash of a whole encoded IOU), which is also its settlement record's id.
pub const IOU_ID: &str = "meshpay/v1/iou-id";
/// Payment ack signature.
pub const ACK: &str = "meshpay/v1/ack";
/// Settlement receipt signature.
pub const RECEIPT: &str = "meshpay/v1/receipt";
/// Revocation signature.
pub const REVOCATION: &str = "meshpay/v1/revocation";
/// Fraud proof id.
pub const FRAUD_ID: &str = "meshpay/v1/fraud-id";
/// A wallet's signed request to its issuer (allowance, statement).
pub const WALLET_REQUEST: &str = "meshpay/v1/wallet-request";
/// Hand-over receipt signature (proof of carriage).
pub const HAND_OVER: &str = "meshpay/v1/hand-over";
/// Digest of the bundle ids a hand-over receipt covers.
pub const HAND_OVER_IDS: &str = "meshpay/v1/hand-over-ids";
/// A device's endpoint in PRoPHET predictability vectors (a hash, not a signature).
pub const PROPHET_DEVICE: &str = "meshpay/v1/prophet-device";
/// An issuer's endpoint in PRoPHET predictability vectors (a hash, not a signature).
pub const PROPHET_ISSUER: &str = "meshpay/v1/prophet-issuer";
/// A message destination's acknowledgement that it took the message (MaxProp).
pub const MAXPROP_ACK: &str = "meshpay/v1/maxprop-ack";
/// A device's signature binding a link session's X25519 static key to it (BLE Noise).
pub const LINK_KEY: &str = "meshpay/v1/link-key";
/// HPKE `info` for sealed settlement records.
pub const SEALED_RECORD: &str = "meshpay/v1/sealed-record";
