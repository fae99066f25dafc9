//! Wall time and peak memory of meshpay-sim on the runs The ONE is measured on, each in a fresh
//! process so the peak is its own, and, where The ONE is at hand, The ONE on the same run in
//! the same bench for the ratio.
//!
//! Every run: random waypoint in a square (0.5–1.5 m/s, pauses up to 120 s), 10 m radios of
//! 250 kB/s, 12 simulated hours at a 0.1 s time resolution, a 500-byte message every 25–35 s
//! between random hosts, a 300-minute TTL, 5 MB buffers, and the The ONE-like link and
//! forwarding options (sim/compare/the-one.sh) so both do the same work:
//!
//! | case | hosts | area | router | contacts |
//! |---|---|---|---|---|
//! | 1 | 100 | 1 km² | epidemic | replayed from a trace |
//! | 2 | 100 | 1 km² | epidemic | generated |
//! | 3 | 1,000 | 9 km² | spray-and-wait (6) | generated |
//! | 4 | 1,000 | 9 km² | epidemic | replayed from a trace |
//! | 5 | 10,000 | 90 km² | spray-and-wait (6) | generated (meshpay-sim only) |
//!
//! ```sh
//! cargo bench -p meshpay-sim --bench scale                 # cases 1, 2, 3, 5
//! SCALE_CASES=1,4 cargo bench -p meshpay-sim --bench scale
//! SCALE_RUNS=1 cargo bench -p meshpay-sim --bench scale    # one meshpay-sim run a case, not 3
//! THE_ONE=/path/to/the-one cargo bench -p meshpay-sim --bench scale   # with The ONE
//! ```
//!
//! `THE_ONE` is a checkout of The ONE (github.com/akeranen/the-one) compiled with its
//! `compile.sh`; it runs as its `one.sh` runs it (`java -Xmx512M`, batch mode), with the same
//! contacts and messages for the replayed cases and the same settings for the generated ones
//! (its own random draws). Case 4 takes The ONE 40 minutes or more.

// Figures for printing.
#![allow(clippy::cast_precision_loss)]

use meshpay_sim::scenario::{Mobility, Radio, RoutingConfig, Workload};
use meshpay_sim::{Scenario, Sim, Stats, trace};
use std::path::Path;
use std::time::Instant;

/// (hosts, side of the square in m, router, replayed)
fn shape(n: u32) -> (u32, f64, &'static str, bool) {
    match n {
        1 => (100, 1000.0, "epidemic", true),
        2 => (100, 1000.0, "epidemic", false),
        3 => (1000, 3000.0, "spray-and-wait", false),
        4 => (1000, 3000.0, "epidemic", true),
        _ => (10_000, 9487.0, "spray-and-wait", false),
    }
}

/// The generated run of case `n` (a replayed case replays its contacts and messages).
fn generated(n: u32) -> Scenario {
    let (nodes, side, routing, _) = shape(n);
    Scenario {
        name: format!("case-{n}"),
        seed: 1,
        duration_s: 43_200.0,
        nodes,
        mobility: Mobility::RandomWaypoint {
            width_m: side,
            height_m: side,
            speed_min: 0.5,
            speed_max: 1.5,
            pause_max_s: 120.0,
            step_s: 0.1,
            warmup_s: 0.0,
        },
        radio: Radio {
            range_m: 10.0,
            bitrate_bps: 2_000_000,
            setup_s: 0.0,
            loss: 0.0,
            control_on_air: false,
            ..Radio::default()
        },
        workload: Workload {
            interval_min_s: 25.0,
            interval_max_s: 35.0,
            size: 500,
            ttl_s: 18_000.0,
            ..Workload::default()
        },
        routing: RoutingConfig {
            routing: routing.into(),
            copies: 6,
            buffer_kb: 5120,
            bundles_per_message: 1,
            order: "random".into(),
            destination_first: true,
            keep_link: true,
            relay_delivered: false,
            halve_to_destination: true,
            drop: "oldest".into(),
            ..RoutingConfig::default()
        },
        ..Scenario::default()
    }
}

/// Case `n` as meshpay-sim runs it, its trace files written into `dir` if it replays.
fn case(n: u32, dir: &Path) -> Scenario {
    let mut s = generated(n);
    if shape(n).3 {
        let contacts = dir.join(format!("case-{n}-contacts.txt"));
        let messages = dir.join(format!("case-{n}-messages.txt"));
        if !contacts.exists() || !messages.exists() {
            let sim = Sim::new(&s).expect("valid");
            std::fs::write(&contacts, trace::write_connections(sim.contacts())).expect("write");
            std::fs::write(&messages, trace::write_messages(sim.creations())).expect("write");
        }
        s.mobility = Mobility::Trace { path: contacts };
        s.workload.trace = Some(messages);
    }
    s
}

/// The ONE's settings for case `n`, reports into `dir`.
fn one_settings(n: u32, dir: &Path) -> String {
    let (nodes, side, routing, replayed) = shape(n);
    let router = match routing {
        "epidemic" => "EpidemicRouter",
        _ => "SprayAndWaitRouter",
    };
    let d = dir.display();
    let common = format!(
        "Scenario.name = case-{n}\nScenario.updateInterval = 0.1\nScenario.endTime = 43200\n\
         Scenario.nrofHostGroups = 1\nbtInterface.type = SimpleBroadcastInterface\n\
         btInterface.transmitRange = 10\nbtInterface.transmitSpeed = 250k\n\
         Group.groupID = p\nGroup.nrofHosts = {nodes}\nGroup.nrofInterfaces = 1\n\
         Group.interface1 = btInterface\nGroup.bufferSize = 5M\nGroup.msgTtl = 300\n\
         Group.router = {router}\nGroup.speed = 0.5, 1.5\nGroup.waitTime = 0, 120\n\
         MovementModel.worldSize = {side}, {side}\nMovementModel.rngSeed = 1\n\
         MovementModel.warmup = 0\nSprayAndWaitRouter.nrofCopies = 6\n\
         SprayAndWaitRouter.binaryMode = true\nReport.nrofReports = 1\n\
         Report.reportDir = {d}/\nReport.report1 = MessageStatsReport\n"
    );
    let own = if replayed {
        format!(
            "Scenario.simulateConnections = false\nGroup.movementModel = StationaryMovement\n\
             Group.nodeLocation = 10, 10\nEvents.nrof = 2\n\
             Events1.class = ExternalEventsQueue\nEvents1.filePath = {d}/case-{n}-contacts.txt\n\
             Events2.class = ExternalEventsQueue\nEvents2.filePath = {d}/case-{n}-messages.txt\n"
        )
    } else {
        format!(
            "Scenario.simulateConnections = true\nGroup.movementModel = RandomWaypoint\n\
             Events.nrof = 1\nEvents1.class = MessageEventGenerator\n\
             Events1.interval = 25, 35\nEvents1.size = 500\nEvents1.hosts = 0, {nodes}\n\
             Events1.prefix = M\n"
        )
    };
    common + &own
}

/// Runs The ONE on case `n`: its wall time, and its delivered count and mean latency.
fn run_one(one: &Path, n: u32, dir: &Path) -> Option<(f64, String)> {
    let settings = dir.join(format!("one-case-{n}.txt"));
    std::fs::write(&settings, one_settings(n, dir)).ok()?;
    let cp = ["target", "lib/ECLA.jar", "lib/DTNConsoleConnection.jar"]
        .map(|p| one.join(p).display().to_string())
        .join(":");
    let started = Instant::now();
    let status = std::process::Command::new("java")
        .args(["-Xmx512M", "-cp", &cp, "core.DTNSim", "-b", "1"])
        .arg(&settings)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        eprintln!("The ONE failed on case {n}: {status}");
        return None;
    }
    let report =
        std::fs::read_to_string(dir.join(format!("case-{n}_MessageStatsReport.txt"))).ok()?;
    let field = |k: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map_or("?", str::trim)
            .to_owned()
    };
    Some((
        wall,
        format!(
            "delivered {}  latency avg {} s",
            field("delivered:"),
            field("latency_avg:")
        ),
    ))
}

fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One case of meshpay-sim in this process: prints its figures and, on the last line, its
/// wall time.
fn child(n: u32, dir: &Path) {
    let s = case(n, dir);
    let started = Instant::now();
    let sim = Sim::new(&s).expect("valid");
    let setup_s = started.elapsed().as_secs_f64();
    let outcome = sim.run(|_| {});
    let total = started.elapsed().as_secs_f64();
    let st = Stats::of(&outcome, &s.name, s.seed);
    println!(
        "  meshpay-sim {total:>8.1} s wall ({setup_s:.1} s set-up), peak {:>6.1} MiB | contacts {}  created {}  delivered {}  latency avg {:.0} s  relayed {}  sessions {}",
        peak_mib(),
        st.contacts,
        st.created,
        st.delivered,
        st.latency_avg,
        st.relayed,
        st.sessions
    );
    println!("{total}");
}

fn main() {
    let dir = std::env::var_os("SCALE_DIR").map_or_else(
        || std::env::temp_dir().join("meshpay-sim-scale"),
        std::path::PathBuf::from,
    );
    std::fs::create_dir_all(&dir).expect("work directory");
    if let Ok(n) = std::env::var("SCALE_CASE") {
        child(n.parse().expect("case number"), &dir);
        return;
    }
    let one = std::env::var_os("THE_ONE")
        .map(std::path::PathBuf::from)
        .filter(|p| p.join("target/core/DTNSim.class").exists());
    let cases = std::env::var("SCALE_CASES").unwrap_or_else(|_| "1,2,3,5".into());
    let repeats: usize = std::env::var("SCALE_RUNS").map_or(3, |r| r.parse().expect("SCALE_RUNS"));
    assert!(repeats > 0, "SCALE_RUNS: at least 1");
    println!(
        "meshpay-sim scale benchmark: 12 simulated hours a case, one process each, one core; The ONE {}",
        one.as_ref()
            .map_or("not given (THE_ONE=dir)".into(), |p| format!(
                "at {}",
                p.display()
            ))
    );
    for c in cases.split(',') {
        let n: u32 = c.trim().parse().expect("case number");
        let (nodes, _, routing, replayed) = shape(n);
        println!(
            "case {n}: {nodes} hosts, {routing}, {}",
            if replayed {
                "trace replay"
            } else {
                "generated random waypoint"
            }
        );
        // Trace files first, outside the timed child.
        let _ = case(n, &dir);
        // A run of a second or two varies by a third from one to the next: the median of
        // `SCALE_RUNS` (3) runs, each its own process.
        let mut runs: Vec<(f64, String)> = (0..repeats)
            .map(|_| {
                let out = std::process::Command::new(std::env::current_exe().expect("exe"))
                    .env("SCALE_CASE", n.to_string())
                    .env("SCALE_DIR", &dir)
                    .output()
                    .expect("run a case");
                assert!(out.status.success(), "case {n} failed");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let (figures, wall) = text.trim_end().rsplit_once('\n').expect("two lines");
                (wall.parse().expect("wall time"), figures.to_owned())
            })
            .collect();
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ours, figures) = runs[runs.len() / 2].clone();
        println!("{figures}");
        if runs.len() > 1 {
            let walls: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.0)).collect();
            println!(
                "  (meshpay-sim: the median of {} runs: {} s)",
                runs.len(),
                walls.join(", ")
            );
        }
        if n == 5 {
            continue;
        }
        if let Some((theirs, figures)) = one.as_ref().and_then(|p| run_one(p, n, &dir)) {
            println!("  The ONE     {theirs:>8.1} s wall | {figures}");
            println!("  ratio       {:>8.1}×", theirs / ours);
        }
    }
}
