//! Host groups: their own speeds, radios and routers, and their names in reports.

use meshpay_sim::trace::Link;
use meshpay_sim::{Scenario, Sim, Stats, one_reports};

/// A scenario from TOML, with `files` written into `dir` first (name, text).
fn scenario(dir: &std::path::Path, toml: &str, files: &[(&str, &str)]) -> Scenario {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let toml = toml.replace("DIR", &dir.display().to_string());
    Scenario::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// A run of contacts and messages replayed from The ONE's formats, with `toml` on top (its
/// `[mobility]` and `[workload]` name the files).
fn replay(toml: &str, contacts: &str, messages: &str) -> Stats {
    let dir = tempfile::tempdir().unwrap();
    let files = [("c.txt", contacts), ("m.txt", messages)];
    let toml = format!(
        "{toml}\n[mobility]\nmodel = \"trace\"\npath = \"DIR/c.txt\"\n[workload]\ntrace = \"DIR/m.txt\"\n"
    );
    let s = scenario(dir.path(), &toml, &files);
    Stats::of(&Sim::new(&s).unwrap().run(|_| {}), "replay", 1)
}

/// Ten stationary hosts among ten walkers: two stationary hosts are in range from the start
/// or never, and walkers meet them.
#[test]
fn a_stationary_group_stays_where_it_starts_and_hosts_take_their_group_names() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(
        dir.path(),
        r#"
        duration_s = 7200.0
        nodes = 20
        [mobility]
        model = "random-waypoint"
        width_m = 150.0
        height_m = 150.0
        speed_min = 0.5
        speed_max = 1.5
        pause_max_s = 60.0
        step_s = 1.0
        warmup_s = 0.0
        [[groups]]
        id = "s"
        nodes = 10
        speed_max = 0.0
        [[groups]]
        id = "w"
        nodes = 10
        "#,
        &[],
    );
    let sim = Sim::new(&s).unwrap();
    let stationary = |h: u32| h < 10;
    let mut walker_meets_stall = 0;
    for c in sim.contacts() {
        if stationary(c.a) && stationary(c.b) {
            assert!(
                c.t_ms == 0 && c.link == Link::Up || c.t_ms == 7_200_000,
                "two stationary hosts changed: {c:?}"
            );
        } else if stationary(c.a) != stationary(c.b) && c.link == Link::Up {
            walker_meets_stall += 1;
        }
    }
    assert!(walker_meets_stall > 20, "{walker_meets_stall}");
    let outcome = sim.run(|_| {});
    let created = one_reports::created_messages(&outcome, 0.0);
    let line = created.lines().nth(1).unwrap();
    let m = &outcome.messages[0];
    let name = |h: u32| format!("{}{h}", if h < 10 { "s" } else { "w" });
    assert!(
        line.contains(&format!(" {} {} ", name(m.from), name(m.to))),
        "{line}"
    );
}

/// One 500-byte message over one long contact between a host of 8 kbit/s and one of
/// 0.8 kbit/s: it takes the slower rate's 5 s on the air, not the faster's 0.5 s.
#[test]
fn a_link_runs_at_the_slower_host_rate() {
    let run = |slow: u64| {
        let toml = format!(
            "duration_s = 600.0\nnodes = 2\n\
             [[groups]]\nid = \"f\"\nnodes = 1\n\
             [[groups]]\nid = \"s\"\nnodes = 1\nbitrate_bps = {slow}\n\
             [radio]\nbitrate_bps = 8000\nsetup_s = 0.0\ncontrol_on_air = false"
        );
        let st = replay(
            &toml,
            "10 CONN 0 1 up\n500 CONN 0 1 down\n",
            "0 C M1 0 1 500\n",
        );
        assert_eq!(st.delivered, 1, "{st:?}");
        st.latency_avg
    };
    let (fast, slow) = (run(8000), run(800));
    assert!((fast - 10.5).abs() < 0.01, "fast {fast}");
    assert!((slow - 15.0).abs() < 0.01, "slow {slow}");
}

/// Host 0 is alone in its group, hosts 1 and 2 route epidemically. A message from 0 to 2 can
/// reach 2 only through 1 (0 never meets 2): under a direct router 0 keeps it.
#[test]
fn a_group_routes_by_its_own_router() {
    let run = |router: &str| {
        let toml = format!(
            "duration_s = 1000.0\nnodes = 3\n\
             [[groups]]\nid = \"d\"\nnodes = 1\nrouting = \"{router}\"\n\
             [[groups]]\nid = \"e\"\nnodes = 2\n\
             [radio]\nbitrate_bps = 0\nsetup_s = 0.0"
        );
        let contacts = "10 CONN 0 1 up\n20 CONN 0 1 down\n100 CONN 1 2 up\n110 CONN 1 2 down\n";
        replay(&toml, contacts, "0 C M1 0 2 200\n").delivered
    };
    assert_eq!(
        run("direct"),
        0,
        "a direct host hands only to the destination"
    );
    assert_eq!(run("epidemic"), 1, "an epidemic host hands to a relay");
}

#[test]
fn groups_that_do_not_fit_are_refused_with_the_reason() {
    let base = r#"
        nodes = 10
        [[groups]]
        id = "a"
        nodes = 4
    "#;
    let cases = [
        ("", "add up to 4, but nodes = 10"),
        (
            "[[groups]]\nid = \"b\"\nnodes = 6\nrouting = \"flood\"\n",
            "no router named \"flood\"",
        ),
        (
            "[[groups]]\nid = \"b2\"\nnodes = 6\n",
            "id is one or more ASCII letters",
        ),
        (
            "[[groups]]\nid = \"b\"\nnodes = 6\nspeed_min = 2.0\nspeed_max = 1.0\n",
            "0 < speed_min <= speed_max",
        ),
        (
            "[[groups]]\nid = \"b\"\nnodes = 6\nrange_m = 0.0\n",
            "range_m > 0",
        ),
    ];
    for (more, want) in cases {
        let e = Scenario::from_toml(&format!("{base}{more}")).unwrap_err();
        assert!(e.to_string().contains(want), "{e} (wanted {want})");
    }
    let trace = "nodes = 2\n[mobility]\nmodel = \"trace\"\npath = \"c.txt\"\n\
                 [[groups]]\nnodes = 2\nspeed_max = 3.0\n";
    let e = Scenario::from_toml(trace).unwrap_err();
    assert!(e.to_string().contains("speeds and pauses are for"), "{e}");
}
