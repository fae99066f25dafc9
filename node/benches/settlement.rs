//! Settlement throughput: sealed records per second through the whole server path (open
//! HPKE, batch-verify, judge with the ledger rules, commit durably, sign receipts), next to
//! the raw Ed25519 batch-verification rate measured in the same run.
//!
//! ```sh
//! cargo bench -p meshpay-node --bench settlement                      # SQLite, 20,000 records
//! RECORDS=50000 BATCH=2000 cargo bench -p meshpay-node --bench settlement
//! PG_URL=postgres://… cargo bench -p meshpay-node --bench settlement  # also PostgreSQL
//! ```

// Rates over a few tens of thousands of samples: float conversions are exact enough.
#![allow(clippy::cast_precision_loss)]

use meshpay_node::settle::db::Db;
use meshpay_node::settle::{Clock, Policy, Server};
use meshpay_protocol::codec::VERSION;
use meshpay_protocol::{
    DescriptorBody, DeviceSecret, Hash, IouDraft, IssuerDescriptor, IssuerSecret, Nonce,
    ReceiptStatus, SealKey, SealedRecord, WalletAction, WalletRequest, encode,
};
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(url: &str, n: usize, batch: usize) -> anyhow::Result<(f64, f64)> {
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
            max_allowance: 1 << 40,
            max_payment: 1 << 40,
        },
    );
    let seal_key = descriptor.body().seal_key;
    let issuer_id = issuer.id();
    let server = Server::new(
        Db::open(url).await?,
        issuer,
        descriptor,
        Clock::new(false),
        Policy::default(),
    );
    let holder = DeviceSecret::generate(&mut rand_core::OsRng);
    let payee = DeviceSecret::generate(&mut rand_core::OsRng);
    server.open_account(&holder.public()).await?;
    server.open_account(&payee.public()).await?;
    server
        .adjust(&holder.public(), 1 << 40, true, "bench")
        .await?;
    let req = WalletRequest::sign(
        &holder,
        issuer_id,
        WalletAction::Allowance {
            amount: 1 << 40,
            valid_secs: 3600,
        },
        "KES",
        now,
        Nonce([7; 16]),
    );
    let cert = server
        .issue_allowance(&req)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let records: Vec<Vec<u8>> = (1..=u32::try_from(n)?)
        .map(|c| {
            let iou = IouDraft {
                allowance: cert.id(),
                counter: c,
                amount: 1,
                total: u64::from(c),
                prev: if c == 1 {
                    Hash::default()
                } else {
                    Hash([1; 32])
                },
                payee: payee.public(),
                nonce: Nonce([0; 16]),
                time: now,
            }
            .sign(&holder);
            encode(
                &SealedRecord::seal(
                    &iou,
                    issuer_id,
                    &seal_key,
                    now,
                    now + 86_400,
                    &mut rand_core::OsRng,
                )
                .expect("seals"),
            )
        })
        .collect();
    let start = Instant::now();
    for chunk in records.chunks(batch) {
        let receipts = server
            .settle(chunk)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        assert!(receipts.iter().all(
            |r| r.as_ref().map(meshpay_protocol::SettlementReceipt::status)
                == Some(ReceiptStatus::Settled)
        ));
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    // The same records again, as a second gateway would upload them: opened and answered
    // with the stored receipts, nothing written.
    let start = Instant::now();
    for chunk in records.chunks(batch) {
        server
            .settle(chunk)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let again = n as f64 / start.elapsed().as_secs_f64();
    server.db.close().await;
    Ok((rate, again))
}

fn raw_batch_rate(n: usize, batch: usize) -> f64 {
    use ed25519_dalek::Signer as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let msgs: Vec<[u8; 96]> = (0..batch)
        .map(|i| {
            let mut m = [0u8; 96];
            m[..8].copy_from_slice(&(i as u64).to_le_bytes());
            m
        })
        .collect();
    let sigs: Vec<_> = msgs.iter().map(|m| key.sign(m)).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
    let keys = vec![key.verifying_key(); batch];
    let rounds = (n / batch).max(1);
    let start = Instant::now();
    for _ in 0..rounds {
        ed25519_dalek::verify_batch(&refs, &sigs, &keys).expect("valid");
    }
    (rounds * batch) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n = env("RECORDS", 20_000);
    let batch = env("BATCH", 1_000);
    let dir = tempfile::tempdir()?;
    println!(
        "settlement throughput, {n} records in batches of {batch}, durable commits (records are opened and receipts signed on every core; the raw rate is one core)"
    );
    let raw = raw_batch_rate(n, 64.min(batch));
    println!(
        "  {:<44} {raw:>10.0} signatures/s",
        "raw Ed25519 batch verification (64/batch)"
    );
    let report = |engine: &str, (rate, again): (f64, f64)| {
        println!(
            "  {engine:<44} {rate:>10.0} records/s  ({:.0} % of raw)",
            100.0 * rate / raw
        );
        println!(
            "  {:<44} {again:>10.0} records/s",
            "  the same records uploaded again"
        );
    };
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    report(
        "SQLite (WAL, synchronous=FULL)",
        run(&sqlite, n, batch).await?,
    );
    if let Ok(url) = std::env::var("PG_URL") {
        report("PostgreSQL", run(&url, n, batch).await?);
    } else {
        println!("  PostgreSQL: set PG_URL to measure it");
    }
    Ok(())
}
