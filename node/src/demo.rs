//! `meshpay demo`: a market with no coverage, on one machine, with real `meshpay` processes
//! talking libp2p over loopback.
//!
//! A development issuer stands in for the settlement server, which this release does not have
//! yet: it signs the shoppers' allowances (without escrow). Shoppers pay a vendor with IOUs;
//! a cloned wallet tries to spend the same counter twice and is caught by the vendor.

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
        let mut c = self.cmd(p);
        c.args([
            "run",
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
pub fn run() -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("meshpay-demo-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = run_in(&tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run_in(root: &Path) -> Result<()> {
    let d = Demo {
        exe: std::env::current_exe()?,
        root: root.to_owned(),
        started: Instant::now(),
    };
    d.say("A market with no coverage: a vendor, two shoppers, all on this machine's loopback.");
    let issuer_dir = root.join("issuer");
    let out = Command::new(&d.exe)
        .args(["dev", "issuer-init", "--dir"])
        .arg(&issuer_dir)
        .output()?;
    if !out.status.success() {
        bail!("issuer: {}", String::from_utf8_lossy(&out.stderr));
    }
    d.say("A development issuer stands in for the settlement server (not in this release): it signs allowances.");
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
    }
    for (p, limit) in [(&alice, 5_000u64), (&bob, 3_000)] {
        let cert = root.join(format!("{}.cert", p.name));
        let out = Command::new(&d.exe)
            .args(["dev", "issue-allowance", "--issuer-dir"])
            .arg(&issuer_dir)
            .args([
                "--holder",
                &p.device,
                "--limit",
                &limit.to_string(),
                "--out",
            ])
            .arg(&cert)
            .output()?;
        if !out.status.success() {
            bail!("allowance: {}", String::from_utf8_lossy(&out.stderr));
        }
        d.json(
            p,
            &[
                "allowance",
                "--add",
                cert.to_str().context("path")?,
                "--json",
            ],
        )?;
        d.say(&format!(
            "{} holds an offline allowance of {limit} KES (minor units).",
            p.name
        ));
    }

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
    d.say("Settlement (server, relays carrying sealed records, receipts) comes with the next releases.");
    for p in [&mut vendor, &mut alice, &mut bob, &mut clone] {
        Demo::stop(p);
    }
    Ok(())
}
