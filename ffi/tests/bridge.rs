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
