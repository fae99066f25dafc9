//! Processes killed mid-payment: nothing acknowledged is lost, no counter is reused, and the
//! retry completes.

use meshpay_tests::{DevIssuer, TestNode, wait_for};
use serde_json::Value;
use std::collections::BTreeSet;

fn sent(node: &TestNode) -> Vec<Value> {
    node.history()
        .into_iter()
        .filter(|h| h["direction"] == "sent")
        .collect()
}

fn received(node: &TestNode) -> Vec<Value> {
    node.history()
        .into_iter()
        .filter(|h| h["direction"] == "received")
        .collect()
}

/// Every (allowance, counter) the payer used names exactly one IOU, and the payee's IOUs are
/// the payer's.
fn consistent(payer: &TestNode, payee: &TestNode) {
    let sent = sent(payer);
    let slots: BTreeSet<(String, u64)> = sent
        .iter()
        .map(|h| {
            (
                h["allowance"].as_str().unwrap().to_owned(),
                h["counter"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        slots.len(),
        sent.len(),
        "a counter was used twice: {sent:?}"
    );
    let sent_ids: BTreeSet<&str> = sent.iter().map(|h| h["iou"].as_str().unwrap()).collect();
    let received = received(payee);
    let got_ids: BTreeSet<&str> = received
        .iter()
        .map(|h| h["iou"].as_str().unwrap())
        .collect();
    assert!(
        got_ids.is_subset(&sent_ids),
        "the payee holds an IOU the payer never made"
    );
    for h in &sent {
        if h["status"] == "acked" {
            assert!(
                got_ids.contains(h["iou"].as_str().unwrap()),
                "an acked IOU is missing at the payee"
            );
        }
    }
}

fn setup(root: &std::path::Path) -> (DevIssuer, TestNode, TestNode) {
    let issuer = DevIssuer::new(root);
    let vendor = TestNode::init(root, "vendor");
    let shopper = TestNode::init(root, "shopper");
    (issuer, vendor, shopper)
}

#[test]
fn payee_killed_after_storing_before_acking() {
    let root = tempfile::tempdir().unwrap();
    let (issuer, mut vendor, mut shopper) = setup(root.path());
    vendor.env = vec![("MESHPAY_FAULT".into(), "payee-crash-after-commit".into())];
    vendor.start(&[]);
    shopper.start(&["--peer", &vendor.tcp_addr()]);
    issuer.trusted_by(&vendor);
    issuer.trusted_by(&shopper);
    issuer.fund(&shopper, 5_000);

    let v = shopper.json(&["pay", "--to", &vendor.device, "--amount", "700", "--json"]);
    assert_eq!(v["status"], "pending", "{v}");
    assert!(
        vendor.wait_crash(),
        "the vendor should have died at the fault"
    );
    // The vendor stored the IOU before dying; the shopper has it pending.
    assert_eq!(sent(&shopper)[0]["status"], "pending");
    assert_eq!(shopper.balance("KES")["sent_pending"], 700);

    // The vendor comes back (on a new port) and dials the shopper: the shopper re-sends the
    // same IOU and gets the stored ack.
    vendor.env.clear();
    let shopper_addr = shopper.tcp_addr();
    vendor.start(&["--peer", &shopper_addr]);
    wait_for("the pending payment to be acked", || {
        (sent(&shopper)[0]["status"] == "acked").then_some(())
    });
    let r = received(&vendor);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["iou"], v["iou"]);
    assert_eq!(vendor.balance("KES")["received"], 700);
    consistent(&shopper, &vendor);

    let next = shopper.json(&["pay", "--to", &vendor.device, "--amount", "1", "--json"]);
    assert_eq!(next["status"], "acked");
    assert_eq!(next["counter"], 2);
    consistent(&shopper, &vendor);
}

#[test]
fn payer_killed_after_committing_before_sending() {
    let root = tempfile::tempdir().unwrap();
    let (issuer, mut vendor, mut shopper) = setup(root.path());
    vendor.start(&[]);
    let vendor_addr = vendor.tcp_addr();
    shopper.env = vec![("MESHPAY_FAULT".into(), "payer-crash-after-commit".into())];
    shopper.start(&["--peer", &vendor_addr]);
    issuer.trusted_by(&vendor);
    issuer.trusted_by(&shopper);
    issuer.fund(&shopper, 5_000);

    let out = shopper.cli(&["pay", "--to", &vendor.device, "--amount", "900"]);
    assert!(!out.status.success(), "the payer died mid-command");
    assert!(shopper.wait_crash());
    assert_eq!(received(&vendor).len(), 0, "nothing left the payer");

    // Back up: the committed IOU is delivered as is, and its counter is not used again.
    shopper.env.clear();
    shopper.start(&["--peer", &vendor_addr]);
    wait_for("the committed payment to be delivered", || {
        let s = sent(&shopper);
        (s.len() == 1 && s[0]["status"] == "acked").then_some(())
    });
    let s = sent(&shopper);
    assert_eq!(s[0]["counter"], 1);
    assert_eq!(received(&vendor)[0]["iou"], s[0]["iou"]);
    let next = shopper.json(&["pay", "--to", &vendor.device, "--amount", "5", "--json"]);
    assert_eq!(next["counter"], 2);
    assert_eq!(shopper.balance("KES")["spendable"], 5_000 - 905);
    consistent(&shopper, &vendor);
}

#[test]
fn sigkill_during_a_stream_of_payments_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (issuer, mut vendor, mut shopper) = setup(root.path());
    vendor.start(&[]);
    let vendor_addr = vendor.tcp_addr();
    shopper.start(&["--peer", &vendor_addr]);
    issuer.trusted_by(&vendor);
    issuer.trusted_by(&shopper);
    issuer.fund(&shopper, 100_000);

    // Pay from a second thread while the vendor is killed and restarted.
    let shopper_home = shopper.home.clone();
    let vendor_device = vendor.device.clone();
    let payer = {
        let shopper = TestNode::existing(
            shopper_home,
            shopper.state.clone(),
            "shopper-cli",
            &shopper.device,
        );
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            for i in 1..=20u64 {
                let out = shopper.cli(&[
                    "pay",
                    "--to",
                    &vendor_device,
                    "--amount",
                    &i.to_string(),
                    "--json",
                ]);
                outcomes.push(out.status.success());
            }
            std::mem::forget(shopper); // not ours to kill: the daemon belongs to the test
            outcomes
        })
    };
    wait_for("a few payments", || {
        (received(&vendor).len() >= 3).then_some(())
    });
    vendor.kill();
    let shopper_addr = shopper.tcp_addr();
    vendor.start(&["--peer", &shopper_addr]);
    let _ = payer.join().unwrap();
    // Every IOU the shopper committed ends acked, once the vendor is back.
    wait_for("every committed payment to be acked", || {
        let s = sent(&shopper);
        s.iter().all(|h| h["status"] == "acked").then_some(())
    });
    consistent(&shopper, &vendor);
    let total: u64 = sent(&shopper)
        .iter()
        .map(|h| h["amount"].as_u64().unwrap())
        .sum();
    assert_eq!(vendor.balance("KES")["received"], total);
    assert_eq!(shopper.balance("KES")["spendable"], 100_000 - total);
}
