//! Deterministic keys and objects for tests, test vectors and examples.
//!
//! Everything here derives from fixed seeds: **never use it for money**. The issuer it makes
//! is a test issuer whose secret is public; no real issuer's key is involved, so nothing it
//! signs is accepted by a node that trusts only real issuers.

use crate::codec::VERSION;
use crate::iou::Iou;
use crate::keys::{DeviceSecret, IssuerSecret};
use crate::objects::{
    AllowanceBody, AllowanceCert, AllowanceId, Amount, DescriptorBody, IssuerDescriptor, Nonce,
    PaymentRequest, UnixTime,
};
use crate::wallet::{HeldAllowance, Wallet};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// A fixed "now": 2027-01-15T08:00:00Z.
pub const T0: UnixTime = 1_800_000_000;

/// One day in seconds.
pub const DAY: UnixTime = 86_400;

/// The test issuer's secret bytes (Ed25519 seed, then X25519 scalar).
pub const ISSUER_SEED: [u8; 64] = {
    let mut b = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        b[i] = if i < 32 { 0x11 } else { 0x22 };
        i += 1;
    }
    b
};

/// A device seed from a single byte (`[n; 32]`).
pub fn device(n: u8) -> DeviceSecret {
    DeviceSecret::from_seed(&[n; 32])
}

/// The test issuer.
pub fn issuer() -> IssuerSecret {
    IssuerSecret::from_bytes(&ISSUER_SEED)
}

/// The test issuer's descriptor.
pub fn descriptor(issuer: &IssuerSecret) -> IssuerDescriptor {
    IssuerDescriptor::issue(
        issuer,
        DescriptorBody {
            version: VERSION,
            issuer: issuer.id(),
            seal_key: issuer.seal_key(),
            name: "Test Market Association".to_owned(),
            currencies: vec!["KES".to_owned()],
            urls: vec!["https://settle.example/".to_owned()],
            valid_from: T0 - DAY,
            valid_until: T0 + 365 * DAY,
            max_allowance: 1_000_000,
            max_payment: 100_000,
        },
    )
}

/// An allowance of `limit` KES for `holder`, valid from `T0 - 1 day` for a week, settled by
/// two weeks, with per-payment maximum `limit`.
pub fn allowance(
    issuer: &IssuerSecret,
    id: u8,
    holder: &DeviceSecret,
    limit: Amount,
) -> AllowanceCert {
    AllowanceCert::issue(
        issuer,
        AllowanceBody {
            version: VERSION,
            id: AllowanceId([id; 16]),
            issuer: issuer.id(),
            holder: holder.public(),
            currency: "KES".to_owned(),
            limit,
            max_payment: limit,
            valid_from: T0 - DAY,
            valid_until: T0 + 7 * DAY,
            settle_by: T0 + 14 * DAY,
        },
    )
}

/// A request from `payee` for `amount` KES with nonce `[nonce; 16]`, expiring an hour after
/// `T0`.
pub fn request(payee: &DeviceSecret, amount: Amount, nonce: u8) -> PaymentRequest {
    PaymentRequest::new(payee.public(), amount, "KES", Nonce([nonce; 16]), T0 + 3600)
}

/// A wallet holding the given allowances, fresh (epoch 0, no sentinel).
pub fn wallet(certs: impl IntoIterator<Item = AllowanceCert>) -> Wallet {
    Wallet::open(0, certs.into_iter().map(HeldAllowance::new), None).0
}

/// Pays `request` from `wallet` at `T0` and commits the spend, returning the IOU.
pub fn pay(wallet: &mut Wallet, key: &DeviceSecret, request: &PaymentRequest) -> Iou {
    let spend = wallet
        .prepare(key, request, T0)
        .expect("test payment is within the allowance");
    wallet.commit(&spend);
    spend.iou
}

/// `iou` sealed to `issuer` at `T0`, expiring at the test allowances' settle-by time, with a
/// ChaCha20 generator seeded with the IOU id (so the same IOU always seals to the same bytes).
pub fn sealed(issuer: &IssuerSecret, iou: &Iou) -> crate::SealedRecord {
    crate::SealedRecord::seal(
        iou,
        issuer.id(),
        &issuer.seal_key(),
        T0,
        T0 + 14 * DAY,
        &mut ChaCha20Rng::from_seed(iou.id().0),
    )
    .expect("the test issuer's seal key is valid")
}

/// A plain message from device 1 to device `to`, valid for an hour from [`T0`], whose 10
/// bytes of payload are `fill`.
pub fn plain_message(to: u8, fill: u8) -> crate::bundle::Bundle {
    crate::bundle::Bundle::new(crate::bundle::Content::Message(Box::new(
        crate::bundle::PlainMessage {
            version: VERSION,
            from: device(1).public(),
            to: device(to).public(),
            created: T0,
            expires: T0 + 3600,
            payload: crate::codec::Blob(vec![fill; 10]),
        },
    )))
}

/// A final receipt bundle from the test issuer for a made-up record number `n`: cheap,
/// distinct bundles for sync tests and benchmarks.
pub fn receipt_bundle(n: u64) -> crate::bundle::Bundle {
    let mut record = [0u8; 32];
    record[..8].copy_from_slice(&n.to_le_bytes());
    crate::bundle::Bundle::new(crate::bundle::Content::Receipt(
        crate::SettlementReceipt::issue(
            &issuer(),
            crate::Hash(record),
            crate::ReceiptStatus::Settled,
            T0,
        ),
    ))
}

/// Session settings for a test contact between device `me` and device `peer` at `T0`.
pub fn session_config(me: u8, peer: u8, budget: u64) -> crate::sync::SessionConfig {
    crate::sync::SessionConfig {
        me: device(me).public(),
        peer: device(peer).public(),
        gateway_for: Vec::new(),
        routing: crate::sync::Routing::Epidemic,
        budget,
        policy: crate::sync::Policy::default(),
        encounter: true,
        now: T0,
    }
}

/// A decoder for one wire type, by name: the hostile-input tests and the fuzz targets run
/// every one of them.
pub type NamedDecoder = (&'static str, fn(&[u8]) -> Result<(), crate::DecodeError>);

/// Every wire object's decoder.
pub const DECODERS: &[NamedDecoder] = &[
    ("issuer_descriptor", |b| {
        crate::decode::<IssuerDescriptor>(b).map(drop)
    }),
    ("allowance_certificate", |b| {
        crate::decode::<AllowanceCert>(b).map(drop)
    }),
    ("payment_request", |b| {
        crate::decode::<PaymentRequest>(b).map(drop)
    }),
    ("iou", |b| crate::decode::<Iou>(b).map(drop)),
    ("spend_notice", |b| {
        crate::decode::<crate::SpendNotice>(b).map(drop)
    }),
    ("payment_ack", |b| {
        crate::decode::<crate::PaymentAck>(b).map(drop)
    }),
    ("fraud_proof", |b| {
        crate::decode::<crate::FraudProof>(b).map(drop)
    }),
    ("sealed_record", |b| {
        crate::decode::<crate::SealedRecord>(b).map(drop)
    }),
    ("settlement_receipt", |b| {
        crate::decode::<crate::SettlementReceipt>(b).map(drop)
    }),
    ("revocation", |b| {
        crate::decode::<crate::Revocation>(b).map(drop)
    }),
    ("wallet_request", |b| {
        crate::decode::<crate::WalletRequest>(b).map(drop)
    }),
    ("record_batch", |b| {
        crate::decode::<crate::RecordBatch>(b).map(drop)
    }),
    ("receipt_batch", |b| {
        crate::decode::<crate::ReceiptBatch>(b).map(drop)
    }),
    ("bundle", |b| crate::bundle::Bundle::decode(b).map(drop)),
    ("sync_message", |b| {
        crate::decode::<crate::sync::SyncMessage>(b).map(drop)
    }),
    ("link_request", |b| {
        crate::message::Request::decode(b).map(drop)
    }),
    ("link_response", |b| {
        crate::message::Response::decode(b).map(drop)
    }),
];

/// Runs the decoder named `name` (for fuzz targets). Unknown names decode nothing.
pub fn decode_named(name: &str, bytes: &[u8]) -> Option<Result<(), crate::DecodeError>> {
    DECODERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f(bytes))
}
