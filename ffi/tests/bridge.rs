//! Two library instances pay each other over the bridged BLE framer and Noise session, with
//! the test as the radio: packets cut at MTU 23 and 185, some lost.

mod common;

use common::{Air, Issuer, wait_ble_peer, wallet};
use meshpay_ffi::{Event, MeshpayError, PaymentStatus};

#[test]
fn two_instances_pay_over_a_lossy_bridged_radio() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(root.path());
    let shopper = wallet(root.path(), "shopper");
    let vendor = wallet(root.path(), "vendor");
    for w in [&shopper, &vendor] {
        w.trust_issuer(issuer.descriptor()).unwrap();
    }
    shopper
        .add_allowance(issuer.allowance(&shopper.device_key(), 10_000))
        .unwrap();
    let mut paid = 0;
    for (mtu, amount) in [(23, 150), (185, 275)] {
        let air = Air::connect(&shopper, &vendor, mtu, 50);
        wait_ble_peer(&shopper, &vendor.device_key());
        let request = vendor
            .request_payment(amount, None, Some(format!("MTU {mtu}")))
            .unwrap();
        let payment = shopper.pay(request.text.clone(), None).unwrap();
        assert_eq!(payment.status, PaymentStatus::Acked, "{payment:?}");
        paid += amount;
        // The vendor's screen hears of it.
        let mut heard = false;
        while let Some(e) = vendor.next_event(5_000).unwrap() {
            if let Event::PaymentReceived {
                amount: a, nonce, ..
            } = e
            {
                assert_eq!((a, nonce), (amount, request.nonce.clone()));
                heard = true;
                break;
            }
        }
        assert!(heard, "no PaymentReceived event at MTU {mtu}");
        let lost = air.lost.load(std::sync::atomic::Ordering::Relaxed);
        drop(air);
        eprintln!("MTU {mtu}: paid {amount}; {lost} packets lost on the way");
    }
    let received: u64 = vendor.balances().unwrap().iter().map(|b| b.received).sum();
    assert_eq!(received, paid);
    let shopper_kes = shopper.balances().unwrap();
    assert_eq!(shopper_kes[0].sent_acked, paid);
    assert_eq!(shopper_kes[0].spendable, 10_000 - paid);
    assert_eq!(vendor.history().unwrap().len(), 2);

    // Bad input: a typed error, nothing changed.
    assert!(matches!(
        shopper.pay("mpreq1notarequest".into(), None),
        Err(MeshpayError::Input { .. })
    ));
    assert!(matches!(
        vendor.ble_received(999, vec![1, 2, 3]),
        Err(MeshpayError::Radio { .. })
    ));
    assert_eq!(shopper.balances().unwrap()[0].sent_acked, paid);
    vendor.shutdown();
    assert!(matches!(
        vendor.balances(),
        Err(MeshpayError::Closed { .. })
    ));
}

#[test]
fn opening_checks_the_passphrase_and_the_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("w").to_str().unwrap().to_owned();
    let settings = || meshpay_ffi::WalletSettings {
        sentinel_dir: root.path().join("state").to_str().unwrap().into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        mdns: false,
        ble: false,
        relay: false,
    };
    assert!(matches!(
        meshpay_ffi::Wallet::open(dir.clone(), "whatever1".into(), settings()),
        Err(MeshpayError::NoWallet { .. })
    ));
    assert!(matches!(
        meshpay_ffi::create_wallet(dir.clone(), "short".into()),
        Err(MeshpayError::Input { .. })
    ));
    meshpay_ffi::create_wallet(dir.clone(), "long enough".into()).unwrap();
    assert!(matches!(
        meshpay_ffi::create_wallet(dir.clone(), "long enough".into()),
        Err(MeshpayError::NoWallet { .. })
    ));
    assert!(matches!(
        meshpay_ffi::Wallet::open(dir.clone(), "wrong one!".into(), settings()),
        Err(MeshpayError::WrongPassphrase { .. })
    ));
    let w = meshpay_ffi::Wallet::open(dir, "long enough".into(), settings()).unwrap();
    assert!(matches!(w.ble_service(), Err(MeshpayError::Input { .. })));
    // A new wallet has nothing to roll back.
    assert_eq!(w.info().unwrap().restore_check, "Current");
}

/// The restore sentinel lives where the app says, outside its backups: a wallet directory put
/// back from a backup taken before a payment finds itself behind the sentinel and retires its
/// allowances, so the payment's counter is never used again.
#[test]
fn a_wallet_restored_from_a_backup_retires_its_allowances() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(root.path());
    let shopper = wallet(root.path(), "shopper");
    let vendor = wallet(root.path(), "vendor");
    shopper.trust_issuer(issuer.descriptor()).unwrap();
    shopper
        .add_allowance(issuer.allowance(&shopper.device_key(), 1_000))
        .unwrap();
    shopper.shutdown();
    let home = root.path().join("shopper");
    let backup = root.path().join("backup");
    copy_dir(&home, &backup);

    let settings = || meshpay_ffi::WalletSettings {
        sentinel_dir: root.path().join("shopper-state").to_str().unwrap().into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        mdns: false,
        ble: true,
        relay: false,
    };
    let dir = home.to_str().unwrap().to_owned();
    let shopper =
        meshpay_ffi::Wallet::open(dir.clone(), "correct horse".into(), settings()).unwrap();
    // Paid while the vendor is out of reach: committed (counter 0 used), pending.
    let request = vendor.request_payment(100, None, None).unwrap();
    let pending = shopper.pay(request.text, None).unwrap();
    assert_eq!(pending.status, PaymentStatus::Pending, "{pending:?}");
    shopper.shutdown();
    drop(shopper);

    std::fs::remove_dir_all(&home).unwrap();
    copy_dir(&backup, &home);
    let restored = meshpay_ffi::Wallet::open(dir, "correct horse".into(), settings()).unwrap();
    assert!(
        restored
            .info()
            .unwrap()
            .restore_check
            .starts_with("RolledBack"),
        "{}",
        restored.info().unwrap().restore_check
    );
    let allowances = restored.allowances().unwrap();
    assert!(
        allowances.iter().all(|a| a.retired && !a.usable),
        "{allowances:?}"
    );
    assert!(
        restored
            .alerts()
            .unwrap()
            .iter()
            .any(|a| a.kind == meshpay_ffi::AlertKind::Restore)
    );
    let again = vendor.request_payment(100, None, None).unwrap();
    assert!(matches!(
        restored.pay(again.text, None),
        Err(MeshpayError::Pay { .. })
    ));
}

/// Copies a directory as a backup tool does: what exists as it goes (the mesh store's
/// background thread may still be removing a file it replaced).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            copy_dir(&entry.path(), &target);
        } else if let Err(e) = std::fs::copy(entry.path(), target) {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        }
    }
}

/// An app closes the wallet while its event thread waits and another thread is calling: both
/// get `Closed`, promptly, and nothing panics.
#[test]
fn shutdown_while_other_threads_wait_or_call() {
    let root = tempfile::tempdir().unwrap();
    let w = wallet(root.path(), "till");
    let reader = {
        let w = std::sync::Arc::clone(&w);
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            loop {
                match w.next_event(20_000) {
                    Ok(_) => {}
                    Err(e) => return (e, start.elapsed()),
                }
            }
        })
    };
    let caller = {
        let w = std::sync::Arc::clone(&w);
        std::thread::spawn(move || {
            loop {
                if let Err(e) = w.balances() {
                    return e;
                }
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    w.shutdown();
    let (e, waited) = reader.join().expect("the reader did not panic");
    assert!(matches!(e, MeshpayError::Closed { .. }), "{e:?}");
    assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
    let e = caller.join().expect("the caller did not panic");
    assert!(matches!(e, MeshpayError::Closed { .. }), "{e:?}");
    assert_eq!(w.ble_next_action(10), None);
}
