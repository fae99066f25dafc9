//! Mobility models (warm-up, random walk, road maps) and the reports in The ONE's own formats.

use meshpay_sim::mobility::after_warmup;
use meshpay_sim::one_reports;
use meshpay_sim::scenario::{Mobility, RoutingConfig, Workload};
use meshpay_sim::trace::{ContactEvent, Link};
use meshpay_sim::{Scenario, Sim};

fn ev(t_ms: u64, a: u32, b: u32, link: Link) -> ContactEvent {
    ContactEvent { t_ms, a, b, link }
}

/// By hand: a pair up from 5 s to 15 s and another from 20 s to 30 s, a warm-up of 10 s. The
/// first pair is up when the run starts (0 s) and parts at 5 s; the second meets at 10 s.
#[test]
fn a_warm_up_is_cut_off_and_the_clock_starts_after_it() {
    let events = vec![
        ev(5_000, 1, 2, Link::Up),
        ev(7_000, 3, 4, Link::Up),
        ev(9_000, 3, 4, Link::Down),
        ev(10_000, 5, 6, Link::Up),
        ev(15_000, 1, 2, Link::Down),
        ev(20_000, 3, 4, Link::Up),
        ev(30_000, 3, 4, Link::Down),
    ];
    assert_eq!(
        after_warmup(events.clone(), 10_000),
        vec![
            ev(0, 1, 2, Link::Up),
            ev(0, 5, 6, Link::Up),
            ev(5_000, 1, 2, Link::Down),
            ev(10_000, 3, 4, Link::Up),
            ev(20_000, 3, 4, Link::Down),
        ]
    );
    assert_eq!(after_warmup(events.clone(), 0), events);
}

fn walkers(warmup_s: f64) -> Scenario {
    Scenario {
        name: "warm".into(),
        seed: 3,
        duration_s: 2_000.0,
        nodes: 20,
        mobility: Mobility::RandomWaypoint {
            width_m: 300.0,
            height_m: 300.0,
            speed_min: 1.0,
            speed_max: 2.0,
            pause_max_s: 30.0,
            step_s: 1.0,
            warmup_s,
        },
        workload: Workload {
            interval_min_s: 20.0,
            interval_max_s: 40.0,
            ttl_s: 600.0,
            ..Workload::default()
        },
        routing: RoutingConfig::default(),
        ..Scenario::default()
    }
}

#[test]
fn a_warmed_up_run_lasts_its_duration_and_is_repeatable() {
    let cold = Sim::new(&walkers(0.0)).unwrap();
    let warm = Sim::new(&walkers(3_000.0)).unwrap();
    assert_ne!(cold.contacts(), warm.contacts());
    assert!(warm.contacts().iter().all(|c| c.t_ms <= 2_000_000));
    assert_eq!(
        warm.contacts(),
        Sim::new(&walkers(3_000.0)).unwrap().contacts()
    );
    let mut bad = walkers(-1.0);
    assert!(Sim::new(&bad).is_err());
    bad = walkers(f64::NAN);
    assert!(Sim::new(&bad).is_err());
    // Old scenario files, without the key, still load.
    let text = toml::to_string(&walkers(0.0))
        .unwrap()
        .replace("warmup_s = 0.0\n", "");
    assert!(!text.contains("warmup_s"));
    assert_eq!(Scenario::from_toml(&text).unwrap(), walkers(0.0));
}

/// A run's reports in The ONE's formats agree with its statistics: one created line per
/// message, one delivered line per delivery with the run's latency, and contact durations
/// that sum to the run's contact time.
#[test]
fn the_one_reports_agree_with_the_run() {
    let s = walkers(0.0);
    let outcome = Sim::new(&s).unwrap().run(|_| {});
    let stats = meshpay_sim::Stats::of(&outcome, &s.name, s.seed);
    let created = one_reports::created_messages(&outcome, s.workload.ttl_s);
    let lines: Vec<&str> = created.lines().skip(1).collect();
    assert_eq!(lines.len() as u64, stats.created);
    assert!(lines[0].ends_with(" 10 N "), "{}", lines[0]);
    assert!(lines[0].contains(" 500 p"), "{}", lines[0]);
    let delivered = one_reports::delivered_messages(&outcome, s.workload.ttl_s);
    let rows: Vec<Vec<&str>> = delivered
        .lines()
        .skip(1)
        .map(|l| l.split(' ').collect())
        .collect();
    assert_eq!(rows.len() as u64, stats.delivered);
    #[allow(clippy::cast_precision_loss)]
    let mean: f64 = rows
        .iter()
        .map(|r| r[4].parse::<f64>().unwrap())
        .sum::<f64>()
        / rows.len() as f64;
    assert!(
        (mean - stats.latency_avg).abs() < 1e-3,
        "{mean} vs {}",
        stats.latency_avg
    );
    let hops: u64 = rows.iter().map(|r| r[3].parse::<u64>().unwrap()).sum();
    assert!(hops >= stats.delivered);
    // Contacts the run saw end.
    let durations = one_reports::contact_durations(&outcome.contacts);
    let histogram = one_reports::contact_times(&outcome.contacts, 1.0);
    let counted: u64 = histogram
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, durations.len() as u64);
    assert!(histogram.ends_with(" 0\n"));
}

/// Random walk's legs start where the walker is, go at most `distance_max` and stay inside the
/// area, even from a corner; so walkers stay near where they began, and far fewer pairs ever
/// meet than under random waypoint in the same area and time.
#[test]
fn random_walk_legs_are_short_and_stay_local() {
    use rand_core::SeedableRng as _;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    for from in [(0.5, 0.5), (50.0, 50.0), (99.9, 0.1)] {
        for _ in 0..2_000 {
            let (x, y) = meshpay_sim::mobility::walk_leg(&mut rng, from, 10.0, (100.0, 100.0));
            assert!(x > 0.0 && y > 0.0 && x < 100.0 && y < 100.0);
            assert!(((x - from.0).powi(2) + (y - from.1).powi(2)).sqrt() <= 10.0);
        }
    }
    let walk = |distance_max_m: Option<f64>| {
        let mut s = walkers(0.0);
        s.nodes = 40;
        s.duration_s = 1_800.0;
        s.mobility = match distance_max_m {
            Some(d) => Mobility::RandomWalk {
                width_m: 1_000.0,
                height_m: 1_000.0,
                speed_min: 1.0,
                speed_max: 2.0,
                distance_max_m: d,
                pause_max_s: 10.0,
                step_s: 1.0,
                warmup_s: 0.0,
            },
            None => Mobility::RandomWaypoint {
                width_m: 1_000.0,
                height_m: 1_000.0,
                speed_min: 1.0,
                speed_max: 2.0,
                pause_max_s: 10.0,
                step_s: 1.0,
                warmup_s: 0.0,
            },
        };
        let sim = Sim::new(&s).unwrap();
        let pairs: std::collections::BTreeSet<(u32, u32)> =
            sim.contacts().iter().map(|c| (c.a, c.b)).collect();
        pairs.len()
    };
    let (local, waypoint) = (walk(Some(20.0)), walk(None));
    assert!(local > 0, "nobody met");
    assert!(
        local * 2 < waypoint,
        "random walk {local} pairs, waypoint {waypoint}"
    );
}

/// Walkers on a street grid meet far more often than random-waypoint walkers in the same
/// 500 m square, since they share the streets; the scenario in the repository runs.
#[test]
fn walkers_on_a_street_grid_meet_on_the_streets() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("sim/scenarios/map-grid-epidemic.toml")).unwrap();
    let mut s = Scenario::from_toml(&text).unwrap();
    if let Mobility::Map { files, .. } = &mut s.mobility {
        for f in files.iter_mut() {
            *f = root.join(&*f);
        }
    }
    s.duration_s = 3_600.0;
    let on_map = Sim::new(&s).unwrap();
    let mut open = s.clone();
    open.mobility = Mobility::RandomWaypoint {
        width_m: 500.0,
        height_m: 500.0,
        speed_min: 0.5,
        speed_max: 1.5,
        pause_max_s: 120.0,
        step_s: 1.0,
        warmup_s: 600.0,
    };
    let in_square = Sim::new(&open).unwrap();
    let ups = |sim: &Sim| sim.contacts().iter().filter(|c| c.link == Link::Up).count();
    let (streets, square) = (ups(&on_map), ups(&in_square));
    assert!(
        streets * 2 > square * 3,
        "{streets} contacts on the streets, {square} in the square"
    );
    let stats = meshpay_sim::Stats::of(&on_map.run(|_| {}), &s.name, s.seed);
    assert!(stats.delivered > 0, "{stats:?}");
    // A file that is not a map is refused, naming it.
    let bad = root.join("sim/scenarios/map-grid-epidemic.toml");
    s.mobility = Mobility::Map {
        files: vec![bad],
        speed_min: 1.0,
        speed_max: 1.0,
        pause_max_s: 0.0,
        step_s: 1.0,
        warmup_s: 0.0,
    };
    let err = Sim::new(&s).err().expect("refused").to_string();
    assert!(
        err.contains("map-grid-epidemic.toml") && err.contains("line"),
        "{err}"
    );
}

/// The ONE's drop policy against meshpay's, by hand: node 0 makes three 500-byte messages for
/// node 1 with room for two, then meets node 1. Dropping the oldest keeps M2 and M3; meshpay
/// refuses the newcomer and keeps M1 and M2.
#[test]
fn a_full_buffer_drops_the_oldest_or_refuses_the_newcomer() {
    let dir = tempfile::tempdir().unwrap();
    let (c, m) = (dir.path().join("c.txt"), dir.path().join("m.txt"));
    std::fs::write(&c, "100 CONN 0 1 up\n200 CONN 0 1 down\n").unwrap();
    std::fs::write(&m, "1 C M1 0 1 500\n2 C M2 0 1 500\n3 C M3 0 1 500\n").unwrap();
    let delivered = |drop: &str| {
        let s = Scenario {
            name: "drop".into(),
            nodes: 2,
            duration_s: 300.0,
            mobility: Mobility::Trace { path: c.clone() },
            workload: Workload {
                trace: Some(m.clone()),
                ..Workload::default()
            },
            routing: RoutingConfig {
                buffer_kb: 1,
                drop: drop.into(),
                ..RoutingConfig::default()
            },
            ..Scenario::default()
        };
        let outcome = Sim::new(&s).unwrap().run(|_| {});
        let mut names: Vec<String> = outcome
            .messages
            .iter()
            .filter(|r| r.delivered_ms.is_some())
            .map(|r| r.name.clone())
            .collect();
        names.sort();
        (names, outcome.counters.dropped)
    };
    assert_eq!(delivered("oldest"), (vec!["M2".into(), "M3".into()], 1));
    assert_eq!(delivered("meshpay"), (vec!["M1".into(), "M2".into()], 1));
    let mut bad = Scenario::default();
    bad.routing.drop = "newest".into();
    assert!(Sim::new(&bad).is_err());
}

/// Requests and responses, as The ONE's: M1 (500 B) asks node 1 for 300 B back and M2 asks
/// node 2, which nobody meets. At 1 kB/s with no set-up, M1 lands at 10.5 s and node 1 makes
/// `R_M1` then; M2, relayed to node 1, is on the air until 11 s, and `R_M1` lands at 11.3 s:
/// one response of two asked, a round trip of 11.3 s.
#[test]
fn responses_are_made_on_delivery_and_timed_from_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let (c, m) = (dir.path().join("c.txt"), dir.path().join("m.txt"));
    std::fs::write(&c, "10 CONN 0 1 up\n100 CONN 0 1 down\n").unwrap();
    std::fs::write(&m, "0 C M1 0 1 500 300\n1 C M2 0 2 500 300\n").unwrap();
    let s = Scenario {
        nodes: 3,
        duration_s: 200.0,
        mobility: Mobility::Trace { path: c },
        workload: Workload {
            trace: Some(m),
            ..Workload::default()
        },
        radio: meshpay_sim::scenario::Radio {
            bitrate_bps: 8_000,
            setup_s: 0.0,
            control_on_air: false,
            ..meshpay_sim::scenario::Radio::default()
        },
        ..Scenario::default()
    };
    let sim = Sim::new(&s).unwrap();
    let outcome = sim.run(|_| {});
    let names: Vec<&str> = outcome.messages.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["M1", "M2", "R_M1"]);
    let response = &outcome.messages[2];
    assert_eq!((response.from, response.to, response.size), (1, 0, 300));
    assert_eq!(response.request, Some(0));
    assert_eq!(response.delivered_ms, Some(11_300));
    let report = meshpay_sim::Stats::of(&outcome, "rtt", 1).one_report();
    for line in [
        "response_prob: 0.5000",
        "rtt_avg: 11.3000",
        "rtt_med: 11.3000",
    ] {
        assert!(report.contains(line), "{line} in\n{report}");
    }
    let quiet = Scenario {
        workload: Workload::default(),
        mobility: Mobility::default(),
        nodes: 10,
        duration_s: 600.0,
        ..s
    };
    let report =
        meshpay_sim::Stats::of(&Sim::new(&quiet).unwrap().run(|_| {}), "q", 1).one_report();
    assert!(
        report.contains("rtt_avg: NaN") && report.contains("response_prob: 0.0000"),
        "{report}"
    );
}
