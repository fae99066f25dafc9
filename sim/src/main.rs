//! `meshpay-sim`: run a scenario file and print its statistics.

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use meshpay_sim::{Scenario, Sim, Stats};
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

/// The meshpay network simulator: runs the protocol's own sync machines over simulated
/// contacts and reports delivery, latency, hops and overhead with The ONE's definitions.
#[derive(Parser)]
#[command(name = "meshpay-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The ONE's MessageStatsReport layout.
    Text,
    /// One JSON object.
    Json,
    /// A CSV header and one row.
    Csv,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario (see `meshpay-sim example` for the keys).
    Run {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Write the statistics here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the run's contacts in The ONE's connection-event format.
        #[arg(long)]
        contacts_out: Option<PathBuf>,
        /// Also write the run's messages in The ONE's message-creation format.
        #[arg(long)]
        messages_out: Option<PathBuf>,
        /// Write `delivery.svg` (delivery over time) and `latency.svg` (latency CDF) here.
        #[arg(long)]
        plot_dir: Option<PathBuf>,
        /// Write The ONE's reports here, in its formats: `MessageStatsReport.txt`,
        /// `CreatedMessagesReport.txt`, `DeliveredMessagesReport.txt`,
        /// `ContactTimesReport.txt` and `InterContactTimesReport.txt` (1 s bins), and
        /// `EventLogReport.txt` (one line per contact, message created, bundle sent, aborted or
        /// arrived, copy dropped or removed; one line per bundle for a message in several).
        #[arg(long)]
        reports_dir: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Run a scenario over a grid of parameter values and seeds, in parallel, and print one
    /// CSV row per run (in a fixed order, whatever the scheduling).
    ///
    /// Example: `meshpay-sim sweep s.toml --set routing.routing=epidemic,spray-and-wait
    /// --set radio.range_m=10,30 --seeds 1-5`
    Sweep {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// `key.path=value,value,…` (repeatable): each combination is one configuration.
        #[arg(long = "set", value_name = "KEY=VALUES")]
        sets: Vec<String>,
        /// Seeds: `N`, `A-B` or `A,B,C`.
        #[arg(long, default_value = "1")]
        seeds: String,
        /// Parallel runs [default: the number of cores].
        #[arg(long)]
        jobs: Option<usize>,
        /// Write the CSV here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print an example scenario with every key and its default.
    Example,
}

/// What the link and forwarding keys mean, shown above them in `example`.
const NOTES: &[(&str, &str)] = &[
    (
        "routing",
        "\"epidemic\" (meshpay's own), \"spray-and-wait\", \"direct\", \"prophet\" (PRoPHET:\n\
         # P_init 0.75, beta 0.25, gamma 0.98 per 30 s), \"spray-and-focus\" (spray `copies`,\n\
         # then hand the last one to a peer likelier to meet the destination) or \"maxprop\"\n\
         # (MaxProp: epidemic copies, sent by hop count, then by path cost to the destination;\n\
         # the destination's signed acknowledgements delete the copies they reach)",
    ),
    (
        "copies",
        "copies a message starts with under spray-and-wait and spray-and-focus",
    ),
    (
        "spray_mode",
        "spray-and-wait: \"binary\" (a holder gives half its copies) or \"source\" (only the\n\
         # source gives, one copy a peer; relays wait)",
    ),
    (
        "warmup_s",
        "seconds the nodes walk before the run starts, as The ONE's MovementModel.warmup",
    ),
    (
        "bitrate_bps",
        "bits per second of one radio, shared by all its contacts (0: no limit)",
    ),
    (
        "duplex",
        "\"half\": a radio sends or receives one message at a time; \"full\": one each way",
    ),
    (
        "control_on_air",
        "false: only bundle bytes take air time (sync's own bytes are free, as in The ONE)",
    ),
    (
        "ttl_s",
        "message lifetime, s (0: the whole run); copies are dropped when it runs out",
    ),
    (
        "response_size",
        "bytes each generated message asks back: its destination answers R_<id> on delivery\n\
         # (0: none); response_prob and rtt_* measure them, as in The ONE",
    ),
    (
        "bundles_per_message",
        "bundles per sync message (0: as many as fit); a lost message loses them all",
    ),
    (
        "order",
        "\"meshpay\" (urgent kinds, then oldest made), \"fifo\" (arrival) or \"random\"",
    ),
    (
        "destination_first",
        "deliver before relaying, both ways: hand a peer what it is the destination of first,\n\
         # and relay only once the peer has nothing left for this node",
    ),
    (
        "keep_link",
        "the side relaying goes on until it has nothing more for its peer (The ONE's routers)",
    ),
    (
        "relay_delivered",
        "false: a message that reached its destination goes no further",
    ),
    (
        "drop",
        "full buffer: \"meshpay\" (refuse the newcomer, fair shares), \"oldest\" (The ONE's)\n\
         # or \"maxprop\" (the costliest by MaxProp's order, as The ONE's MaxPropRouter)",
    ),
    (
        "halve_to_destination",
        "spray-and-wait gives up copies on delivery too, as The ONE does (half, or one in \
         source mode)",
    ),
];

/// The keys a default scenario leaves out, shown after the line that starts with the first
/// text, as comments.
const OPTIONAL: &[(&str, &str)] = &[
    (
        "model = ",
        "# model: \"random-waypoint\" (the keys here), \"random-walk\" (the same keys and\n\
         # distance_max_m, the longest leg: as The ONE's RandomWalk), \"map\" (shortest paths on\n\
         # road maps in The ONE's WKT files: files = [\"roads.wkt\"], no area keys), \"market\" (a market day:\n\
         # see sim/scenarios/market-day.toml) or \"trace\": contacts replayed from a file in The ONE's\n\
         # connection-event format (`<time> CONN <host1> <host2> [<interface>] up|down`):\n\
         # model = \"trace\"\n\
         # path = \"contacts.txt\"\n",
    ),
    (
        "until_s = ",
        "# Messages from a file in The ONE's format (`<time> C <id> <from> <to> <size>`, and an\n\
         # optional response size) instead\n\
         # of generated ones; sizes are honoured exactly (86 bytes to 16 MiB) or refused:\n\
         # trace = \"messages.txt\"\n",
    ),
];

/// Host groups, shown after the rest: the default scenario has none.
const GROUPS: &str = "\n\
# Host groups (optional), as The ONE's: hosts numbered across the groups in order and named by\n\
# the group's id in reports (w0..w79, t80..t99); their nodes add up to `nodes`. Each key but\n\
# nodes falls back to the scenario's own: speed_min, speed_max (0: stationary) and pause_max_s\n\
# to [mobility], range_m and bitrate_bps to [radio] (a pair meets within the shorter range and\n\
# links at the slower rate), routing, copies and buffer_kb to [routing].\n\
# [[groups]]\n\
# id = \"w\"\n\
# nodes = 80\n\
# [[groups]]\n\
# id = \"t\"\n\
# nodes = 20\n\
# speed_min = 7.0\n\
# speed_max = 10.0\n\
# range_m = 30.0\n\
# routing = \"prophet\"\n";

/// `text` (a scenario in TOML) with a comment above each key of [`NOTES`], the optional keys
/// of [`OPTIONAL`] shown as comments, and [`GROUPS`] at the end.
fn annotate(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split(" = ").next().unwrap_or_default();
        if let Some((_, note)) = NOTES.iter().find(|(k, _)| *k == key) {
            out.push_str("# ");
            out.push_str(note);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
        if let Some((_, more)) = OPTIONAL.iter().find(|(k, _)| line.starts_with(k)) {
            out.push_str(more);
        }
    }
    out.push_str(GROUPS);
    out
}

/// Seeds from `N`, `A-B` or `A,B,C`.
fn seeds(text: &str) -> Result<Vec<u64>> {
    if let Some((a, b)) = text.split_once('-') {
        let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
        anyhow::ensure!(a <= b && b - a < 100_000, "seeds: A-B with A <= B");
        return Ok((a..=b).collect());
    }
    text.split(',')
        .map(|s| s.trim().parse().map_err(anyhow::Error::from))
        .collect()
}

/// Sets `path` (dotted) in a TOML table to `value` (parsed as TOML, else a string).
fn set(table: &mut toml::Table, path: &str, value: &str) -> Result<()> {
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let mut keys: Vec<&str> = path.split('.').collect();
    let last = keys.pop().context("empty key")?;
    let mut t = table;
    for k in keys {
        t = t
            .entry(k)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("{path}: {k} is not a table"))?;
    }
    t.insert(last.to_owned(), parsed);
    Ok(())
}

fn sweep(
    scenario: &std::path::Path,
    sets: &[String],
    seeds_text: &str,
    jobs: Option<usize>,
) -> Result<String> {
    let text = std::fs::read_to_string(scenario)
        .with_context(|| format!("cannot read {}", scenario.display()))?;
    let base: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}", scenario.display()))?;
    let mut grid: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for s in sets {
        let (k, vs) = s
            .split_once('=')
            .with_context(|| format!("--set {s}: expected key=value,value"))?;
        grid = grid
            .into_iter()
            .flat_map(|combo| {
                vs.split(',').map(move |v| {
                    let mut c = combo.clone();
                    c.push((k.to_owned(), v.to_owned()));
                    c
                })
            })
            .collect();
    }
    let mut runs: Vec<(String, Scenario)> = Vec::new();
    for combo in &grid {
        for seed in seeds(seeds_text)? {
            let mut t = base.clone();
            for (k, v) in combo {
                set(&mut t, k, v)?;
            }
            set(&mut t, "seed", &seed.to_string())?;
            let s = Scenario::from_toml(&toml::to_string(&t)?)
                .with_context(|| format!("with {combo:?}"))?;
            let label = combo
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";");
            runs.push((label, s));
        }
    }
    let jobs = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<String>>> =
        std::sync::Mutex::new(vec![None; runs.len()]);
    let bar = std::io::stderr().is_terminal();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(runs.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((label, s)) = runs.get(i) else { break };
                    let row = match Sim::new(s) {
                        Ok(sim) => {
                            let st = Stats::of(&sim.run(|_| {}), &s.name, s.seed);
                            format!("\"{label}\",{}", st.csv_row())
                        }
                        Err(e) => format!("\"{label}\",error: {e}"),
                    };
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(row);
                    let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if bar {
                        eprint!("\r{d}/{} runs", runs.len());
                    }
                }
            });
        }
    });
    if bar {
        eprintln!();
    }
    let mut out = format!("params,{}\n", Stats::csv_header());
    for r in results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .flatten()
    {
        out.push_str(&r);
        out.push('\n');
    }
    Ok(out)
}

/// The ONE's reports of a run, one file each, named as The ONE names them.
fn write_reports(
    dir: &std::path::Path,
    stats: &Stats,
    outcome: &meshpay_sim::Outcome,
    ttl: f64,
) -> Result<()> {
    use meshpay_sim::one_reports as r;
    std::fs::create_dir_all(dir)?;
    for (name, text) in [
        ("MessageStatsReport", stats.one_report()),
        ("CreatedMessagesReport", r::created_messages(outcome, ttl)),
        (
            "DeliveredMessagesReport",
            r::delivered_messages(outcome, ttl),
        ),
        (
            "ContactTimesReport",
            r::contact_times(&outcome.contacts, 1.0),
        ),
        (
            "InterContactTimesReport",
            r::inter_contact_times(&outcome.contacts, 1.0),
        ),
        ("EventLogReport", r::event_log(outcome)),
    ] {
        std::fs::write(dir.join(format!("{name}.txt")), text)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Sweep {
            scenario,
            sets,
            seeds,
            jobs,
            out,
        } => {
            let csv = sweep(&scenario, &sets, &seeds, jobs)?;
            match out {
                Some(p) => std::fs::write(&p, csv)?,
                None => print!("{csv}"),
            }
            Ok(())
        }
        Command::Example => {
            print!("{}", annotate(&toml::to_string(&Scenario::default())?));
            Ok(())
        }
        Command::Run {
            scenario,
            seed,
            format,
            out,
            contacts_out,
            messages_out,
            plot_dir,
            reports_dir,
            quiet,
        } => {
            let text = std::fs::read_to_string(&scenario)
                .with_context(|| format!("cannot read {}", scenario.display()))?;
            let mut s =
                Scenario::from_toml(&text).with_context(|| format!("{}", scenario.display()))?;
            if let Some(seed) = seed {
                s.seed = seed;
            }
            let mut sim = Sim::new(&s)?;
            if reports_dir.is_some() {
                sim.record_events();
            }
            if let Some(p) = contacts_out {
                std::fs::write(&p, meshpay_sim::trace::write_connections(sim.contacts()))?;
            }
            if let Some(p) = messages_out {
                std::fs::write(&p, meshpay_sim::trace::write_messages(sim.creations()))?;
            }
            let bar = !quiet && std::io::stderr().is_terminal();
            let outcome = sim.run(|done| {
                if bar {
                    // Fractions of a run: 0..=100 after rounding.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let pct = (done * 100.0).round() as usize;
                    eprint!("\r[{:<50}] {pct:>3}%", "#".repeat(pct / 2));
                    let _ = std::io::stderr().flush();
                }
            });
            if bar {
                eprintln!();
            }
            if let Some(dir) = plot_dir {
                std::fs::create_dir_all(&dir)?;
                let name = format!("{} ({})", s.name, s.routing.routing);
                std::fs::write(
                    dir.join("delivery.svg"),
                    meshpay_sim::plot::chart(
                        "Messages delivered over time",
                        "hours",
                        "fraction delivered",
                        &[meshpay_sim::plot::delivery_over_time(&outcome, &name)],
                    ),
                )?;
                std::fs::write(
                    dir.join("latency.svg"),
                    meshpay_sim::plot::chart(
                        "Delivery latency (CDF)",
                        "minutes",
                        "fraction of delivered messages",
                        &[meshpay_sim::plot::latency_cdf(&outcome, &name)],
                    ),
                )?;
            }
            let stats = Stats::of(&outcome, &s.name, s.seed);
            if let Some(dir) = reports_dir {
                write_reports(&dir, &stats, &outcome, s.workload.ttl_s)?;
            }
            let body = match format {
                Format::Text => stats.one_report(),
                Format::Json => format!("{}\n", serde_json::to_string_pretty(&stats)?),
                Format::Csv => format!("{}\n{}\n", Stats::csv_header(), stats.csv_row()),
            };
            match out {
                Some(p) => std::fs::write(&p, body)?,
                None => print!("{body}"),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_and_settings_parse() {
        assert_eq!(seeds("3").unwrap(), vec![3]);
        assert_eq!(seeds("2-4").unwrap(), vec![2, 3, 4]);
        assert_eq!(seeds("1,5").unwrap(), vec![1, 5]);
        assert!(seeds("5-2").is_err());
        let mut t: toml::Table = toml::from_str("[routing]\nrouting = \"epidemic\"").unwrap();
        set(&mut t, "routing.copies", "8").unwrap();
        set(&mut t, "routing.routing", "spray-and-wait").unwrap();
        set(&mut t, "radio.range_m", "30.0").unwrap();
        let s: Scenario = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
        assert_eq!(s.routing.copies, 8);
        assert_eq!(s.routing.routing, "spray-and-wait");
        assert!((s.radio.range_m - 30.0).abs() < f64::EPSILON);
    }

    #[test]
    fn the_example_explains_the_link_keys_and_still_parses() {
        let text = annotate(&toml::to_string(&Scenario::default()).unwrap());
        assert!(text.contains("# \"half\": a radio sends or receives"));
        assert!(text.contains("# deliver before relaying, both ways"));
        assert!(
            text.contains("\"source\" (only the\n# source gives"),
            "{text}"
        );
        assert!(
            text.contains("# then hand the last one to a peer likelier"),
            "{text}"
        );
        assert!(text.contains("# model = \"trace\""), "{text}");
        assert!(text.contains("# trace = \"messages.txt\""), "{text}");
        assert_eq!(Scenario::from_toml(&text).unwrap(), Scenario::default());
        let groups: Vec<&str> = GROUPS
            .lines()
            .skip_while(|l| !l.contains("[[groups]]"))
            .map(|l| l.trim_start_matches("# "))
            .collect();
        let with = Scenario::from_toml(&format!("{text}{}", groups.join("\n"))).unwrap();
        let hosts = meshpay_sim::groups::Hosts::of(&with).unwrap();
        assert_eq!(
            (hosts.name(79), hosts.name(80)),
            ("w79".into(), "t80".into())
        );
        assert!((hosts.of_host(99).range_m - 30.0).abs() < f64::EPSILON);
    }
}
