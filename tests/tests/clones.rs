//! Copied wallets: a cloned wallet that double spends is caught by the payee, and a wallet
//! restored from a copy refuses to spend from its old allowances.

use meshpay_protocol::{FraudProof, PrintableKey as _};
use meshpay_tests::{DevIssuer, TestNode};
use serde_json::Value;

#[test]
fn a_cloned_wallet_paying_the_same_vendor_is_caught() {
    let root = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::new(root.path());
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = TestNode::init(root.path(), "shopper");
    vendor.start(&[]);
    let vendor_addr = vendor.tcp_addr();
    shopper.start(&["--peer", &vendor_addr]);
    issuer.trusted_by(&vendor);
    issuer.trusted_by(&shopper);
    issuer.fund(&shopper, 1_000);
    shopper.stop();

    // A whole-device clone: wallet directory and sentinel both copied.
    let mut clone = shopper.clone_device(root.path(), "clone");
    shopper.start(&["--peer", &vendor_addr]);
    clone.start(&["--peer", &vendor_addr]);

    let first = shopper.json(&["pay", "--to", &vendor.device, "--amount", "100", "--json"]);
    assert_eq!(first["status"], "acked");
    let out = clone.cli(&["pay", "--to", &vendor.device, "--amount", "200", "--json"]);
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        second["counter"], first["counter"],
        "the clone reuses the counter"
    );
    assert_eq!(second["status"], "refused");
    assert_eq!(second["reason"], "counter_conflict");

    // The vendor holds a fraud proof anyone can check with the issuer's key alone.
    let frauds = vendor.json(&["frauds", "--json"]);
    let frauds = frauds.as_array().unwrap();
    assert_eq!(frauds.len(), 1);
    assert_eq!(frauds[0]["holder"], shopper.device.as_str());
    let proof: FraudProof =
        meshpay_protocol::decode(&hex::decode(frauds[0]["proof"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(proof.verify(&issuer.secret().id()), Ok(()));
    assert_eq!(proof.cert.body().holder.to_text(), shopper.device);

    // From now on the vendor refuses that allowance, even from the original wallet.
    let out = shopper.cli(&["pay", "--to", &vendor.device, "--amount", "5", "--json"]);
    let third: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(third["reason"], "known_fraud");
    assert_eq!(vendor.balance("KES")["received"], 100);
}

#[test]
fn a_restored_wallet_does_not_spend_from_its_old_allowances() {
    let root = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::new(root.path());
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = TestNode::init(root.path(), "shopper");
    vendor.start(&[]);
    let vendor_addr = vendor.tcp_addr();
    shopper.start(&["--peer", &vendor_addr]);
    issuer.trusted_by(&vendor);
    issuer.trusted_by(&shopper);
    issuer.fund(&shopper, 1_000);
    shopper.stop();
    let backup = root.path().join("backup");
    meshpay_tests::copy_dir(&shopper.home, &backup);

    shopper.start(&["--peer", &vendor_addr]);
    // An allowance added after the backup, and spent from.
    issuer.fund(&shopper, 700);
    let paid = shopper.json(&["pay", "--to", &vendor.device, "--amount", "100", "--json"]);
    assert_eq!(paid["status"], "acked");
    shopper.stop();

    // Restore the backup over the wallet: the sentinel is ahead of it.
    std::fs::remove_dir_all(&shopper.home).unwrap();
    meshpay_tests::copy_dir(&backup, &shopper.home);
    shopper.start(&["--peer", &vendor_addr]);
    let id = shopper.json(&["id", "--json"]);
    assert!(
        id["restore_check"]
            .as_str()
            .unwrap()
            .starts_with("RolledBack"),
        "{id}"
    );
    let allowances = shopper.json(&["allowance", "--json"]);
    assert_eq!(allowances[0]["retired"], true);
    let out = shopper.cli(&["pay", "--to", &vendor.device, "--amount", "100"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no usable allowance"), "{err}");
    assert!(err.contains("restored copy"), "the refusal says why: {err}");
    assert_eq!(
        vendor.balance("KES")["received"],
        100,
        "no second IOU reached the vendor"
    );

    // Adding the certificate the lost copy spent from does not bring its counters back.
    let old_cert = issuer.dir.join("shopper-700.cert");
    let out = shopper.cli(&["allowance", "--add", old_cert.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spent from by an earlier copy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A fresh allowance from the issuer is the way back.
    issuer.fund(&shopper, 500);
    let paid = shopper.json(&["pay", "--to", &vendor.device, "--amount", "50", "--json"]);
    assert_eq!(paid["status"], "acked");
    assert_eq!(paid["counter"], 1);

    // The same directory moved to another device (no sentinel there) is retired too.
    shopper.stop();
    let moved_state = root.path().join("elsewhere-state");
    let mut moved = TestNode::existing(shopper.home.clone(), moved_state, "moved", &shopper.device);
    moved.start(&[]);
    let id = moved.json(&["id", "--json"]);
    assert_eq!(id["restore_check"], "NoSentinel");
}
