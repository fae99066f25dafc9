//! The simulator against itself (same seed, same bytes), against theory (epidemic latency in
//! the exponential-meeting model) and against hand-made traces in The ONE's formats.

use meshpay_sim::scenario::{Duplex, Mobility, Radio, RoutingConfig, Workload};
use meshpay_sim::{Scenario, Sim, Stats};

/// A 10 m radio: `bitrate_bps` (0: unlimited), set-up seconds, frame loss.
fn radio(bitrate_bps: u64, setup_s: f64, loss: f64) -> Radio {
    Radio {
        range_m: 10.0,
        bitrate_bps,
        setup_s,
        loss,
        ..Radio::default()
    }
}

fn run(s: &Scenario) -> Stats {
    let outcome = Sim::new(s).expect("valid scenario").run(|_| {});
    Stats::of(&outcome, &s.name, s.seed)
}

fn small(seed: u64) -> Scenario {
    Scenario {
        name: "small".into(),
        seed,
        duration_s: 3_000.0,
        nodes: 15,
        mobility: Mobility::RandomWaypoint {
            width_m: 200.0,
            height_m: 200.0,
            speed_min: 1.0,
            speed_max: 2.0,
            pause_max_s: 30.0,
            step_s: 1.0,
            warmup_s: 0.0,
        },
        radio: Radio::default(),
        workload: Workload {
            interval_min_s: 20.0,
            interval_max_s: 40.0,
            ..Workload::default()
        },
        routing: RoutingConfig::default(),
        ..Scenario::default()
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_run() {
    let a = serde_json::to_string(&run(&small(3))).unwrap();
    let b = serde_json::to_string(&run(&small(3))).unwrap();
    assert_eq!(a, b);
    let c = serde_json::to_string(&run(&small(4))).unwrap();
    assert_ne!(a, c);
    let s = run(&small(3));
    assert!(s.created > 50 && s.delivered > 0 && s.contacts > 0, "{s:?}");
}

/// Epidemic routing with unlimited bandwidth and small messages, on random waypoint: the mean
/// delivery latency is H(N−1) / (λ (N−1)) when pairs meet as Poisson processes of rate λ
/// (Groenevelt, Nain and Koole 2005; Zhang et al. 2007), with λ measured from the contacts.
#[test]
fn epidemic_latency_matches_the_exponential_meeting_model() {
    let mut ratios = Vec::new();
    for seed in [1, 2, 3] {
        let s = Scenario {
            name: "theory".into(),
            seed,
            duration_s: 200_000.0,
            nodes: 20,
            mobility: Mobility::RandomWaypoint {
                width_m: 500.0,
                height_m: 500.0,
                speed_min: 1.0,
                speed_max: 2.0,
                pause_max_s: 0.0,
                step_s: 1.0,
                warmup_s: 0.0,
            },
            radio: radio(0, 0.0, 0.0),
            workload: Workload {
                interval_min_s: 300.0,
                interval_max_s: 300.0,
                size: 100,
                until_s: 100_000.0,
                ..Workload::default()
            },
            routing: RoutingConfig {
                buffer_kb: 100_000,
                ..RoutingConfig::default()
            },
            ..Scenario::default()
        };
        let st = run(&s);
        assert_eq!(st.delivered, st.created, "every message arrives: {st:?}");
        let n = f64::from(st.nodes);
        let h: f64 = (1..st.nodes).map(|k| 1.0 / f64::from(k)).sum();
        let theory = h / (st.meeting_rate * (n - 1.0));
        let ratio = st.latency_avg / theory;
        eprintln!(
            "seed {seed}: latency {:.1} s, theory {theory:.1} s, ratio {ratio:.3}",
            st.latency_avg
        );
        assert!((0.9..1.1).contains(&ratio), "seed {seed}: ratio {ratio}");
        ratios.push(ratio);
    }
    let mean = ratios.iter().sum::<f64>() / 3.0;
    assert!((0.94..1.06).contains(&mean), "mean ratio {mean}");
}

fn traced(
    dir: &std::path::Path,
    contacts: &str,
    messages: &str,
    radio: Radio,
    routing: &str,
) -> Stats {
    traced_with(dir, contacts, messages, radio, routing, |_| {})
}

/// As `traced`, with the scenario changed by `edit` first.
fn traced_with(
    dir: &std::path::Path,
    contacts: &str,
    messages: &str,
    radio: Radio,
    routing: &str,
    edit: impl FnOnce(&mut Scenario),
) -> Stats {
    let c = dir.join("contacts.txt");
    let m = dir.join("messages.txt");
    std::fs::write(&c, contacts).unwrap();
    std::fs::write(&m, messages).unwrap();
    let mut s = Scenario {
        name: "trace".into(),
        seed: 1,
        duration_s: 1_000.0,
        nodes: 4,
        mobility: Mobility::Trace { path: c },
        radio,
        workload: Workload {
            trace: Some(m),
            ..Workload::default()
        },
        routing: RoutingConfig {
            routing: routing.into(),
            copies: 2,
            ..RoutingConfig::default()
        },
        ..Scenario::default()
    };
    edit(&mut s);
    run(&s)
}

#[test]
fn a_one_trace_replays_hop_by_hop() {
    let dir = tempfile::tempdir().unwrap();
    // 0 meets 1, then 1 meets 2, then 2 meets 3: one message from 0 to 3 crosses the chain.
    let contacts = "10 CONN 0 1 up\n20 CONN 0 1 down\n30 CONN 1 2 up\n40 CONN 1 2 down\n50 CONN 2 3 up\n60 CONN 2 3 down\n";
    let s = traced(
        dir.path(),
        contacts,
        "5 C M1 0 3 500\n",
        radio(0, 0.0, 0.0),
        "epidemic",
    );
    assert_eq!((s.created, s.delivered, s.relayed), (1, 1, 3));
    assert!((s.latency_avg - 45.0).abs() < 1e-9, "{s:?}");
    assert!((s.hopcount_avg - 3.0).abs() < 1e-9);
    // Direct delivery waits for the destination itself: never here.
    let d = traced(
        dir.path(),
        contacts,
        "5 C M1 0 3 500\n",
        radio(0, 0.0, 0.0),
        "direct",
    );
    assert_eq!(d.delivered, 0);
    // Spray-and-wait with 2 copies: one to node 1, which then waits for node 3.
    let w = traced(
        dir.path(),
        contacts,
        "5 C M1 0 3 500\n",
        radio(0, 0.0, 0.0),
        "spray-and-wait",
    );
    assert_eq!((w.relayed, w.delivered), (1, 0));
}

/// A 1 kB/s radio with 1 s of set-up that counts only bundle bytes on the air, one bundle a
/// sync message: a 500-byte bundle is on the air for exactly 0.5 s.
fn one_like(loss: f64, duplex: Duplex) -> Radio {
    Radio {
        duplex,
        control_on_air: false,
        ..radio(8_000, 1.0, loss)
    }
}

fn one_a_message(s: &mut Scenario) {
    s.routing.bundles_per_message = 1;
}

/// `n` 500-byte messages from `from` to `to`, created at 1, 2, … s.
fn burst(n: u32, from: u32, to: u32, first: u32) -> String {
    (first..first + n)
        .map(|i| format!("{} C M{i} {from} {to} 500", i - first + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A 5,886-byte message travels as six 981-byte bundles and arrives with the last: at 1 kB/s
/// after 1 s of set-up, a 4-second contact carries three (landing at 101.981, 102.962 and
/// 103.943 s; the fourth is cut off), and a second one the other three: delivered at
/// 203.943 s, 202.943 s after it was made.
#[test]
fn a_large_message_arrives_with_its_last_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let once = "100 CONN 0 1 up\n104 CONN 0 1 down\n";
    let twice = "100 CONN 0 1 up\n104 CONN 0 1 down\n200 CONN 0 1 up\n204 CONN 0 1 down\n";
    let run = |contacts: &str| {
        traced_with(
            dir.path(),
            contacts,
            "1 C M1 0 1 5886\n",
            one_like(0.0, Duplex::Half),
            "epidemic",
            one_a_message,
        )
    };
    let half = run(once);
    assert_eq!(
        (half.delivered, half.relayed, half.aborted),
        (0, 3, 1),
        "{half:?}"
    );
    let whole = run(twice);
    assert_eq!((whole.delivered, whole.relayed), (1, 6), "{whole:?}");
    assert!((whole.latency_avg - 202.943).abs() < 1e-9, "{whole:?}");
}

#[test]
fn a_contact_carries_what_its_duration_and_bit_rate_allow() {
    let dir = tempfile::tempdir().unwrap();
    // Ten 500-byte messages at node 0; one 4-second contact at 1 kB/s after 1 s of set-up:
    // one bundle lands every 0.5 s from 101 s, six by 104 s; the seventh is on the air when
    // the contact ends and is lost.
    let messages = burst(10, 0, 1, 1);
    let contact = "100 CONN 0 1 up\n104 CONN 0 1 down\n";
    let s = traced_with(
        dir.path(),
        contact,
        &messages,
        one_like(0.0, Duplex::Half),
        "epidemic",
        one_a_message,
    );
    assert_eq!((s.delivered, s.aborted, s.started), (6, 1, 7), "{s:?}");
    // Oldest first: M1 lands at 101.5 s (created at 1 s), M6 at 104 s (created at 6 s).
    let expected = (100.5 + 100.0 + 99.5 + 99.0 + 98.5 + 98.0) / 6.0;
    assert!((s.latency_avg - expected).abs() < 1e-9, "{s:?}");
    // Half the frames lost: half the rate, one bundle a second, three.
    let lossy = traced_with(
        dir.path(),
        contact,
        &messages,
        one_like(0.5, Duplex::Half),
        "epidemic",
        one_a_message,
    );
    assert_eq!((lossy.delivered, lossy.aborted), (3, 1), "{lossy:?}");
    // The sync messages' own bytes take air time too: fewer.
    let control = traced_with(
        dir.path(),
        contact,
        &messages,
        Radio {
            control_on_air: true,
            ..one_like(0.0, Duplex::Half)
        },
        "epidemic",
        one_a_message,
    );
    assert!(
        control.delivered < 6 && control.delivered > 0,
        "{control:?}"
    );
    // No limit on the rate: everything.
    let all = traced(
        dir.path(),
        contact,
        &messages,
        radio(0, 1.0, 0.0),
        "epidemic",
    );
    assert_eq!((all.delivered, all.aborted), (10, 0));
}

#[test]
fn a_transfer_cut_by_the_end_of_its_contact_is_sent_again_at_the_next() {
    let dir = tempfile::tempdir().unwrap();
    // The first contact carries six and loses the seventh; the second, ten seconds long,
    // carries the other four, the lost one among them.
    let s = traced_with(
        dir.path(),
        "100 CONN 0 1 up\n104 CONN 0 1 down\n200 CONN 1 0 UP\n210 CONN 1 0 DOWN\n",
        &burst(10, 0, 1, 1),
        one_like(0.0, Duplex::Half),
        "epidemic",
        one_a_message,
    );
    assert_eq!((s.delivered, s.aborted, s.relayed), (10, 1, 10), "{s:?}");
    // M7 to M10 land at 201.5, 202, 202.5 and 203 s.
    let first: f64 = (100.5 + 100.0 + 99.5 + 99.0 + 98.5 + 98.0) / 10.0;
    let second: f64 = (201.5 - 7.0 + 202.0 - 8.0 + 202.5 - 9.0 + 203.0 - 10.0) / 10.0;
    assert!((s.latency_avg - (first + second)).abs() < 1e-9, "{s:?}");
}

#[test]
fn concurrent_contacts_share_a_node_radio() {
    let dir = tempfile::tempdir().unwrap();
    // Node 1 meets 0 and 2 at once for 3 s of air time (six bundles' worth): 0 has five
    // messages for 1, and 1 five for 2. Direct delivery, so nothing is relayed further.
    let contacts = "100 CONN 0 1 up\n100 CONN 1 2 up\n104 CONN 0 1 down\n104 CONN 1 2 down\n";
    let messages = format!("{}\n{}", burst(5, 0, 1, 1), burst(5, 1, 2, 6));
    let half = traced_with(
        dir.path(),
        contacts,
        &messages,
        one_like(0.0, Duplex::Half),
        "direct",
        one_a_message,
    );
    // A half-duplex radio sends or receives: six bundles in all through node 1.
    assert_eq!(half.delivered, 6, "{half:?}");
    // A full-duplex one receives from 0 while it sends to 2: all ten.
    let full = traced_with(
        dir.path(),
        contacts,
        &messages,
        one_like(0.0, Duplex::Full),
        "direct",
        one_a_message,
    );
    assert_eq!(full.delivered, 10, "{full:?}");
}

#[test]
fn expired_copies_are_dropped_on_time_even_with_no_contact() {
    let dir = tempfile::tempdir().unwrap();
    // M1 (0 to 3, 60 s to live) goes to node 1 at 10 s; nobody meets anyone after 20 s, and
    // both copies are dropped when it expires, each after its time in its buffer.
    let s = traced_with(
        dir.path(),
        "10 CONN 0 1 up\n20 CONN 0 1 down\n",
        "5 C M1 0 3 500\n",
        radio(0, 0.0, 0.0),
        "epidemic",
        |s| s.workload.ttl_s = 60.0,
    );
    assert_eq!((s.relayed, s.dropped, s.delivered), (1, 2, 0), "{s:?}");
    // Buffer times, by hand: a bundle lives through its expiry second (65 s) and is dropped
    // at 66 s, so 61 s at node 0 (from 5 s) and 56 s at node 1 (from 10 s); the median is The
    // ONE's element n/2 of the sorted list.
    assert!((s.buffertime_avg - 58.5).abs() < 0.01, "{s:?}");
    assert!((s.buffertime_med - 61.0).abs() < 0.01, "{s:?}");
}

#[test]
fn bad_scenarios_and_traces_are_refused_with_a_reason() {
    let err = Scenario::from_toml("nodes = 1").unwrap_err().to_string();
    assert!(err.contains("nodes"), "{err}");
    let err = Scenario::from_toml("colour = \"blue\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("colour"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c.txt");
    std::fs::write(&c, "1 CONN 0 9 up\n").unwrap();
    let s = Scenario {
        nodes: 4,
        mobility: Mobility::Trace { path: c.clone() },
        ..Scenario::default()
    };
    let err = Sim::new(&s).err().expect("host 9 of 4").to_string();
    assert!(err.contains("host 9"), "{err}");
    // A size is carried exactly or refused, never changed.
    std::fs::write(&c, "1 CONN 0 1 up\n").unwrap();
    let m = dir.path().join("m.txt");
    std::fs::write(&m, "1 C M1 0 1 500\n2 C M2 0 1 20000000\n").unwrap();
    let big = Scenario {
        workload: Workload {
            trace: Some(m),
            ..Workload::default()
        },
        ..s
    };
    let err = Sim::new(&big).err().expect("20 MB").to_string();
    assert!(err.contains("M2: 20000000 bytes"), "{err}");
}

/// The payments workload with cloned wallets, across seeds: nothing settles twice, no vendor
/// accepts from an allowance whose fraud proof it holds, the issuer never pays out more than
/// an allowance's escrow, and the clones are found in the mesh.
#[test]
fn market_properties_hold_across_seeds() {
    for seed in 1..=4 {
        let s = Scenario {
            name: "market".into(),
            seed,
            duration_s: 3_600.0,
            nodes: 24,
            mobility: Mobility::RandomWaypoint {
                width_m: 60.0,
                height_m: 60.0,
                speed_min: 0.5,
                speed_max: 1.5,
                pause_max_s: 60.0,
                step_s: 1.0,
                warmup_s: 0.0,
            },
            radio: Radio::ble(),
            workload: Workload {
                messages: false,
                ..Workload::default()
            },
            routing: RoutingConfig::default(),
            payments: meshpay_sim::scenario::Payments {
                enabled: true,
                vendors: 5,
                gateways: 1,
                pay_prob: 0.5,
                amount_min: 100,
                amount_max: 400,
                allowance: 3_000,
                clones: 2,
            },
            ..Scenario::default()
        };
        let st = run(&s);
        let p = st.payments.expect("payments ran");
        eprintln!("seed {seed}: {p:?}");
        assert_eq!(p.settled_twice, 0, "seed {seed}");
        assert_eq!(p.accepted_after_proof, 0, "seed {seed}");
        assert!(p.conserved, "seed {seed}");
        assert!(p.settled > 0, "seed {seed}: {p:?}");
        assert_eq!(p.cloned_allowances, 2);
        assert!(
            p.fraud_detection_avg.is_finite(),
            "seed {seed}: the clones were never caught"
        );
    }
}

#[test]
fn on_a_market_day_only_agents_reach_the_gateways() {
    let mut s = Scenario::from_toml(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/market-day.toml"
        ))
        .unwrap(),
    )
    .expect("the example parses");
    s.duration_s = 3_600.0;
    let sim = Sim::new(&s).expect("valid");
    let (vendors, gateways) = (s.payments.vendors, s.payments.gateways);
    let Mobility::Market { agents, .. } = s.mobility else {
        panic!("the example is a market day");
    };
    let gateway = |n: u32| (vendors..vendors + gateways).contains(&n);
    let agent = |n: u32| (vendors + gateways..vendors + gateways + agents).contains(&n);
    let mut agent_met_gateway = false;
    for c in sim.contacts() {
        for (x, y) in [(c.a, c.b), (c.b, c.a)] {
            if gateway(x) && !gateway(y) {
                assert!(
                    agent(y),
                    "node {y} met a gateway without walking to the signal"
                );
                agent_met_gateway = true;
            }
        }
    }
    assert!(agent_met_gateway, "no agent reached the signal in an hour");
}

/// Vendors judge with every spend notice they carry, as `meshpay` nodes do. A wallet (node 2)
/// pays vendor 0; vendor 0 meets vendor 1, which so learns the notice of that counter; then
/// the wallet's copy (node 3) pays vendor 1 with the same counter, with no gateway anywhere:
/// vendor 1 refuses it as a fork at once, and both vendors hold the proof.
#[test]
fn a_clone_is_refused_by_a_vendor_that_carries_its_twin_notice() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("contacts.txt");
    std::fs::write(
        &c,
        "10 CONN 0 2 up\n20 CONN 0 2 down\n30 CONN 0 1 up\n40 CONN 0 1 down\n\
         50 CONN 1 3 up\n60 CONN 1 3 down\n70 CONN 0 1 up\n80 CONN 0 1 down\n",
    )
    .unwrap();
    let s = Scenario {
        name: "two vendors, a wallet and its copy".into(),
        seed: 1,
        duration_s: 100.0,
        nodes: 4,
        mobility: Mobility::Trace { path: c },
        radio: radio(0, 0.0, 0.0),
        workload: Workload {
            messages: false,
            ..Workload::default()
        },
        routing: RoutingConfig::default(),
        payments: meshpay_sim::scenario::Payments {
            enabled: true,
            vendors: 2,
            gateways: 0,
            pay_prob: 1.0,
            amount_min: 100,
            amount_max: 100,
            allowance: 3_000,
            clones: 1,
        },
        ..Scenario::default()
    };
    let p = run(&s).payments.expect("payments ran");
    assert_eq!(p.cloned_allowances, 1);
    assert_eq!((p.payments, p.accepted, p.refused), (2, 1, 1), "{p:?}");
    // Found at the clone's payment, 40 s after the first; vendor 0 learns it at the next
    // meeting, 20 s later.
    assert!((p.fraud_detection_avg - 40.0).abs() < 1e-9, "{p:?}");
    assert!((p.fraud_spread_avg - 20.0).abs() < 1e-9, "{p:?}");
    assert_eq!(p.accepted_after_proof, 0);
}

/// An epidemic replay over a ONE-like half-duplex 1 kB/s link, a bundle a message, with
/// deliveries first.
fn destination_first(dir: &std::path::Path, contacts: &str, messages: &str) -> Stats {
    let radio = one_like(0.0, Duplex::Half);
    traced_with(dir, contacts, messages, radio, "epidemic", |s| {
        one_a_message(s);
        s.routing.destination_first = true;
    })
}

#[test]
fn destination_first_hands_a_peer_its_own_message_before_older_relays() {
    let dir = tempfile::tempdir().unwrap();
    // Node 0 holds five messages for node 3 and, newer, one for node 1; it meets node 1 for
    // one second of air time: two bundles.
    let messages = format!("{}\n6 C M6 0 1 500", burst(5, 0, 3, 1));
    let contact = "100 CONN 0 1 up\n102 CONN 0 1 down\n";
    let oldest = traced_with(
        dir.path(),
        contact,
        &messages,
        one_like(0.0, Duplex::Half),
        "epidemic",
        one_a_message,
    );
    assert_eq!((oldest.relayed, oldest.delivered), (2, 0), "{oldest:?}");
    let first = destination_first(dir.path(), contact, &messages);
    assert_eq!((first.relayed, first.delivered), (2, 1), "{first:?}");
    // M6, made at 6 s, lands first, at 101.5 s.
    assert!((first.latency_avg - 95.5).abs() < 1e-9, "{first:?}");
}

/// Deliveries go before any relaying whichever side holds them, as in The ONE: one side holds
/// five relays for node 3, the other, newer, a message for its peer; a contact of two bundles'
/// air time delivers it first, whether the relays are with the lower node or the higher.
#[test]
fn destination_first_delivers_before_the_peer_relays_anything() {
    let dir = tempfile::tempdir().unwrap();
    let contact = "100 CONN 0 1 up\n102 CONN 0 1 down\n";
    for (relays, to) in [(0, 0), (1, 1)] {
        let (holder, peer) = (1 - to, to);
        let messages = format!("{}\n6 C M6 {holder} {peer} 500", burst(5, relays, 3, 1));
        let st = destination_first(dir.path(), contact, &messages);
        assert_eq!(st.delivered, 1, "relays at {relays}: {st:?}");
        // M6, made at 6 s, lands first, at 101.5 s.
        assert!(
            (st.latency_avg - 95.5).abs() < 1e-9,
            "relays at {relays}: {st:?}"
        );
    }
}

#[test]
fn a_delivered_message_stops_at_its_destination_and_spray_and_wait_halves_on_delivery() {
    let dir = tempfile::tempdir().unwrap();
    // M1 reaches its destination 3 first; then 3 meets 2, and 0 meets 1.
    let contacts = "10 CONN 0 3 up\n20 CONN 0 3 down\n30 CONN 2 3 up\n40 CONN 2 3 down\n\
                    50 CONN 0 1 up\n60 CONN 0 1 down\n";
    let m = "5 C M1 0 3 500\n";
    let unlimited = radio(0, 0.0, 0.0);
    // Epidemic: 3 hands it on to 2 and 0 to 1, unless delivered messages stay.
    let on = traced(dir.path(), contacts, m, unlimited.clone(), "epidemic");
    assert_eq!((on.relayed, on.delivered), (3, 1), "{on:?}");
    let stay = traced_with(
        dir.path(),
        contacts,
        m,
        unlimited.clone(),
        "epidemic",
        |s| {
            s.routing.relay_delivered = false;
        },
    );
    assert_eq!((stay.relayed, stay.delivered), (2, 1), "{stay:?}");
    // Spray-and-wait with two copies: 0 keeps both when it delivers and sprays one to 1,
    // or halves them as The ONE does and waits.
    let keep = traced_with(
        dir.path(),
        contacts,
        m,
        unlimited.clone(),
        "spray-and-wait",
        |s| {
            s.routing.relay_delivered = false;
        },
    );
    assert_eq!((keep.relayed, keep.delivered), (2, 1), "{keep:?}");
    let halve = traced_with(dir.path(), contacts, m, unlimited, "spray-and-wait", |s| {
        s.routing.relay_delivered = false;
        s.routing.halve_to_destination = true;
    });
    assert_eq!((halve.relayed, halve.delivered), (1, 1), "{halve:?}");
}

#[test]
fn source_spray_and_wait_hands_out_single_copies_from_the_source_only() {
    let dir = tempfile::tempdir().unwrap();
    // M1 (0 → 3, four copies) meets the chain 0–1, 1–2, 2–3, then 0–2 and 2–3 again.
    let contacts = "10 CONN 0 1 up\n20 CONN 0 1 down\n30 CONN 1 2 up\n40 CONN 1 2 down\n\
                    50 CONN 2 3 up\n60 CONN 2 3 down\n65 CONN 0 2 up\n70 CONN 0 2 down\n\
                    80 CONN 2 3 up\n90 CONN 2 3 down\n";
    let m = "5 C M1 0 3 500\n";
    // Binary: 0 gives 1 two copies, 1 gives 2 one, 2 delivers at 50 s. Source: 1 gets one
    // copy and waits; 2 gets one from 0 at 65 s and delivers at 80 s.
    for (mode, latency) in [("binary", 45.0), ("source", 75.0)] {
        let s = traced_with(
            dir.path(),
            contacts,
            m,
            radio(0, 0.0, 0.0),
            "spray-and-wait",
            |s| {
                s.routing.copies = 4;
                s.routing.spray_mode = mode.into();
            },
        );
        assert_eq!((s.relayed, s.delivered), (3, 1), "{mode}: {s:?}");
        assert!((s.latency_avg - latency).abs() < 1e-9, "{mode}: {s:?}");
    }
    // A scenario without the key is binary, as before; an unknown mode is refused.
    let old = Scenario::from_toml("[routing]\nrouting = \"spray-and-wait\"\n").unwrap();
    assert_eq!(old.routing.spray_mode, "binary");
    assert!(Scenario::from_toml("[routing]\nspray_mode = \"both\"\n").is_err());
}

/// 1 meets 3 at 10 s; 0 meets 2 at 30 s and 1 at 50 s; 1 meets 3 again at 70 s.
const LIKELIER: &str = "10 CONN 1 3 up\n20 CONN 1 3 down\n30 CONN 0 2 up\n40 CONN 0 2 down\n\
                        50 CONN 0 1 up\n60 CONN 0 1 down\n70 CONN 1 3 up\n80 CONN 1 3 down\n";

#[test]
fn prophet_forwards_only_to_a_likelier_carrier() {
    let dir = tempfile::tempdir().unwrap();
    // 1 meets the destination 3 at 10 s; 0 (holding M1 for 3) meets 2, which knows nothing
    // of 3 (0 = 0: no forwarding), then 1: P(1,3) = 0.75 · 0.98 (one 30 s unit) = 0.735 >
    // P(0,3) = 0.75 · 0.735 · 0.25, so 1 takes it and delivers at 70 s.
    let (contacts, m) = (LIKELIER, "5 C M1 0 3 500\n");
    let p = traced(dir.path(), contacts, m, radio(0, 0.0, 0.0), "prophet");
    assert_eq!((p.relayed, p.delivered), (2, 1), "{p:?}");
    assert!((p.latency_avg - 65.0).abs() < 1e-9, "{p:?}");
    // Epidemic hands a copy to 2 as well.
    let e = traced(dir.path(), contacts, m, radio(0, 0.0, 0.0), "epidemic");
    assert_eq!((e.relayed, e.delivered), (3, 1), "{e:?}");
}

#[test]
fn spray_and_focus_hands_its_last_copy_to_a_likelier_carrier() {
    let dir = tempfile::tempdir().unwrap();
    // Two copies of M1 (0 → 3). 1 meets 3 at 10 s; 0 sprays one copy to 2 at 30 s; at 50 s
    // 0 focuses: P(1,3) = 0.735 > P(0,3), so its last copy moves to 1 (not a drop), which
    // delivers at 70 s. 2 never meets 3. Spray-and-wait keeps the last copy at 0.
    let (contacts, m) = (LIKELIER, "5 C M1 0 3 500\n");
    let f = traced(
        dir.path(),
        contacts,
        m,
        radio(0, 0.0, 0.0),
        "spray-and-focus",
    );
    assert_eq!((f.relayed, f.delivered, f.dropped), (3, 1, 0), "{f:?}");
    assert!((f.latency_avg - 65.0).abs() < 1e-9, "{f:?}");
    let w = traced(
        dir.path(),
        contacts,
        m,
        radio(0, 0.0, 0.0),
        "spray-and-wait",
    );
    assert_eq!((w.relayed, w.delivered), (1, 0), "{w:?}");
}

#[test]
fn maxprop_sends_first_what_the_peer_reaches_at_the_least_cost() {
    let dir = tempfile::tempdir().unwrap();
    // 1 meets 3 at 10 s. Node 0 holds M1 for 2 (made first) and M2 for 3; at 100 s it meets
    // 1 for 1.6 s at 1 kB/s after 1 s of set-up: one 500-byte bundle. 1 then meets 3 at
    // 200 s. Under MaxProp, 1's vector is {3: 0.5, 0: 0.5} once it has met 0: 3 costs 0.5
    // from 1 and nobody knows 2, so M2 goes and arrives at 201.5 s, 199.5 s after it was
    // made. Epidemic hands over the oldest, M1, which 1 passes to 3 but never to 2.
    let contacts = "10 CONN 1 3 up\n20 CONN 1 3 down\n100 CONN 0 1 up\n101.6 CONN 0 1 down\n\
                    200 CONN 1 3 up\n210 CONN 1 3 down\n";
    let messages = "1 C M1 0 2 500\n2 C M2 0 3 500\n";
    let over = |routing: &str| {
        traced_with(
            dir.path(),
            contacts,
            messages,
            one_like(0.0, Duplex::Half),
            routing,
            one_a_message,
        )
    };
    let m = over("maxprop");
    assert_eq!((m.relayed, m.delivered), (2, 1), "{m:?}");
    assert!((m.latency_avg - 199.5).abs() < 1e-9, "{m:?}");
    let e = over("epidemic");
    assert_eq!((e.relayed, e.delivered), (2, 0), "{e:?}");
}

#[test]
fn maxprop_delivers_on_random_waypoint_with_and_without_its_drop_policy() {
    let mut s = small(3);
    s.routing.routing = "maxprop".into();
    let m = run(&s);
    let e = run(&small(3));
    assert!(m.created > 50 && m.delivered > 0, "{m:?}");
    // Replication is epidemic's: on the same contacts with room to spare, as many arrive.
    assert!(m.delivered * 10 >= e.delivered * 9, "{m:?} {e:?}");
    // Buffers of two messages: a full one drops the costliest, and messages still arrive.
    s.routing.buffer_kb = 1;
    s.routing.drop = "maxprop".into();
    let d = run(&s);
    assert!(d.delivered > 0 && d.dropped > 0, "{d:?}");
}
