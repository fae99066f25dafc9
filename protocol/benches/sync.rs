//! Sync cost: bytes exchanged and round trips for two stores sharing 10,000 bundles with 0, 10,
//! 100 and 1,000 differences (half on each side), averaged over five different sets.
//!
//! ```sh
//! cargo bench -p meshpay-protocol --bench sync
//! ```
//!
//! "Reconciliation bytes" are every byte of every message except the bundles themselves (so
//! they include want lists and the closing hand-over receipts); "round trips" are the
//! request–response pairs until the side that computes the differences knows them.

// Averages over a handful of runs: float conversions are exact enough.
#![allow(clippy::cast_precision_loss)]

use meshpay_protocol::store::{BundleStore, Origin, StoreConfig};
use meshpay_protocol::sync::{Party, contact};
use meshpay_protocol::testkit::{T0, device, receipt_bundle, session_config};
use std::time::Instant;

fn main() {
    let shared = 10_000u64;
    let runs = 5u64;
    // Five different sets of bundles: keys come from bundle ids, so each set codes differently.
    let sets: Vec<Vec<Vec<u8>>> = (0..runs)
        .map(|r| {
            (0..shared + 1000)
                .map(|i| receipt_bundle(r * 1_000_000 + i).bytes().to_vec())
                .collect()
        })
        .collect();
    println!("sync of two nodes sharing {shared} bundles (bundle ~150 B), mean of {runs} sets");
    println!(
        "  {:>11}  {:>19}  {:>11}  {:>9}  {:>12}  {:>9}",
        "differences", "reconciliation B", "round trips", "symbols", "bundle B", "wall ms"
    );
    for diff in [0u64, 10, 100, 1000] {
        let (mut bytes, mut rts, mut syms, mut bundle_bytes, mut wall) =
            (0u64, 0u32, 0u64, 0u64, 0f64);
        for (salt, base) in (0..runs).zip(&sets) {
            let mut a = BundleStore::new(StoreConfig::default());
            let mut b = BundleStore::new(StoreConfig::default());
            for (i, bundle) in base.iter().enumerate() {
                let i = i as u64;
                // Shared: 0..shared-diff/2 .. ; a alone: the next diff/2; b alone: diff - diff/2.
                if i < shared - diff {
                    a.restore(bundle, Origin::Local, 0, 0);
                    b.restore(bundle, Origin::Local, 0, 0);
                } else if i < shared - diff / 2 {
                    a.restore(bundle, Origin::Local, 0, 0);
                } else if i < shared {
                    b.restore(bundle, Origin::Local, 0, 0);
                }
            }
            let (ka, kb) = (device(1), device(2));
            let started = Instant::now();
            let c = contact(
                Party {
                    store: &mut a,
                    cfg: session_config(1, 2, u64::MAX),
                    key: &ka,
                },
                Party {
                    store: &mut b,
                    cfg: session_config(2, 1, u64::MAX),
                    key: &kb,
                },
                salt,
                u32::MAX,
            )
            .expect("honest peers");
            wall += started.elapsed().as_secs_f64() * 1000.0;
            assert!(
                c.completed && a.len() == b.len(),
                "sync must reach the union"
            );
            let s = c.initiator.stats();
            bytes += s.bytes_sent + s.bytes_received - s.bundle_bytes;
            rts += s.reconcile_round_trips;
            syms += s.symbols;
            bundle_bytes += s.bundle_bytes;
            let _ = T0;
        }
        let r = runs as f64;
        println!(
            "  {:>11}  {:>19.0}  {:>11.1}  {:>9.0}  {:>12.0}  {:>9.1}",
            diff,
            bytes as f64 / r,
            f64::from(rts) / r,
            syms as f64 / r,
            bundle_bytes as f64 / r,
            wall / r
        );
    }
    println!("targets: 0 differences <= 1024 B; 100 differences <= 8192 B in <= 3 round trips");
}
