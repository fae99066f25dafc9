//! mDNS discovery between two network namespaces joined by a veth pair, created by this test.
//! Multicast never touches the default namespace. Needs root (CAP_NET_ADMIN); without it the
//! test says so and does nothing.

use meshpay_tests::{DevIssuer, TestNode};
use std::process::Command;

/// Two namespaces and the veth pair between them, removed on drop.
struct Netns {
    a: String,
    b: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn create() -> Result<Self, String> {
        let tag = std::process::id() % 100_000;
        let ns = Self {
            a: format!("mpa{tag}"),
            b: format!("mpb{tag}"),
        };
        // `ns` exists before anything is created, so a failure part-way cleans up on drop.
        ip(&["netns", "add", &ns.a])?;
        ip(&["netns", "add", &ns.b])?;
        let (va, vb) = (format!("va{tag}"), format!("vb{tag}"));
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", &ns.a])?;
        ip(&["link", "set", &vb, "netns", &ns.b])?;
        for (n, v, addr) in [(&ns.a, &va, "10.77.0.1/24"), (&ns.b, &vb, "10.77.0.2/24")] {
            ip(&["-n", n, "addr", "add", addr, "dev", v])?;
            ip(&["-n", n, "link", "set", v, "up"])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

#[test]
fn nodes_in_two_namespaces_find_each_other_with_mdns_and_pay() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!(
                "SKIPPED: cannot create network namespaces here ({e}); mDNS discovery is not tested"
            );
            return;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::new(root.path());
    let mut shopper = TestNode::init(root.path(), "shopper");
    let mut vendor = TestNode::init(root.path(), "vendor");
    // mDNS on (the default), no --peer: they must discover each other.
    vendor.start_in(Some(&ns.b), &["--listen", "/ip4/10.77.0.2/tcp/0"]);
    shopper.start_in(Some(&ns.a), &["--listen", "/ip4/10.77.0.1/tcp/0"]);
    let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        shopper.wait_peer(&vendor.device);
        vendor.wait_peer(&shopper.device);
    }));
    if let Err(e) = seen {
        eprintln!(
            "shopper log:\n{}\nvendor log:\n{}",
            shopper.log(),
            vendor.log()
        );
        std::panic::resume_unwind(e);
    }
    let peers = shopper.json(&["peers", "--json"]);
    assert!(
        peers[0]["address"].as_str().unwrap().contains("10.77.0.2"),
        "{peers}"
    );
    issuer.trusted_by(&vendor);
    issuer.trusted_by(&shopper);
    issuer.fund(&shopper, 1_000);
    let paid = shopper.json(&["pay", "--to", &vendor.device, "--amount", "25", "--json"]);
    assert_eq!(paid["status"], "acked", "{paid}");
    assert_eq!(vendor.balance("KES")["received"], 25);
    shopper.stop();
    vendor.stop();
}
