//! An in-memory radio between library instances, and a development issuer, for the tests and
//! the benchmark: what an app's BLE stack does, with packets the size the MTU allows and some
//! of them lost.

#![allow(dead_code, unreachable_pub)]

use meshpay_ffi::{BleAction, BleRole, Wallet, WalletSettings};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A development issuer (plain-text key, no escrow: tests only).
pub struct Issuer {
    dir: PathBuf,
}

impl Issuer {
    pub fn new(root: &Path) -> Self {
        let dir = root.join("issuer");
        meshpay_node::dev::run(meshpay_node::dev::Dev::IssuerInit {
            dir: dir.clone(),
            name: "Test issuer".into(),
            currency: "KES".into(),
        })
        .expect("issuer");
        Self { dir }
    }

    pub fn descriptor(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("descriptor.cbor")).expect("descriptor")
    }

    pub fn allowance(&self, holder: &str, limit: u64) -> Vec<u8> {
        let out = self.dir.join(format!("{holder}-{limit}.cert"));
        meshpay_node::dev::run(meshpay_node::dev::Dev::IssueAllowance {
            issuer_dir: self.dir.clone(),
            holder: holder.into(),
            limit,
            max_payment: None,
            currency: "KES".into(),
            valid_from: None,
            valid_until: None,
            out: out.clone(),
        })
        .expect("allowance");
        std::fs::read(out).expect("certificate")
    }
}

/// A wallet in `root/name`, open, with BLE on and no libp2p beyond loopback.
pub fn wallet(root: &Path, name: &str) -> Arc<Wallet> {
    let dir = root.join(name);
    let dir = dir.to_str().expect("utf-8").to_owned();
    meshpay_ffi::create_wallet(dir.clone(), "correct horse".into()).expect("create");
    Wallet::open(
        dir,
        "correct horse".into(),
        WalletSettings {
            sentinel_dir: root.join(format!("{name}-state")).to_str().unwrap().into(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            mdns: false,
            ble: true,
            relay: false,
        },
    )
    .expect("open")
}

/// Two instances joined by one BLE connection at `mtu`, losing `loss_per_mille` of the
/// packets, until dropped.
pub struct Air {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Packets carried and lost.
    pub carried: Arc<AtomicU64>,
    pub lost: Arc<AtomicU64>,
}

impl Air {
    pub fn connect(
        central: &Arc<Wallet>,
        peripheral: &Arc<Wallet>,
        mtu: u32,
        loss_per_mille: u64,
    ) -> Self {
        let c = central
            .ble_connected("peripheral".into(), BleRole::Central, mtu)
            .expect("central");
        let p = peripheral
            .ble_connected("central".into(), BleRole::Peripheral, mtu)
            .expect("peripheral");
        let stop = Arc::new(AtomicBool::new(false));
        let carried = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for (from, to, conn_to, seed) in [
            (Arc::clone(central), Arc::clone(peripheral), p, 1u64),
            (Arc::clone(peripheral), Arc::clone(central), c, 2),
        ] {
            let stop = Arc::clone(&stop);
            let carried = Arc::clone(&carried);
            let lost = Arc::clone(&lost);
            threads.push(std::thread::spawn(move || {
                let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                while !stop.load(Ordering::Relaxed) {
                    match from.ble_next_action(20) {
                        None => {}
                        Some(BleAction::Write { bytes, .. }) => {
                            assert!(
                                bytes.len() + 3 <= mtu as usize,
                                "a packet of {} bytes at MTU {mtu}",
                                bytes.len()
                            );
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            if rng % 1000 < loss_per_mille {
                                lost.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            carried.fetch_add(1, Ordering::Relaxed);
                            let _ = to.ble_received(conn_to, bytes);
                        }
                        Some(BleAction::Disconnect { .. }) => {
                            let _ = to.ble_disconnected(conn_to);
                            return;
                        }
                    }
                }
                let _ = to.ble_disconnected(conn_to);
            }));
        }
        Self {
            stop,
            threads,
            carried,
            lost,
        }
    }
}

impl Drop for Air {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Waits until `wallet` sees `peer` on BLE.
pub fn wait_ble_peer(wallet: &Wallet, peer: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if wallet
            .peers()
            .expect("peers")
            .iter()
            .any(|p| p.device_key == peer && p.link == "ble")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no BLE session with {peer} after 30 s");
}
