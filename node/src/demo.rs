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

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Proc {
    name: &'static str,
    home: PathBuf,
    state: PathBuf,
    device: String,
    child: Option<Child>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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

    fn cmd(&self, p: &Proc) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--home")
            .arg(&p.home)
            .env("MESHPAY_PASSPHRASE", "demo passphrase")
            .env("MESHPAY_STATE_DIR", &p.state)
            .env("MESHPAY_LOG", "warn")
            .env_remove("MESHPAY_FAULT");
        c
    }

    fn json(&self, p: &Proc, args: &[&str]) -> Result<Value> {
        let out = self.cmd(p).args(args).output()?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !out.status.success() && v.is_null() {
            bail!(
                "{}: meshpay {}: {}",
                p.name,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(v)
    }

    fn node(&self, name: &'static str) -> Result<Proc> {
        let mut p = Proc {
            name,
            home: self.root.join(name),
            state: self.root.join(format!("{name}-state")),
            device: String::new(),
            child: None,
        };
        let v = self.json(&p, &["init", "--json"])?;
        v["device_key"]
            .as_str()
            .context("init printed no key")?
            .clone_into(&mut p.device);
        Ok(p)
    }

    fn start(&self, p: &mut Proc, peers: &[String]) -> Result<String> {
        self.start_as(p, "run", peers)
    }

    /// Starts `meshpay <how>` (`run` or `relay`) dialing `peers`; returns its address.
    fn start_as(&self, p: &mut Proc, how: &str, peers: &[String]) -> Result<String> {
        let mut c = self.cmd(p);
        c.args([
            how,
            "--json",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ]);
        for peer in peers {
            c.args(["--peer", peer]);
        }
        let log = std::fs::File::create(p.home.with_extension("log"))?;
        let mut child = c.stdout(Stdio::piped()).stderr(log).spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            if let Some(Ok(line)) = BufReader::new(stdout).lines().next() {
                let _ = tx.send(line);
            }
        });
        p.child = Some(child);
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("{} did not start", p.name))?;
        let ready: Value = serde_json::from_str(&line)?;
        let id = self.json(p, &["id", "--json"])?;
        Ok(format!(
            "{}/p2p/{}",
            ready["listen"][0].as_str().context("no address")?,
            id["peer_id"].as_str().context("no peer id")?
        ))
    }

    fn stop(p: &mut Proc) {
        if let Some(mut c) = p.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target)?;
        } else if e.file_name() != "control.sock" && e.file_name() != "control.token" {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

/// Runs the demo.
pub async fn run() -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("meshpay-demo-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = run_in(&tmp).await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

async fn run_in(root: &Path) -> Result<()> {
    let d = Demo {
        exe: std::env::current_exe()?,
        root: root.to_owned(),
        started: Instant::now(),
    };
    d.say("A market with no coverage: a vendor, two shoppers, all on this machine's loopback.");
    let issuer_dir = root.join("issuer");
    let token = "demo-admin-token-0123456789";
    let out = Command::new(&d.exe)
        .args(["issuer", "init", "--name", "Market association", "--dir"])
        .arg(&issuer_dir)
        .env("MESHPAY_ISSUER_PASSPHRASE", "demo issuer passphrase")
        .output()?;
    if !out.status.success() {
        bail!("issuer: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut server = Proc {
        name: "settlement server",
        home: issuer_dir.clone(),
        state: root.join("server-state"),
        device: String::new(),
        child: None,
    };
    let log = std::fs::File::create(root.join("server.log"))?;
    let mut child = Command::new(&d.exe)
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
        .env("MESHPAY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    server.child = Some(child);
    let ready: Value = serde_json::from_str(
        &BufReader::new(stdout)
            .lines()
            .next()
            .context("the server did not start")??,
    )?;
    let url = ready["url"].as_str().context("no url")?.to_owned();
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
    let vendor_addr = d.start(&mut vendor, &[])?;
    d.say(&format!("vendor is up: {}", vendor.device));
    d.start(&mut alice, std::slice::from_ref(&vendor_addr))?;
    d.start(&mut bob, std::slice::from_ref(&vendor_addr))?;
    d.say("alice and bob are up and connected to the vendor over libp2p (TCP, Noise, Yamux).");
    let descriptor = issuer_dir.join("descriptor.cbor");
    for p in [&vendor, &alice, &bob] {
        d.json(
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
        let a = d.json(
            p,
            &["topup", &limit.to_string(), "--issuer", &url, "--json"],
        )?;
        d.say(&format!(
            "{} has {credit} KES on account and tops up an offline allowance of {} (escrowed until it settles).",
            p.name, a["limit"]
        ));
    }
    d.say("The network goes down: from here on nobody reaches the server.");

    let paid = d.json(
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
    let req = d.json(&vendor, &["request", "300", "--memo", "mango", "--json"])?;
    d.say(&format!(
        "the vendor shows a payment request (QR code / text): {}…",
        &req["text"].as_str().unwrap_or("")[..24]
    ));
    let paid = d.json(
        &alice,
        &["pay", req["text"].as_str().unwrap_or(""), "--json"],
    )?;
    d.say(&format!(
        "alice scans it and pays 300: counter {}, {}.",
        paid["counter"],
        paid["status"].as_str().unwrap_or("?")
    ));
    let paid = d.json(
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
    Demo::stop(&mut bob);
    let mut clone = Proc {
        name: "bob-clone",
        home: root.join("bob-clone"),
        state: root.join("bob-clone-state"),
        device: bob.device.clone(),
        child: None,
    };
    copy_dir(&bob.home, &clone.home)?;
    copy_dir(&bob.state, &clone.state)?;
    d.start(&mut bob, std::slice::from_ref(&vendor_addr))?;
    d.start(&mut clone, std::slice::from_ref(&vendor_addr))?;
    let first = d.json(
        &bob,
        &["pay", "--to", &vendor.device, "--amount", "500", "--json"],
    )?;
    d.say(&format!(
        "bob pays 500: counter {}, {}.",
        first["counter"],
        first["status"].as_str().unwrap_or("?")
    ));
    let second = d.json(
        &clone,
        &["pay", "--to", &vendor.device, "--amount", "700", "--json"],
    )?;
    d.say(&format!(
        "the clone pays 700 with the same counter {}: {} ({}).",
        second["counter"],
        second["status"].as_str().unwrap_or("?"),
        second["reason"].as_str().unwrap_or("")
    ));
    let frauds = d.json(&vendor, &["frauds", "--json"])?;
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
        let b = d.json(p, &["balance", "--json"])?;
        let k = &b["KES"];
        println!(
            "{:<10} {:>10} {:>10} {:>10} {:>10}",
            p.name,
            k["spendable"].as_u64().unwrap_or(0),
            k["sent_acked"].as_u64().unwrap_or(0),
            k["sent_refused"].as_u64().unwrap_or(0),
            k["received"].as_u64().unwrap_or(0)
        );
    }
    println!();
    d.say("Nobody at the market reaches the server. A relay agent's node (no wallet, no money) comes by.");
    let mut relay = Proc {
        name: "relay",
        home: root.join("relay"),
        state: root.join("relay-state"),
        device: String::new(),
        child: None,
    };
    d.start_as(&mut relay, "relay", std::slice::from_ref(&vendor_addr))?;
    d.json(&relay, &["sync", "--json"])?;
    let held = d.json(&relay, &["mesh", "--json"])?;
    d.say(&format!(
        "the relay meets the vendor and now carries {} bundles: {} sealed records (it cannot read them), {} spend notices, {} fraud proof(s).",
        held["bundles"],
        held["by_kind"]["record"].as_u64().unwrap_or(0),
        held["by_kind"]["notice"].as_u64().unwrap_or(0),
        held["by_kind"]["fraud_proof"].as_u64().unwrap_or(0),
    ));
    for p in [&alice, &bob] {
        d.json(p, &["sync", "--json"])?;
    }
    let refused = |p: &Proc| -> Result<usize> {
        Ok(d.json(p, &["frauds", "--json"])?
            .as_array()
            .map_or(0, Vec::len))
    };
    d.say(&format!(
        "the fraud proof also reached alice ({}) and bob ({}) through the mesh, before any server saw it.",
        refused(&alice)?,
        refused(&bob)?
    ));
    Demo::stop(&mut relay);
    d.say("The relay walks to the edge of town, where a gateway node has signal.");
    let mut gateway = Proc {
        name: "gateway",
        home: root.join("gateway"),
        state: root.join("gateway-state"),
        device: String::new(),
        child: None,
    };
    let gateway_addr = d.start_as(&mut gateway, "relay", &[])?;
    d.json(
        &gateway,
        &["trust", descriptor.to_str().context("path")?, "--json"],
    )?;
    d.start_as(&mut relay, "relay", std::slice::from_ref(&gateway_addr))?;
    d.json(&relay, &["sync", "--json"])?;
    let at_gateway = d.json(&gateway, &["mesh", "--json"])?;
    d.say(&format!(
        "the relay hands them over: the gateway now holds {} sealed records, and the relay a receipt signed by the gateway for what it carried.",
        at_gateway["by_kind"]["record"].as_u64().unwrap_or(0)
    ));
    let round = d.json(&gateway, &["sync-issuer", "--issuer", &url, "--json"])?;
    d.say(&format!(
        "the gateway uploads {} records; the issuer settles each once and signs {} final receipts, which go into the mesh (the gateway's copies of the records are purged).",
        round["uploaded"], round["receipts"]
    ));
    d.json(&relay, &["sync", "--json"])?;
    d.say("the relay takes the receipts, and drops its own copies of the settled records.");
    Demo::stop(&mut relay);
    d.say("Back at the market, the relay meets the vendor again.");
    d.start_as(&mut relay, "relay", std::slice::from_ref(&vendor_addr))?;
    d.json(&relay, &["sync", "--json"])?;
    for p in [&alice, &bob] {
        d.json(p, &["sync", "--json"])?;
    }
    d.say("receipts flow back hand to hand: relay → vendor → alice and bob; every copy of a settled record is dropped.");
    let settled = |p: &Proc| -> Result<usize> {
        Ok(d.json(p, &["history", "--json"])?
            .as_array()
            .map_or(0, |h| {
                h.iter().filter(|x| x["settlement"] == "settled").count()
            }))
    };
    let mesh = |p: &Proc| d.json(p, &["mesh", "--json"]);
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
            p.name,
            if matches!(p.name, "relay" | "gateway") {
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
        &mut server,
    ] {
        Demo::stop(p);
    }
    Ok(())
}
