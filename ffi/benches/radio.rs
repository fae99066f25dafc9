//! The phone library's payment round trip over an in-memory radio (the app's part done by
//! threads, as in the tests): a warm BLE session at ATT MTU 23 and 185, with and without 5 %
//! packet loss; each payment is durable on both sides (SQLite, restore sentinel). Also prints
//! the size of the compiled library.
//!
//! ```sh
//! cargo bench -p meshpay-ffi --bench radio            # 200 payments per case
//! PAYMENTS=1000 cargo bench -p meshpay-ffi --bench radio
//! ```

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Air, Issuer, wait_ble_peer, wallet};
use meshpay_ffi::PaymentStatus;
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let payments: u64 = std::env::var("PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // `cargo bench` leaves the library among the dependencies; `cargo build --release` one
    // level up.
    let deps = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.to_path_buf()));
    let lib = deps.and_then(|d| {
        [
            d.join("libmeshpay_ffi.so"),
            d.parent()?.join("libmeshpay_ffi.so"),
        ]
        .into_iter()
        .find(|l| l.exists())
    });
    if let Some(lib) = lib {
        let size = std::fs::metadata(&lib).map_or(0, |m| m.len());
        let stripped = std::env::temp_dir().join("libmeshpay_ffi.stripped.so");
        let stripped_size = std::process::Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(&lib)
            .status()
            .ok()
            .filter(std::process::ExitStatus::success)
            .and_then(|_| std::fs::metadata(&stripped).ok())
            .map(|m| m.len());
        println!(
            "library {}: {:.1} MiB as built, {} stripped",
            lib.display(),
            size as f64 / 1_048_576.0,
            stripped_size.map_or("?".into(), |s| format!("{:.1} MiB", s as f64 / 1_048_576.0))
        );
    }
    let root = tempfile::tempdir().expect("tempdir");
    let issuer = Issuer::new(root.path());
    let shopper = wallet(root.path(), "shopper");
    let vendor = wallet(root.path(), "vendor");
    for w in [&shopper, &vendor] {
        w.trust_issuer(issuer.descriptor()).expect("trust");
    }
    shopper
        .add_allowance(issuer.allowance(&shopper.device_key(), 4 * payments * 10))
        .expect("allowance");
    println!("{payments} payments per case; round trip = request made, paid, acked, both durable");
    println!(
        "{:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "MTU", "loss", "first ms", "p50 ms", "p90 ms", "max ms", "pkts/pay"
    );
    for (mtu, loss) in [(23, 0), (185, 0), (23, 50), (185, 50)] {
        let air = Air::connect(&shopper, &vendor, mtu, loss);
        let up = Instant::now();
        wait_ble_peer(&shopper, &vendor.device_key());
        let handshake = up.elapsed();
        let before = air.carried.load(std::sync::atomic::Ordering::Relaxed);
        let mut samples = Vec::new();
        for _ in 0..payments {
            let start = Instant::now();
            let request = vendor.request_payment(10, None, None).expect("request");
            let paid = shopper.pay(request.text, None).expect("pay");
            assert_eq!(paid.status, PaymentStatus::Acked, "{paid:?}");
            samples.push(start.elapsed());
        }
        let packets = air.carried.load(std::sync::atomic::Ordering::Relaxed) - before;
        drop(air);
        let first = samples[0];
        samples.sort();
        let p = |q: f64| ms(samples[((samples.len() - 1) as f64 * q).round() as usize]);
        println!(
            "{mtu:>5} {:>5}% {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.1}   (session up in {:.1} ms)",
            loss / 10,
            ms(first),
            p(0.5),
            p(0.9),
            p(1.0),
            packets as f64 / payments as f64,
            ms(handshake)
        );
    }
    shopper.shutdown();
    vendor.shutdown();
}
