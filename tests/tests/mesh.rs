//! Store-and-forward with real processes: a line of nodes where only neighbours meet carries
//! a vendor's records to a gateway, the receipts come back, every copy is purged; bundle files
//! move bundles with no radio, and a hostile file changes nothing.

use meshpay_tests::{SettleServer, TestNode};
use serde_json::{Value, json};

async fn admin(server: &SettleServer, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .bearer_auth(&server.token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

async fn reconciliation(server: &SettleServer) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{}/admin/reconciliation", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// Opens the shopper's account with `credit` and the vendor's, and the shopper tops up an
/// allowance of `allowance`.
async fn accounts(
    server: &SettleServer,
    shopper: &TestNode,
    vendor: &TestNode,
    credit: u64,
    allowance: u64,
) {
    admin(server, "/admin/accounts", json!({"device": shopper.device})).await;
    admin(
        server,
        &format!("/admin/accounts/{}/credit", shopper.device),
        json!({"amount": credit, "reference": "test"}),
    )
    .await;
    admin(server, "/admin/accounts", json!({"device": vendor.device})).await;
    let limit = allowance.to_string();
    shopper.json(&["topup", &limit, "--issuer", &server.url, "--json"]);
}

fn records_held(n: &TestNode) -> u64 {
    n.json(&["mesh", "--json"])["by_kind"]["record"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_travel_a_line_to_the_gateway_and_receipts_come_back() {
    let root = tempfile::tempdir().unwrap();
    let server = SettleServer::new(root.path(), "issuer");
    let descriptor = server.descriptor();
    let mut shopper = TestNode::init(root.path(), "shopper");
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut b = TestNode::init(root.path(), "b");
    let mut c = TestNode::init(root.path(), "c");
    let mut gw = TestNode::init(root.path(), "gateway");
    // The market: the shopper pays the vendor; no server in reach of either.
    vendor.start(&[]);
    shopper.start(&["--peer", &vendor.tcp_addr()]);
    shopper.wait_peer(&vendor.device);
    for n in [&shopper, &vendor] {
        n.json(&["trust", descriptor.to_str().unwrap(), "--json"]);
    }
    accounts(&server, &shopper, &vendor, 10_000, 5_000).await;
    for amount in ["700", "450"] {
        let p = shopper.json(&["pay", "--to", &vendor.device, "--amount", amount, "--json"]);
        assert_eq!(p["status"], "acked");
    }
    assert_eq!(records_held(&vendor), 2);

    // A line vendor – b – c – gateway: each node dials only its neighbour.
    b.start(&["--peer", &vendor.tcp_addr()]);
    b.wait_peer(&vendor.device);
    c.start(&["--peer", &b.tcp_addr()]);
    c.wait_peer(&b.device);
    gw.start(&["--peer", &c.tcp_addr()]);
    gw.wait_peer(&c.device);
    gw.json(&["trust", descriptor.to_str().unwrap(), "--json"]);
    for n in [&b, &c, &gw] {
        n.json(&["sync", "--json"]);
    }
    assert_eq!(records_held(&gw), 2, "the records reached the gateway");

    // The gateway reaches the server: records settle, receipts enter the mesh.
    let round = gw.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    assert_eq!(round["uploaded"], 2);
    assert_eq!(round["receipts"], 2);
    assert_eq!(
        records_held(&gw),
        0,
        "the receipts purged the gateway's copies"
    );
    for n in [&c, &b, &vendor, &shopper] {
        n.json(&["sync", "--json"]);
    }
    for n in [&shopper, &vendor, &b, &c, &gw] {
        let m = n.json(&["mesh", "--json"]);
        assert_eq!(
            m["by_kind"]["record"].as_u64().unwrap_or(0),
            0,
            "{}: {m}",
            n.name
        );
        assert!(m["tombstones"].as_u64().unwrap() >= 2, "{}: {m}", n.name);
    }
    for n in [&shopper, &vendor] {
        let h = n.history();
        assert_eq!(h.len(), 2, "{}", n.name);
        assert!(
            h.iter().all(|p| p["settlement"] == "settled"),
            "{}: {h:?}",
            n.name
        );
    }
    // Settled exactly once, and every carrier holds signed proof of what it carried.
    let r = reconciliation(&server).await;
    assert_eq!(r["records"]["settled"], 2, "{r}");
    assert_eq!(r["settled_amount"], 1150, "{r}");
    assert_eq!(r["conserved"], true, "{r}");
    let carried = b.json(&["mesh", "--json"])["carried"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        carried
            .iter()
            .any(|h| h["taker"] == c.device.as_str() && h["count"].as_u64().unwrap() >= 2),
        "{carried:?}"
    );
    // Uploading again changes nothing.
    gw.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    assert_eq!(reconciliation(&server).await["records"]["settled"], 2);
}

#[test]
fn bundle_files_carry_records_and_hostile_files_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dev = root.path().join("dev-issuer");
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = TestNode::init(root.path(), "shopper");
    let mut courier = TestNode::init(root.path(), "courier");
    let issuer = meshpay_tests::DevIssuer::new(&dev);
    vendor.start(&[]);
    shopper.start(&["--peer", &vendor.tcp_addr()]);
    shopper.wait_peer(&vendor.device);
    for n in [&vendor, &shopper] {
        issuer.trusted_by(n);
    }
    issuer.fund(&shopper, 5_000);
    let paid = shopper.json(&["pay", "--to", &vendor.device, "--amount", "300", "--json"]);
    assert_eq!(paid["status"], "acked");

    let file = root.path().join("bundles.mpb");
    let exported = vendor.json(&["export", "--out", file.to_str().unwrap(), "--json"]);
    assert!(exported["bundles"].as_u64().unwrap() >= 2, "{exported}");
    courier.start(&[]);
    let imported = courier.json(&["import", file.to_str().unwrap(), "--json"]);
    assert_eq!(imported["added"], exported["bundles"], "{imported}");
    assert_eq!(records_held(&courier), 1);
    let again = courier.json(&["import", file.to_str().unwrap(), "--json"]);
    assert_eq!(again["duplicate"], exported["bundles"]);

    // A corrupted file is refused whole, and nothing changes.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() - 5);
    let bad = root.path().join("bad.mpb");
    std::fs::write(&bad, &bytes).unwrap();
    let before = courier.json(&["mesh", "--json"]);
    let out = courier.cli(&["import", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupted"), "{err}");
    // Not a bundle file at all; and one over the size limit.
    let junk = root.path().join("junk.mpb");
    std::fs::write(&junk, b"hello, this is not a bundle file").unwrap();
    let err = String::from_utf8_lossy(&courier.cli(&["import", junk.to_str().unwrap()]).stderr)
        .into_owned();
    assert!(err.contains("not a meshpay bundle file"), "{err}");
    let huge = root.path().join("huge.mpb");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    let err = String::from_utf8_lossy(&courier.cli(&["import", huge.to_str().unwrap()]).stderr)
        .into_owned();
    assert!(err.contains("over the limit"), "{err}");
    // A well-framed file whose bundle is forged: refused bundle by bundle.
    let good = std::fs::read(&file).unwrap();
    let notice = meshpay_protocol::bundle::unpack_file(&good)
        .unwrap()
        .into_iter()
        .find(|b| {
            meshpay_protocol::bundle::Bundle::decode(b)
                .unwrap()
                .meta()
                .kind
                == meshpay_protocol::bundle::BundleKind::Notice
        })
        .expect("a spend notice")
        .to_vec();
    let mut bad_notice = notice.clone();
    let n = bad_notice.len();
    bad_notice[n - 5] ^= 0x01; // inside the holder's signature
    let forged = meshpay_protocol::bundle::pack_file([bad_notice.as_slice()]);
    let forged_path = root.path().join("forged.mpb");
    std::fs::write(&forged_path, &forged).unwrap();
    let f = courier.json(&["import", forged_path.to_str().unwrap(), "--json"]);
    assert_eq!(f["added"], 0, "{f}");
    assert_eq!(courier.json(&["mesh", "--json"]), before);
}

#[test]
fn a_fork_at_both_ends_of_a_line_is_found_in_the_mesh_and_refused_everywhere() {
    let root = tempfile::tempdir().unwrap();
    let issuer = meshpay_tests::DevIssuer::new(root.path());
    let mut a = TestNode::init(root.path(), "vendor-a");
    let mut c = TestNode::init(root.path(), "vendor-c");
    let mut shopper = TestNode::init(root.path(), "shopper");
    // One bundle per contact at most: every hand-over takes several contacts.
    for n in [&a, &c] {
        n.edit_config("budget_kb = 4096", "budget_kb = 1");
    }
    a.start(&[]);
    c.start(&[]);
    shopper.start(&["--peer", &a.tcp_addr()]);
    for n in [&a, &c, &shopper] {
        issuer.trusted_by(n);
    }
    issuer.fund(&shopper, 1_000);
    shopper.stop();
    let mut clone = shopper.clone_device(root.path(), "clone");
    shopper.start(&["--peer", &a.tcp_addr()]);
    clone.start(&["--peer", &c.tcp_addr()]);
    shopper.wait_peer(&a.device);
    clone.wait_peer(&c.device);

    // The same counter spent at both ends of the market: neither vendor can tell yet.
    let first = shopper.json(&["pay", "--to", &a.device, "--amount", "100", "--json"]);
    let second = clone.json(&["pay", "--to", &c.device, "--amount", "200", "--json"]);
    assert_eq!(first["status"], "acked");
    assert_eq!(second["status"], "acked");
    assert_eq!(first["counter"], second["counter"]);
    shopper.stop();
    clone.stop();

    // A relay with room for about three bundles walks between them.
    let mut b = TestNode::relay(root.path(), "relay-b");
    b.start(&[
        "--quota-kb",
        "1",
        "--peer",
        &a.tcp_addr(),
        "--peer",
        &c.tcp_addr(),
    ]);
    b.wait_peer(&a.device);
    b.wait_peer(&c.device);
    let found = |n: &TestNode| n.json(&["frauds", "--json"]).as_array().map_or(0, Vec::len);
    let mut rounds = 0;
    while found(&a) == 0 || found(&c) == 0 {
        rounds += 1;
        assert!(
            rounds <= 12,
            "the fraud proof did not spread: a {} c {}\nc: {}\nb: {}\n{}",
            found(&a),
            found(&c),
            c.json(&["mesh", "--json"]),
            b.json(&["mesh", "--json"]),
            c.log()
        );
        for n in [&a, &c, &b] {
            n.json(&["sync", "--json"]);
        }
    }
    let m = b.json(&["mesh", "--json"]);
    assert_eq!(m["by_kind"]["fraud_proof"], 1, "{m}");
    assert!(
        m["bytes"].as_u64().unwrap() <= 1024,
        "the relay stays within its quota: {m}"
    );
    // Refused everywhere from now on.
    shopper.start(&["--peer", &c.tcp_addr()]);
    shopper.wait_peer(&c.device);
    let out = shopper.cli(&["pay", "--to", &c.device, "--amount", "50", "--json"]);
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["status"], "refused", "{again}");
    assert_eq!(again["reason"], "known_fraud", "{again}");
}

/// A node started with `--gateway` uploads on its own whenever the server is reachable: the
/// records it receives settle without anyone running a command, and the receipts reach the
/// payee through the mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_uploads_by_itself_when_the_server_is_reachable() {
    let root = tempfile::tempdir().unwrap();
    let server = SettleServer::new(root.path(), "issuer");
    let descriptor = server.descriptor();
    let mut shopper = TestNode::init(root.path(), "shopper");
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut gw = TestNode::init(root.path(), "gateway");
    // Gateway rounds and syncs every second instead of every 30.
    gw.edit_config("gateway_secs = 30", "gateway_secs = 1");
    vendor.edit_config("sync_secs = 30", "sync_secs = 1");
    vendor.start(&[]);
    shopper.start(&["--peer", &vendor.tcp_addr()]);
    shopper.wait_peer(&vendor.device);
    for n in [&shopper, &vendor] {
        n.json(&["trust", descriptor.to_str().unwrap(), "--json"]);
    }
    accounts(&server, &shopper, &vendor, 5_000, 2_000).await;
    let paid = shopper.json(&["pay", "--to", &vendor.device, "--amount", "400", "--json"]);
    assert_eq!(paid["status"], "acked");

    gw.start(&["--gateway", &server.url, "--peer", &vendor.tcp_addr()]);
    gw.json(&["trust", descriptor.to_str().unwrap(), "--json"]);
    meshpay_tests::wait_for("the vendor to see its payment settled", || {
        let h = vendor.history();
        (h.len() == 1 && h[0]["settlement"] == "settled").then_some(())
    });
    let r = reconciliation(&server).await;
    assert_eq!(r["records"]["settled"], 1, "{r}");
    assert_eq!(r["settled_amount"], 400, "{r}");
}

/// A receipt signed by another issuer the vendor trusts, for the record of a payment made
/// under the first issuer's allowance, settles nothing and purges nothing: only the issuer
/// of the allowance decides its records.
#[test]
fn a_receipt_from_another_trusted_issuer_settles_nothing() {
    use meshpay_protocol::bundle::{Bundle, BundleKind, Content, pack_file, unpack_file};
    use meshpay_protocol::{ReceiptStatus, SettlementReceipt};
    let root = tempfile::tempdir().unwrap();
    let (ra, rb) = (root.path().join("a"), root.path().join("b"));
    let (a, b) = (
        meshpay_tests::DevIssuer::new(&ra),
        meshpay_tests::DevIssuer::new(&rb),
    );
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = TestNode::init(root.path(), "shopper");
    vendor.start(&[]);
    shopper.start(&["--peer", &vendor.tcp_addr()]);
    for issuer in [&a, &b] {
        issuer.trusted_by(&vendor);
        issuer.trusted_by(&shopper);
    }
    a.fund(&shopper, 1_000);
    let paid = shopper.json(&["pay", "--to", &vendor.device, "--amount", "40", "--json"]);
    assert_eq!(paid["status"], "acked");
    // The record's id, from the vendor's own bundles.
    let file = root.path().join("vendor.mpb");
    vendor.json(&["export", "--out", file.to_str().unwrap(), "--json"]);
    let record = unpack_file(&std::fs::read(&file).unwrap())
        .unwrap()
        .into_iter()
        .find_map(|b| {
            let m = *Bundle::decode(b).unwrap().meta();
            (m.kind == BundleKind::Record).then(|| m.subject.expect("a record's id"))
        })
        .expect("the payment's record");
    let receipt_from = |issuer: &meshpay_tests::DevIssuer| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let r = SettlementReceipt::issue(&issuer.secret(), record, ReceiptStatus::Settled, now);
        let path = root
            .path()
            .join(format!("receipt-{}.mpb", issuer.secret().id()));
        std::fs::write(&path, pack_file([Bundle::new(Content::Receipt(r)).bytes()])).unwrap();
        path
    };
    let settlement = |n: &TestNode| n.history()[0]["settlement"].clone();
    let before = settlement(&vendor);
    let forged = receipt_from(&b);
    let took = vendor.json(&["import", forged.to_str().unwrap(), "--json"]);
    assert_eq!(took["added"], 1, "{took}");
    assert_eq!(
        settlement(&vendor),
        before,
        "another issuer settled the payment"
    );
    assert_eq!(
        records_held(&vendor),
        1,
        "another issuer's receipt purged the record"
    );
    // The allowance's own issuer does.
    let genuine = receipt_from(&a);
    let took = vendor.json(&["import", genuine.to_str().unwrap(), "--json"]);
    assert_eq!(took["added"], 1, "{took}");
    assert_eq!(settlement(&vendor), "settled");
    assert_eq!(records_held(&vendor), 0);
}
