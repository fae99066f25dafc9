//! Real `meshpay` processes paying each other over loopback libp2p, with durable storage.

use meshpay_tests::{DevIssuer, TestNode};
use serde_json::Value;

fn pay_to(from: &TestNode, to: &TestNode, amount: u64, memo: &str) -> Value {
    from.json(&[
        "pay",
        "--to",
        &to.device,
        "--amount",
        &amount.to_string(),
        "--memo",
        memo,
        "--json",
    ])
}

fn amounts(history: &[Value], direction: &str) -> Vec<(u64, String)> {
    history
        .iter()
        .filter(|h| h["direction"] == direction)
        .map(|h| {
            (
                h["amount"].as_u64().unwrap(),
                h["iou"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn two_nodes_pay_and_everything_survives_restarts() {
    let root = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::new(root.path());
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = TestNode::init(root.path(), "shopper");
    vendor.start(&[]);
    let addr = vendor.tcp_addr();
    shopper.start(&["--peer", &addr]);
    for n in [&vendor, &shopper] {
        issuer.trusted_by(n);
    }
    issuer.fund(&shopper, 10_000);

    // request -> pay -> ack, by pushing an amount and by a request text.
    let paid = pay_to(&shopper, &vendor, 1_250, "tea");
    assert_eq!(paid["status"], "acked", "{paid}");
    assert_eq!(paid["counter"], 1);
    let req = vendor.json(&["request", "300", "--memo", "mango", "--json"]);
    let text = req["text"].as_str().unwrap();
    let paid = shopper.json(&["pay", text, "--json"]);
    assert_eq!(paid["status"], "acked", "{paid}");
    assert_eq!(paid["counter"], 2);
    // Paying the same request again pays nothing more.
    let again = shopper.json(&["pay", text, "--json"]);
    assert_eq!(again["iou"], paid["iou"]);

    let check = |shopper: &TestNode, vendor: &TestNode| {
        let s = shopper.balance("KES");
        assert_eq!(s["spendable"], 10_000 - 1_550);
        assert_eq!(s["sent_acked"], 1_550);
        assert_eq!(s["sent_pending"], 0);
        let v = vendor.balance("KES");
        assert_eq!(v["received"], 1_550);
        let sent = amounts(&shopper.history(), "sent");
        let received = amounts(&vendor.history(), "received");
        assert_eq!(sent, received, "both sides list the same IOUs");
        assert_eq!(sent.len(), 2);
        let memos: Vec<Value> = vendor.history().iter().map(|h| h["memo"].clone()).collect();
        assert_eq!(memos, vec!["tea", "mango"]);
    };
    check(&shopper, &vendor);

    // Restart both: everything is still there, and the next IOU takes the next counter.
    shopper.stop();
    vendor.stop();
    vendor.start(&[]);
    let addr = vendor.tcp_addr();
    shopper.start(&["--peer", &addr]);
    check(&shopper, &vendor);
    let paid = pay_to(&shopper, &vendor, 50, "bread");
    assert_eq!(paid["counter"], 3);
    assert_eq!(paid["status"], "acked");
}

#[test]
fn three_nodes_pay_around_a_triangle() {
    let root = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::new(root.path());
    let mut a = TestNode::init(root.path(), "a");
    let mut b = TestNode::init(root.path(), "b");
    let mut c = TestNode::init(root.path(), "c");
    a.start(&[]);
    let a_addr = a.tcp_addr();
    b.start(&["--peer", &a_addr]);
    let b_addr = b.tcp_addr();
    c.start(&["--peer", &a_addr, "--peer", &b_addr]);
    for n in [&a, &b, &c] {
        issuer.trusted_by(n);
        issuer.fund(n, 1_000);
    }
    // b and a connected when b dialled a; c dialled both.
    assert_eq!(pay_to(&b, &a, 100, "b->a")["status"], "acked");
    assert_eq!(pay_to(&a, &b, 200, "a->b")["status"], "acked");
    assert_eq!(pay_to(&c, &a, 300, "c->a")["status"], "acked");
    assert_eq!(pay_to(&c, &b, 400, "c->b")["status"], "acked");
    assert_eq!(pay_to(&a, &c, 50, "a->c")["status"], "acked");

    assert_eq!(a.balance("KES")["received"], 400);
    assert_eq!(b.balance("KES")["received"], 600);
    assert_eq!(c.balance("KES")["received"], 50);
    assert_eq!(a.balance("KES")["spendable"], 1_000 - 250);
    assert_eq!(b.balance("KES")["spendable"], 1_000 - 100);
    assert_eq!(c.balance("KES")["spendable"], 1_000 - 700);
    // Every IOU one side lists as sent, the other lists as received.
    for (payer, payee) in [(&a, &b), (&a, &c), (&b, &a), (&c, &a), (&c, &b)] {
        let sent: Vec<_> = payer
            .history()
            .into_iter()
            .filter(|h| h["direction"] == "sent" && h["counterparty"] == payee.device.as_str())
            .map(|h| h["iou"].clone())
            .collect();
        let got: Vec<_> = payee
            .history()
            .into_iter()
            .filter(|h| h["direction"] == "received" && h["counterparty"] == payer.device.as_str())
            .map(|h| h["iou"].clone())
            .collect();
        assert_eq!(sent, got);
        assert_eq!(sent.len(), 1);
    }
}

#[test]
fn refusals_reach_the_payer_as_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::new(root.path());
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = TestNode::init(root.path(), "shopper");
    vendor.start(&[]);
    let addr = vendor.tcp_addr();
    shopper.start(&["--peer", &addr]);
    issuer.trusted_by(&shopper);
    issuer.fund(&shopper, 500);
    // Over what the allowance holds: refused by the wallet itself, nothing spent.
    let out = shopper.cli(&["pay", "--to", &vendor.device, "--amount", "501"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than the 500 left"), "{err}");
    // The vendor does not trust the issuer: it refuses, and says why.
    let out = shopper.cli(&["pay", "--to", &vendor.device, "--amount", "100", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "refused");
    assert_eq!(v["reason"], "unknown_issuer");
    assert_eq!(shopper.balance("KES")["sent_refused"], 100);
    assert_eq!(vendor.history().len(), 0);
}
