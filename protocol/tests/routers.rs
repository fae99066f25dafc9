//! The routers against contact traces worked out by hand, each node a bundle store meeting
//! others through whole sync sessions.

use meshpay_protocol::bundle::{Bundle, Content};
use meshpay_protocol::store::{BundleStore, Origin, StoreConfig};
use meshpay_protocol::sync::{Party, Routing, Spray, contact};
use meshpay_protocol::testkit::{
    T0, allowance, device, issuer, pay, request, sealed, session_config, wallet,
};
use meshpay_protocol::{Hash, IssuerId};

/// A contact under `routing` between device `x` (`a`, initiator) and device `y` (`b`), which
/// is a gateway for `gateway_for`, at `T0`.
fn routed(
    (a, x): (&mut BundleStore, u8),
    (b, y): (&mut BundleStore, u8),
    routing: Routing,
    gateway_for: Vec<IssuerId>,
    salt: u64,
) {
    let mut ca = session_config(x, y, u64::MAX);
    ca.routing = routing;
    let mut cb = session_config(y, x, u64::MAX);
    cb.routing = routing;
    cb.gateway_for = gateway_for;
    let (ka, kb) = (device(x), device(y));
    contact(
        Party {
            store: a,
            cfg: ca,
            key: &ka,
        },
        Party {
            store: b,
            cfg: cb,
            key: &kb,
        },
        salt,
        u32::MAX,
    )
    .expect("honest");
}

/// A record made by device 1 and held by a new store with `copies` tokens.
fn sprayed_record(copies: u32) -> (Bundle, BundleStore) {
    let iss = issuer();
    let alice = device(1);
    let mut w = wallet([allowance(&iss, 1, &alice, 1_000_000)]);
    let iou = pay(&mut w, &alice, &request(&device(2), 10, 1));
    let record = Bundle::new(Content::Record(sealed(&iss, &iou)));
    let mut a = BundleStore::new(StoreConfig::default());
    a.insert(record.bytes(), Origin::Local, copies, T0);
    (record, a)
}

fn tokens(s: &BundleStore, id: &Hash) -> Option<u32> {
    s.get(id).map(|e| e.copies)
}

#[test]
fn spray_and_wait_halves_tokens_and_waits_for_a_gateway() {
    let (record, mut a) = sprayed_record(4);
    let spray = Routing::SprayAndWait {
        copies: 4,
        spray: Spray::Binary,
    };
    let mut peers: Vec<BundleStore> = (0..3)
        .map(|_| BundleStore::new(StoreConfig::default()))
        .collect();
    for (i, p) in peers.iter_mut().enumerate() {
        routed((&mut a, 1), (p, 2), spray, Vec::new(), i as u64);
    }
    // 4 tokens: 2 go to the first peer, 1 to the second, none to the third.
    assert_eq!(tokens(&peers[0], &record.id()), Some(2));
    assert_eq!(tokens(&peers[1], &record.id()), Some(1));
    assert!(!peers[2].contains(&record.id()));
    assert_eq!(tokens(&a, &record.id()), Some(1));
    // With one token left, it goes to a gateway for its issuer only.
    let mut gw = BundleStore::new(StoreConfig::default());
    routed((&mut a, 1), (&mut gw, 3), spray, vec![issuer().id()], 9);
    assert!(gw.contains(&record.id()));
}

#[test]
fn source_spray_gives_one_token_a_peer_and_relays_wait() {
    // L = 4 at the source S; contacts S–A, A–B, S–B, S–C, S–D, B–C, then B meets the
    // gateway G. By hand: S gives one token each to A, B and C (4 → 3 → 2 → 1) and none to
    // D; A and B, holding one each, give none to B and C; the gateway gets it from B.
    let (record, mut src) = sprayed_record(4);
    let id = record.id();
    let spray = Routing::SprayAndWait {
        copies: 4,
        spray: Spray::Source,
    };
    let [mut ann, mut bob, mut cat, mut dan, mut gate] =
        std::array::from_fn(|_| BundleStore::new(StoreConfig::default()));
    routed((&mut src, 1), (&mut ann, 2), spray, Vec::new(), 1);
    assert_eq!((tokens(&src, &id), tokens(&ann, &id)), (Some(3), Some(1)));
    routed((&mut ann, 2), (&mut bob, 3), spray, Vec::new(), 2);
    assert!(!bob.contains(&id), "a relay waits");
    routed((&mut src, 1), (&mut bob, 3), spray, Vec::new(), 3);
    routed((&mut src, 1), (&mut cat, 4), spray, Vec::new(), 4);
    routed((&mut src, 1), (&mut dan, 5), spray, Vec::new(), 5);
    assert_eq!(
        [&src, &ann, &bob, &cat].map(|x| tokens(x, &id)),
        [Some(1); 4],
        "the source keeps the last token"
    );
    assert!(!dan.contains(&id));
    routed((&mut bob, 3), (&mut cat, 4), spray, Vec::new(), 6);
    assert_eq!(tokens(&cat, &id), Some(1));
    routed((&mut bob, 3), (&mut gate, 6), spray, vec![issuer().id()], 7);
    assert!(gate.contains(&id));
    // Binary spray on the same first contacts: A gets half, and gives half of that to B.
    let (_, mut src) = sprayed_record(4);
    let binary = Routing::SprayAndWait {
        copies: 4,
        spray: Spray::Binary,
    };
    let [mut ann, mut bob] = std::array::from_fn(|_| BundleStore::new(StoreConfig::default()));
    routed((&mut src, 1), (&mut ann, 2), binary, Vec::new(), 1);
    routed((&mut ann, 2), (&mut bob, 3), binary, Vec::new(), 2);
    assert_eq!(
        [&src, &ann, &bob].map(|x| tokens(x, &id)),
        [Some(2), Some(1), Some(1)]
    );
}
