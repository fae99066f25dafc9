//! Settlement throughput: sealed records per second through the whole server path (open
//! HPKE, batch-verify, judge with the ledger rules, sign receipts, commit durably), next to
//! the rate of the per-record crypto alone (open + batch verify + receipt signing) on the
//! same cores, measured in the same run.
//!
//! ```sh
//! cargo bench -p meshpay-settle --bench settlement                      # SQLite, 20,000 records
//! RECORDS=50000 BATCH=2000 cargo bench -p meshpay-settle --bench settlement
//! PG_URL=postgres://… cargo bench -p meshpay-settle --bench settlement  # also PostgreSQL
//! ```
//!
//! Uploads are sent one after the other, and then `GATEWAYS` (default 2) at a time, as
//! several gateways would: while one batch is in the database the next one's crypto runs.

// Rates over a few tens of thousands of samples: float conversions are exact enough.
#![allow(clippy::cast_precision_loss)]

use meshpay_protocol::codec::VERSION;
use meshpay_protocol::{
    DescriptorBody, DeviceKey, DeviceSecret, Hash, Iou, IouDraft, IssuerDescriptor, IssuerSecret,
    Nonce, ReceiptStatus, SealKey, SealedRecord, SettlementReceipt, WalletAction, WalletRequest,
    decode, encode,
};
use meshpay_settle::cpu::{par_map, par_parts};
use meshpay_settle::db::Db;
use meshpay_settle::{Clock, Policy, Server, unix_now};
use std::sync::Arc;
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An issuer, a funded holder with one allowance, a payee, and `n` sealed records.
struct Setup {
    issuer: IssuerSecret,
    descriptor: IssuerDescriptor,
    holder: DeviceSecret,
    payee: DeviceSecret,
}

impl Setup {
    fn new() -> Self {
        let issuer = IssuerSecret::generate(&mut rand_core::OsRng);
        let now = unix_now();
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
        Self {
            issuer,
            descriptor,
            holder: DeviceSecret::generate(&mut rand_core::OsRng),
            payee: DeviceSecret::generate(&mut rand_core::OsRng),
        }
    }

    async fn server(&self, url: &str) -> anyhow::Result<(Arc<Server>, Vec<Vec<u8>>)> {
        let server = Server::new(
            Db::open(url).await?,
            IssuerSecret::from_bytes(&self.issuer.to_bytes()),
            self.descriptor.clone(),
            Clock::new(false),
            Policy::default(),
        );
        server.open_account(&self.holder.public()).await?;
        server.open_account(&self.payee.public()).await?;
        server
            .adjust(&self.holder.public(), 1 << 40, true, "bench")
            .await?;
        let req = WalletRequest::sign(
            &self.holder,
            self.issuer.id(),
            WalletAction::Allowance {
                amount: 1 << 40,
                valid_secs: 3600,
            },
            "KES",
            unix_now(),
            Nonce(rand16()),
        );
        let cert = server
            .issue_allowance(&req)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let n = u32::try_from(env("RECORDS", 20_000))?;
        let now = unix_now();
        let seal_key = self.descriptor.body().seal_key;
        let records = (1..=n)
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
                    payee: self.payee.public(),
                    nonce: Nonce([0; 16]),
                    time: now,
                }
                .sign(&self.holder);
                encode(
                    &SealedRecord::seal(
                        &iou,
                        self.issuer.id(),
                        &seal_key,
                        now,
                        now + 86_400,
                        &mut rand_core::OsRng,
                    )
                    .expect("seals"),
                )
            })
            .collect();
        Ok((Arc::new(server), records))
    }
}

fn rand16() -> [u8; 16] {
    use rand_core::RngCore as _;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

/// The per-record crypto of settlement alone, on every core the way the server runs it: open
/// every record (HPKE), batch-verify the IOUs' signatures, sign a receipt for each. Records
/// per second.
fn crypto_pipeline(setup: &Setup, records: &[Vec<u8>], batch: usize) -> f64 {
    let holder: DeviceKey = setup.holder.public();
    let start = Instant::now();
    for chunk in records.chunks(batch) {
        let ious: Vec<(Hash, Iou)> = par_map(chunk, |b| {
            let r: SealedRecord = decode(b).expect("a record");
            (r.id, r.open(&setup.issuer).expect("opens"))
        });
        par_parts(&ious, |part| {
            let items: Vec<(&Iou, DeviceKey)> = part.iter().map(|(_, i)| (i, holder)).collect();
            meshpay_protocol::iou::verify_batch(&items).expect("valid");
        });
        let receipts: Vec<SettlementReceipt> = par_map(&ious, |(id, _)| {
            SettlementReceipt::issue(&setup.issuer, *id, ReceiptStatus::Settled, 0)
        });
        assert_eq!(receipts.len(), chunk.len());
    }
    records.len() as f64 / start.elapsed().as_secs_f64()
}

/// Settles `records` in batches of `batch`, `gateways` uploads in flight at a time; then the
/// same records again. Records per second, both times.
async fn settle(
    server: &Arc<Server>,
    records: &[Vec<u8>],
    batch: usize,
    gateways: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut rates = Vec::new();
    for _ in 0..2 {
        let start = Instant::now();
        let limit = Arc::new(tokio::sync::Semaphore::new(gateways.max(1)));
        let mut tasks = Vec::new();
        for chunk in records.chunks(batch) {
            let permit = Arc::clone(&limit).acquire_owned().await?;
            let server = Arc::clone(server);
            let chunk = chunk.to_vec();
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                server.settle(chunk, None).await
            }));
        }
        for t in tasks {
            let receipts = t.await?.map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(receipts.iter().all(|r| {
                r.as_ref().map(SettlementReceipt::status) == Some(ReceiptStatus::Settled)
            }));
        }
        rates.push(records.len() as f64 / start.elapsed().as_secs_f64());
    }
    Ok((rates[0], rates[1]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n = env("RECORDS", 20_000);
    let batch = env("BATCH", 1_000);
    let gateways = env("GATEWAYS", 2);
    let dir = tempfile::tempdir()?;
    println!(
        "settlement throughput, {n} records in batches of {batch}, durable commits, on {} cores",
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    );
    let mut engines = vec![(
        "SQLite (WAL, synchronous=FULL)".to_owned(),
        format!("sqlite://{}", dir.path().join("bench.db").display()),
    )];
    match std::env::var("PG_URL") {
        Ok(url) => engines.push(("PostgreSQL".to_owned(), url)),
        Err(_) => println!("  (PostgreSQL: set PG_URL to measure it too)"),
    }
    let mut sqlite_rate = None;
    for (i, (engine, url)) in engines.iter().enumerate() {
        let setup = Setup::new();
        let (server, records) = setup.server(url).await?;
        let pipeline = crypto_pipeline(&setup, &records, batch);
        println!(
            "  {:<52} {pipeline:>9.0} records/s",
            "crypto pipeline alone (open + batch verify + sign)"
        );
        let (one, again) = settle(&server, &records, batch, 1).await?;
        // A second allowance's records for the concurrent run (the first ones are decided).
        let (server2, records2) = setup.server(url).await?;
        let (many, _) = settle(&server2, &records2, batch, gateways).await?;
        println!(
            "  {engine:<52} {one:>9.0} records/s  ({:.0} % of the pipeline), one upload at a time",
            100.0 * one / pipeline
        );
        println!(
            "  {:<52} {many:>9.0} records/s  ({:.0} % of the pipeline)",
            format!("{engine}, {gateways} gateways at once"),
            100.0 * many / pipeline
        );
        println!(
            "  {:<52} {again:>9.0} records/s",
            "  the same records uploaded again"
        );
        if i == 0 {
            sqlite_rate = Some(many);
        } else if let Some(s) = sqlite_rate {
            println!(
                "  {:<52} {:>9.0} %",
                "PostgreSQL against SQLite",
                100.0 * many / s
            );
        }
        server.db.close().await;
        server2.db.close().await;
    }
    Ok(())
}
