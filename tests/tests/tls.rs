//! HTTPS between nodes and a settlement server: the server serves TLS with a certificate from
//! a certificate authority the test makes; nodes that trust it (through `[issuer] ca_file` or
//! `SSL_CERT_FILE`) top up, upload and read receipts; nodes that do not, or a certificate for
//! another name, fail with one clear line.

use meshpay_tests::issuer_api::Admin;
use meshpay_tests::{SettleServer, TestCa, TestNode};

fn trust_ca(node: &TestNode, ca: &TestCa) {
    node.edit_config(
        "# ca_file = \"/etc/meshpay/issuer-ca.pem\"",
        &format!("ca_file = \"{}\"", ca.ca.display()),
    );
}

/// The one line a failed command printed.
fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "the command succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_settle_over_https_and_refuse_certificates_they_cannot_trust() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&root.path().join("ca"));
    let server = SettleServer::with_options(
        root.path(),
        "issuer",
        None,
        ca.server("issuer", &["127.0.0.1", "localhost"]),
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let http = ca.client();
    let admin = Admin::of(&server, &http);
    // Plain HTTP to the HTTPS port gets nothing useful.
    let plain = server.url.replace("https://", "http://");
    let plain_answer = reqwest::get(format!("{plain}/healthz")).await;
    assert!(!plain_answer.is_ok_and(|r| r.status().is_success()));

    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = TestNode::init(root.path(), "shopper");
    trust_ca(&vendor, &ca);
    trust_ca(&shopper, &ca);
    vendor.start(&[]);
    shopper.start(&["--peer", &vendor.tcp_addr()]);
    for n in [&vendor, &shopper] {
        n.json(&["trust", server.descriptor().to_str().unwrap(), "--json"]);
    }
    admin.account(&shopper.device, 10_000).await;
    admin.account(&vendor.device, 0).await;

    let a = shopper.json(&["topup", "5000", "--issuer", &server.url, "--json"]);
    assert_eq!(a["limit"], 5000);
    let p = shopper.json(&["pay", "--to", &vendor.device, "--amount", "1250", "--json"]);
    assert_eq!(p["status"], "acked");
    let round = vendor.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    assert_eq!(round["uploaded"], 1, "{round}");
    assert_eq!(round["receipts"], 1, "{round}");
    let round = shopper.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    assert_eq!(round["updated"], 1, "{round}");
    assert_eq!(shopper.history()[0]["settlement"], "settled");
    admin.conserved(10_000).await;

    // A node that does not trust the CA: one line saying why and what to do.
    let mut stranger = TestNode::init(root.path(), "stranger");
    stranger.start(&[]);
    stranger.json(&["trust", server.descriptor().to_str().unwrap(), "--json"]);
    let err = one_line_error(&stranger.cli(&["topup", "100", "--issuer", &server.url]));
    assert!(
        err.contains("certificate") && err.contains("ca_file"),
        "{err}"
    );
    // SSL_CERT_FILE is honoured like the system's roots.
    stranger.stop();
    stranger
        .env
        .push(("SSL_CERT_FILE".into(), ca.ca.display().to_string()));
    stranger.start(&[]);
    stranger.json(&["sync-issuer", "--issuer", &server.url, "--json"]);

    // A certificate for another name is refused even from a trusted CA.
    let wrong = SettleServer::with_options(
        root.path(),
        "wrong-issuer",
        None,
        ca.server("wrong", &["settle.example"]),
    );
    let err = one_line_error(&shopper.cli(&["sync-issuer", "--issuer", &wrong.url]));
    assert!(err.contains("certificate"), "{err}");
}
