//! Wall time and peak memory of three runs (each in a fresh process, so the peaks are its own):
//!
//! 1. 100 nodes, random waypoint in 1 km², 10 m radios, 12 simulated hours, a 500-byte
//!    message every ~30 s, epidemic;
//! 2. 1,000 nodes in 9 km², the same radios and traffic, spray-and-wait with 6 copies;
//! 3. 10,000 nodes in 90 km² (the same density), spray-and-wait with 6 copies.
//!
//! ```sh
//! cargo bench -p meshpay-sim --bench scale            # all three
//! SCALE_CASES=1,2 cargo bench -p meshpay-sim --bench scale
//! ```

// Figures for printing.
#![allow(clippy::cast_precision_loss)]

use meshpay_sim::scenario::{Mobility, Radio, RoutingConfig, Workload};
use meshpay_sim::{Scenario, Sim, Stats};
use std::time::Instant;

fn case(n: u32) -> Scenario {
    let (nodes, side, routing, hours) = match n {
        1 => (100, 1000.0, "epidemic", 12.0),
        2 => (1000, 3000.0, "spray-and-wait", 12.0),
        _ => (10_000, 9487.0, "spray-and-wait", 12.0),
    };
    Scenario {
        name: format!("case-{n}"),
        seed: 1,
        duration_s: hours * 3600.0,
        nodes,
        mobility: Mobility::RandomWaypoint {
            width_m: side,
            height_m: side,
            speed_min: 0.5,
            speed_max: 1.5,
            pause_max_s: 120.0,
            step_s: 1.0,
            warmup_s: 0.0,
        },
        radio: Radio {
            range_m: 10.0,
            bitrate_bps: 250_000,
            setup_s: 1.0,
            loss: 0.0,
            ..Radio::default()
        },
        workload: Workload {
            interval_min_s: 25.0,
            interval_max_s: 35.0,
            size: 500,
            ..Workload::default()
        },
        routing: RoutingConfig {
            routing: routing.into(),
            copies: 6,
            buffer_kb: 5120,
            resync_s: 0.0,
            ..RoutingConfig::default()
        },
        ..Scenario::default()
    }
}

fn peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    if let Ok(n) = std::env::var("SCALE_CASE") {
        let s = case(n.parse().expect("case number"));
        let started = Instant::now();
        let sim = Sim::new(&s).expect("valid");
        let contacts_s = started.elapsed().as_secs_f64();
        let outcome = sim.run(|_| {});
        let total = started.elapsed().as_secs_f64();
        let st = Stats::of(&outcome, &s.name, s.seed);
        println!(
            "{:>6} nodes {:>15}  {:>7.1} s wall ({:>6.1} s contacts)  peak {:>7.1} MB  | contacts {:>8}  created {:>5}  delivered {:>5} ({:.3})  latency avg {:>7.0} s  relayed {:>9}",
            s.nodes,
            s.routing.routing,
            total,
            contacts_s,
            peak_mb(),
            st.contacts,
            st.created,
            st.delivered,
            st.delivery_prob,
            st.latency_avg,
            st.relayed
        );
        return;
    }
    let cases = std::env::var("SCALE_CASES").unwrap_or_else(|_| "1,2,3".into());
    println!("meshpay-sim scale benchmark, 12 simulated hours each, one process per run, one core");
    for c in cases.split(',') {
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env("SCALE_CASE", c.trim())
            .status()
            .expect("run a case");
        assert!(status.success(), "case {c} failed");
    }
    println!(
        "target: the 100-node run in about a second on one core; 10,000 nodes feasible on one machine"
    );
}
