//! Real `meshpay` processes paying each other over Bluetooth LE: the node's bluer peripheral
//! and btleplug central, end to end, against the bluezoo BlueZ D-Bus mock on a private bus
//! (no radio here; the system bus is never touched). The two nodes have no other link: mDNS
//! is off and neither dials the other.

use meshpay_tests::{Bluezoo, DevIssuer, TestNode, wait_for};

const VENDOR_ADAPTER: &str = "00:00:00:11:11:11";
const SHOPPER_ADAPTER: &str = "00:00:00:22:22:22";

fn on_ble(node: &mut TestNode, zoo: &Bluezoo, adapter: &str) {
    node.edit_config("# adapter = \"hci0\"", &format!("adapter = \"{adapter}\""));
    node.env
        .push(("DBUS_SYSTEM_BUS_ADDRESS".into(), zoo.bus.clone()));
    node.start(&["--ble"]);
    assert_eq!(node.ready["ble"]["state"], "up", "{}", node.ready);
}

/// A vendor and a shopper on BLE only (`vendor_env` for the vendor's daemon), both trusting
/// one issuer, the shopper funded with `funds`.
fn vendor_and_shopper(
    root: &std::path::Path,
    zoo: &Bluezoo,
    vendor_env: &[(&str, &str)],
    funds: u64,
) -> (TestNode, TestNode) {
    let issuer = DevIssuer::new(root);
    let mut vendor = TestNode::init(root, "vendor");
    let mut shopper = TestNode::init(root, "shopper");
    vendor.env.extend(
        vendor_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    on_ble(&mut vendor, zoo, VENDOR_ADAPTER);
    on_ble(&mut shopper, zoo, SHOPPER_ADAPTER);
    for n in [&vendor, &shopper] {
        issuer.trusted_by(n);
    }
    issuer.fund(&shopper, funds);
    (vendor, shopper)
}

#[test]
fn two_nodes_find_each_other_over_ble_handshake_and_pay() {
    let root = tempfile::tempdir().unwrap();
    let zoo = Bluezoo::start(root.path(), &[VENDOR_ADAPTER, SHOPPER_ADAPTER]);
    let (mut vendor, mut shopper) = vendor_and_shopper(root.path(), &zoo, &[], 10_000);

    // Discovery, connection and the Noise handshake: each learns the other's device key.
    shopper.wait_peer(&vendor.device);
    vendor.wait_peer(&shopper.device);
    let peers = shopper.json(&["peers", "--json"]);
    let link = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["device_key"] == vendor.device.as_str())
        .unwrap();
    assert_eq!(link["link"], "ble", "{peers}");
    assert!(link["address"].as_str().unwrap().starts_with("ble:"));

    // A payment over BLE, then one by request text.
    let paid = shopper.json(&[
        "pay",
        "--to",
        &vendor.device,
        "--amount",
        "1250",
        "--memo",
        "tea",
        "--json",
    ]);
    assert_eq!(paid["status"], "acked", "{paid}");
    let req = vendor.json(&["request", "300", "--memo", "mango", "--json"]);
    let paid = shopper.json(&["pay", req["text"].as_str().unwrap(), "--json"]);
    assert_eq!(paid["status"], "acked", "{paid}");
    assert_eq!(paid["counter"], 2);
    assert_eq!(vendor.balance("KES")["received"], 1550);
    assert_eq!(shopper.balance("KES")["sent_acked"], 1550);
    // A queue of payments: many packets each way through the GATT stack.
    for i in 0..20 {
        let paid = shopper.json(&[
            "pay",
            "--to",
            &vendor.device,
            "--amount",
            "10",
            "--memo",
            &format!("snack {i}"),
            "--json",
        ]);
        assert_eq!(paid["status"], "acked", "{paid}");
        assert_eq!(paid["counter"], 3 + i);
    }
    assert_eq!(vendor.balance("KES")["received"], 1750);

    // The vendor's sealed records reach the shopper's mesh store over the same link.
    let sync = vendor.json(&["sync", "--json"]);
    assert_eq!(sync["peers"], 1, "{sync}");
    wait_for("the shopper to carry the vendor's 22 records", || {
        let mesh = shopper.json(&["mesh", "--json"]);
        (mesh["by_kind"]["record"] == 22).then_some(())
    });
    vendor.stop();
    shopper.stop();
}

#[test]
fn without_bluez_the_node_says_why_and_keeps_its_other_links() {
    let root = tempfile::tempdir().unwrap();
    let bus = Bluezoo::bus_only(root.path());
    let issuer = DevIssuer::new(root.path());
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = TestNode::init(root.path(), "shopper");
    vendor
        .env
        .push(("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.bus.clone()));
    vendor.start(&["--ble"]);
    assert_eq!(vendor.ready["ble"]["state"], "unavailable");
    let why = vendor.ready["ble"]["error"].as_str().unwrap();
    assert!(why.contains("BlueZ is not running"), "{why}");
    assert!(why.contains("bluez"), "says what to install: {why}");
    assert!(vendor.log().contains("running on the other links"));
    // libp2p still carries payments.
    let addr = vendor.tcp_addr();
    shopper.start(&["--peer", &addr]);
    for n in [&vendor, &shopper] {
        issuer.trusted_by(n);
    }
    issuer.fund(&shopper, 1_000);
    let paid = shopper.json(&["pay", "--to", &vendor.device, "--amount", "100", "--json"]);
    assert_eq!(paid["status"], "acked", "{paid}");
}

#[test]
fn a_payee_killed_mid_payment_over_ble_loses_nothing() {
    // bluezoo cannot connect the same two adapters twice in one run: the vendor comes back on
    // a second adapter (as a device that moved to another radio would).
    const VENDOR_AGAIN: &str = "00:00:00:33:33:33";
    let root = tempfile::tempdir().unwrap();
    let zoo = Bluezoo::start(
        root.path(),
        &[VENDOR_ADAPTER, SHOPPER_ADAPTER, VENDOR_AGAIN],
    );
    let (mut vendor, shopper) = vendor_and_shopper(
        root.path(),
        &zoo,
        &[("MESHPAY_FAULT", "payee-crash-after-commit")],
        5_000,
    );
    shopper.wait_peer(&vendor.device);

    let paid = shopper.json(&["pay", "--to", &vendor.device, "--amount", "700", "--json"]);
    assert_eq!(paid["status"], "pending", "{paid}");
    assert!(vendor.wait_crash(), "the vendor died at the fault");
    assert_eq!(shopper.balance("KES")["sent_pending"], 700);

    // Back on the air: the shopper re-sends the same IOU over BLE and gets the stored ack.
    vendor.env.retain(|(k, _)| k != "MESHPAY_FAULT");
    vendor.edit_config(
        &format!("adapter = \"{VENDOR_ADAPTER}\""),
        &format!("adapter = \"{VENDOR_AGAIN}\""),
    );
    vendor.start(&["--ble"]);
    wait_for("the pending payment to be acked over BLE", || {
        let history = shopper.history();
        (history
            .iter()
            .any(|h| h["iou"] == paid["iou"] && h["status"] == "acked"))
        .then_some(())
    });
    assert_eq!(vendor.balance("KES")["received"], 700);
    let next = shopper.json(&["pay", "--to", &vendor.device, "--amount", "1", "--json"]);
    assert_eq!(next["status"], "acked", "{next}");
    assert_eq!(next["counter"], 2, "the counter was not reused");
}
