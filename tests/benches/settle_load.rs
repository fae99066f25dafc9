//! The settlement server under load and under attack, as a real process on loopback: how
//! fast `/healthz` and the descriptor answer while 40 gateways upload 4,096 genuine records
//! each at once; how fast `/healthz` answers while 1,224 slow clients hold connections against
//! an open-file limit of 1,024; how long a gateway's genuine 100-record upload takes while
//! eight sources flood the server with forged records; and the server's memory.
//!
//! ```sh
//! cargo build --release -p meshpay-node && cargo bench -p meshpay-tests --bench settle_load
//! ```
//!
//! Targets: `/healthz` and descriptor p99 under 200 ms during the uploads; `/healthz` within
//! 1 s under the slow clients; the genuine upload within 10× its unloaded time under the flood.

use meshpay_tests::issuer_api::{Device, Funded, forged_records, funded, now, seal, upload};
use meshpay_tests::load::{junk_flood, probe, slow_clients, uploads_under_probes};
use meshpay_tests::{ServerOptions, SettleServer, proc_mb};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// `n` batches of `size` genuine sealed records under one allowance, made on every core.
fn batches(
    holder: &Device,
    cert: &meshpay_protocol::AllowanceCert,
    payee: &meshpay_protocol::DeviceSecret,
    issuer: &meshpay_protocol::IssuerDescriptor,
    n: u32,
    size: u32,
) -> Vec<Arc<Vec<Vec<u8>>>> {
    let t = now();
    let make = |b: u32| -> Vec<Vec<u8>> {
        (1..=size)
            .map(|i| {
                let c = b * size + i;
                seal(&holder.iou(cert, c, 1, u64::from(c), payee, t), issuer)
            })
            .collect()
    };
    std::thread::scope(|s| {
        let half = n / 2;
        let other = s.spawn(move || (half..n).map(make).collect::<Vec<_>>());
        let mut out: Vec<Vec<Vec<u8>>> = (0..half).map(make).collect();
        out.extend(other.join().expect("no panic"));
        out.into_iter().map(Arc::new).collect()
    })
}

async fn health_under_uploads(root: &std::path::Path) {
    let server = SettleServer::new(root, "load");
    let http = reqwest::Client::new();
    let Funded {
        issuer,
        holder,
        payee,
        cert,
        ..
    } = funded(&server, &http, 21, 1_000_000, 1_000_000).await;
    let pid = server.pid().expect("running");
    let idle = proc_mb(pid, "VmRSS:");
    let made = batches(&holder, &cert, &payee, &issuer, 40, 4096);
    let start = Instant::now();
    // Each gateway uploads its own batch: 40 uploads at once.
    let (answers, times) = uploads_under_probes(&server.url, made).await;
    let took = start.elapsed();
    for a in answers {
        assert!(
            a.iter()
                .all(|a| *a == Some(meshpay_protocol::ReceiptStatus::Settled))
        );
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = 40.0 * 4096.0 / took.as_secs_f64();
    println!(
        "40 concurrent uploads of 4,096 genuine records: all settled in {:.1} s ({rate:.0} records/s)",
        took.as_secs_f64()
    );
    println!("  /healthz and descriptor meanwhile: {}", times.summary());
    println!(
        "  server memory: {idle:.0} MB idle before, {:.0} MB peak, {:.0} MB after",
        proc_mb(pid, "VmHWM:"),
        proc_mb(pid, "VmRSS:")
    );
}

async fn slowloris(root: &std::path::Path) {
    let server = SettleServer::with_options(
        root,
        "slow",
        None,
        ServerOptions {
            args: Vec::new(),
            open_files: Some(1024),
        },
    );
    let held = slow_clients(&server.url, [127, 0, 0, 2].into(), 1224).await;
    let mut took = Vec::new();
    for _ in 0..20 {
        took.push(
            probe(&server.url, "/healthz")
                .await
                .expect("/healthz answers"),
        );
    }
    took.sort();
    println!(
        "{} slow clients held against an open-file limit of 1,024: /healthz median {:.1} ms, max {:.1} ms (20 probes)",
        held.len(),
        took[10].as_secs_f64() * 1e3,
        took[19].as_secs_f64() * 1e3
    );
}

async fn junk(root: &std::path::Path) {
    let server = SettleServer::new(root, "junk");
    let http = reqwest::Client::new();
    let Funded {
        issuer,
        holder,
        payee,
        cert,
        ..
    } = funded(&server, &http, 23, 1_000_000, 1_000_000).await;
    let mut genuine = batches(&holder, &cert, &payee, &issuer, 10, 100).into_iter();
    let mut timed = async || {
        let batch = genuine.next().expect("a batch");
        let start = Instant::now();
        upload(&http, &server.url, &batch).await;
        start.elapsed()
    };
    let mut unloaded = Vec::new();
    for _ in 0..5 {
        unloaded.push(timed().await);
    }
    unloaded.sort();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = junk_flood(
        &server.url,
        &Arc::new(forged_records(&issuer, 4096)),
        8,
        &stop,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut loaded = Vec::new();
    for _ in 0..5 {
        loaded.push(timed().await);
    }
    loaded.sort();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut sent, mut limited) = (0, 0);
    for f in flood {
        let (s, l) = f.await.expect("flooder");
        sent += s;
        limited += l;
    }
    println!(
        "a genuine 100-record upload: {:.1} ms unloaded (best of 5), {:.1} ms under a flood of forged records from 8 sources (median of 5): {:.1}×; {sent} flood uploads, {limited} refused with 429",
        unloaded[0].as_secs_f64() * 1e3,
        loaded[2].as_secs_f64() * 1e3,
        loaded[2].as_secs_f64() / unloaded[0].as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let root = tempfile::tempdir().expect("a directory");
    println!("settlement server under load (the meshpay binary the workspace built)");
    health_under_uploads(root.path()).await;
    slowloris(root.path()).await;
    junk(root.path()).await;
}
