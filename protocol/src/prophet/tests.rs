//! The update rules checked against values worked out by hand.

use super::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

const B: u64 = 2;
const C: u64 = 3;
const D: u64 = 4;
const ME: u64 = 1;

#[test]
fn encounters_and_ageing_follow_eq_1_and_2() {
    let mut t = Predictions::default();
    t.meet(&[B], &[], &[ME], 0);
    assert!(close(t.get(B), 0.75), "0 + (1 − 0) · 0.75");
    // Two units later: 0.75 · 0.98² = 0.7203, then 0.7203 + 0.2797 · 0.75 = 0.930075.
    t.meet(&[B], &[], &[ME], 60);
    assert!(close(t.get(B), 0.930_075), "{}", t.get(B));
    // 29 s is no whole unit; 30 s is one, and the rest of a unit carries over.
    t.age(89);
    assert!(close(t.get(B), 0.930_075));
    t.age(95);
    assert!(close(t.get(B), 0.930_075 * 0.98));
    t.age(119);
    assert!(close(t.get(B), 0.930_075 * 0.98));
    t.age(120);
    assert!(close(t.get(B), 0.930_075 * 0.98 * 0.98));
    assert_eq!(t.last_met(B), Some(60));
    // RFC 6693's δ = 0.01: 0.99 · 0.75 = 0.7425, then 0.7425 + (0.99 − 0.7425) · 0.75.
    let mut r = Predictions::new(ProphetParams {
        delta: 0.01,
        ..ProphetParams::default()
    });
    r.encounter(B, 0);
    assert!(close(r.get(B), 0.7425));
    r.encounter(B, 0);
    assert!(close(r.get(B), 0.928_125));
}

#[test]
fn transitivity_follows_eq_3_in_both_forms() {
    let theirs_b = [(ME, 0.9), (C, 0.5)];
    let theirs_d = [(C, 0.8)];
    let mut add = Predictions::default();
    add.meet(&[B], &theirs_b, &[ME], 0);
    // P(a,c) = 0 + 1 · 0.75 · 0.5 · 0.25; the node's own entry is left out.
    assert!(close(add.get(C), 0.093_75));
    assert!(close(add.get(ME), 0.0));
    add.meet(&[D], &theirs_d, &[ME], 0);
    // 0.09375 + 0.90625 · 0.75 · 0.8 · 0.25 = 0.2296875.
    assert!(close(add.get(C), 0.229_687_5), "{}", add.get(C));
    let mut max = Predictions::new(ProphetParams {
        transitivity: Transitivity::Max,
        ..ProphetParams::default()
    });
    max.meet(&[B], &theirs_b, &[ME], 0);
    max.meet(&[D], &theirs_d, &[ME], 0);
    // max(0.09375, 0.75 · 0.8 · 0.25) = 0.15.
    assert!(close(max.get(C), 0.15));
}

#[test]
fn a_gateway_is_met_as_its_issuers_too() {
    let issuer = 77;
    let mut t = Predictions::default();
    t.meet(&[B, issuer], &[], &[ME], 0);
    assert!(close(t.get(B), 0.75));
    assert!(close(t.get(issuer), 0.75));
}

#[test]
fn the_vector_is_aged_capped_to_the_highest_and_ascending() {
    let mut t = Predictions::default();
    t.encounter(B, 0);
    t.age(0);
    // Packed: the endpoint, then 0.75 · 2^32 = 0xC000_0000; a unit later, 0.735 · 2^32.
    let v = t.vector(0);
    assert_eq!(v.len(), PREDICTION_LEN);
    assert_eq!(unpack(&v), vec![(B, 0.75)]);
    assert_eq!(&v[8..], &0xC000_0000_u32.to_le_bytes());
    assert_eq!(&t.vector(30)[8..], &to_wire(0.735).to_le_bytes());
    // 200 endpoints with rising predictabilities: the 96 highest go, in endpoint order.
    let theirs: Vec<(u64, f64)> = (0..200u64)
        .map(|i| (1000 - i, f64::from(u32::try_from(i + 1).unwrap()) / 256.0))
        .collect();
    let mut many = Predictions::default();
    many.meet(&[B], &theirs, &[ME], 0);
    let sent = unpack(&many.vector(0));
    assert_eq!(sent.len(), MAX_PREDICTIONS);
    assert!(sent.windows(2).all(|w| w[0].0 < w[1].0));
    // The peer itself (0.75) and endpoints 801..=895 (the highest 95 through the peer).
    assert_eq!(sent[0].0, B);
    assert_eq!(sent[1].0, 801);
    assert_eq!(sent[95].0, 895);
}

#[test]
fn endpoints_of_devices_and_issuers_differ() {
    let k = [7u8; 32];
    assert_ne!(
        device_endpoint(&DeviceKey(k)),
        issuer_endpoint(&IssuerId(k))
    );
}

#[test]
fn a_table_keeps_the_likeliest_endpoints_up_to_its_cap() {
    // 50 peers each name 96 new endpoints, peer k's all at (k + 1) / 64: 4,800 + 50 in all.
    let mut t = Predictions::default();
    for k in 0..50u64 {
        let theirs: Vec<(u64, f64)> = (0..96)
            .map(|i| {
                (
                    10_000 + k * 96 + i,
                    f64::from(u32::try_from(k + 1).unwrap()) / 64.0,
                )
            })
            .collect();
        t.meet(&[1_000 + k], &theirs, &[ME], 0);
    }
    assert_eq!(t.len(), MAX_ENDPOINTS);
    // The 50 peers (0.75 each) stay; the endpoints of the first peers, the least likely, go.
    assert!(close(t.get(1_000), 0.75));
    assert!(close(t.get(10_000), 0.0));
    assert!(t.get(10_000 + 49 * 96) > 0.0);
}
