//! Property tests over every wire object: encodings round-trip, any flipped byte is caught,
//! and the size budget holds.

mod common;

use common::any_object;
use meshpay_protocol::testkit::{self, T0};
use meshpay_protocol::{AllowanceId, DeviceSecret, Hash, IouDraft, Nonce, PaymentAck, encode};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_object_round_trips(obj in any_object()) {
        prop_assert!(obj.round_trips(), "{obj:?}");
        if let Some(ok) = obj.accepts(&obj.bytes()) {
            prop_assert!(ok, "a fresh object must verify: {obj:?}");
        }
    }

    #[test]
    fn flipping_any_byte_breaks_decoding_or_verification(
        obj in any_object(),
        pos in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let mut bytes = obj.bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= mask;
        match obj.accepts(&bytes) {
            Some(accepted) => prop_assert!(!accepted, "byte {i} flipped by {mask:#04x} went unnoticed in {obj:?}"),
            // The payment request is unsigned: a flip may give another valid request, but must
            // never give the same one.
            None => prop_assert!(
                meshpay_protocol::decode::<meshpay_protocol::PaymentRequest>(&bytes).map(|r| encode(&r)) != Ok(obj.bytes())
            ),
        }
    }

    #[test]
    fn iou_fits_200_bytes(
        counter in 1..=u32::MAX,
        amount in 1..=u64::from(u32::MAX),
        extra in 0..=u64::from(u32::MAX),
        time in 0..=u64::from(u32::MAX),
        seed in any::<[u8; 32]>(),
    ) {
        let total = (amount + extra).min(u64::from(u32::MAX));
        let iou = IouDraft {
            allowance: AllowanceId([0xff; 16]),
            counter,
            amount: amount.min(total),
            total,
            prev: if counter == 1 { Hash::default() } else { Hash([0xff; 32]) },
            payee: DeviceSecret::from_seed(&seed).public(),
            nonce: Nonce([0xff; 16]),
            time,
        }
        .sign(&DeviceSecret::from_seed(&seed));
        prop_assert!(encode(&iou).len() <= 200, "{} bytes", encode(&iou).len());
    }
}

/// The whole first payment exchange (request, IOU, allowance certificate, ack) at its largest
/// for amounts below 2^32: four accepted issuers, an 80-byte memo, the longest currency code.
#[test]
fn first_exchange_fits_one_kib() {
    let issuer = testkit::issuer();
    let (alice, bob) = (testkit::device(1), testkit::device(2));
    let mut body = testkit::allowance(&issuer, 1, &alice, u64::from(u32::MAX))
        .body()
        .clone();
    body.currency = "MARKET-TOKEN".to_owned();
    body.valid_until = u64::from(u32::MAX);
    body.settle_by = u64::from(u32::MAX);
    let cert = meshpay_protocol::AllowanceCert::issue(&issuer, body);
    let mut req = testkit::request(&bob, u64::from(u32::MAX), 1);
    req.currency = "MARKET-TOKEN".to_owned();
    req.issuers = vec![issuer.id(); 4];
    req.memo = "m".repeat(80);
    req.expires = u64::from(u32::MAX);
    let wallet = testkit::wallet([cert.clone()]);
    let spend = wallet.prepare(&alice, &req, T0).expect("pays");
    let ack = PaymentAck::sign(&bob, spend.iou.id(), u64::from(u32::MAX));
    let sizes = [
        encode(&req).len(),
        encode(&spend.iou).len(),
        encode(&cert).len(),
        encode(&ack).len(),
    ];
    let total: usize = sizes.iter().sum();
    assert!(
        total <= 1024,
        "request, IOU, certificate, ack = {sizes:?} = {total} bytes"
    );
    assert!(sizes[1] <= 200);
}

/// Objects built from `Obj` are only useful if the strategy is not vacuous.
#[test]
fn strategies_make_every_kind() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..400 {
        let obj = any_object().new_tree(&mut runner).expect("value").current();
        seen.insert(std::mem::discriminant(&obj));
    }
    assert_eq!(seen.len(), 10);
}
