//! A node used from outside as people and attackers would use it: issuer URLs that answer
//! without end, strangers holding connections open, retried commands, exhausted allowances,
//! gateway rounds run twice, hostile files, busy ports, and what a failing command says.

use meshpay_tests::issuer_api::Admin;
use meshpay_tests::{DevIssuer, SettleServer, TestNode, proc_mb, wait_for};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The one line a failed command printed.
fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "the command succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

/// A development issuer, and a vendor (with `vendor_env`) and a shopper that trust it and
/// are connected, the shopper holding an allowance of `fund`.
fn vendor_and_shopper(
    root: &std::path::Path,
    vendor_env: &[(&str, &str)],
    fund: u64,
) -> (DevIssuer, TestNode, TestNode) {
    let issuer = DevIssuer::new(root);
    let mut vendor = TestNode::init(root, "vendor");
    let mut shopper = TestNode::init(root, "shopper");
    vendor.env = vendor_env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    vendor.start(&[]);
    shopper.start(&["--peer", &vendor.tcp_addr()]);
    issuer.trusted_by(&vendor);
    issuer.trusted_by(&shopper);
    issuer.fund(&shopper, fund);
    (issuer, vendor, shopper)
}

/// Pays `amount` from `shopper` to `vendor`, which must be acknowledged.
fn paid(shopper: &TestNode, vendor: &TestNode, amount: &str) -> Value {
    let v = shopper.json(&["pay", "--to", &vendor.device, "--amount", amount, "--json"]);
    assert_eq!(v["status"], "acked", "{v}");
    v
}

/// An "issuer" that answers every request with a 200 and a body that never ends, for at
/// most `secs` seconds per connection. Returns its URL.
async fn endless_issuer(secs: u64) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\n\r\n")
                    .await;
                let chunk = vec![0x5a_u8; 64 * 1024];
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(secs) {
                    if s.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    url
}

/// An issuer URL that streams an endless body is dropped at its route's limit: the command
/// fails with one line, fast, and the node's memory stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_answering_without_end_cannot_exhaust_the_node() {
    let root = tempfile::tempdir().unwrap();
    let url = endless_issuer(20).await;
    let mut node = TestNode::init(root.path(), "shopper");
    node.start(&[]);
    for args in [
        vec!["sync-issuer", "--issuer", url.as_str()],
        vec!["topup", "100", "--issuer", url.as_str()],
    ] {
        let start = Instant::now();
        let err = one_line_error(&node.cli(&args));
        assert!(err.contains("answered more than"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10), "{args:?}");
    }
    let peak = proc_mb(node.pid().unwrap(), "VmHWM:");
    eprintln!("peak resident memory against an endless issuer: {peak:.0} MB");
    assert!(peak < 150.0, "the node grew to {peak:.0} MB");
    // An issuer that is not there: the cause, in one line.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = one_line_error(&node.cli(&["topup", "100", "--issuer", &format!("http://{closed}")]));
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
}

/// Strangers keep about forty idle TCP connections open to a stall's libp2p port, re-opening
/// them as the node closes them: a new shopper still connects and pays within 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_holding_connections_do_not_shut_new_shoppers_out() {
    let root = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::new(root.path());
    let mut vendor = TestNode::init(root.path(), "vendor");
    vendor.start(&[]);
    issuer.trusted_by(&vendor);
    let tcp: std::net::SocketAddr = {
        let a = vendor
            .listen
            .iter()
            .find(|a| a.contains("/tcp/"))
            .unwrap()
            .clone();
        let port = a.rsplit('/').next().unwrap();
        format!("127.0.0.1:{port}").parse().unwrap()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut held: Vec<tokio::net::TcpStream> = Vec::new();
            let mut connects = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && connects < 200_000 {
                // Drop the connections the node closed and open new ones at once, back up to
                // forty.
                held.retain(|s| {
                    let mut b = [0u8; 1];
                    matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                });
                while held.len() < 40 {
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                    match tokio::time::timeout(Duration::from_secs(1), socket.connect(tcp)).await {
                        Ok(Ok(s)) => {
                            held.push(s);
                            connects += 1;
                        }
                        _ => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            connects
        })
    };
    // Let the flood fill the node's queue of handshakes, and turn it over once.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let start = Instant::now();
    let mut shopper = TestNode::init(root.path(), "shopper");
    shopper.start(&["--peer", &vendor.tcp_addr()]);
    issuer.trusted_by(&shopper);
    issuer.fund(&shopper, 1_000);
    let paid = wait_for("the new shopper to pay", || {
        let out = shopper.cli(&["pay", "--to", &vendor.device, "--amount", "10", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"] == "acked").then_some(v)
    });
    let took = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let connects = flood.await.unwrap();
    eprintln!(
        "a fresh shopper connected and paid {:.1} s into a flood of {connects} stranger connections",
        took.as_secs_f64()
    );
    assert_eq!(paid["counter"], 1);
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

/// A payment the vendor refused (it did not trust the shopper's issuer yet) is paid by the
/// same `pay --to` once the vendor trusts it: the retry asks for a fresh request and pays it
/// with the next counter, and the refused request leaves nothing open at the vendor.
#[test]
fn a_refused_payment_can_be_retried_once_the_cause_is_fixed() {
    let root = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::new(root.path());
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = TestNode::init(root.path(), "shopper");
    vendor.start(&[]);
    shopper.start(&["--peer", &vendor.tcp_addr()]);
    issuer.trusted_by(&shopper);
    issuer.fund(&shopper, 100);
    let out = shopper.cli(&["pay", "--to", &vendor.device, "--amount", "10", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["status"], "refused", "{first}");
    assert_eq!(first["reason"], "unknown_issuer", "{first}");
    issuer.trusted_by(&vendor);
    let second = paid(&shopper, &vendor, "10");
    assert_eq!(second["counter"], 2, "{second}");
    assert_ne!(second["iou"], first["iou"]);
    assert_eq!(vendor.balance("KES")["received"], 10);
}

/// Retrying `pay --to` after a `pending` answer, once the automatic re-send got it through,
/// shows that payment instead of paying twice; `--again` pays again; `--id` is an idempotency
/// key for scripts.
#[test]
fn retrying_a_payment_does_not_pay_twice() {
    let root = tempfile::tempdir().unwrap();
    let (_issuer, mut vendor, shopper) = vendor_and_shopper(
        root.path(),
        &[("MESHPAY_FAULT", "payee-crash-after-commit")],
        1_000,
    );
    let first = shopper.json(&["pay", "--to", &vendor.device, "--amount", "32", "--json"]);
    assert_eq!(first["status"], "pending", "{first}");
    assert!(vendor.wait_crash());
    vendor.env.clear();
    vendor.start(&["--peer", &shopper.tcp_addr()]);
    wait_for("the automatic re-send to be acked", || {
        let h = shopper.history();
        (h[0]["status"] == "acked").then_some(())
    });
    // The user retries the same command: the payment it made is shown, nothing is paid.
    let retry = shopper.json(&["pay", "--to", &vendor.device, "--amount", "32", "--json"]);
    assert_eq!(retry["status"], "acked", "{retry}");
    assert_eq!(retry["iou"], first["iou"]);
    assert!(
        retry["repeated"].as_str().unwrap().contains("--again"),
        "{retry}"
    );
    let out = shopper.cli(&["pay", "--to", &vendor.device, "--amount", "32"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not paid again"));
    assert_eq!(vendor.balance("KES")["received"], 32);
    // On purpose: --again.
    let again = shopper.json(&[
        "pay",
        "--to",
        &vendor.device,
        "--amount",
        "32",
        "--again",
        "--json",
    ]);
    assert_eq!(again["status"], "acked");
    assert_eq!(again["counter"], 2);
    // Scripts: an idempotency key pays once however often it comes.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let v = shopper.json(&[
            "pay",
            "--to",
            &vendor.device,
            "--amount",
            "7",
            "--id",
            "order-1",
            "--json",
        ]);
        assert_eq!(v["status"], "acked");
        ids.push(v["iou"].clone());
    }
    assert!(ids.iter().all(|i| *i == ids[0]));
    let err = one_line_error(&shopper.cli(&[
        "pay",
        "--to",
        &vendor.device,
        "--amount",
        "8",
        "--id",
        "order-1",
    ]));
    assert!(err.contains("order-1"), "{err}");
    assert_eq!(vendor.balance("KES")["received"], 32 + 32 + 7);
}

/// Payments refused by the payer's own wallet ask the payee nothing: after many of them, a
/// payment that fits goes through at once.
#[test]
fn refused_attempts_do_not_lock_a_payer_out() {
    let root = tempfile::tempdir().unwrap();
    let (_issuer, vendor, shopper) = vendor_and_shopper(root.path(), &[], 100);
    paid(&shopper, &vendor, "5");
    for _ in 0..20 {
        let err = one_line_error(&shopper.cli(&["pay", "--to", &vendor.device, "--amount", "500"]));
        assert!(err.contains("500 is more than the 95 left"), "{err}");
    }
    paid(&shopper, &vendor, "5");
    assert!(
        !vendor.log().contains("too many open requests"),
        "refused attempts reached the vendor"
    );
}

/// A gateway round uploads only records with no decision yet, and counts each decision once;
/// a second round right after changes and reports nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_rounds_upload_what_is_undecided_and_count_changes_once() {
    let root = tempfile::tempdir().unwrap();
    let server = SettleServer::new(root.path(), "issuer");
    let http = reqwest::Client::new();
    let admin = Admin::of(&server, &http);
    let mut vendor = TestNode::init(root.path(), "vendor");
    let mut shopper = TestNode::init(root.path(), "shopper");
    vendor.start(&[]);
    shopper.start(&["--peer", &vendor.tcp_addr()]);
    for n in [&vendor, &shopper] {
        n.json(&["trust", server.descriptor().to_str().unwrap(), "--json"]);
    }
    admin.account(&shopper.device, 10_000).await;
    admin.account(&vendor.device, 0).await;
    shopper.json(&["topup", "5000", "--issuer", &server.url, "--json"]);
    for amount in ["100", "200"] {
        let p = shopper.json(&["pay", "--to", &vendor.device, "--amount", amount, "--json"]);
        assert_eq!(p["status"], "acked");
    }
    let first = vendor.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    assert_eq!(first["uploaded"], 2, "{first}");
    assert_eq!(first["updated"], 2, "{first}");
    let second = vendor.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    assert_eq!(second["uploaded"], 0, "{second}");
    assert_eq!(second["updated"], 0, "{second}");
    let s1 = shopper.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    assert_eq!(s1["updated"], 2, "{s1}");
    let s2 = shopper.json(&["sync-issuer", "--issuer", &server.url, "--json"]);
    assert_eq!(s2["updated"], 0, "{s2}");
    let r = admin.conserved(10_000).await;
    assert_eq!(r["records"]["settled"], 2);
}

/// A bundle file is read with a bound whatever the file system says of its size: `/dev/zero`
/// and a FIFO streaming 200 MiB are refused with one line, and memory stays small.
#[test]
fn imports_are_read_with_a_bound() {
    let root = tempfile::tempdir().unwrap();
    let mut node = TestNode::init(root.path(), "carrier");
    node.start(&[]);
    let err = one_line_error(&node.cli(&["import", "/dev/zero"]));
    assert!(err.contains("over the limit"), "{err}");
    let fifo = root.path().join("bundles.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write as _;
            let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) else {
                return 0;
            };
            let chunk = vec![0u8; 1 << 20];
            let mut sent = 0;
            while sent < 200 && f.write_all(&chunk).is_ok() {
                sent += 1;
            }
            sent
        })
    };
    let err = one_line_error(&node.cli(&["import", fifo.to_str().unwrap()]));
    assert!(err.contains("over the limit"), "{err}");
    let sent = writer.join().unwrap();
    assert!(sent < 200, "the whole FIFO was read ({sent} MiB)");
    let peak = proc_mb(node.pid().unwrap(), "VmHWM:");
    eprintln!("peak resident memory after /dev/zero and a 200 MiB FIFO: {peak:.0} MB");
    assert!(peak < 200.0, "the node grew to {peak:.0} MB");
}

/// What the command line says when something is wrong: a port in use names the cause, a
/// dial to a closed port fails, and the queries answer in JSON.
#[test]
fn commands_say_what_went_wrong() {
    let root = tempfile::tempdir().unwrap();
    let mut a = TestNode::init(root.path(), "a");
    a.start(&[]);
    assert!(
        a.ready["peer_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("12D3")),
        "{}",
        a.ready
    );
    let tcp = a
        .listen
        .iter()
        .find(|x| x.contains("/tcp/"))
        .unwrap()
        .clone();
    let b = TestNode::init(root.path(), "b");
    let mut second = b
        .command()
        .args(["run", "--no-mdns", "--listen", &tcp])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let exited = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = second.kill();
            panic!("a node started on a port in use and kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!exited.success());
    assert!(err.to_lowercase().contains("in use"), "{err}");
    // A dial to a port nobody listens on fails, with a reason.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = a.cli(&["dial", &format!("/ip4/127.0.0.1/tcp/{closed}")]);
    let err = one_line_error(&out);
    assert!(err.contains("127.0.0.1"), "{err}");
    // A dial that connects says to whom, in JSON too.
    let mut c = TestNode::init(root.path(), "c");
    c.start(&[]);
    let v = a.json(&["dial", &c.tcp_addr(), "--json"]);
    assert_eq!(v["device_key"], c.device.as_str());
    let v = a.json(&["check-key", &c.device, "--json"]);
    assert_eq!(v["valid"], true);
}

/// The restore sentinel shows the device key, the payment count and the allowances spent
/// from: its directory and files are the owner's alone.
#[test]
fn the_restore_sentinel_is_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let (_issuer, vendor, shopper) = vendor_and_shopper(root.path(), &[], 100);
    paid(&shopper, &vendor, "5");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&shopper.state), 0o700);
    let files: Vec<_> = std::fs::read_dir(&shopper.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

/// Unmounts a file system when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The mesh store runs out of disk: the failure is not dropped. The step that needed the
/// write fails with the reason, the failure is counted in `meshpay mesh`, and the node keeps
/// serving. (Needs root to mount a small tmpfs; SKIPPED otherwise.)
#[test]
fn mesh_store_write_failures_are_surfaced() {
    let root = tempfile::tempdir().unwrap();
    let small = root.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    }
    let _unmount = Unmount(small.clone());
    let mut relay = TestNode::relay(&small, "relay");
    relay.start(&[]);
    let file = root.path().join("receipts.mpb");
    let bundles: Vec<_> = (0..40_000u64)
        .map(meshpay_protocol::testkit::receipt_bundle)
        .collect();
    std::fs::write(
        &file,
        meshpay_protocol::bundle::pack_file(
            bundles.iter().map(meshpay_protocol::bundle::Bundle::bytes),
        ),
    )
    .unwrap();
    let mut failed = None;
    for _ in 0..3 {
        let out = relay.cli(&["import", file.to_str().unwrap()]);
        if !out.status.success() {
            failed = Some(String::from_utf8_lossy(&out.stderr).to_string());
            break;
        }
    }
    let err = failed.expect("an import onto a full disk failed");
    assert!(err.contains("could not write to disk"), "{err}");
    let mesh = relay.json(&["mesh", "--json"]);
    assert!(mesh["write_errors"].as_u64().unwrap() > 0, "{mesh}");
}
