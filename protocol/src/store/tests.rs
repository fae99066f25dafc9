use super::*;
use crate::ReceiptStatus;
use crate::objects::SettlementReceipt;
use crate::testkit::{T0, allowance, device, issuer, pay, request, sealed, wallet};

fn records(n: u8) -> Vec<Bundle> {
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

#[test]
fn a_final_receipt_purges_the_record_and_keeps_it_out() {
    let mut s = BundleStore::new(StoreConfig::default());
    let r = &records(1)[0];
    assert!(matches!(
        s.insert(r.bytes(), Origin::Peer([1; 32]), 0, T0),
        Admission::Added(_)
    ));
    assert_eq!(
        s.insert(r.bytes(), Origin::Peer([2; 32]), 0, T0),
        Admission::Duplicate
    );
    let subject = r.meta().subject.expect("record");
    let receipt = Bundle::new(Content::Receipt(SettlementReceipt::issue(
        &issuer(),
        subject,
        ReceiptStatus::Settled,
        T0,
    )));
    s.take_changes();
    assert!(matches!(
        s.insert(receipt.bytes(), Origin::Local, 0, T0),
        Admission::Added(_)
    ));
    let changes = s.take_changes();
    assert_eq!(changes.removed, vec![r.id()]);
    assert_eq!(changes.tombstoned.len(), 1);
    assert!(!s.contains(&r.id()));
    assert_eq!(
        s.insert(r.bytes(), Origin::Peer([1; 32]), 0, T0),
        Admission::Settled
    );
    // Tombstones go when the receipt expires.
    s.expire(receipt.meta().expires + 1);
    assert!(s.is_empty());
    assert!(!s.is_settled(&issuer().id(), &subject));
}

/// Anyone can make an issuer key. A receipt signed under another key for a genuine
/// record's id settles nothing of the genuine issuer's: the record stays and travels.
#[test]
fn a_receipt_under_another_issuer_purges_nothing() {
    let mut s = BundleStore::new(StoreConfig::default());
    let r = &records(1)[0];
    assert!(matches!(
        s.insert(r.bytes(), Origin::Peer([1; 32]), 0, T0),
        Admission::Added(_)
    ));
    let subject = r.meta().subject.expect("record");
    let forger = crate::IssuerSecret::from_bytes(&[0x5a; 64]);
    let forged = Bundle::new(Content::Receipt(SettlementReceipt::issue(
        &forger,
        subject,
        ReceiptStatus::Settled,
        T0,
    )));
    assert!(matches!(
        s.insert(forged.bytes(), Origin::Peer([2; 32]), 0, T0),
        Admission::Added(_)
    ));
    assert!(s.contains(&r.id()), "the forged receipt purged the record");
    assert!(!s.is_settled(&issuer().id(), &subject));
    assert!(s.is_settled(&forger.id(), &subject));
    // The genuine issuer's receipt does.
    let genuine = Bundle::new(Content::Receipt(SettlementReceipt::issue(
        &issuer(),
        subject,
        ReceiptStatus::Settled,
        T0,
    )));
    assert!(matches!(
        s.insert(genuine.bytes(), Origin::Peer([2; 32]), 0, T0),
        Admission::Added(_)
    ));
    assert!(!s.contains(&r.id()));
    assert!(s.is_settled(&issuer().id(), &subject));
}

/// A made-up issuer's certificate for a genuine allowance id, with notices and a fraud
/// proof under it, neither hides the genuine allowance's fork nor blocks its proof.
#[test]
fn forgeries_for_a_genuine_allowance_id_do_not_hide_its_fork() {
    let alice = device(1);
    let forger = crate::IssuerSecret::from_bytes(&[0x5a; 64]);
    let mallory = device(9);
    // Mallory, under her own issuer key, clones an allowance with the genuine id.
    let fake = allowance(&forger, 1, &mallory, 1000);
    let fa = pay(
        &mut wallet([fake.clone()]),
        &mallory,
        &request(&device(2), 10, 1),
    );
    let fb = pay(
        &mut wallet([fake.clone()]),
        &mallory,
        &request(&device(3), 20, 2),
    );
    let mut s = BundleStore::new(StoreConfig::default());
    for (n, o) in [(fa, 1u8), (fb, 2)] {
        let b = Bundle::notice(fake.clone(), n.notice());
        assert!(matches!(
            s.insert(b.bytes(), Origin::Peer([o; 32]), 0, T0),
            Admission::Added(_)
        ));
    }
    let proofs = |s: &BundleStore| {
        s.in_order()
            .filter(|e| e.meta.kind == BundleKind::Fraud)
            .map(|e| e.meta.issuer)
            .collect::<Vec<_>>()
    };
    assert_eq!(proofs(&s), vec![forger.id()]);
    // The genuine allowance, same id, forked by a clone of Alice's wallet.
    let cert = allowance(&issuer(), 1, &alice, 1000);
    let a = pay(
        &mut wallet([cert.clone()]),
        &alice,
        &request(&device(2), 10, 3),
    );
    let b = pay(
        &mut wallet([cert.clone()]),
        &alice,
        &request(&device(3), 20, 4),
    );
    for (n, o) in [(a, 3u8), (b, 4)] {
        let b = Bundle::notice(cert.clone(), n.notice());
        assert!(matches!(
            s.insert(b.bytes(), Origin::Peer([o; 32]), 0, T0),
            Admission::Added(_)
        ));
    }
    let mut found = proofs(&s);
    found.sort();
    let mut want = vec![forger.id(), issuer().id()];
    want.sort();
    assert_eq!(found, want, "the genuine fork has its own proof");
    for e in s.in_order().filter(|e| e.meta.kind == BundleKind::Fraud) {
        let b = Bundle::decode(&s.body(&e.meta.id).expect("held")).expect("decodes");
        assert_eq!(b.verify(T0), Ok(()), "every proof the store made holds");
    }
}

#[test]
fn quotas_per_origin_and_eviction_by_priority() {
    let rs = records(6);
    let size = u64::from(rs[0].meta().size);
    let mut s = BundleStore::new(StoreConfig {
        max_bytes: size * 4 + 16,
        max_bundles: 100,
        max_bytes_per_origin: size * 2 + 8,
        issuers: None,
        bodies_in_memory: true,
        accept_messages: false,
    });
    let (p, q) = (Origin::Peer([1; 32]), Origin::Peer([2; 32]));
    assert!(matches!(
        s.insert(rs[0].bytes(), p, 0, T0),
        Admission::Added(_)
    ));
    assert!(matches!(
        s.insert(rs[1].bytes(), p, 0, T0),
        Admission::Added(_)
    ));
    assert_eq!(s.insert(rs[2].bytes(), p, 0, T0), Admission::Full);
    assert!(matches!(
        s.insert(rs[2].bytes(), q, 0, T0),
        Admission::Added(_)
    ));
    assert!(matches!(
        s.insert(rs[3].bytes(), q, 0, T0),
        Admission::Added(_)
    ));
    // Full: the node's own bundle evicts the least urgent of others'.
    assert!(matches!(
        s.insert(rs[4].bytes(), Origin::Local, 0, T0),
        Admission::Added(_)
    ));
    assert_eq!(s.len(), 4);
    assert!(s.bytes() <= size * 4 + 16);
    // A receipt (more urgent) evicts a record from a peer.
    let receipt = Bundle::new(Content::Receipt(SettlementReceipt::issue(
        &issuer(),
        Hash([9; 32]),
        ReceiptStatus::Settled,
        T0,
    )));
    assert!(matches!(
        s.insert(receipt.bytes(), Origin::Peer([3; 32]), 0, T0),
        Admission::Added(_)
    ));
    assert!(s.bytes() <= size * 4 + 16);
    assert_eq!(s.in_order().next().map(|e| e.meta.id), Some(receipt.id()));
}

#[test]
fn two_notices_for_one_slot_become_a_fraud_proof() {
    let iss = issuer();
    let alice = device(1);
    let cert = allowance(&iss, 1, &alice, 1000);
    // A clone: two wallets from the same state pay different payees with counter 1.
    let a = pay(
        &mut wallet([cert.clone()]),
        &alice,
        &request(&device(2), 10, 1),
    );
    let b = pay(
        &mut wallet([cert.clone()]),
        &alice,
        &request(&device(3), 20, 2),
    );
    let mut s = BundleStore::new(StoreConfig::default());
    let na = Bundle::notice(cert.clone(), a.notice());
    let nb = Bundle::notice(cert.clone(), b.notice());
    assert!(matches!(
        s.insert(na.bytes(), Origin::Peer([1; 32]), 0, T0),
        Admission::Added(_)
    ));
    assert!(matches!(
        s.insert(nb.bytes(), Origin::Peer([2; 32]), 0, T0),
        Admission::Added(_)
    ));
    let first = s.in_order().next().expect("a bundle");
    assert_eq!(first.meta.kind, BundleKind::Fraud);
    assert_eq!(first.origin, Origin::Local);
    let proof = Bundle::decode(&s.body(&first.meta.id).expect("held")).expect("decodes");
    assert_eq!(proof.verify(T0), Ok(()));
}

/// The ONE's drop policy, for simulations: a full store drops what arrived first, even its
/// own or a heavier origin's, and refuses only a bundle larger than the whole store.
#[test]
fn drop_oldest_makes_room_by_arrival() {
    let rs = records(5);
    let size = u64::from(rs[0].meta().size);
    let mut s = BundleStore::new(StoreConfig {
        max_bytes: size * 3 + 16,
        max_bundles: 100,
        max_bytes_per_origin: size * 3 + 16,
        issuers: None,
        bodies_in_memory: true,
        accept_messages: false,
    });
    s.set_drop_oldest(true);
    let (p, q) = (Origin::Peer([1; 32]), Origin::Peer([2; 32]));
    for (r, o) in [(&rs[0], Origin::Local), (&rs[1], p), (&rs[2], q)] {
        assert!(matches!(s.insert(r.bytes(), o, 0, T0), Admission::Added(_)));
    }
    s.take_changes();
    // Full: the node's own bundle arrived first, so it goes.
    assert!(matches!(
        s.insert(rs[3].bytes(), q, 0, T0),
        Admission::Added(_)
    ));
    assert_eq!(s.take_changes().removed, vec![rs[0].id()]);
    assert!(matches!(
        s.insert(rs[4].bytes(), p, 0, T0),
        Admission::Added(_)
    ));
    assert_eq!(s.take_changes().removed, vec![rs[1].id()]);
    let held: Vec<Hash> = [2, 3, 4].iter().map(|&i| rs[i].id()).collect();
    assert!(held.iter().all(|id| s.contains(id)));
    assert_eq!(s.len(), 3);
    // What left meanwhile is not dropped again: the oldest still held goes.
    assert!(s.remove(&rs[2].id()).is_some());
    for r in [&rs[0], &rs[1]] {
        assert!(matches!(s.insert(r.bytes(), p, 0, T0), Admission::Added(_)));
    }
    assert_eq!(s.take_changes().removed, vec![rs[2].id(), rs[3].id()]);
    let held: Vec<Hash> = [4, 0, 1].iter().map(|&i| rs[i].id()).collect();
    assert!(held.iter().all(|id| s.contains(id)));
    // Without the option, the same inserts refuse instead (q already holds its quota).
    let mut fair = BundleStore::new(StoreConfig {
        max_bytes: size * 3 + 16,
        max_bundles: 100,
        max_bytes_per_origin: size * 2 + 8,
        issuers: None,
        bodies_in_memory: true,
        accept_messages: false,
    });
    for (r, o) in [(&rs[0], Origin::Local), (&rs[1], p), (&rs[2], q)] {
        assert!(matches!(
            fair.insert(r.bytes(), o, 0, T0),
            Admission::Added(_)
        ));
    }
    assert!(fair.contains(&rs[0].id()));
    let _ = fair.insert(rs[3].bytes(), q, 0, T0);
    assert!(
        fair.contains(&rs[0].id()),
        "the node's own record was evicted"
    );
}

/// Stores sharing a pool hold one copy of a body however many of them hold the bundle; a store
/// without the pool keeps its own; the pool forgets bodies nobody holds as it grows.
#[test]
fn stores_sharing_a_pool_hold_one_copy_of_each_body() {
    let pool = BodyPool::new();
    let rs = records(2);
    let mut stores: Vec<BundleStore> = (0..3)
        .map(|_| {
            let mut s = BundleStore::new(StoreConfig::default());
            s.share_bodies(pool.clone());
            s
        })
        .collect();
    let mut own = BundleStore::new(StoreConfig::default());
    for (k, s) in stores
        .iter_mut()
        .chain(std::iter::once(&mut own))
        .enumerate()
    {
        for r in &rs {
            let from = Origin::Peer([u8::try_from(k).unwrap() + 1; 32]);
            assert!(matches!(
                s.insert(r.bytes(), from, 0, T0),
                Admission::Added(_)
            ));
        }
    }
    let id = rs[0].id();
    let first = stores[0].body(&id).unwrap();
    assert!(
        stores
            .iter()
            .all(|s| Arc::ptr_eq(&s.body(&id).unwrap(), &first))
    );
    assert!(!Arc::ptr_eq(&own.body(&id).unwrap(), &first));
    assert_eq!(&first[..], rs[0].bytes());
    assert_eq!(pool.len(), 2);
    drop(first);
    drop(stores);
    for i in 0..3000u32 {
        let mut h = [0u8; 32];
        h[..4].copy_from_slice(&i.to_le_bytes());
        let mut meta = *rs[0].meta();
        meta.id = Hash(h);
        let _ = pool.intern(meta.into(), Arc::from(&b"x"[..]));
    }
    assert!(pool.len() < 2100, "{}", pool.len());
}

fn message(n: u8, expires: u64) -> Bundle {
    Bundle::new(Content::Message(Box::new(crate::bundle::PlainMessage {
        version: crate::codec::VERSION,
        from: device(1).public(),
        to: device(2).public(),
        created: T0,
        expires,
        payload: crate::codec::Blob(vec![n; 300]),
    })))
}

/// A message another store of the pool decoded is taken from the pool as decoding would take
/// it: the same entry and addressee, and the same refusals (expired, messages not accepted,
/// duplicate); bytes the pool does not know are decoded as ever.
#[test]
fn a_pooled_message_is_admitted_as_a_decoded_one() {
    let pool = BodyPool::new();
    let config = StoreConfig {
        accept_messages: true,
        ..StoreConfig::default()
    };
    let store = |config: &StoreConfig| {
        let mut s = BundleStore::new(config.clone());
        s.share_bodies(pool.clone());
        s
    };
    let m = message(7, T0 + 100);
    let from = Origin::Peer([9; 32]);
    let mut first = store(&config);
    assert!(pool.message(&m.id(), m.bytes()).is_none());
    assert_eq!(
        first.insert(m.bytes(), from, 3, T0),
        Admission::Added(*m.meta())
    );
    assert!(pool.message(&m.id(), m.bytes()).is_some());
    let mut second = store(&config);
    assert_eq!(
        second.insert(m.bytes(), from, 3, T0),
        Admission::Added(*m.meta())
    );
    assert_eq!(second.insert(m.bytes(), from, 3, T0), Admission::Duplicate);
    let (a, b) = (first.get(&m.id()).unwrap(), second.get(&m.id()).unwrap());
    assert_eq!((&a.meta, a.copies), (&b.meta, b.copies));
    assert!(Arc::ptr_eq(&a.meta, &b.meta), "one copy of the metadata");
    assert_eq!(b.meta.to, Some(device(2).public()));
    assert!(Arc::ptr_eq(
        a.bytes.as_ref().unwrap(),
        b.bytes.as_ref().unwrap()
    ));
    assert_eq!(
        store(&config).insert(m.bytes(), from, 0, T0 + 101),
        Admission::Refused(BundleError::Expired)
    );
    assert_eq!(
        store(&StoreConfig::default()).insert(m.bytes(), from, 0, T0),
        Admission::Refused(BundleError::PlainMessage)
    );
    // Other bytes, even one flipped, are not the pooled message.
    let mut other = m.bytes().to_vec();
    *other.last_mut().unwrap() ^= 1;
    assert!(
        pool.message(&crate::bundle::bundle_id(&other), &other)
            .is_none()
    );
    assert!(matches!(
        store(&config).insert(&other, from, 0, T0),
        Admission::Refused(BundleError::Decode(_)) | Admission::Added(_)
    ));
}

/// The earliest expiry the store reports follows its bundles and tombstones through puts,
/// removals, purges and expiries: it is always the least expiry held.
#[test]
fn the_next_expiry_is_the_least_held() {
    let mut s = BundleStore::new(StoreConfig {
        accept_messages: true,
        ..StoreConfig::default()
    });
    let least = |s: &BundleStore| {
        let bundles = s.iter().map(|e| e.meta.expires);
        let tombs = s.tombstones().map(|(_, t)| *t);
        bundles.chain(tombs).min()
    };
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let messages: Vec<Bundle> = (0..60u8)
        .map(|n| message(n, T0 + 10 + next() % 500))
        .collect();
    let record = &records(1)[0];
    let receipt = Bundle::new(Content::Receipt(SettlementReceipt::issue(
        &issuer(),
        record.meta().subject.expect("record"),
        ReceiptStatus::Settled,
        T0,
    )));
    assert_eq!(s.next_expiry(), None);
    let mut now = T0;
    for step in 0..600u32 {
        let m = &messages[usize::try_from(next() % 60).expect("small")];
        if step == 300 {
            // A record, purged by its receipt: a tombstone.
            assert!(matches!(
                s.insert(record.bytes(), Origin::Peer([1; 32]), 0, now),
                Admission::Added(_)
            ));
            assert!(matches!(
                s.insert(receipt.bytes(), Origin::Local, 0, now),
                Admission::Added(_)
            ));
            assert_eq!(s.tombstones().count(), 1);
        }
        match next() % 5 {
            0 => {
                s.remove(&m.id());
            }
            1 if step % 50 == 0 => {
                now += 40;
                s.expire(now);
            }
            _ => {
                let _ = s.insert(m.bytes(), Origin::Peer([2; 32]), 0, now);
            }
        }
        assert_eq!(s.next_expiry(), least(&s), "at step {step}");
    }
}
