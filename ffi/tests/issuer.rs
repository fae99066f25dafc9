//! Online, from the library: a shopper tops up from a real settlement server process, pays a
//! vendor over the bridged BLE radio, and the vendor's round with the server settles it; the
//! issuer's books balance.

mod common;

use common::{Air, wait_ble_peer, wallet};
use meshpay_ffi::{Event, MeshpayError, PaymentStatus};
use meshpay_tests::SettleServer;
use meshpay_tests::issuer_api::Admin;

#[test]
fn top_up_pay_over_ble_and_settle_through_a_real_server() {
    let root = tempfile::tempdir().unwrap();
    let server = SettleServer::new(root.path(), "issuer");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = Admin::of(&server, &reqwest::Client::new());
    let descriptor = std::fs::read(server.descriptor()).unwrap();
    let shopper = wallet(root.path(), "shopper");
    let vendor = wallet(root.path(), "vendor");
    for w in [&shopper, &vendor] {
        w.trust_issuer(descriptor.clone()).unwrap();
    }
    // No account yet: the issuer refuses, and the error says it is the issuer's.
    assert!(matches!(
        shopper.top_up(server.url.clone(), 500, None, 7),
        Err(MeshpayError::Issuer { .. })
    ));
    rt.block_on(admin.account(&shopper.device_key(), 2_000));
    rt.block_on(admin.account(&vendor.device_key(), 0));
    let allowance = shopper.top_up(server.url.clone(), 500, None, 7).unwrap();
    assert_eq!(allowance.limit, 500);
    assert_eq!(shopper.balances().unwrap()[0].spendable, 500);

    let _air = Air::connect(&shopper, &vendor, 185, 0);
    wait_ble_peer(&shopper, &vendor.device_key());
    let request = vendor.request_payment(120, None, None).unwrap();
    let paid = shopper.pay(request.text, None).unwrap();
    assert_eq!(paid.status, PaymentStatus::Acked);

    let round = vendor.sync_issuer(server.url.clone()).unwrap();
    assert_eq!((round.uploaded, round.updated), (1, 1), "{round:?}");
    assert_eq!(
        vendor.history().unwrap()[0].settlement.as_deref(),
        Some("settled")
    );
    let mut settled = false;
    while let Some(e) = vendor.next_event(2_000).unwrap() {
        if let Event::Settled { iou, status } = e {
            assert_eq!(
                (iou.as_str(), status.as_str()),
                (paid.iou.as_str(), "settled")
            );
            settled = true;
            break;
        }
    }
    assert!(settled, "no Settled event");
    let again = vendor.sync_issuer(server.url.clone()).unwrap();
    assert_eq!((again.uploaded, again.updated), (0, 0), "{again:?}");
    rt.block_on(admin.conserved(2_000));
}
