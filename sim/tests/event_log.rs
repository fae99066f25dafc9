//! The ONE's `EventLogReport`: runs small enough to follow by hand, line by line, and a larger
//! one checked against the run's counters.

use meshpay_sim::one_reports;
use meshpay_sim::scenario::{Mobility, Radio, RoutingConfig, Workload};
use meshpay_sim::{Outcome, Scenario, Sim};
use std::collections::BTreeMap;

/// A radio of one byte per ms that counts only bundle bytes (The ONE's link model), with no
/// set-up time: a message of `n` bytes is on the air for `n` ms.
fn byte_per_ms() -> Radio {
    Radio {
        bitrate_bps: 8_000,
        setup_s: 0.0,
        control_on_air: false,
        ..Radio::default()
    }
}

/// Runs three nodes on the contact and message traces given, recording events.
fn traced(contacts: &str, messages: &str, ttl_s: f64, routing: RoutingConfig) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let (c, m) = (dir.path().join("c.txt"), dir.path().join("m.txt"));
    std::fs::write(&c, contacts).unwrap();
    std::fs::write(&m, messages).unwrap();
    let s = Scenario {
        name: "log".into(),
        nodes: 3,
        duration_s: 300.0,
        mobility: Mobility::Trace { path: c },
        workload: Workload {
            trace: Some(m),
            ttl_s,
            ..Workload::default()
        },
        routing,
        radio: byte_per_ms(),
        ..Scenario::default()
    };
    let mut sim = Sim::new(&s).unwrap();
    sim.record_events();
    sim.run(|_| {})
}

/// By hand: M1 (500 B, p0 to p2) crosses p0–p1 in 0.5 s and waits at p1 for p2; M2 (900 B)
/// is on the air when p0–p1 parts at 40.5 s, and goes again at the next contact; M3 (1500 B)
/// travels in two bundles of 750 B in one flight: two starts, and the bundle that completes it
/// at p1 is the delivery. Destinations keep what they take (as The ONE's routers do).
///
/// The ONE (its `EventLogReport`, `ExternalEventsQueue` of these contacts and messages, an
/// epidemic router, 1 kB/s links) writes the same lines, but for its clock's rounding
/// (`20.50000000000002`) and M3 as one message (one `S`, then `81.5 DE p0 p1 M3 D`).
#[test]
fn a_transfer_an_abort_and_deliveries_line_by_line() {
    let contacts = "10 CONN 0 1 up\n40.5 CONN 0 1 down\n60 CONN 1 2 up\n70 CONN 0 1 up\n";
    let messages = "20 C M1 0 2 500\n40 C M2 0 1 900\n80 C M3 0 1 1500\n";
    let keep = RoutingConfig {
        relay_delivered: false,
        ..RoutingConfig::default()
    };
    let o = traced(contacts, messages, 0.0, keep);
    assert_eq!(
        one_reports::event_log(&o),
        "\
10.0 CONN p0 p1 up
20.0 C p0 M1
20.0 S p0 p1 M1
20.5 DE p0 p1 M1 R
40.0 C p0 M2
40.0 S p0 p1 M2
40.5 CONN p0 p1 down
40.5 A p0 p1 M2
60.0 CONN p1 p2 up
60.0 S p1 p2 M1
60.5 DE p1 p2 M1 D
70.0 CONN p0 p1 up
70.0 S p0 p1 M2
70.9 DE p0 p1 M2 D
80.0 C p0 M3
80.0 S p0 p1 M3
80.0 S p0 p1 M3
81.5 DE p0 p1 M3 R
81.5 DE p0 p1 M3 D
"
    );
    // Handed on from its destination, M2 goes to p2 as a relay.
    let log = one_reports::event_log(&traced(contacts, messages, 0.0, RoutingConfig::default()));
    assert!(
        log.contains("70.9 DE p0 p1 M2 D\n70.9 S p1 p2 M2\n71.8 DE p1 p2 M2 R\n"),
        "{log}"
    );
    // The same deliveries as the other reports.
    let delivered = one_reports::delivered_messages(&o, 0.0);
    assert!(delivered.contains("\n60.5000 M1 500 2 "), "{delivered}");
    assert!(delivered.contains("\n81.5000 M3 1500 1 "), "{delivered}");
}

const TWO_CONTACTS: &str = "50 CONN 1 2 up\n60 CONN 1 2 down\n100 CONN 0 1 up\n110 CONN 0 1 down\n\
                            120 CONN 1 2 up\n130 CONN 1 2 down\n";
const THREE_MESSAGES: &str = "1 C M1 0 2 500\n2 C M2 0 2 500\n3 C M3 0 2 500\n";

/// By hand: a buffer of 1 KB holds two of the three 500 B messages, so the third evicts the
/// oldest (`DR` at its creation); with a TTL of 150 s every copy expires in the second after
/// its expiry, at each node that holds it: dropped at the relays, removed at the destination,
/// which keeps what it took (The ONE keeps no copy there, so drops none).
#[test]
fn drops_line_by_line() {
    let o = traced(
        TWO_CONTACTS,
        THREE_MESSAGES,
        150.0,
        RoutingConfig {
            buffer_kb: 1,
            drop: "oldest".into(),
            ..RoutingConfig::default()
        },
    );
    assert_eq!(
        one_reports::event_log(&o),
        "\
1.0 C p0 M1
2.0 C p0 M2
3.0 C p0 M3
3.0 DR p0 M1
50.0 CONN p1 p2 up
60.0 CONN p1 p2 down
100.0 CONN p0 p1 up
100.0 S p0 p1 M2
100.0 S p0 p1 M3
101.0 DE p0 p1 M2 R
101.0 DE p0 p1 M3 R
110.0 CONN p0 p1 down
120.0 CONN p1 p2 up
120.0 S p1 p2 M2
120.0 S p1 p2 M3
121.0 DE p1 p2 M2 D
121.0 DE p1 p2 M3 D
130.0 CONN p1 p2 down
153.0 DR p0 M2
153.0 DR p1 M2
153.0 R p2 M2
154.0 DR p0 M3
154.0 DR p1 M3
154.0 R p2 M3
"
    );
    assert_eq!(o.counters.dropped, 5);
}

/// By hand: under spray-and-focus with one copy, p1 met p2 (the destination) before, so p0
/// hands its single copies to p1: `R` (removed, not dropped) once p1 has answered, after the
/// arrivals.
#[test]
fn copies_handed_on_are_removed_not_dropped() {
    let o = traced(
        TWO_CONTACTS,
        THREE_MESSAGES,
        0.0,
        RoutingConfig {
            routing: "spray-and-focus".into(),
            copies: 1,
            ..RoutingConfig::default()
        },
    );
    let log = one_reports::event_log(&o);
    let handed: Vec<&str> = log.lines().filter(|l| l.starts_with("101.5 ")).collect();
    assert_eq!(
        handed,
        [
            "101.5 DE p0 p1 M1 R",
            "101.5 DE p0 p1 M2 R",
            "101.5 DE p0 p1 M3 R",
            "101.5 R p0 M2",
            "101.5 R p0 M3",
            "101.5 R p0 M1",
        ]
    );
    assert!(log.contains("121.5 DE p1 p2 M1 D\n"), "{log}");
    assert_eq!(o.counters.dropped, 0);
}

fn walkers() -> Scenario {
    Scenario {
        name: "walk".into(),
        seed: 7,
        duration_s: 1_500.0,
        nodes: 25,
        mobility: Mobility::RandomWaypoint {
            width_m: 200.0,
            height_m: 200.0,
            speed_min: 1.0,
            speed_max: 3.0,
            pause_max_s: 30.0,
            step_s: 1.0,
            warmup_s: 0.0,
        },
        workload: Workload {
            interval_min_s: 10.0,
            interval_max_s: 20.0,
            size: 2_000,
            ttl_s: 600.0,
            ..Workload::default()
        },
        routing: RoutingConfig {
            buffer_kb: 20,
            ..RoutingConfig::default()
        },
        radio: Radio {
            bitrate_bps: 20_000,
            ..Radio::default()
        },
        ..Scenario::default()
    }
}

/// Recording changes nothing in the run, and the log agrees with its counters: a `DE` line per
/// copy relayed, a `D` per message delivered, a `DR` per copy dropped, a `C` per message, a
/// `CONN … up` per contact; every `S` is closed by one `DE` or `A` of the same hosts and
/// message (but those still on the air when the run ends), never before it starts.
#[test]
fn the_log_agrees_with_the_run_and_changes_nothing() {
    let s = walkers();
    let plain = Sim::new(&s).unwrap().run(|_| {});
    let mut sim = Sim::new(&s).unwrap();
    sim.record_events();
    let o = sim.run(|_| {});
    assert!(plain.events.is_empty());
    assert_eq!(format!("{:?}", plain.counters), format!("{:?}", o.counters));
    assert_eq!(format!("{:?}", plain.messages), format!("{:?}", o.messages));

    let log = one_reports::event_log(&o);
    let count = |code: &str| {
        log.lines()
            .filter(|l| l.split(' ').nth(1) == Some(code))
            .count()
    };
    let delivered = o
        .messages
        .iter()
        .filter(|m| m.delivered_ms.is_some())
        .count();
    assert!(
        delivered > 10 && o.counters.dropped > 0 && count("A") > 0,
        "{log}"
    );
    assert!(o.messages.iter().any(|m| m.fragments > 1));
    assert_eq!(count("DE") as u64, o.counters.relayed);
    assert_eq!(log.lines().filter(|l| l.ends_with(" D")).count(), delivered);
    assert_eq!(count("DR") as u64, o.counters.dropped);
    assert_eq!(count("C"), o.messages.len());
    assert_eq!(
        log.lines().filter(|l| l.ends_with(" up")).count() as u64,
        o.counters.contacts
    );
    let mut open: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
    let mut last = 0.0;
    for line in log.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let time: f64 = f[0].parse().unwrap();
        assert!(time >= last, "{line}");
        last = time;
        match f[1] {
            "S" => *open.entry((f[2], f[3], f[4])).or_default() += 1,
            "DE" | "A" => {
                let left = open.entry((f[2], f[3], f[4])).or_default();
                *left -= 1;
                assert!(*left >= 0, "{line} closes no transfer");
            }
            _ => {}
        }
    }
    let on_air: i64 = open.values().sum();
    assert!(
        on_air <= i64::from(s.nodes),
        "{on_air} transfers never closed"
    );
}

/// Each side holds three messages for node 2 and meets the other for long enough: keeping the
/// link, one side hands over all three before the other starts (as The ONE's routers do);
/// otherwise the two take turns.
#[test]
fn the_side_relaying_keeps_the_link() {
    let contacts = "10 CONN 0 1 up\n100 CONN 0 1 down\n";
    let messages = "1 C M1 0 2 500\n2 C M2 0 2 500\n3 C M3 0 2 500\n\
                    4 C M4 1 2 500\n5 C M5 1 2 500\n6 C M6 1 2 500\n";
    let senders = |keep_link: bool| {
        let routing = RoutingConfig {
            bundles_per_message: 1,
            keep_link,
            ..RoutingConfig::default()
        };
        let log = one_reports::event_log(&traced(contacts, messages, 0.0, routing));
        log.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f[1] == "S").then(|| f[2].to_owned())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let kept = senders(true);
    assert!(
        kept == "p0 p0 p0 p1 p1 p1" || kept == "p1 p1 p1 p0 p0 p0",
        "{kept}"
    );
    let turns = senders(false);
    assert!(
        turns == "p0 p1 p0 p1 p0 p1" || turns == "p1 p0 p1 p0 p1 p0",
        "{turns}"
    );
}
