//! `meshpay demo`: a market with no coverage, on one machine, with real `meshpay` processes
//! talking libp2p over loopback.
//!
//! A settlement server (SQLite in a temporary directory) runs the issuer: the shoppers' accounts
//! are credited, they top up offline allowances while online, then pay a vendor with IOUs with
//! no server in reach; a cloned wallet tries to spend the same counter twice and is caught by
//! the vendor, whose fraud proof then travels the mesh; a relay with no wallet carries the sealed
//! records to a gateway at the edge of town, which uploads them, and the relay brings the
//! receipts back hand to hand, so every wallet sees its payments settled and every copy of a
//! settled record is purged.

use anyhow::{Context as _, Result};
use meshpay_harness::{CliError, Home, Process, copy_home, run_ok};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a process may take to start or to stop.
const DEADLINE: Duration = Duration::from_secs(30);

/// One node of the demo: its home, its device key, and its daemon while it runs.
struct Proc {
    home: Home,
    device: String,
    daemon: Option<Process>,
}

impl Proc {
    fn name(&self) -> &str {
        &self.home.name
    }

    fn start(&mut self, peers: &[String]) -> Result<String> {
        self.start_as("run", peers)
    }

    /// Starts `meshpay <how>` (`run` or `relay`) dialing `peers`; returns its address.
    fn start_as(&mut self, how: &str, peers: &[String]) -> Result<String> {
        let mut args = vec![
            how,
            "--json",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ];
        for peer in peers {
            args.extend(["--peer", peer]);
        }
        let daemon = self.home.start(&args, DEADLINE)?;
        let addr = daemon
            .dial_addr()
            .with_context(|| format!("{} has no TCP address", self.name()))?;
        self.daemon = Some(daemon);
        Ok(addr)
    }

    /// Stops its daemon, if it runs (SIGTERM, then waits).
    fn stop(&mut self) -> Result<()> {
        if let Some(daemon) = self.daemon.take() {
            daemon.stop(DEADLINE)?;
        }
        Ok(())
    }
}

struct Demo {
    exe: PathBuf,
    root: PathBuf,
    started: Instant,
}

impl Demo {
    fn say(&self, text: &str) {
        println!("[{:>5.1}s] {text}", self.started.elapsed().as_secs_f64());
    }

    /// A node with a home in the demo's directory, neither created nor started.
    fn unstarted(&self, name: &str) -> Proc {
        Proc {
            home: Home {
                name: name.to_owned(),
                bin: self.exe.clone(),
                dir: self.root.join(name),
                state: self.root.join(format!("{name}-state")),
                passphrase: "demo passphrase".into(),
                log_filter: "warn".into(),
            },
            device: String::new(),
            daemon: None,
        }
    }

    /// A wallet node (`meshpay init`).
    fn node(&self, name: &str) -> Result<Proc> {
        let mut p = self.unstarted(name);
        let v = json(&p, &["init", "--json"])?;
        v["device_key"]
            .as_str()
            .context("init printed no key")?
            .clone_into(&mut p.device);
        Ok(p)
    }
}

/// Runs `meshpay <args>` on `p`'s home; a command that fails but answers in JSON (a refused
/// payment) gives that answer.
fn json(p: &Proc, args: &[&str]) -> Result<Value> {
    Ok(p.home.json(args).or_else(CliError::into_answer)?)
}

/// Runs the demo.
pub async fn run() -> Result<()> {
    if !cfg!(feature = "settle") {
        anyhow::bail!(
            "the demo runs a settlement server, which this build leaves out: build meshpay with the `settle` feature (on by default)"
        );
    }
    let tmp = std::env::temp_dir().join(format!("meshpay-demo-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = run_in(&tmp).await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

// The demo is one script, step after step, as its output reads.
#[allow(clippy::too_many_lines)]
async fn run_in(root: &Path) -> Result<()> {
    let d = Demo {
        exe: std::env::current_exe()?,
        root: root.to_owned(),
        started: Instant::now(),
    };
    d.say("A market with no coverage: a vendor, two shoppers, all on this machine's loopback.");
    let issuer_dir = root.join("issuer");
    let token = "demo-admin-token-0123456789";
    run_ok(
        Command::new(&d.exe)
            .args(["issuer", "init", "--name", "Market association", "--dir"])
            .arg(&issuer_dir)
            .env("MESHPAY_ISSUER_PASSPHRASE", "demo issuer passphrase"),
    )?;
    let server = Process::start(
        Command::new(&d.exe)
            .args([
                "settle",
                "serve",
                "--json",
                "--listen",
                "127.0.0.1:0",
                "--dir",
            ])
            .arg(&issuer_dir)
            .env("MESHPAY_ISSUER_PASSPHRASE", "demo issuer passphrase")
            .env("MESHPAY_ADMIN_TOKEN", token)
            .env("MESHPAY_LOG", "warn"),
        "the settlement server",
        &root.join("server.log"),
        DEADLINE,
    )?;
    let url = server.ready()["url"].as_str().context("no url")?.to_owned();
    d.say(&format!(
        "The market association's settlement server is up at {url} (SQLite)."
    ));
    let http = reqwest::Client::new();
    let admin = |path: String, body: Value| {
        let http = http.clone();
        let url = format!("{url}{path}");
        async move {
            let r = http
                .post(url)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "admin call failed: {}", r.status());
            Ok::<_, anyhow::Error>(())
        }
    };
    let mut vendor = d.node("vendor")?;
    let mut alice = d.node("alice")?;
    let mut bob = d.node("bob")?;
    let vendor_addr = vendor.start(&[])?;
    d.say(&format!("vendor is up: {}", vendor.device));
    alice.start(std::slice::from_ref(&vendor_addr))?;
    bob.start(std::slice::from_ref(&vendor_addr))?;
    d.say("alice and bob are up and connected to the vendor over libp2p (TCP, Noise, Yamux).");
    let descriptor = issuer_dir.join("descriptor.cbor");
    for p in [&vendor, &alice, &bob] {
        json(
            p,
            &["trust", descriptor.to_str().context("path")?, "--json"],
        )?;
        admin(
            "/admin/accounts".into(),
            serde_json::json!({"device": p.device}),
        )
        .await?;
    }
    for (p, credit, limit) in [(&alice, 10_000u64, 5_000u64), (&bob, 6_000, 3_000)] {
        admin(
            format!("/admin/accounts/{}/credit", p.device),
            serde_json::json!({"amount": credit, "reference": "cash at the desk"}),
        )
        .await?;
        let a = json(
            p,
            &["topup", &limit.to_string(), "--issuer", &url, "--json"],
        )?;
        d.say(&format!(
            "{} has {credit} KES on account and tops up an offline allowance of {} (escrowed until it settles).",
            p.name(), a["limit"]
        ));
    }
    d.say("The network goes down: from here on nobody reaches the server.");

    let paid = json(
        &alice,
        &[
            "pay",
            "--to",
            &vendor.device,
            "--amount",
            "1250",
            "--memo",
            "tea",
            "--json",
        ],
    )?;
    d.say(&format!(
        "alice pays the vendor 1250 for tea: IOU counter {}, {}.",
        paid["counter"],
        paid["status"].as_str().unwrap_or("?")
    ));
    let req = json(&vendor, &["request", "300", "--memo", "mango", "--json"])?;
    d.say(&format!(
        "the vendor shows a payment request (QR code / text): {}…",
        &req["text"].as_str().unwrap_or("")[..24]
    ));
    let paid = json(
        &alice,
        &["pay", req["text"].as_str().unwrap_or(""), "--json"],
    )?;
    d.say(&format!(
        "alice scans it and pays 300: counter {}, {}.",
        paid["counter"],
        paid["status"].as_str().unwrap_or("?")
    ));
    let paid = json(
        &bob,
        &[
            "pay",
            "--to",
            &vendor.device,
            "--amount",
            "800",
            "--memo",
            "bread",
            "--json",
        ],
    )?;
    d.say(&format!(
        "bob pays 800 for bread: counter {}, {}.",
        paid["counter"],
        paid["status"].as_str().unwrap_or("?")
    ));

    d.say("bob's phone is cloned, wallet and keystore alike: both copies hold the same allowance and counter.");
    bob.stop()?;
    let mut clone = d.unstarted("bob-clone");
    clone.device.clone_from(&bob.device);
    copy_home(&bob.home.dir, &clone.home.dir)?;
    copy_home(&bob.home.state, &clone.home.state)?;
    bob.start(std::slice::from_ref(&vendor_addr))?;
    clone.start(std::slice::from_ref(&vendor_addr))?;
    let first = json(
        &bob,
        &["pay", "--to", &vendor.device, "--amount", "500", "--json"],
    )?;
    d.say(&format!(
        "bob pays 500: counter {}, {}.",
        first["counter"],
        first["status"].as_str().unwrap_or("?")
    ));
    let second = json(
        &clone,
        &["pay", "--to", &vendor.device, "--amount", "700", "--json"],
    )?;
    d.say(&format!(
        "the clone pays 700 with the same counter {}: {} ({}).",
        second["counter"],
        second["status"].as_str().unwrap_or("?"),
        second["reason"].as_str().unwrap_or("")
    ));
    let frauds = json(&vendor, &["frauds", "--json"])?;
    d.say(&format!(
        "the vendor holds {} fraud proof(s): two signatures on one counter, checkable offline with the issuer's key alone; it refuses that allowance from now on.",
        frauds.as_array().map_or(0, Vec::len)
    ));

    println!();
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10}",
        "node", "spendable", "sent", "refused", "received"
    );
    for p in [&vendor, &alice, &bob, &clone] {
        let b = json(p, &["balance", "--json"])?;
        let k = &b["KES"];
        println!(
            "{:<10} {:>10} {:>10} {:>10} {:>10}",
            p.name(),
            k["spendable"].as_u64().unwrap_or(0),
            k["sent_acked"].as_u64().unwrap_or(0),
            k["sent_refused"].as_u64().unwrap_or(0),
            k["received"].as_u64().unwrap_or(0)
        );
    }
    println!();
    d.say("Nobody at the market reaches the server. A relay agent's node (no wallet, no money) comes by.");
    let mut relay = d.unstarted("relay");
    relay.start_as("relay", std::slice::from_ref(&vendor_addr))?;
    json(&relay, &["sync", "--json"])?;
    let held = json(&relay, &["mesh", "--json"])?;
    d.say(&format!(
        "the relay meets the vendor and now carries {} bundles: {} sealed records (it cannot read them), {} spend notices, {} fraud proof(s).",
        held["bundles"],
        held["by_kind"]["record"].as_u64().unwrap_or(0),
        held["by_kind"]["notice"].as_u64().unwrap_or(0),
        held["by_kind"]["fraud_proof"].as_u64().unwrap_or(0),
    ));
    for p in [&alice, &bob] {
        json(p, &["sync", "--json"])?;
    }
    let refused = |p: &Proc| -> Result<usize> {
        Ok(json(p, &["frauds", "--json"])?
            .as_array()
            .map_or(0, Vec::len))
    };
    d.say(&format!(
        "the fraud proof also reached alice ({}) and bob ({}) through the mesh, before any server saw it.",
        refused(&alice)?,
        refused(&bob)?
    ));
    relay.stop()?;
    d.say("The relay walks to the edge of town, where a gateway node has signal.");
    let mut gateway = d.unstarted("gateway");
    let gateway_addr = gateway.start_as("relay", &[])?;
    json(
        &gateway,
        &["trust", descriptor.to_str().context("path")?, "--json"],
    )?;
    relay.start_as("relay", std::slice::from_ref(&gateway_addr))?;
    json(&relay, &["sync", "--json"])?;
    let at_gateway = json(&gateway, &["mesh", "--json"])?;
    d.say(&format!(
        "the relay hands them over: the gateway now holds {} sealed records, and the relay a receipt signed by the gateway for what it carried.",
        at_gateway["by_kind"]["record"].as_u64().unwrap_or(0)
    ));
    let round = json(&gateway, &["sync-issuer", "--issuer", &url, "--json"])?;
    d.say(&format!(
        "the gateway uploads {} records; the issuer settles each once and signs {} final receipts, which go into the mesh (the gateway's copies of the records are purged).",
        round["uploaded"], round["receipts"]
    ));
    json(&relay, &["sync", "--json"])?;
    d.say("the relay takes the receipts, and drops its own copies of the settled records.");
    relay.stop()?;
    d.say("Back at the market, the relay meets the vendor again.");
    relay.start_as("relay", std::slice::from_ref(&vendor_addr))?;
    json(&relay, &["sync", "--json"])?;
    for p in [&alice, &bob] {
        json(p, &["sync", "--json"])?;
    }
    d.say("receipts flow back hand to hand: relay → vendor → alice and bob; every copy of a settled record is dropped.");
    let settled = |p: &Proc| -> Result<usize> {
        Ok(json(p, &["history", "--json"])?.as_array().map_or(0, |h| {
            h.iter().filter(|x| x["settlement"] == "settled").count()
        }))
    };
    let mesh = |p: &Proc| json(p, &["mesh", "--json"]);
    println!();
    println!(
        "{:<10} {:>17} {:>15} {:>13} {:>16}",
        "node", "payments settled", "records held", "receipts", "carried (proof)"
    );
    for p in [&vendor, &alice, &bob, &relay, &gateway] {
        let m = mesh(p)?;
        let carried: u64 = m["carried"]
            .as_array()
            .map_or(0, |c| c.iter().filter_map(|h| h["count"].as_u64()).sum());
        println!(
            "{:<10} {:>17} {:>15} {:>13} {:>16}",
            p.name(),
            if matches!(p.name(), "relay" | "gateway") {
                "-".to_owned()
            } else {
                settled(p)?.to_string()
            },
            m["by_kind"]["record"].as_u64().unwrap_or(0),
            m["by_kind"]["receipt"].as_u64().unwrap_or(0),
            carried
        );
    }
    let report: Value = {
        let r = http
            .get(format!("{url}/admin/reconciliation"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await?;
        serde_json::from_slice(&r.bytes().await?)?
    };
    println!();
    println!(
        "issuer: accounts {} + escrow {} = credited {} (conserved: {}); {} records settled, {} KES paid out",
        report["totals"]["users"],
        report["totals"]["escrow"],
        report["totals"]["credited_net"],
        report["conserved"],
        report["records"]["settled"],
        report["settled_amount"]
    );
    println!();
    d.say("Done.");
    for p in [
        &mut vendor,
        &mut alice,
        &mut bob,
        &mut clone,
        &mut relay,
        &mut gateway,
    ] {
        p.stop()?;
    }
    server.stop(DEADLINE)?;
    Ok(())
}
