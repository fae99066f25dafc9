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
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Print an example scenario with every key and its default.
    Example,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Example => {
            print!("{}", toml::to_string(&Scenario::default())?);
            Ok(())
        }
        Command::Run {
            scenario,
            seed,
            format,
            out,
            contacts_out,
            messages_out,
            quiet,
        } => {
            let text = std::fs::read_to_string(&scenario)
                .with_context(|| format!("cannot read {}", scenario.display()))?;
            let mut s =
                Scenario::from_toml(&text).with_context(|| format!("{}", scenario.display()))?;
            if let Some(seed) = seed {
                s.seed = seed;
            }
            let sim = Sim::new(&s)?;
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
            let stats = Stats::of(&outcome, &s.name, s.seed);
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
