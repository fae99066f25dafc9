//! `meshpay`: the meshpay daemon and command-line tool.
//!
//! This release ships the protocol core. The commands that need the node (wallet storage,
//! links, the settlement server) say so and exit with an error instead of pretending.

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use meshpay_protocol::{DeviceSecret, PrintableKey};

/// meshpay: pay and settle offline over a peer-to-peer mesh.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a device key and print its public half (the secret is not kept).
    Keygen {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a printed device key and explain any typo.
    CheckKey {
        /// The key, as printed (`mpdev1…`).
        key: String,
    },
    /// Run the end-to-end demo (needs the node and the mesh, not in this release).
    Demo,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Keygen { json } => {
            let key = DeviceSecret::generate(&mut rand_core::OsRng).public();
            if json {
                println!("{{\"device_key\":\"{}\"}}", key.to_text());
            } else {
                println!("{}", key.to_text());
            }
        }
        Command::CheckKey { key } => match meshpay_protocol::DeviceKey::from_text(&key) {
            Ok(k) => println!("ok: {}", k.short()),
            Err(e) => bail!("{e}"),
        },
        Command::Demo => bail!(
            "the demo needs the node, the settlement server and the mesh, which this release \
             does not have yet; run `cargo run -p meshpay-protocol --example sizes --release` \
             for the protocol core's figures"
        ),
    }
    Ok(())
}
