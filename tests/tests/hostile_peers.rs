//! A running node against hostile peers: tampered, replayed, over-limit, expired, wrong-payee
//! and untrusted IOUs are refused with the matching reason; peers sending garbage, truncated
//! or oversized frames are dropped; the node keeps serving everyone else.

use meshpay_protocol::codec::VERSION;
use meshpay_protocol::message::{Ask, ErrorCode, Pay, Request, Response};
use meshpay_protocol::{
    AllowanceBody, AllowanceCert, AllowanceId, DeviceKey, DeviceSecret, Hash, Iou, IouDraft,
    IssuerSecret, PaymentRequest, PrintableKey as _, Reason,
};
use meshpay_tests::{DevIssuer, TestNode};
use meshpay_transports::p2p::{Misbehaviour, P2pConfig, P2pLink};
use meshpay_transports::{Link as _, LinkError};
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A peer speaking the link protocol directly, with its own device key.
struct Client {
    key: DeviceSecret,
    link: P2pLink,
    vendor: DeviceKey,
}

impl Client {
    fn connect(seed: u8, vendor: &TestNode, tweak: impl FnOnce(&mut P2pConfig)) -> Self {
        let key = DeviceSecret::from_seed(&[seed; 32]);
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        // Drain events; the client answers no requests.
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let mut config = P2pConfig {
            listen: Vec::new(),
            peers: vec![vendor.tcp_addr().parse().unwrap()],
            mdns: false,
            ..P2pConfig::default()
        };
        tweak(&mut config);
        let link = P2pLink::start(&key.seed(), &config, tx).unwrap();
        Self {
            key,
            link,
            vendor: DeviceKey::from_text(&vendor.device).unwrap(),
        }
    }

    async fn raw(&self, frame: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        self.link.request(&self.vendor, frame).await
    }

    async fn send(&self, req: &Request) -> Response {
        Response::decode(&self.raw(req.encode()).await.expect("the vendor answers"))
            .expect("a valid response")
    }

    async fn ask(&self, amount: u64) -> PaymentRequest {
        match self.send(&Request::Ask(Ask::new(amount, "KES", ""))).await {
            Response::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn cert(&self, issuer: &IssuerSecret, id: u8, limit: u64, valid_until: u64) -> AllowanceCert {
        AllowanceCert::issue(
            issuer,
            AllowanceBody {
                version: VERSION,
                id: AllowanceId([id; 16]),
                issuer: issuer.id(),
                holder: self.key.public(),
                currency: "KES".into(),
                limit,
                max_payment: limit,
                valid_from: now() - 3600,
                valid_until,
                settle_by: valid_until + 86_400,
            },
        )
    }

    fn iou(&self, cert: &AllowanceCert, req: &PaymentRequest, counter: u32, total: u64) -> Iou {
        let prev = if counter == 1 {
            Hash::default()
        } else {
            Hash([7; 32])
        };
        self.iou_after(cert, req, counter, total, prev)
    }

    fn iou_after(
        &self,
        cert: &AllowanceCert,
        req: &PaymentRequest,
        counter: u32,
        total: u64,
        prev: Hash,
    ) -> Iou {
        IouDraft {
            allowance: cert.id(),
            counter,
            amount: req.amount,
            total,
            prev,
            payee: req.payee,
            nonce: req.nonce,
            time: now(),
        }
        .sign(&self.key)
    }

    async fn pay(&self, iou: &Iou, cert: &AllowanceCert) -> Response {
        self.send(&Request::Pay(Box::new(Pay::new(
            iou.clone(),
            Some(cert.clone()),
        ))))
        .await
    }
}

fn refused(r: Response) -> Reason {
    match r {
        Response::Refused(reason) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ious_are_refused_with_the_matching_reason() {
    let root = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::new(root.path());
    let mut vendor = TestNode::init(root.path(), "vendor");
    vendor.start(&[]);
    issuer.trusted_by(&vendor);
    let secret = issuer.secret();
    let c = Client::connect(1, &vendor, |_| {});
    let cert = c.cert(&secret, 1, 1_000, now() + 86_400);

    // A valid payment is acked; sending it again gets the same ack (idempotent).
    let req = c.ask(100).await;
    let good = c.iou(&cert, &req, 1, 100);
    let Response::Ack(ack) = c.pay(&good, &cert).await else {
        panic!("not acked")
    };
    assert_eq!(ack.verify(&req.payee), Ok(()));
    assert_eq!(c.pay(&good, &cert).await, Response::Ack(ack));
    // Replayed: another IOU for an already paid request.
    let replay = c.iou(&cert, &req, 2, 200);
    assert_eq!(refused(c.pay(&replay, &cert).await), Reason::Replay);
    // Each refusal below closes the request it answered: the payer asks again for the next.
    // Tampered: the amount changed after signing.
    let req = c.ask(50).await;
    let mut tampered = c.iou(&cert, &req, 2, 150);
    tampered.amount = 49;
    tampered.total = 149;
    assert_eq!(refused(c.pay(&tampered, &cert).await), Reason::BadSignature);
    // The refused request is closed: even a valid IOU for it finds no open request.
    let late = c.iou_after(&cert, &req, 2, 150, good.spend_id());
    assert_eq!(refused(c.pay(&late, &cert).await), Reason::NonceMismatch);
    // Over the limit: a running total past the allowance's 1,000.
    let req = c.ask(50).await;
    let over = c.iou(&cert, &req, 3, 1_050);
    assert_eq!(refused(c.pay(&over, &cert).await), Reason::OverLimit);
    // Expired allowance.
    let req = c.ask(50).await;
    let old = c.cert(&secret, 2, 1_000, now() - 60);
    let expired = c.iou(&old, &req, 1, 50);
    assert_eq!(refused(c.pay(&expired, &old).await), Reason::Expired);
    // Wrong payee: an IOU for this request's nonce that pays someone else.
    let req = c.ask(50).await;
    let mut elsewhere = req.clone();
    elsewhere.payee = DeviceSecret::from_seed(&[9; 32]).public();
    let wrong = c.iou(&cert, &elsewhere, 3, 150);
    assert_eq!(refused(c.pay(&wrong, &cert).await), Reason::WrongPayee);
    // Unknown nonce (the request asked for stays open).
    let req = c.ask(50).await;
    let mut unknown = req.clone();
    unknown.nonce.0[0] ^= 1;
    assert_eq!(
        refused(c.pay(&c.iou(&cert, &unknown, 3, 150), &cert).await),
        Reason::NonceMismatch
    );
    // An issuer the vendor does not trust.
    let stranger = IssuerSecret::from_bytes(&[0x5a; 64]);
    let foreign = c.cert(&stranger, 3, 1_000, now() + 86_400);
    assert_eq!(
        refused(c.pay(&c.iou(&foreign, &req, 1, 50), &foreign).await),
        Reason::UnknownIssuer
    );
    // Its predecessor must be the known IOU 1: a made-up `prev` is a chain break.
    let req = c.ask(50).await;
    let broken = c.iou(&cert, &req, 2, 150);
    assert_eq!(refused(c.pay(&broken, &cert).await), Reason::ChainBreak);
    // After all that, a valid payment for a fresh request still goes through.
    let req = c.ask(50).await;
    let fine = c.iou_after(&cert, &req, 2, 150, good.spend_id());
    assert!(matches!(c.pay(&fine, &cert).await, Response::Ack(_)));
    assert_eq!(vendor.balance("KES")["received"], 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_sending_bad_frames_are_dropped_and_others_are_served() {
    let root = tempfile::tempdir().unwrap();
    let issuer = DevIssuer::new(root.path());
    let mut vendor = TestNode::init(root.path(), "vendor");
    vendor.start(&[]);
    issuer.trusted_by(&vendor);

    // Garbage inside a valid frame: an error answer, then the peer is dropped.
    let garbage = Client::connect(2, &vendor, |_| {});
    let answer = garbage
        .raw(vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff])
        .await
        .unwrap();
    assert_eq!(
        Response::decode(&answer),
        Ok(Response::Error(ErrorCode::BadMessage))
    );
    let dropped = garbage.key.public().to_text();
    meshpay_tests::wait_for("the garbage peer to be dropped", || {
        let peers = vendor.json(&["peers", "--json"]);
        (!peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["device_key"] == dropped.as_str()))
        .then_some(())
    });
    // Truncated frame: the length promises more than arrives.
    let truncating = Client::connect(3, &vendor, |c| c.misbehave = Some(Misbehaviour::Truncate));
    assert!(
        truncating
            .raw(Request::Ask(Ask::new(5, "KES", "")).encode())
            .await
            .is_err()
    );
    // No length prefix at all.
    let unframed = Client::connect(4, &vendor, |c| c.misbehave = Some(Misbehaviour::NoPrefix));
    assert!(
        unframed
            .raw(Request::Ask(Ask::new(5, "KES", "")).encode())
            .await
            .is_err()
    );
    // Oversized frame: 100 KiB against the vendor's 2 KiB limit.
    let oversized = Client::connect(5, &vendor, |c| c.max_frame = 1 << 20);
    assert!(oversized.raw(vec![0u8; 100 * 1024]).await.is_err());
    // Raw garbage on the TCP port, not even a libp2p handshake.
    let port: u16 = vendor
        .listen
        .iter()
        .find(|a| a.contains("/tcp/"))
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(&[0x13; 4096]);
    let mut buf = [0u8; 64];
    // The node closes the connection (end of stream or a reset): it neither hangs on it nor
    // answers as if it were a peer. (Reading may first return the start of the libp2p
    // protocol negotiation, so read until the end.)
    let closed = loop {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) => {
                break !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    };
    assert!(closed, "the node left a garbage connection open");

    // The node still serves a well-behaved peer and a real shopper daemon.
    let good = Client::connect(6, &vendor, |_| {});
    let req = good.ask(10).await;
    assert_eq!(req.amount, 10);
    let mut shopper = TestNode::init(root.path(), "shopper");
    shopper.start(&["--peer", &vendor.tcp_addr()]);
    issuer.trusted_by(&shopper);
    issuer.fund(&shopper, 100);
    let paid = shopper.json(&["pay", "--to", &vendor.device, "--amount", "10", "--json"]);
    assert_eq!(paid["status"], "acked");
    assert!(vendor.running());
    // The vendor logged every bad peer it dropped.
    let log = std::fs::read_to_string(vendor.home.with_extension("log")).unwrap();
    assert!(
        log.contains("unreadable request"),
        "garbage frame not reported"
    );
    assert!(log.matches("broke the framing rules").count() >= 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_asks_is_capped_and_others_still_served() {
    let root = tempfile::tempdir().unwrap();
    let mut vendor = TestNode::init(root.path(), "vendor");
    vendor.start(&[]);
    let flooder = Client::connect(7, &vendor, |_| {});
    // Every ask makes a request of its own, and one peer may keep 16 open, whatever it asks.
    let mut answers = Vec::new();
    for _ in 0..20 {
        answers.push(flooder.send(&Request::Ask(Ask::new(1, "KES", ""))).await);
    }
    let granted: Vec<PaymentRequest> = answers
        .iter()
        .filter_map(|a| match a {
            Response::Request(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(granted.len(), 16, "{answers:?}");
    let nonces: std::collections::BTreeSet<_> = granted.iter().map(|r| r.nonce).collect();
    assert_eq!(nonces.len(), 16, "each ask gets a fresh nonce");
    assert!(
        answers[16..]
            .iter()
            .all(|a| *a == Response::Error(ErrorCode::TooManyRequests))
    );
    // A request whose IOU is refused is closed and frees its place.
    let stranger = IssuerSecret::from_bytes(&[0x5a; 64]);
    let foreign = flooder.cert(&stranger, 3, 1_000, now() + 86_400);
    let iou = flooder.iou(&foreign, &granted[0], 1, 1);
    assert_eq!(
        refused(flooder.pay(&iou, &foreign).await),
        Reason::UnknownIssuer
    );
    assert_eq!(flooder.ask(1).await.amount, 1);
    assert_eq!(
        flooder.send(&Request::Ask(Ask::new(1, "KES", ""))).await,
        Response::Error(ErrorCode::TooManyRequests)
    );
    let other = Client::connect(8, &vendor, |_| {});
    assert_eq!(other.ask(5).await.amount, 5);
}
