//! Bundle sync between two stores: reconciliation to the union whatever the contact's length
//! and budget, forwarding order, purge, routing, fork detection and hand-over receipts.

use meshpay_protocol::bundle::{Bundle, BundleKind, Content};
use meshpay_protocol::store::{Admission, BundleStore, Origin, StoreConfig};
use meshpay_protocol::sync::{Contact, Party, SyncError, contact};
use meshpay_protocol::testkit::{
    T0, allowance, device, issuer, pay, plain_message, receipt_bundle, request, sealed,
    session_config, wallet,
};
use meshpay_protocol::{Hash, ReceiptStatus, SettlementReceipt};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn store_with(ids: impl IntoIterator<Item = u64>) -> BundleStore {
    let mut s = BundleStore::new(StoreConfig::default());
    for i in ids {
        let b = receipt_bundle(i);
        assert!(matches!(
            s.insert(b.bytes(), Origin::Local, 0, T0),
            Admission::Added(_)
        ));
    }
    s
}

fn ids(s: &BundleStore) -> BTreeSet<Hash> {
    s.ids().copied().collect()
}

/// A contact between device 1 (`a`, initiator) and device 2 (`b`), both epidemic with `budget`.
fn meet(
    a: &mut BundleStore,
    b: &mut BundleStore,
    budget: u64,
    max: u32,
    salt: u64,
) -> Result<Contact, SyncError> {
    let (ka, kb) = (device(1), device(2));
    contact(
        Party {
            store: a,
            cfg: session_config(1, 2, budget),
            key: &ka,
        },
        Party {
            store: b,
            cfg: session_config(2, 1, budget),
            key: &kb,
        },
        salt,
        max,
    )
}

fn sync(a: &mut BundleStore, b: &mut BundleStore, budget: u64, max: u32, salt: u64) -> bool {
    meet(a, b, budget, max, salt)
        .expect("honest peers")
        .completed
}

#[test]
fn sizes_and_round_trips_for_common_cases() {
    // (shared, only in a, only in b)
    for (shared, only_a, only_b) in [
        (0, 0, 0),
        (0, 10, 0),
        (0, 0, 10),
        (10, 3, 3),
        (500, 0, 0),
        (500, 40, 60),
        (3000, 0, 500),
    ] {
        let mut a = store_with((0..shared).chain(10_000..10_000 + only_a));
        let mut b = store_with((0..shared).chain(20_000..20_000 + only_b));
        let union: BTreeSet<Hash> = ids(&a).union(&ids(&b)).copied().collect();
        assert!(sync(&mut a, &mut b, u64::MAX, u32::MAX, 42));
        assert_eq!(ids(&a), union, "{shared}/{only_a}/{only_b}");
        assert_eq!(ids(&b), union, "{shared}/{only_a}/{only_b}");
    }
}

#[test]
fn reconciliation_of_equal_sets_is_small() {
    let mut a = store_with(0..2000);
    let mut b = store_with(0..2000);
    let c = meet(&mut a, &mut b, u64::MAX, u32::MAX, 7).expect("honest");
    let s = c.initiator.stats();
    assert!(c.completed);
    assert!(s.bytes_sent + s.bytes_received < 1024, "{s:?}");
    assert_eq!(s.reconcile_round_trips, 1);
    assert!(c.initiator.proof().is_none(), "nothing was handed over");
}

#[test]
fn urgent_bundles_go_first_and_the_budget_holds() {
    let iss = issuer();
    let alice = device(1);
    let mut w = wallet([allowance(&iss, 1, &alice, 1_000_000)]);
    let mut a = BundleStore::new(StoreConfig::default());
    for n in 1..=20u8 {
        let iou = pay(&mut w, &alice, &request(&device(2), 10, n));
        let b = Bundle::new(Content::Record(sealed(&iss, &iou)));
        assert!(matches!(
            a.insert(b.bytes(), Origin::Local, 0, T0),
            Admission::Added(_)
        ));
    }
    let receipt = receipt_bundle(1);
    assert!(matches!(
        a.insert(receipt.bytes(), Origin::Local, 0, T0),
        Admission::Added(_)
    ));
    let mut b = BundleStore::new(StoreConfig::default());
    // Room for the receipt and two records.
    let budget = u64::from(receipt.meta().size) + 2 * 330;
    let c = meet(&mut a, &mut b, budget, u32::MAX, 1).expect("honest");
    assert!(c.completed);
    assert_eq!(b.len(), 3);
    assert_eq!(
        b.in_order().next().map(|e| e.meta.kind),
        Some(BundleKind::Receipt)
    );
    // The taker's signed receipt covers exactly what was handed over.
    let proof = c.initiator.proof().expect("hand-over receipt");
    assert_eq!(proof.body().count, 3);
    assert_eq!(proof.body().taker, device(2).public());
    assert!(proof.verify().is_ok());
    // A second contact carries on where the budget stopped.
    assert!(sync(&mut a, &mut b, u64::MAX, u32::MAX, 2));
    assert_eq!(b.len(), 21);
}

/// Hand-over receipts leave plain messages out, whether the taker kept them or refused them:
/// a contact that moves only messages signs nothing, and one that moves receipts and messages
/// signs for the receipts alone, matching what the giver counts.
#[test]
fn hand_over_receipts_cover_all_but_plain_messages() {
    let carrying = StoreConfig {
        accept_messages: true,
        ..StoreConfig::default()
    };
    let messages: Vec<Bundle> = (0..3).map(|n| plain_message(3, n)).collect();
    let mut a = BundleStore::new(carrying.clone());
    for m in &messages {
        assert!(matches!(
            a.insert(m.bytes(), Origin::Local, 0, T0),
            Admission::Added(_)
        ));
    }
    let mut b = BundleStore::new(carrying.clone());
    let c = meet(&mut a, &mut b, u64::MAX, u32::MAX, 3).expect("honest");
    assert!(c.completed);
    assert_eq!(c.initiator.given().len(), 3);
    assert_eq!(b.len(), 3);
    assert!(c.initiator.proof().is_none(), "only messages moved");

    // Receipts and messages, to a taker that keeps both and to one that refuses messages.
    for taker in [carrying.clone(), StoreConfig::default()] {
        let mut a = BundleStore::new(carrying.clone());
        for m in (0..2).map(receipt_bundle).chain(messages.iter().cloned()) {
            assert!(matches!(
                a.insert(m.bytes(), Origin::Local, 0, T0),
                Admission::Added(_)
            ));
        }
        let keeps = taker.accept_messages;
        let mut b = BundleStore::new(taker);
        let c = meet(&mut a, &mut b, u64::MAX, u32::MAX, 4).expect("honest");
        assert!(c.completed);
        assert_eq!(c.initiator.given().len(), 5);
        assert_eq!(b.len(), if keeps { 5 } else { 2 });
        let proof = c.initiator.proof().expect("a receipt for the receipts");
        assert_eq!(proof.body().count, 2, "messages kept: {keeps}");
        let receipts: u64 = (0..2)
            .map(|i| u64::from(receipt_bundle(i).meta().size))
            .sum();
        assert_eq!(proof.body().bytes, receipts);
        assert!(proof.verify().is_ok());
    }
}

#[test]
fn a_receipt_purges_copies_along_a_line() {
    let iss = issuer();
    let alice = device(1);
    let mut w = wallet([allowance(&iss, 1, &alice, 1_000_000)]);
    let iou = pay(&mut w, &alice, &request(&device(2), 10, 1));
    let record = Bundle::new(Content::Record(sealed(&iss, &iou)));
    let mut line: Vec<BundleStore> = (0..4)
        .map(|_| BundleStore::new(StoreConfig::default()))
        .collect();
    assert!(matches!(
        line[0].insert(record.bytes(), Origin::Local, 0, T0),
        Admission::Added(_)
    ));
    for i in 0..3 {
        let (l, r) = line.split_at_mut(i + 1);
        assert!(sync(&mut l[i], &mut r[0], u64::MAX, u32::MAX, i as u64));
    }
    assert!(line.iter().all(|s| s.contains(&record.id())));
    // The gateway at the end gets the receipt; it flows back and every copy goes.
    let receipt = Bundle::new(Content::Receipt(SettlementReceipt::issue(
        &iss,
        iou.id(),
        ReceiptStatus::Settled,
        T0,
    )));
    assert!(matches!(
        line[3].insert(receipt.bytes(), Origin::Local, 0, T0),
        Admission::Added(_)
    ));
    for i in (0..3).rev() {
        let (l, r) = line.split_at_mut(i + 1);
        assert!(sync(
            &mut r[0],
            &mut l[i],
            u64::MAX,
            u32::MAX,
            10 + i as u64
        ));
    }
    for s in &line {
        assert!(!s.contains(&record.id()));
        assert!(s.is_settled(&issuer().id(), &iou.id()));
        assert_eq!(s.len(), 1, "only the receipt is left");
    }
}

#[test]
fn a_fork_met_in_the_mesh_becomes_a_proof_that_travels_first() {
    let iss = issuer();
    let alice = device(1);
    let cert = allowance(&iss, 1, &alice, 1000);
    let a_iou = pay(
        &mut wallet([cert.clone()]),
        &alice,
        &request(&device(2), 10, 1),
    );
    let c_iou = pay(
        &mut wallet([cert.clone()]),
        &alice,
        &request(&device(3), 20, 2),
    );
    let mut a = BundleStore::new(StoreConfig::default());
    let mut b = BundleStore::new(StoreConfig::default());
    let mut c = BundleStore::new(StoreConfig::default());
    a.insert(
        Bundle::notice(cert.clone(), a_iou.notice()).bytes(),
        Origin::Local,
        0,
        T0,
    );
    c.insert(
        Bundle::notice(cert.clone(), c_iou.notice()).bytes(),
        Origin::Local,
        0,
        T0,
    );
    assert!(sync(&mut a, &mut b, u64::MAX, u32::MAX, 1));
    assert!(sync(&mut b, &mut c, u64::MAX, u32::MAX, 2));
    // b and c now both hold both notices; c found the fork when b's notice arrived.
    let proof = c.in_order().next().expect("bundles");
    assert_eq!(proof.meta.kind, BundleKind::Fraud);
    assert!(sync(&mut c, &mut b, u64::MAX, u32::MAX, 3));
    assert!(sync(&mut b, &mut a, u64::MAX, u32::MAX, 4));
    for s in [&a, &b, &c] {
        assert_eq!(
            s.in_order().next().map(|e| e.meta.kind),
            Some(BundleKind::Fraud)
        );
    }
}

#[test]
fn a_peer_handing_over_a_forged_bundle_is_dropped() {
    let mut a = store_with(0..100);
    let mut b = store_with(50..150);
    // Forge: flip a byte of one of a's receipts' signatures, keep it in a's store as if valid.
    let forged = {
        let good = receipt_bundle(7);
        let mut bytes = good.bytes().to_vec();
        let n = bytes.len();
        bytes[n - 3] ^= 1;
        bytes
    };
    assert!(a.restore(&forged, Origin::Local, 0, 0));
    let err =
        meet(&mut a, &mut b, u64::MAX, u32::MAX, 3).expect_err("the forged receipt is caught");
    assert!(err.to_string().contains("bad bundle"), "{err}");
    assert!(
        !b.ids()
            .any(|id| *id == meshpay_protocol::bundle::bundle_id(&forged))
    );
}

#[test]
fn encoded_len_is_the_encoding_length() {
    use meshpay_protocol::sync::Session;
    // Every message of a few sessions of different shapes.
    for (a_n, b_n) in [(0u64, 0u64), (10, 300), (300, 10), (500, 520), (2000, 2000)] {
        let mut a = store_with(0..a_n);
        let mut b = store_with(a_n / 2..a_n / 2 + b_n);
        let (ka, kb) = (device(1), device(2));
        let (mut init, mut msg) = Session::initiate(session_config(1, 2, u64::MAX), &a, 5);
        assert_eq!(msg.encoded_len(), msg.encode().len());
        let (mut resp, mut answer) =
            Session::accept(session_config(2, 1, u64::MAX), &mut b, &msg).expect("honest");
        loop {
            assert_eq!(
                answer.encoded_len(),
                answer.encode().len(),
                "{:?}",
                answer.step()
            );
            let Some(next) = init.handle(&answer, &mut a, &ka).expect("honest") else {
                break;
            };
            msg = next;
            assert_eq!(msg.encoded_len(), msg.encode().len(), "{:?}", msg.step());
            answer = resp
                .handle(&msg, &mut b, &kb)
                .expect("honest")
                .expect("an answer");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Two random sets reconcile to their union, whatever the split: contacts broken off
    /// after a random number of messages, random budgets, then one whole contact.
    #[test]
    fn two_random_sets_reconcile_to_their_union(
        a_set in prop::collection::btree_set(0u64..600, 0..300),
        b_set in prop::collection::btree_set(0u64..600, 0..300),
        contacts in prop::collection::vec((2u32..40, 1024u64..20_000, any::<u64>(), any::<bool>()), 0..6),
    ) {
        let mut a = store_with(a_set.iter().copied());
        let mut b = store_with(b_set.iter().copied());
        let union: BTreeSet<Hash> = ids(&a).union(&ids(&b)).copied().collect();
        for (max, budget, salt, flip) in contacts {
            let before = (ids(&a), ids(&b));
            if flip { sync(&mut b, &mut a, budget, max, salt); } else { sync(&mut a, &mut b, budget, max, salt); }
            // Nothing is lost on a broken contact.
            prop_assert!(ids(&a).is_superset(&before.0));
            prop_assert!(ids(&b).is_superset(&before.1));
        }
        prop_assert!(sync(&mut a, &mut b, u64::MAX, u32::MAX, 99));
        prop_assert_eq!(ids(&a), union.clone());
        prop_assert_eq!(ids(&b), union);
    }
}

/// The store keeps its first coded symbols up to date as bundles come and go: after any
/// sequence of insertions, purges and expiries they equal the symbols computed afresh.
#[test]
fn the_stores_first_symbols_follow_its_contents() {
    use meshpay_protocol::sync::{FIRST_SYMBOLS, coded_symbols, sync_key};
    let mut s = BundleStore::new(StoreConfig::default());
    let mut rng = 0x1234_5678_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut checked = 0;
    for round in 0..600u64 {
        let i = next() % 200;
        let b = receipt_bundle(i);
        if s.contains(&b.id()) && next() % 3 == 0 {
            s.remove(&b.id());
        } else {
            s.insert(b.bytes(), Origin::Local, 0, T0);
        }
        if round % 50 == 49 {
            let keys: Vec<u64> = s.ids().map(sync_key).collect();
            let (_, open) =
                meshpay_protocol::sync::Session::initiate(session_config(1, 2, 0), &s, 0);
            if keys.len() > meshpay_protocol::sync::LIST_MAX {
                assert_eq!(
                    open.symbols.0,
                    coded_symbols(&keys, FIRST_SYMBOLS),
                    "round {round}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "the set was too small to check: {checked}");
}

/// Genuine sealed records, paid by device 1 to device 2 under the test issuer.
fn genuine_records(n: u8) -> Vec<Bundle> {
    let iss = issuer();
    let alice = device(1);
    let mut w = wallet([allowance(&iss, 1, &alice, 1_000_000)]);
    (1..=n)
        .map(|i| {
            let iou = pay(&mut w, &alice, &request(&device(2), 10, i));
            Bundle::new(Content::Record(sealed(&iss, &iou)))
        })
        .collect()
}

/// A forged record: random-looking ciphertext under the test issuer's id, claiming to be the
/// oldest there is (`created` 0) and to live a year. Carriers cannot tell it from a genuine one.
fn forged_record(n: u64) -> Bundle {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id[8] = 0xf0;
    let mut ct = vec![0u8; 320];
    // Bytes that differ per record: the low byte of n, then a running count.
    let mut x = n.to_le_bytes()[0];
    for b in &mut ct {
        *b = x;
        x = x.wrapping_mul(31).wrapping_add(1);
    }
    Bundle::new(Content::Record(meshpay_protocol::SealedRecord {
        version: 1,
        id: Hash(id),
        issuer: issuer().id(),
        created: 0,
        expires: T0 + 365 * 86_400,
        enc: meshpay_protocol::record::EncapsulatedKey([7; 32]),
        ciphertext: meshpay_protocol::codec::Blob(ct),
    }))
}

/// A carrier of 4 MiB holding 40 genuine records for others meets forged records from four
/// fresh identities, 1 MiB each, all claiming to be the oldest: eviction ranks by what the
/// carrier knows, and the genuine records all stay. A fifth honest origin still gets room.
#[test]
fn forged_records_from_fresh_identities_do_not_push_out_genuine_ones() {
    let mut carrier = BundleStore::new(StoreConfig {
        max_bytes: 4 << 20,
        max_bundles: 1_000_000,
        max_bytes_per_origin: 1 << 20,
        issuers: None,
        bodies_in_memory: true,
        accept_messages: false,
    });
    let genuine = genuine_records(41);
    for (i, b) in genuine[..40].iter().enumerate() {
        let origin = Origin::Peer([if i % 2 == 0 { 1 } else { 2 }; 32]);
        assert!(matches!(
            carrier.insert(b.bytes(), origin, 0, T0),
            Admission::Added(_)
        ));
    }
    let (mut n, mut taken) = (0, 0u64);
    for attacker in 0..4u8 {
        let origin = Origin::Peer([100 + attacker; 32]);
        // Each identity sends until its quota refuses it, and well past the store's size.
        for _ in 0..4000 {
            n += 1;
            let b = forged_record(n);
            match carrier.insert(b.bytes(), origin, 0, T0) {
                Admission::Added(_) => taken += u64::from(b.meta().size),
                Admission::Full => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(
        taken > 3 << 20,
        "the forged records were taken ({taken} bytes)"
    );
    assert!(carrier.bytes() <= 4 << 20);
    let kept = genuine[..40]
        .iter()
        .filter(|b| carrier.contains(&b.id()))
        .count();
    assert!(kept >= 36, "only {kept} of 40 genuine records stayed");
    assert_eq!(kept, 40);
    // A light origin still gets in: fairness takes the room from the heaviest.
    assert!(matches!(
        carrier.insert(genuine[40].bytes(), Origin::Peer([9; 32]), 0, T0),
        Admission::Added(_)
    ));
    // A receipt (signed by the issuer) takes the place of a record when full.
    let receipt = receipt_bundle(77);
    assert!(matches!(
        carrier.insert(receipt.bytes(), Origin::Peer([100; 32]), 0, T0),
        Admission::Added(_)
    ));
    assert_eq!(
        genuine[..40]
            .iter()
            .filter(|b| carrier.contains(&b.id()))
            .count(),
        40
    );
}

/// A full carrier says so in its room hint: a giver does not hand it records it would refuse,
/// at this contact or the next; receipts still go.
#[test]
fn a_full_carrier_is_not_offered_what_it_would_refuse() {
    let config = StoreConfig {
        max_bytes: 64 << 10,
        max_bundles: 1_000_000,
        max_bytes_per_origin: 64 << 10,
        issuers: None,
        bodies_in_memory: true,
        accept_messages: false,
    };
    let mut carrier = BundleStore::new(config.clone());
    let mut n = 0;
    loop {
        n += 1;
        match carrier.insert(forged_record(n).bytes(), Origin::Local, 0, T0) {
            Admission::Added(_) => {}
            Admission::Full => break,
            other => panic!("{other:?}"),
        }
    }
    let mut giver = BundleStore::new(StoreConfig::default());
    let genuine = genuine_records(40);
    for b in &genuine {
        assert!(matches!(
            giver.insert(b.bytes(), Origin::Local, 0, T0),
            Admission::Added(_)
        ));
    }
    let receipt = receipt_bundle(5);
    giver.insert(receipt.bytes(), Origin::Local, 0, T0);
    for round in 0..2 {
        let c = meet(&mut giver, &mut carrier, u64::MAX, u32::MAX, round).expect("honest");
        assert!(c.completed);
        // Only the receipt goes (urgent kinds always do; this carrier is full of its own).
        assert!(
            c.initiator.given().iter().all(|id| *id == receipt.id()),
            "round {round}: {:?}",
            c.initiator.given()
        );
        assert!(c.initiator.held_back() >= 40, "round {round}");
        assert!(c.responder.admitted().is_empty());
    }
    // To a carrier with room, the records go.
    let mut roomy = BundleStore::new(StoreConfig::default());
    let c = meet(&mut giver, &mut roomy, u64::MAX, u32::MAX, 9).expect("honest");
    assert_eq!(c.initiator.held_back(), 0);
    assert!(genuine.iter().all(|b| roomy.contains(&b.id())));
}
