//! Payment latency over loopback libp2p with both sides durable (SQLite WAL with
//! synchronous=FULL, the restore sentinel fsynced), next to a bare libp2p request–response
//! round trip measured in the same run.
//!
//! ```sh
//! cargo bench -p meshpay-node --bench payment_latency            # 1000 payments
//! PAYMENTS=5000 cargo bench -p meshpay-node --bench payment_latency
//! ```

// Tests that walk through a scenario read best as one function.
#![allow(clippy::too_many_lines)]
// Statistics over a few thousand samples: float conversions are exact enough.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::many_single_char_names
)]

use meshpay_node::config::Home;
use meshpay_node::daemon::{Node, RunOptions};
use meshpay_protocol::codec::VERSION;
use meshpay_protocol::device::SentStatus;
use meshpay_protocol::{
    AllowanceBody, AllowanceCert, AllowanceId, DescriptorBody, IssuerDescriptor, IssuerSecret,
    SealKey,
};
use meshpay_transports::p2p::{P2pConfig, P2pLink};
use meshpay_transports::{Link as _, LinkEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1e3;
    println!(
        "  {name:<46} n={:<5} p50 {:>7.3} ms  p99 {:>7.3} ms  mean {:>7.3} ms  max {:>7.3} ms",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        mean,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
}

async fn bare_rtt(n: usize) -> Vec<Duration> {
    let (tx_a, mut rx_a) = tokio::sync::mpsc::channel(64);
    let (tx_b, mut rx_b) = tokio::sync::mpsc::channel(64);
    let loopback = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        mdns: false,
        ..P2pConfig::default()
    };
    let b = P2pLink::start(&[2; 32], &loopback, tx_b).unwrap();
    // Echo server.
    tokio::spawn(async move {
        while let Some(e) = rx_b.recv().await {
            if let LinkEvent::Request { frame, reply, .. } = e {
                reply.send(frame);
            }
        }
    });
    let addr = loop {
        if let Some(a) = b.listen_addrs().await.first().cloned() {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let a_config = P2pConfig {
        listen: Vec::new(),
        peers: vec![format!("{addr}/p2p/{}", b.peer_id()).parse().unwrap()],
        mdns: false,
        ..P2pConfig::default()
    };
    let a = P2pLink::start(&[1; 32], &a_config, tx_a).unwrap();
    tokio::spawn(async move { while rx_a.recv().await.is_some() {} });
    let to = meshpay_protocol::DeviceSecret::from_seed(&[2; 32]).public();
    let frame = vec![0x42u8; 400];
    for _ in 0..50 {
        a.request(&to, frame.clone()).await.unwrap();
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        a.request(&to, frame.clone()).await.unwrap();
        out.push(t.elapsed());
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir()?;
    let issuer = IssuerSecret::generate(&mut rand_core::OsRng);
    let now = meshpay_node::daemon::now();
    let descriptor = IssuerDescriptor::issue(
        &issuer,
        DescriptorBody {
            version: VERSION,
            issuer: issuer.id(),
            seal_key: SealKey::default(),
            name: "bench".into(),
            currencies: vec!["KES".into()],
            urls: Vec::new(),
            valid_from: now - 60,
            valid_until: now + 86_400,
            max_allowance: u64::from(u32::MAX),
            max_payment: u64::from(u32::MAX),
        },
    );
    let cheap = meshpay_node::keystore::Cost { m: 64, t: 1, p: 1 };
    let (home_a, home_b) = (
        Home {
            dir: dir.path().join("payer"),
        },
        Home {
            dir: dir.path().join("payee"),
        },
    );
    let key_a = meshpay_node::cli::create_wallet(&home_a, "pw", cheap).await?;
    meshpay_node::cli::create_wallet(&home_b, "pw", cheap).await?;
    // The restore sentinel goes to the benchmark's directory, on the same disk as the wallet.
    for home in [&home_a, &home_b] {
        let sentinel = dir.path().join("state");
        std::fs::write(
            home.config(),
            format!(
                "[wallet]\nsentinel_dir = {:?}\n",
                sentinel.display().to_string()
            ),
        )?;
    }
    let loopback = |peers: Vec<String>| RunOptions {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        peers,
        no_mdns: true,
        ..RunOptions::default()
    };
    let (b, events_b) = Node::start(&home_b, "pw", &loopback(Vec::new())).await?;
    tokio::spawn(Arc::clone(&b).serve_links(events_b));
    let b_addr = loop {
        if let Some(a) = b.listen_addrs().await.first().cloned() {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let b_peer = meshpay_transports::p2p::peer_id_of(&b.device).unwrap();
    let (a, events_a) = Node::start(
        &home_a,
        "pw",
        &loopback(vec![format!("{b_addr}/p2p/{b_peer}")]),
    )
    .await?;
    tokio::spawn(Arc::clone(&a).serve_links(events_a));
    a.trust(&descriptor).await?;
    b.trust(&descriptor).await?;
    a.add_allowance(&AllowanceCert::issue(
        &issuer,
        AllowanceBody {
            version: VERSION,
            id: AllowanceId([1; 16]),
            issuer: issuer.id(),
            holder: key_a,
            currency: "KES".into(),
            limit: 1 << 40,
            max_payment: 1 << 40,
            valid_from: now - 60,
            valid_until: now + 86_400,
            settle_by: now + 2 * 86_400,
        },
    ))
    .await?;

    println!("payment latency over loopback libp2p (TCP, Noise, Yamux), both sides durable");
    let mut pay = Vec::with_capacity(n);
    let mut pay_ask = Vec::with_capacity(n);
    for i in 0..(n + 50) {
        let req = b.new_request(1 + (i as u64 % 500), "KES", "").await?;
        let t = Instant::now();
        let o = a.pay(&req, None).await?;
        let took = t.elapsed();
        assert_eq!(o.status, SentStatus::Acked, "{o:?}");
        if i >= 50 {
            pay.push(took);
        }
    }
    for i in 0..(n / 4 + 20) {
        let t = Instant::now();
        let o = a.pay_peer(&b.device, 7, "KES", "", true, None).await?;
        assert_eq!(o.status, SentStatus::Acked);
        if i >= 20 {
            pay_ask.push(t.elapsed());
        }
    }
    report("pay a request: IOU -> ack (1 round trip)", pay);
    report("pay a peer: ask -> request -> IOU -> ack (2 RTs)", pay_ask);
    report(
        "bare libp2p request-response, 400-byte echo",
        bare_rtt(n).await,
    );
    Ok(())
}
