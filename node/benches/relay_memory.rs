//! Resident memory of a relay holding many bundles: sealed records (316 bytes each, the bulk
//! of what the mesh carries) in a relay's device machine, its bundle store mirrored to sled
//! as the node does, measured after filling it and again after reopening it as a restarted
//! relay would.
//!
//! ```sh
//! cargo bench -p meshpay-node --bench relay_memory                 # 100,000 bundles
//! BUNDLES=20000 cargo bench -p meshpay-node --bench relay_memory
//! RELAY_MEMORY_DETAIL=1 cargo bench -p meshpay-node --bench relay_memory   # sled vs index
//! ```

// Megabyte figures: float conversions are exact enough.
#![allow(clippy::cast_precision_loss)]

use meshpay_node::mesh::MeshDisk;
use meshpay_protocol::bundle::{Bundle, Content};
use meshpay_protocol::device::{Change, Device, DeviceConfig, DeviceInit, Now, Output};
use meshpay_protocol::store::{Admission, BundleStore, Origin, StoreConfig};
use meshpay_protocol::testkit::{T0, allowance, device, issuer, pay, request, sealed, wallet};
use meshpay_protocol::{Nonce, PaymentRequest};
use std::time::Instant;

fn status(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The second half, in a fresh process: reopen the store as a restarted relay and report.
fn reopen(path: &str) -> anyhow::Result<()> {
    let baseline = status("VmRSS:");
    if std::env::var_os("RELAY_MEMORY_ITER_ONLY").is_some() {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(1 << 20)
            .open()?;
        let t = db.open_tree("bundles")?;
        let mut n = 0usize;
        let mut total = 0usize;
        for item in &t {
            let (_, v) = item?;
            n += 1;
            total += v.len();
        }
        println!(
            "  sled alone, after reading all {n} values ({:.1} MB): resident {:.1} MB",
            total as f64 / 1e6,
            status("VmRSS:")
        );
        return Ok(());
    }
    if std::env::var_os("RELAY_MEMORY_STORE_ONLY").is_some() {
        // The bundle store alone, without sled: what the in-memory index costs.
        let db = sled::Config::new().path(path).open()?;
        let raw: Vec<(Vec<u8>, Vec<u8>)> = db
            .open_tree("bundles")?
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        drop(db);
        let mid = status("VmRSS:");
        let mut store = meshpay_protocol::store::BundleStore::new(StoreConfig {
            bodies_in_memory: false,
            accept_messages: false,
            ..StoreConfig::default()
        });
        for (_, v) in &raw {
            // New-format values: a 45-byte head (origin, copies, arrival) before the body.
            store.restore(&v[45..], Origin::Local, 0, 0);
        }
        println!(
            "  the bundle store's index alone: {:.1} MB for {} bundles",
            status("VmRSS:") - mid,
            store.len()
        );
        return Ok(());
    }
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(8 << 20)
        .open()?;
    let after_open = status("VmRSS:");
    let started = Instant::now();
    let (_disk, store) = MeshDisk::open(&db, StoreConfig::default())?;
    let relay = relay(store);
    let held = relay.store().len();
    // Touch every bundle once, as a sync would.
    let bytes: usize = relay.store().in_order().map(|e| e.meta.size as usize).sum();
    println!(
        "restarted relay (fresh process, {after_open:.1} MB once sled is open): {held} bundles ({:.1} MB) loaded in {:.1} s; resident {:.1} MB, peak {:.1} MB (process baseline {baseline:.1} MB)",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        status("VmRSS:"),
        status("VmHWM:"),
    );
    Ok(())
}

/// A relay's device machine over `store`.
fn relay(store: BundleStore) -> Device {
    let init = DeviceInit {
        secret: device(9),
        wallet: wallet([]),
        spent: std::collections::BTreeSet::new(),
        issuers: vec![],
        certs: vec![],
        notices: vec![],
        frauds: vec![],
        sent: vec![],
        received: vec![],
        requests: vec![],
        store,
        seed: [9; 32],
        secrets: Box::new(rand_core::OsRng),
    };
    Device::new(
        init,
        DeviceConfig {
            relay: true,
            ..DeviceConfig::default()
        },
    )
}

/// Writes the device's changes to sled, as the node's driver does.
fn drain(relay: &mut Device, disk: &MeshDisk, now: Now) -> anyhow::Result<()> {
    while let Some(out) = relay.poll_output() {
        if let Output::Commit { id, change } = out {
            if let Change::Mesh(w) = &change {
                disk.apply(w)?;
            }
            relay.committed(now, id, Ok(()));
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if let Ok(path) = std::env::var("RELAY_MEMORY_REOPEN") {
        return reopen(&path);
    }
    let n: u32 = std::env::var("BUNDLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    // Make the records first (the relay does not make them; only their bytes count).
    let iss = issuer();
    let holder = device(1);
    let mut w = wallet([allowance(&iss, 1, &holder, u64::MAX / 4)]);
    let payee = device(2);
    let started = Instant::now();
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut nonce = [0u8; 16];
            nonce[..4].copy_from_slice(&i.to_le_bytes());
            let req = PaymentRequest::new(payee.public(), 10, "KES", Nonce(nonce), T0 + 3600);
            let _ = request; // same shape as testkit::request, with a wider nonce
            let iou = pay(&mut w, &holder, &req);
            Bundle::new(Content::Record(sealed(&iss, &iou)))
                .bytes()
                .to_vec()
        })
        .collect();
    println!(
        "made {n} sealed records in {:.1} s (not part of the relay's footprint)",
        started.elapsed().as_secs_f64()
    );
    drop(w);
    let made = status("VmRSS:");
    {
        let db = sled::Config::new()
            .path(dir.path().join("mesh"))
            .cache_capacity(8 << 20)
            .open()?;
        let (disk, store) = MeshDisk::open(
            &db,
            StoreConfig {
                max_bytes: 1 << 30,
                max_bundles: 1 << 24,
                max_bytes_per_origin: 1 << 30,
                issuers: None,
                bodies_in_memory: false,
                accept_messages: false,
            },
        )?;
        let mut relay = relay(store);
        let now = Now { mono: 0, unix: T0 };
        relay.start(now);
        let started = Instant::now();
        for r in &records {
            let b = Bundle::decode(r)?;
            let a = relay.carry(now, &b, 0);
            anyhow::ensure!(matches!(a, Admission::Added(_)), "{a:?}");
            drain(&mut relay, &disk, now)?;
        }
        db.flush()?;
        println!(
            "stored {n} bundles ({:.1} MB of bundle bytes) in {:.1} s",
            relay.store().bytes() as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        println!(
            "  resident after filling: {:.1} MB above the records made for the test ({:.1} MB in all)",
            status("VmRSS:") - made,
            status("VmRSS:")
        );
    }
    drop(records);
    let status = std::process::Command::new(std::env::current_exe()?)
        .env("RELAY_MEMORY_REOPEN", dir.path().join("mesh"))
        .status()?;
    anyhow::ensure!(status.success(), "the reopening process failed");
    if std::env::var_os("RELAY_MEMORY_DETAIL").is_some() {
        std::process::Command::new(std::env::current_exe()?)
            .env("RELAY_MEMORY_REOPEN", dir.path().join("mesh"))
            .env("RELAY_MEMORY_STORE_ONLY", "1")
            .status()?;
        std::process::Command::new(std::env::current_exe()?)
            .env("RELAY_MEMORY_REOPEN", dir.path().join("mesh"))
            .env("RELAY_MEMORY_ITER_ONLY", "1")
            .status()?;
    }
    println!("target: a relay holding 100,000 bundles stays within 150 MB resident");
    Ok(())
}
