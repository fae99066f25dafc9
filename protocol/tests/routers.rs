//! The routers against contact traces worked out by hand, each node a bundle store meeting
//! others through whole sync sessions.

use meshpay_protocol::bundle::{Bundle, Content};
use meshpay_protocol::maxprop::Vector;
use meshpay_protocol::maxprop::acks::Ack;
use meshpay_protocol::objects::UnixTime;
use meshpay_protocol::prophet::{device_endpoint, issuer_endpoint};
use meshpay_protocol::store::{BundleStore, Origin, StoreConfig};
use meshpay_protocol::sync::{Contact, Party, Routing, Spray, SyncMessage, contact};
use meshpay_protocol::testkit::{
    T0, allowance, device, issuer, pay, request, sealed, session_config, wallet,
};
use meshpay_protocol::{DecodeError, Hash, IssuerId, decode};

/// When a test contact happens: the session salt, the time, the messages after which it is
/// cut off, and whether it is the first session of a contact (a PRoPHET encounter).
#[derive(Clone, Copy)]
struct At {
    salt: u64,
    now: UnixTime,
    max: u32,
    encounter: bool,
}

/// A whole first session of a contact at `now`.
fn at(salt: u64, now: UnixTime) -> At {
    At {
        salt,
        now,
        max: u32::MAX,
        encounter: true,
    }
}

/// A contact under `routing` between device `x` (`a`, initiator) and device `y` (`b`), which
/// is a gateway for `gateway_for`, at `T0`.
fn routed(
    a: (&mut BundleStore, u8),
    b: (&mut BundleStore, u8),
    routing: Routing,
    gateway_for: Vec<IssuerId>,
    salt: u64,
) -> Contact {
    routed_with(a, b, routing, gateway_for, at(salt, T0))
}

/// As [`routed`], at `now`.
fn routed_at(
    a: (&mut BundleStore, u8),
    b: (&mut BundleStore, u8),
    routing: Routing,
    gateway_for: Vec<IssuerId>,
    salt: u64,
    now: UnixTime,
) {
    routed_with(a, b, routing, gateway_for, at(salt, now));
}

/// As [`routed`], as `when` says.
fn routed_with(
    (a, x): (&mut BundleStore, u8),
    (b, y): (&mut BundleStore, u8),
    routing: Routing,
    gateway_for: Vec<IssuerId>,
    when: At,
) -> Contact {
    let mut ca = session_config(x, y, u64::MAX);
    let mut cb = session_config(y, x, u64::MAX);
    for c in [&mut ca, &mut cb] {
        c.routing = routing;
        c.now = when.now;
        c.encounter = when.encounter;
    }
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
        when.salt,
        when.max,
    )
    .expect("honest")
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

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn prophet_hands_a_record_only_to_a_peer_likelier_to_reach_its_gateway() {
    // S (device 1) holds a record; A (2) meets the gateway G (4) at T0; two units later S
    // meets A, then B (3), and B meets A; a unit later A meets G again.
    let (record, mut src) = sprayed_record(0);
    let id = record.id();
    let iss = issuer_endpoint(&issuer().id());
    let gateway = || vec![issuer().id()];
    let p = Routing::Prophet;
    let [mut ann, mut bob, mut gate] =
        std::array::from_fn(|_| BundleStore::new(StoreConfig::default()));
    routed_at((&mut ann, 2), (&mut gate, 4), p, gateway(), 1, T0);
    // Meeting the gateway is meeting its issuer: 0 + (1 − 0) · 0.75 for both.
    let g = device_endpoint(&device(4).public());
    assert!(close(ann.predictions().get(g), 0.75));
    assert!(close(ann.predictions().get(iss), 0.75));
    // A's vector, aged two units: 0.75 · 0.98² = 0.7203. S: P(S,A) = 0.75 and, by
    // transitivity, P(S,I) = 0.75 · 0.7203 · 0.25 = 0.13505625 < 0.7203: A gets the record.
    routed_at((&mut src, 1), (&mut ann, 2), p, Vec::new(), 2, T0 + 60);
    assert!(close(src.predictions().get(iss), 0.135_056_25));
    assert!(close(ann.predictions().get(iss), 0.7203));
    assert!(ann.contains(&id));
    // B knows nothing of I: it gets nothing, and learns P(B,I) = 0.75 · 0.13505625 · 0.25.
    routed_at((&mut src, 1), (&mut bob, 3), p, Vec::new(), 3, T0 + 60);
    assert!(!bob.contains(&id));
    assert!(close(bob.predictions().get(iss), 0.025_323_046_875));
    let a = device_endpoint(&device(2).public());
    assert!(
        close(bob.predictions().get(a), 0.140_625),
        "0.75 · 0.75 · 0.25"
    );
    // A is likelier than B: nothing goes from A to B. A second session ten seconds later in
    // the same contact is no new encounter and changes nothing.
    routed_at((&mut bob, 3), (&mut ann, 2), p, Vec::new(), 4, T0 + 60);
    assert!(!bob.contains(&id));
    let before = bob.predictions().get(a);
    assert!(close(before, 0.140_625 + 0.859_375 * 0.75), "met: eq. 1");
    let again = At {
        encounter: false,
        ..at(5, T0 + 70)
    };
    routed_with((&mut bob, 3), (&mut ann, 2), p, Vec::new(), again);
    assert!(close(bob.predictions().get(a), before));
    // The gateway gets it from A; the source still holds its copy.
    routed_at((&mut ann, 2), (&mut gate, 4), p, gateway(), 6, T0 + 90);
    assert!(gate.contains(&id));
    assert!(src.contains(&id));
    // The gateway is where the record goes: it hands it to nobody, whatever they claim.
    routed_at((&mut bob, 3), (&mut gate, 4), p, gateway(), 7, T0 + 120);
    assert!(bob.predictions().get(iss) > 0.0);
    assert!(!bob.contains(&id));
}

#[test]
fn prophet_vectors_fill_the_first_messages_within_the_size_limit() {
    // Both sides know 200 endpoints (they send their 96 likeliest) and hold enough bundles
    // that the responder lists its keys: every message still decodes (at most 2000 bytes).
    let many: Vec<(u64, f64)> = (0..200u64).map(|e| (e + 10, 0.5)).collect();
    fills_the_first_messages(Routing::Prophet, |s| {
        s.predictions_mut().meet(&[1], &many, &[], T0 - 100);
    });
}

/// Two stores that `prime` gave routing state, holding 100 and 360 receipts (40 shared, so
/// the responder lists its keys), sync under `routing`: every message decodes, and both end
/// with all 400.
fn fills_the_first_messages(routing: Routing, prime: impl Fn(&mut BundleStore)) {
    let mut a = BundleStore::new(StoreConfig::default());
    let mut b = BundleStore::new(StoreConfig::default());
    for (s, ids) in [(&mut a, 0..100u64), (&mut b, 40..400u64)] {
        prime(s);
        for i in ids {
            s.insert(
                meshpay_protocol::testkit::receipt_bundle(i).bytes(),
                Origin::Local,
                0,
                T0,
            );
        }
    }
    routed((&mut a, 1), (&mut b, 2), routing, Vec::new(), 1);
    assert_eq!((a.len(), b.len()), (400, 400));
}

/// The `open` of an initiator that holds nothing, under `routing`.
fn empty_open(routing: Routing) -> SyncMessage {
    let mut cfg = session_config(1, 2, u64::MAX);
    cfg.routing = routing;
    let store = BundleStore::new(StoreConfig::default());
    meshpay_protocol::sync::Session::initiate(cfg, &store, 1).1
}

#[test]
fn vectors_too_long_ragged_or_out_of_order_are_refused() {
    let open = empty_open(Routing::Prophet);
    let with = |entries: &[(u64, u32)], extra: usize| {
        let mut m = open.clone();
        m.predictions.0 = entries
            .iter()
            .flat_map(|(e, v)| [e.to_le_bytes().to_vec(), v.to_le_bytes().to_vec()].concat())
            .chain(std::iter::repeat_n(0, extra))
            .collect();
        match decode::<SyncMessage>(&m.encode()) {
            Ok(_) => "ok",
            Err(DecodeError::InvalidField { field, .. }) => field,
            Err(_) => "other",
        }
    };
    let full: Vec<(u64, u32)> = (0..96).map(|e| (e, 1)).collect();
    assert_eq!(with(&full, 0), "ok");
    let over: Vec<(u64, u32)> = (0..97).map(|e| (e, 1)).collect();
    assert_eq!(with(&over, 0), "at most 96 predictions");
    assert_eq!(with(&full[..2], 5), "predictions are 12 bytes each");
    assert_eq!(with(&[(5, 1), (5, 2)], 0), "prediction endpoints ascending");
    assert_eq!(with(&[(6, 1), (5, 2)], 0), "prediction endpoints ascending");
}

#[test]
fn spray_and_focus_sprays_then_hands_the_last_copy_to_a_likelier_carrier() {
    // L = 2 at S (1). A (2) met the gateway G (4) at T0. Two units later S meets B (3), who
    // knows nothing: binary spray, one copy each. Then S meets A: with one copy left S
    // focuses, and A's P(A,I) = 0.7203 beats S's 0.75 · 0.7203 · 0.25, so the copy moves to
    // A and leaves S. B, knowing nothing of I (S's vector was empty when they met), keeps
    // its copy from C (5), who knows nothing either; G gets the record from A.
    let (record, mut src) = sprayed_record(2);
    let id = record.id();
    let f = Routing::SprayAndFocus { copies: 2 };
    let gateway = || vec![issuer().id()];
    let [mut ann, mut bob, mut cat, mut gate] =
        std::array::from_fn(|_| BundleStore::new(StoreConfig::default()));
    routed_at((&mut ann, 2), (&mut gate, 4), f, gateway(), 1, T0);
    routed_at((&mut src, 1), (&mut bob, 3), f, Vec::new(), 2, T0 + 60);
    assert_eq!((tokens(&src, &id), tokens(&bob, &id)), (Some(1), Some(1)));
    routed_at((&mut src, 1), (&mut ann, 2), f, Vec::new(), 3, T0 + 60);
    assert_eq!((tokens(&src, &id), tokens(&ann, &id)), (None, Some(1)));
    routed_at((&mut bob, 3), (&mut cat, 5), f, Vec::new(), 4, T0 + 60);
    assert_eq!((tokens(&bob, &id), tokens(&cat, &id)), (Some(1), None));
    routed_at((&mut ann, 2), (&mut gate, 4), f, gateway(), 5, T0 + 90);
    assert!(gate.contains(&id));
}

#[test]
fn a_copy_handed_on_is_never_lost_when_the_contact_breaks() {
    // The focus step of the test above, cut off after every number of messages: the copy
    // is at S, at A, or (once A has it but S has not heard back) at both; never nowhere.
    let f = Routing::SprayAndFocus { copies: 1 };
    let mut seen = Vec::new();
    for max in 1..=12 {
        let (record, mut src) = sprayed_record(1);
        let id = record.id();
        let [mut ann, mut gate] = std::array::from_fn(|_| BundleStore::new(StoreConfig::default()));
        routed_at((&mut ann, 2), (&mut gate, 4), f, vec![issuer().id()], 1, T0);
        let cut = At {
            max,
            ..at(2, T0 + 60)
        };
        routed_with((&mut src, 1), (&mut ann, 2), f, Vec::new(), cut);
        let at = (src.contains(&id), ann.contains(&id));
        assert_ne!(at, (false, false), "cut after {max} messages");
        seen.push(at);
    }
    assert_eq!(seen.first(), Some(&(true, false)));
    assert!(seen.contains(&(true, true)), "{seen:?}");
    assert_eq!(seen.last(), Some(&(false, true)));
}

#[test]
fn configuration_names_pick_each_router_and_refuse_others() {
    assert_eq!(
        Routing::named("epidemic", 6, "binary"),
        Some(Routing::Epidemic)
    );
    assert_eq!(
        Routing::named("spray-and-wait", 0, "source"),
        Some(Routing::SprayAndWait {
            copies: 1,
            spray: Spray::Source
        })
    );
    assert_eq!(
        Routing::named("prophet", 6, "binary"),
        Some(Routing::Prophet)
    );
    assert_eq!(
        Routing::named("spray-and-focus", 4, "binary"),
        Some(Routing::SprayAndFocus { copies: 4 })
    );
    assert_eq!(Routing::named("spray-and-wait", 6, "both"), None);
    assert_eq!(
        Routing::named("maxprop", 6, "binary"),
        Some(Routing::MaxProp)
    );
    assert_eq!(Routing::named("max-prop", 6, "binary"), None);
}

/// A plain message from device 1 to device `to`.
fn message_to(to: u8) -> Bundle {
    message_with(to, to)
}

/// A plain message from device 1 to device `to` whose 10 bytes of payload are `fill`.
fn message_with(to: u8, fill: u8) -> Bundle {
    meshpay_protocol::testkit::plain_message(to, fill)
}

fn ep(d: u8) -> u64 {
    device_endpoint(&device(d).public())
}

/// S (device 1) holds a receipt and messages to P (2), X (3), Y (4), Z (5) and W (6), and has
/// met nobody. P met X, Y, then X again, so f_P = {X: 0.75, Y: 0.25}, and learned Y's vector
/// {X: 0.5, Z: 0.5}.
fn maxprop_pair() -> (BundleStore, BundleStore, Vec<Hash>) {
    let (mut s, mut p) = (carrier(), carrier());
    let receipt = meshpay_protocol::testkit::receipt_bundle(1);
    let mut ids = vec![receipt.id()];
    s.insert(receipt.bytes(), Origin::Local, 0, T0);
    for to in 2..=6 {
        let m = message_to(to);
        s.insert(m.bytes(), Origin::Local, 0, T0);
        ids.push(m.id());
    }
    for d in [3, 4, 3] {
        p.likelihoods_mut().meet(&[ep(d)], T0 - 100);
    }
    let mut y = vec![(ep(3), 0.5), (ep(5), 0.5)];
    y.sort_unstable_by_key(|e| e.0);
    let y = Vector {
        source: ep(4),
        age: 0,
        entries: y,
    };
    p.likelihoods_mut()
        .learn(&[y], &[ep(4)], &[ep(2)], false, T0 - 50);
    (s, p, ids)
}

/// The order S hands its bundles to P in a first MaxProp session, and the stores after.
fn maxprop_offer(s: &mut BundleStore, p: &mut BundleStore) -> Vec<Hash> {
    let mut ca = session_config(1, 2, u64::MAX);
    let mut cb = session_config(2, 1, u64::MAX);
    ca.routing = Routing::MaxProp;
    cb.routing = Routing::MaxProp;
    let (ka, kb) = (device(1), device(2));
    let c = contact(
        Party {
            store: s,
            cfg: ca,
            key: &ka,
        },
        Party {
            store: p,
            cfg: cb,
            key: &kb,
        },
        1,
        u32::MAX,
    )
    .expect("honest");
    c.initiator.given().to_vec()
}

#[test]
fn maxprop_offers_by_destination_hops_and_dijkstra_cost_on_a_graph_worked_by_hand() {
    let (mut s, mut p, ids) = maxprop_pair();
    let [receipt, to_p, to_x, to_y, to_z, to_w] = ids[..] else {
        panic!("six bundles")
    };
    let given = maxprop_offer(&mut s, &mut p);
    // Both count the meeting: S met P only, so f_S = {P: 1}; P divides by 2 and adds S:
    // {S: 0.5, X: 0.375, Y: 0.125}. S takes P's vector with the meeting counted, and Y's.
    let (s1, p2) = (ep(1), ep(2));
    assert!(close(s.likelihoods().get(p2), 1.0));
    assert!(close(p.likelihoods().get(s1), 0.5));
    assert!(close(p.likelihoods().get(ep(3)), 0.375));
    let mut want_p = [(s1, 0.5), (ep(3), 0.375), (ep(4), 0.125)];
    want_p.sort_unstable_by_key(|e| e.0);
    assert_eq!(s.likelihoods().learned(p2), Some(&want_p[..]));
    assert!(s.likelihoods().learned(ep(4)).is_some());
    // Costs from P, edges 1 − f: S 0.5, X 0.625 (not 0.875 + 0.5 through Y), Y 0.875,
    // Z 0.875 + 0.5 = 1.375 through Y; nobody knows W.
    let costs = s.likelihoods().costs(s1, &[p2]);
    for (d, c) in [(1, 0.5), (3, 0.625), (4, 0.875), (5, 1.375)] {
        assert!(close(costs[&ep(d)], c), "{d}: {}", costs[&ep(d)]);
    }
    assert!(!costs.contains_key(&ep(6)));
    // No transfer sample yet, so no hop threshold: the receipt (urgent), the
    // message for P itself, then by cost; S keeps its copies but the one P acknowledged, and
    // P holds them one hop on.
    assert_eq!(given, [receipt, to_p, to_x, to_y, to_z, to_w]);
    assert_eq!(s.len(), 5);
    assert!(s.get(&to_p).is_none());
    assert_eq!(p.get(&to_x).map(|e| e.hops), Some(1));

    // The same meeting once S has seen sessions move 1 byte on average, with the message for
    // Z made here (0 hops) and the others come 3 hops: p = 1 byte of the buffer in hop order
    // is Z's message, so the threshold is 1 and Z's message goes before the costs.
    let (mut s, mut p, _) = maxprop_pair();
    s.likelihoods_mut().sample(1);
    for id in [to_p, to_x, to_y, to_w] {
        s.set_hops(&id, 3);
    }
    let given = maxprop_offer(&mut s, &mut p);
    assert_eq!(given, [receipt, to_p, to_z, to_x, to_y, to_w]);
    assert_eq!(p.get(&to_x).map(|e| e.hops), Some(4));
    // The contact moved six bundles: once it ends, their bytes are the next sample.
    assert_eq!(s.likelihoods().mean_transfer(), 1);
    s.likelihoods_mut().parted(ep(2));
    let moved: u64 = ids
        .iter()
        .map(|id| u64::from(p.get(id).unwrap().meta.size))
        .sum();
    assert_eq!(s.likelihoods().mean_transfer(), u64::midpoint(1, moved));
}

#[test]
fn maxprop_vectors_fill_the_first_messages_within_the_size_limit() {
    // Both sides know many vectors (each sends over 800 bytes of them): every message still
    // decodes.
    fills_the_first_messages(Routing::MaxProp, |s| {
        for e in 0..40 {
            s.likelihoods_mut().meet(&[e + 10], T0 - 100);
        }
        for src in 0..10u64 {
            let entries = (0..32).map(|e| (e, 0.03)).collect();
            let v = Vector {
                source: 1000 + src,
                age: 0,
                entries,
            };
            s.likelihoods_mut().learn(&[v], &[9], &[8], false, T0 - 50);
        }
    });
}

#[test]
fn malformed_likelihoods_are_refused_as_invalid_fields() {
    let open = empty_open(Routing::MaxProp);
    let with = |bytes: Vec<u8>| {
        let mut m = open.clone();
        m.likelihoods.0 = bytes;
        match decode::<SyncMessage>(&m.encode()) {
            Ok(_) => "ok",
            Err(DecodeError::InvalidField { field, .. }) => field,
            Err(_) => "other",
        }
    };
    let vector = |source: u64, n: u8| {
        let mut v = source.to_le_bytes().to_vec();
        v.extend(0u32.to_le_bytes());
        v.push(n);
        for e in 0..u64::from(n) {
            v.extend(e.to_le_bytes());
            v.extend(1u16.to_le_bytes());
        }
        v
    };
    assert_eq!(with(vector(5, 32)), "ok");
    assert_eq!(with(vector(5, 33)), "1 to 32 likelihoods a vector");
    assert_eq!(with(vector(5, 0)), "1 to 32 likelihoods a vector");
    let mut cut = vector(5, 2);
    cut.pop();
    assert_eq!(with(cut), "likelihood vector cut short");
    assert_eq!(
        with([vector(6, 1), vector(5, 1)].concat()),
        "likelihood vector sources ascending"
    );
    let four: Vec<u8> = (0..4).flat_map(|s| vector(s, 32)).collect();
    assert_eq!(with(four), "likelihoods at most 1152 bytes");
}

#[test]
fn ragged_acknowledgements_are_refused_as_an_invalid_field() {
    let mut m = empty_open(Routing::MaxProp);
    let ack = Ack::sign(message_to(2).id(), &device(2));
    m.acks.0 = meshpay_protocol::maxprop::acks::pack(&[ack, ack]);
    assert!(decode::<SyncMessage>(&m.encode()).is_ok());
    m.acks.0.pop();
    assert!(matches!(
        decode::<SyncMessage>(&m.encode()),
        Err(DecodeError::InvalidField {
            field: "acknowledgements are 96 bytes each",
            ..
        })
    ));
}

#[test]
fn a_full_maxprop_buffer_drops_the_costliest_as_a_simulation_option() {
    // S's bundles as in the test above, in a buffer just big enough for them; S has met P,
    // whose vector (with S counted) and Y's it knows: costs from S are P 0, X 0.625,
    // Y 0.875, Z 1.375, W unknown. No samples, so no hop threshold.
    let (full, _, ids) = maxprop_pair();
    let [receipt, to_p, to_x, to_y, to_z, to_w] = ids[..] else {
        panic!("six bundles")
    };
    let mut s = BundleStore::new(StoreConfig {
        accept_messages: true,
        max_bytes: full.bytes(),
        ..StoreConfig::default()
    });
    s.set_drop_costliest(true);
    for id in &ids {
        let e = full.get(id).expect("held");
        s.insert(&full.body(id).expect("in memory"), Origin::Local, 0, T0);
        assert_eq!(s.get(id).map(|x| x.arrival), Some(e.arrival));
    }
    let mut p = vec![(ep(3), 0.75), (ep(4), 0.25)];
    p.sort_unstable_by_key(|e| e.0);
    let mut y = vec![(ep(3), 0.5), (ep(5), 0.5)];
    y.sort_unstable_by_key(|e| e.0);
    let vectors = [
        Vector {
            source: ep(2),
            age: 0,
            entries: p,
        },
        Vector {
            source: ep(4),
            age: 0,
            entries: y,
        },
    ];
    s.likelihoods_mut()
        .learn(&vectors, &[ep(2)], &[ep(1)], true, T0);
    // Two more messages for X (each the size of the others): W's goes, then Z's.
    s.insert(message_with(3, 30).bytes(), Origin::Local, 0, T0);
    assert!(!s.contains(&to_w));
    s.insert(message_with(3, 31).bytes(), Origin::Local, 0, T0);
    assert!(!s.contains(&to_z));
    for id in [receipt, to_p, to_x, to_y] {
        assert!(s.contains(&id));
    }
    assert_eq!(s.len(), 6);
}

/// A store that carries plain messages.
fn carrier() -> BundleStore {
    BundleStore::new(StoreConfig {
        accept_messages: true,
        ..StoreConfig::default()
    })
}

/// `n` acknowledgements of made-up bundle ids, signed by device 2, kept as checked: they
/// fill a store's newest, so what a test looks at is not sent unasked.
fn bury_acks(s: &mut BundleStore, n: u8) {
    for i in 0..n {
        let ack = Ack::sign(Hash([i; 32]), &device(2));
        s.likelihoods_mut().acks_mut().add_checked(ack, T0 + 3600);
    }
}

#[test]
fn maxprop_acknowledgements_delete_delivered_copies_and_stop_them_coming_back() {
    let m = message_to(2);
    let id = m.id();
    let holding = || {
        let mut s = carrier();
        s.insert(m.bytes(), Origin::Local, 0, T0);
        s
    };
    // Ann (device 3) and Bea (device 4) carry a message to Dan (device 2).
    let (mut ann, mut bea, mut dan) = (holding(), holding(), carrier());
    routed((&mut ann, 3), (&mut dan, 2), Routing::MaxProp, vec![], 1);
    assert!(dan.get(&id).is_some(), "the destination keeps what it took");
    let ack = *dan
        .likelihoods()
        .acks()
        .get(&id)
        .expect("it acknowledged it")
        .0;
    assert_eq!(ack.verify(&device(2).public()), Ok(()));
    assert!(
        ann.get(&id).is_none(),
        "the giver deleted the delivered copy"
    );
    assert!(ann.likelihoods().acks().is_checked(&id));
    // Bea lists her keys in her open, so Ann knows the differences, and answers Bea's copy
    // with the acknowledgement (not among her newest, so not sent unasked) instead of asking
    // for it.
    bury_acks(&mut ann, 64);
    let c = routed((&mut bea, 4), (&mut ann, 3), Routing::MaxProp, vec![], 2);
    assert!(c.initiator.given().is_empty(), "Ann did not ask for it");
    assert!(bea.get(&id).is_none(), "Bea deleted her copy");
    // Cal (device 5) never held it, and hears of the delivery unasked from Bea. He holds 65
    // receipts, so he opens with coded symbols and Bea answers with her key list: she sends
    // her newest acknowledgements in the transfer that follows all the same.
    let mut cal = carrier();
    for n in 0..65 {
        let r = meshpay_protocol::testkit::receipt_bundle(n);
        cal.insert(r.bytes(), Origin::Local, 0, T0);
    }
    routed((&mut cal, 5), (&mut bea, 4), Routing::MaxProp, vec![], 3);
    assert_eq!(cal.likelihoods().acks().get(&id), Some((&ack, false)));
    // Eve (device 6) still carries it and hands it to Cal. He checks his unchecked
    // acknowledgement against it, does not take it, and sends the acknowledgement back: Eve
    // deletes her copy.
    let mut eve = holding();
    routed((&mut cal, 5), (&mut eve, 6), Routing::MaxProp, vec![], 4);
    assert!(
        cal.get(&id).is_none(),
        "a delivered message is not carried again"
    );
    assert_eq!(cal.likelihoods().acks().get(&id), Some((&ack, true)));
    assert!(eve.get(&id).is_none());
    // Under other routers nothing is acknowledged.
    let (mut ann, mut dan) = (holding(), carrier());
    routed((&mut ann, 3), (&mut dan, 2), Routing::Epidemic, vec![], 5);
    assert!(dan.likelihoods().acks().is_empty());
    assert!(ann.get(&id).is_some());
}

#[test]
fn a_forged_maxprop_acknowledgement_deletes_nothing() {
    let m = message_to(2);
    let id = m.id();
    // Fay (device 7) claims delivery of a message to device 2 with an acknowledgement she
    // signed herself; Bea (device 4) carries the message.
    let forged = Ack::sign(id, &device(7));
    let fay = || {
        let mut s = carrier();
        s.likelihoods_mut()
            .acks_mut()
            .add_checked(forged, T0 + 3600);
        s
    };
    let mut bea = carrier();
    bea.insert(m.bytes(), Origin::Local, 0, T0);
    routed((&mut bea, 4), (&mut fay(), 7), Routing::MaxProp, vec![], 1);
    assert!(bea.get(&id).is_some(), "Bea keeps her copy");
    assert!(bea.likelihoods().acks().get(&id).is_none());
    // Gus (device 8) cannot check what Fay passes on, as he lacks the message: he keeps it
    // unchecked. Handed the message by Bea, he checks it, keeps the message and forgets it.
    let mut gus = carrier();
    routed((&mut gus, 8), (&mut fay(), 7), Routing::MaxProp, vec![], 2);
    assert_eq!(gus.likelihoods().acks().get(&id), Some((&forged, false)));
    routed((&mut bea, 4), (&mut gus, 8), Routing::MaxProp, vec![], 3);
    assert!(gus.get(&id).is_some());
    assert!(gus.likelihoods().acks().get(&id).is_none());
    assert!(bea.get(&id).is_some());
}
