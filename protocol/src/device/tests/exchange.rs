//! Sessions a message at a time between two in-memory devices ([`Exchange`]) under the
//! forwarding policies: lost messages, destination first, delivered messages that stay,
//! spray-and-wait halving, queue orders, spray-and-focus hand-overs.

use super::*;

/// Device `n` with a store that carries plain messages.
fn carrier(n: u8) -> Device {
    carrier_with(n, quiet())
}

/// Device `n` with a store that carries plain messages, under `config`.
fn carrier_with(n: u8, config: DeviceConfig) -> Device {
    let mut i = init(n, vec![]);
    i.store = BundleStore::new(StoreConfig {
        accept_messages: true,
        ..StoreConfig::default()
    });
    Device::new(i, config)
}

/// Device `n` carrying plain messages under spray-and-wait with six copies.
fn sprayer(n: u8) -> Device {
    carrier_with(
        n,
        DeviceConfig {
            routing: crate::sync::Routing::SprayAndWait {
                copies: 6,
                spray: crate::sync::Spray::Binary,
            },
            ..quiet()
        },
    )
}

fn message(from: u8, to: u8, n: u8) -> Bundle {
    message_at(from, to, n, T0)
}

fn message_at(from: u8, to: u8, n: u8, created: u64) -> Bundle {
    Bundle::new(Content::Message(Box::new(crate::bundle::PlainMessage {
        version: crate::codec::VERSION,
        from: testkit::device(from).public(),
        to: testkit::device(to).public(),
        created,
        expires: T0 + DAY,
        payload: crate::codec::Blob(vec![n; 300]),
    })))
}

#[test]
fn an_exchange_moves_one_bundle_a_message_and_a_lost_message_loses_only_its_bundle() {
    let now = Now {
        mono: 1_000,
        unix: T0,
    };
    let (mut a, mut b) = (carrier(1), carrier(2));
    for n in 0..3 {
        assert!(matches!(
            a.carry(now, &message(1, 3, n), 0),
            crate::store::Admission::Added(_)
        ));
    }
    let one = crate::sync::Policy {
        per_message: 1,
        ..crate::sync::Policy::default()
    };
    let mut x = Exchange::open(&mut a, b.key(), now, 7, one);
    let mut carrying = Vec::new();
    while let Some(f) = x.flight() {
        if f.to_responder && f.bundle_bytes > 0 {
            carrying.push(f.bundle_bytes);
            if carrying.len() == 2 {
                // The link breaks with the second bundle on the air.
                break;
            }
        }
        x.deliver(&mut a, &mut b, now).expect("honest peers");
    }
    // One bundle a message; the first arrived, the one on the air did not.
    assert_eq!(carrying.len(), 2);
    assert!(carrying.iter().all(|&len| len > 300 && len < 400));
    assert_eq!(b.store().len(), 1);
    // The next session carries the other two, one a message, and closes.
    let mut y = Exchange::open(&mut a, b.key(), now, 8, one);
    let mut messages = 0;
    while y.flight().is_some() {
        y.deliver(&mut a, &mut b, now).expect("honest peers");
        messages += 1;
    }
    assert_eq!(b.store().len(), 3);
    assert_eq!(y.initiator().given().len(), 2);
    assert!(y.initiator().is_finished());
    assert!(messages >= 4, "two bundles need two transfer messages");
}

/// Runs a whole exchange from `a` to `b` under `policy`.
fn exchange(a: &mut Device, b: &mut Device, policy: crate::sync::Policy) -> Exchange {
    let now = Now {
        mono: 1_000,
        unix: T0 + 60,
    };
    let mut x = Exchange::open(a, b.key(), now, 9, policy);
    while x.flight().is_some() {
        x.deliver(a, b, now).expect("honest peers");
    }
    x
}

fn one_a_message() -> crate::sync::Policy {
    crate::sync::Policy {
        per_message: 1,
        ..crate::sync::Policy::default()
    }
}

#[test]
fn destination_first_hands_the_peer_its_own_messages_before_older_ones() {
    let now = Now {
        mono: 1_000,
        unix: T0 + 30,
    };
    let for_b = message_at(1, 2, 9, T0 + 10);
    let plain = one_a_message();
    let first = crate::sync::Policy {
        destination_first: true,
        ..plain
    };
    for (policy, expect_first) in [(plain, false), (first, true)] {
        let (mut a, mut b) = (carrier(1), carrier(2));
        for n in 0..3 {
            a.carry(now, &message(1, 3, n), 0);
        }
        a.carry(now, &for_b, 0);
        let x = exchange(&mut a, &mut b, policy);
        assert_eq!(x.initiator().given().len(), 4);
        // Oldest first puts the newer message for b last; destination first, first.
        assert_eq!(x.initiator().given()[0] == for_b.id(), expect_first);
        assert_eq!(x.initiator().given()[3] == for_b.id(), !expect_first);
    }
}

#[test]
fn a_delivered_message_stops_at_its_destination_when_asked() {
    let now = Now {
        mono: 1_000,
        unix: T0 + 30,
    };
    for (relay, carried) in [(true, 1), (false, 0)] {
        let (mut b, mut c) = (carrier(2), carrier(3));
        // b holds a message addressed to itself.
        b.carry(now, &message(1, 2, 0), 0);
        let policy = crate::sync::Policy {
            relay_delivered: relay,
            ..one_a_message()
        };
        exchange(&mut b, &mut c, policy);
        assert_eq!(c.store().len(), carried, "relay_delivered {relay}");
    }
}

#[test]
fn spray_and_wait_halves_copies_on_a_hand_over_to_the_destination_when_asked() {
    let now = Now {
        mono: 1_000,
        unix: T0 + 30,
    };
    let m = message(1, 2, 0);
    for (halve, kept) in [(false, 6), (true, 3)] {
        let mut a = sprayer(1);
        let mut b = carrier(2);
        a.carry(now, &m, 6);
        let policy = crate::sync::Policy {
            halve_to_destination: halve,
            ..one_a_message()
        };
        exchange(&mut a, &mut b, policy);
        assert!(b.store().contains(&m.id()), "delivered");
        assert_eq!(a.store().get(&m.id()).map(|e| e.copies), Some(kept));
    }
}

#[test]
fn copies_given_with_a_lost_message_go_back_to_their_holder() {
    let now = Now {
        mono: 1_000,
        unix: T0 + 30,
    };
    let mut a = sprayer(1);
    let mut b = carrier(2);
    let m = message(1, 3, 0);
    a.carry(now, &m, 6);
    let mut x = Exchange::open(&mut a, b.key(), now, 9, one_a_message());
    while x.flight_ids().is_empty() {
        x.deliver(&mut a, &mut b, now).expect("honest peers");
    }
    // Three copies are on the air with the bundle; the holder kept three.
    assert_eq!(x.flight_ids(), vec![m.id()]);
    assert_eq!(a.store().get(&m.id()).map(|e| e.copies), Some(3));
    x.lose(&mut a, &mut b, now);
    assert_eq!(a.store().get(&m.id()).map(|e| e.copies), Some(6));
    assert!(!b.store().contains(&m.id()));
}

#[test]
fn fifo_hands_over_in_arrival_order_and_random_in_an_order_of_its_own() {
    let now = Now {
        mono: 1_000,
        unix: T0 + 30,
    };
    // Eight messages arrive newest first.
    let made: Vec<Bundle> = (0..8u8)
        .map(|n| message_at(1, 3, n, T0 + 8 - u64::from(n)))
        .collect();
    let order = |order| {
        let (mut a, mut b) = (carrier(1), carrier(2));
        for m in &made {
            a.carry(now, m, 0);
        }
        let policy = crate::sync::Policy {
            order,
            ..one_a_message()
        };
        exchange(&mut a, &mut b, policy)
            .initiator()
            .given()
            .to_vec()
    };
    let arrival: Vec<Hash> = made.iter().map(Bundle::id).collect();
    let oldest: Vec<Hash> = arrival.iter().rev().copied().collect();
    assert_eq!(order(crate::sync::Order::Priority), oldest);
    assert_eq!(order(crate::sync::Order::Fifo), arrival);
    let random = order(crate::sync::Order::Random);
    assert_ne!(random, oldest);
    assert_ne!(random, arrival);
    let mut sorted = random.clone();
    sorted.sort();
    let mut all = arrival.clone();
    all.sort();
    assert_eq!(sorted, all, "every one, once");
}

#[test]
fn a_focused_copy_moves_once_the_peer_answers_and_stays_if_the_message_is_lost() {
    let focus = |n| {
        carrier_with(
            n,
            DeviceConfig {
                routing: crate::sync::Routing::SprayAndFocus { copies: 1 },
                ..quiet()
            },
        )
    };
    let (mut holder, mut likelier, mut dest) = (focus(1), focus(2), focus(3));
    // The likelier carrier meets the destination: its P = 0.75 > the holder's 0.
    likelier.met(dest.key());
    dest.met(likelier.key());
    exchange(&mut likelier, &mut dest, one_a_message());
    let now = Now {
        mono: 2_000,
        unix: T0 + 90,
    };
    let msg = message(1, 3, 0);
    holder.carry(now, &msg, 1);
    holder.met(likelier.key());
    likelier.met(holder.key());
    let mut x = Exchange::open(&mut holder, likelier.key(), now, 9, one_a_message());
    while x.flight_ids().is_empty() {
        x.deliver(&mut holder, &mut likelier, now)
            .expect("honest peers");
    }
    // The single copy is on the air and still at the holder; lost, it stays, still one.
    x.lose(&mut holder, &mut likelier, now);
    assert_eq!(holder.store().get(&msg.id()).map(|e| e.copies), Some(1));
    assert!(!likelier.store().contains(&msg.id()));
    // The next session hands it on: the likelier carrier has it, the holder no longer.
    exchange(&mut holder, &mut likelier, one_a_message());
    assert_eq!(likelier.store().get(&msg.id()).map(|e| e.copies), Some(1));
    assert!(!holder.store().contains(&msg.id()));
}
