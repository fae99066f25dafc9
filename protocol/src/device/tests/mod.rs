//! The device driven in process with a virtual clock: every input, output and write is the
//! test's, so re-sends, expiry, lost links and failed writes are played out exactly.

use super::*;
use crate::bundle::{Bundle, Content};
use crate::objects::ReceiptStatus;
use crate::objects::{Amount, SettlementReceipt};
use crate::store::StoreConfig;
use crate::testkit::{self, DAY, T0};
use crate::wallet::HeldAllowance;
use crate::wallet::PayError;
use std::collections::BTreeMap;

/// What a link does with the next frame it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// Carried both ways.
    None,
    /// The next ack is lost: the IOU arrives and is stored, the link breaks before the
    /// answer is back.
    Ack,
}

struct Node {
    device: Device,
    /// Every change written, in order.
    written: Vec<Change>,
    events: Vec<Event>,
    /// Fail the next writes of this kind (by `Change` variant name).
    fail: Vec<&'static str>,
    /// Incoming requests by reply id: who asked and their request id.
    asked: BTreeMap<ReplyId, (usize, RequestId)>,
    disconnects: Vec<DeviceKey>,
}

impl Node {
    /// A node around `device`, started at `now`, with nothing written yet.
    fn started(mut device: Device, now: Now) -> Self {
        device.start(now);
        Self {
            device,
            written: vec![],
            events: vec![],
            fail: vec![],
            asked: BTreeMap::new(),
            disconnects: vec![],
        }
    }
}

struct Net {
    nodes: Vec<Node>,
    now: Now,
    links: BTreeMap<(usize, usize), Loss>,
    next_reply: u64,
    next_op: u64,
    /// Frames in flight: (to, from, what).
    queue: VecDeque<(usize, usize, Frame)>,
}

enum Frame {
    Request(RequestId, Vec<u8>),
    Response(RequestId, Result<Vec<u8>, String>),
}

fn kind(c: &Change) -> &'static str {
    match c {
        Change::Spent { .. } => "spent",
        Change::Answered { .. } => "answered",
        Change::Requested { .. } => "requested",
        Change::RequestClosed { .. } => "request_closed",
        Change::RequestsPurged { .. } => "purged",
        Change::Received { .. } => "received",
        Change::Fraud { .. } => "fraud",
        Change::Settled { .. } => "settled",
        Change::Trusted { .. } => "trusted",
        Change::Allowance { .. } => "allowance",
        Change::Mesh(_) => "mesh",
        Change::HandOver(_) => "handover",
    }
}

fn init(n: u8, certs: Vec<crate::objects::AllowanceCert>) -> DeviceInit {
    let issuer = testkit::issuer();
    DeviceInit {
        secret: testkit::device(n),
        wallet: Wallet::open(0, certs.into_iter().map(HeldAllowance::new), None).0,
        spent: BTreeSet::new(),
        issuers: vec![testkit::descriptor(&issuer)],
        certs: vec![],
        notices: vec![],
        frauds: vec![],
        sent: vec![],
        received: vec![],
        requests: vec![],
        store: BundleStore::new(StoreConfig::default()),
        seed: [n; 32],
        secrets: Box::new(rand_chacha::ChaCha20Rng::from_seed([n ^ 0x55; 32])),
    }
}

impl Net {
    /// Devices 1..=n; each holds allowance `i` of 10,000 KES, except relays.
    fn new(n: u8, config: &DeviceConfig) -> Self {
        let issuer = testkit::issuer();
        let now = Now {
            mono: 1_000,
            unix: T0,
        };
        let nodes = (1..=n)
            .map(|i| {
                let cert = testkit::allowance(&issuer, i, &testkit::device(i), 10_000);
                Node::started(Device::new(init(i, vec![cert]), config.clone()), now)
            })
            .collect();
        let mut net = Self {
            nodes,
            now,
            links: BTreeMap::new(),
            next_reply: 0,
            next_op: 0,
            queue: VecDeque::new(),
        };
        net.pump();
        net
    }

    fn key(&self, i: usize) -> DeviceKey {
        self.nodes[i].device.key()
    }

    fn index(&self, k: &DeviceKey) -> usize {
        self.nodes
            .iter()
            .position(|n| n.device.key() == *k)
            .expect("a device of the net")
    }

    fn connect(&mut self, a: usize, b: usize) {
        self.links.insert((a.min(b), a.max(b)), Loss::None);
        let (ka, kb) = (self.key(a), self.key(b));
        let now = self.now;
        self.nodes[a].device.peer_up(now, kb);
        self.nodes[b].device.peer_up(now, ka);
        self.pump();
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        self.links.remove(&(a.min(b), a.max(b)));
        let (ka, kb) = (self.key(a), self.key(b));
        let now = self.now;
        self.nodes[a].device.peer_down(now, kb);
        self.nodes[b].device.peer_down(now, ka);
        self.pump();
    }

    fn link(&self, a: usize, b: usize) -> Option<Loss> {
        self.links.get(&(a.min(b), a.max(b))).copied()
    }

    /// Moves the clock on by `ms` and fires the timers due.
    fn advance(&mut self, ms: u64) {
        self.now.mono += ms;
        self.now.unix += ms / 1000;
        let now = self.now;
        for n in &mut self.nodes {
            if n.device.poll_timeout().is_some_and(|t| t <= now.mono) {
                n.device.handle_timeout(now);
            }
        }
        self.pump();
    }

    /// Runs a command on device `i` and returns its answer.
    fn command(&mut self, i: usize, cmd: Command) -> Result<Answer, DeviceError> {
        self.next_op += 1;
        let op = OpId(self.next_op);
        let now = self.now;
        self.nodes[i].device.command(now, op, cmd);
        self.pump();
        self.nodes[i]
            .events
            .iter()
            .find_map(|e| match e {
                Event::Done { op: o, result } if *o == op => Some(result.clone()),
                _ => None,
            })
            .expect("every command ends with Done")
    }

    fn pay_peer(&mut self, from: usize, to: usize, amount: Amount) -> Result<Answer, DeviceError> {
        let payee = self.key(to);
        self.command(
            from,
            Command::PayPeer {
                payee,
                amount,
                currency: "KES".into(),
                memo: "tea".into(),
                again: false,
                key: None,
            },
        )
    }

    /// Drains every output of every device and carries frames until all is quiet.
    fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].device.poll_output() {
                    busy = true;
                    self.carry_out(i, out);
                }
            }
            if let Some((to, from, frame)) = self.queue.pop_front() {
                busy = true;
                self.deliver(to, from, frame);
            }
            if !busy {
                return;
            }
        }
        panic!("the net never went quiet");
    }

    fn carry_out(&mut self, i: usize, out: Output) {
        let now = self.now;
        match out {
            Output::Commit { id, change } => {
                let k = kind(&change);
                let n = &mut self.nodes[i];
                let result = if let Some(p) = n.fail.iter().position(|f| *f == k) {
                    n.fail.remove(p);
                    Err(CommitError {
                        committed: false,
                        message: format!("disk full writing {k}"),
                    })
                } else {
                    n.written.push(change);
                    Ok(())
                };
                n.device.committed(now, id, result);
            }
            Output::Request { id, to, frame } => {
                let j = self.index(&to);
                if self.link(i, j).is_some() {
                    self.queue.push_back((j, i, Frame::Request(id, frame)));
                } else {
                    let answer = Err("the peer is not connected".to_owned());
                    self.nodes[i].device.handle_response(now, id, answer);
                }
            }
            Output::Reply {
                to,
                frame,
                then_drop,
            } => {
                let (asker, rid) = self.nodes[i].asked.remove(&to).expect("a known request");
                let is_ack = matches!(
                    crate::message::Response::decode(&frame),
                    Ok(crate::message::Response::Ack(_))
                );
                let answer = match self.link(i, asker) {
                    Some(Loss::Ack) if !is_ack => Ok(frame),
                    Some(Loss::None) => Ok(frame),
                    Some(Loss::Ack) => {
                        self.links.insert((i.min(asker), i.max(asker)), Loss::None);
                        Err("the link broke".to_owned())
                    }
                    None => Err("the peer is not connected".to_owned()),
                };
                self.queue
                    .push_back((asker, i, Frame::Response(rid, answer)));
                if then_drop {
                    let k = self.key(asker);
                    self.nodes[i].disconnects.push(k);
                }
            }
            Output::Disconnect(k) => self.nodes[i].disconnects.push(k),
            Output::Event(e) => self.nodes[i].events.push(e),
        }
    }

    fn deliver(&mut self, to: usize, from: usize, frame: Frame) {
        let now = self.now;
        match frame {
            Frame::Request(rid, bytes) => {
                self.next_reply += 1;
                let reply = ReplyId(self.next_reply);
                self.nodes[to].asked.insert(reply, (from, rid));
                let k = self.key(from);
                self.nodes[to].device.handle_request(now, reply, k, &bytes);
            }
            Frame::Response(rid, answer) => self.nodes[to].device.handle_response(now, rid, answer),
        }
    }

    fn written(&self, i: usize, k: &str) -> usize {
        self.nodes[i]
            .written
            .iter()
            .filter(|c| kind(c) == k)
            .count()
    }
}

fn paid(a: Result<Answer, DeviceError>) -> PayOutcome {
    match a {
        Ok(Answer::Paid(o)) => o,
        other => panic!("not a payment: {other:?}"),
    }
}

fn quiet() -> DeviceConfig {
    DeviceConfig {
        sync_every: None,
        ..DeviceConfig::default()
    }
}

#[test]
fn a_payment_is_written_before_it_leaves_and_acked_after_it_is_stored() {
    let mut net = Net::new(2, &quiet());
    net.connect(0, 1);
    let o = paid(net.pay_peer(0, 1, 1250));
    assert_eq!(o.status, SentStatus::Acked);
    assert_eq!(o.counter, 1);
    // Payer: the spend, then the answer; payee: the request, then the payment.
    let payer: Vec<_> = net.nodes[0]
        .written
        .iter()
        .map(kind)
        .filter(|k| *k != "mesh")
        .collect();
    assert_eq!(payer, ["spent", "answered"]);
    let payee: Vec<_> = net.nodes[1]
        .written
        .iter()
        .map(kind)
        .filter(|k| *k != "mesh")
        .collect();
    assert_eq!(payee, ["requested", "received"]);
    assert!(
        net.nodes[1]
            .events
            .iter()
            .any(|e| matches!(e, Event::Received { iou, .. } if iou.amount == 1250))
    );
    // The payee's store holds the record and both hold the spend notice.
    assert_eq!(net.nodes[1].device.store().len(), 2);
    assert_eq!(net.nodes[0].device.store().len(), 1);
    assert_eq!(
        net.nodes[0]
            .device
            .wallet()
            .allowances()
            .values()
            .next()
            .unwrap()
            .head
            .counter,
        1
    );
}

#[test]
fn a_payee_lost_mid_payment_is_paid_by_the_resend_with_the_same_counter() {
    let mut net = Net::new(2, &quiet());
    net.connect(0, 1);
    // The IOU arrives and is stored, the ack is lost.
    net.links.insert((0, 1), Loss::Ack);
    let o = paid(net.pay_peer(0, 1, 700));
    // The ask got through; the IOU's answer was lost.
    assert_eq!(o.status, SentStatus::Pending, "{o:?}");
    assert_eq!(net.written(1, "received"), 1);
    net.disconnect(0, 1);
    net.advance(60_000);
    // Not connected: the re-send timer sends nothing to it.
    assert_eq!(
        net.nodes[0].device.sent()[&o.iou].status,
        SentStatus::Pending
    );
    // Back in range: the pending IOU goes again and the payee answers with its stored ack.
    net.connect(0, 1);
    let s = &net.nodes[0].device.sent()[&o.iou];
    assert_eq!(s.status, SentStatus::Acked);
    assert!(s.answered_by_resend);
    assert!(
        net.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::Resent(r) if r.iou == o.iou))
    );
    // Accepted once, counter used once.
    assert_eq!(net.written(1, "received"), 1);
    assert_eq!(net.written(0, "spent"), 1);
    // Asking again for the same payment is answered, not paid twice.
    let again = paid(net.pay_peer(0, 1, 700));
    assert_eq!(again.iou, o.iou);
    assert!(again.repeated.is_some());
    assert_eq!(net.written(0, "spent"), 1);
}

#[test]
fn the_resend_timer_sends_pending_payments_to_connected_payees() {
    let mut net = Net::new(2, &quiet());
    net.connect(0, 1);
    net.links.insert((0, 1), Loss::Ack);
    let o = paid(net.pay_peer(0, 1, 300));
    assert_eq!(o.status, SentStatus::Pending);
    // A spurious, early timer does nothing.
    let now = net.now;
    net.nodes[0].device.handle_timeout(now);
    net.pump();
    assert_eq!(
        net.nodes[0].device.sent()[&o.iou].status,
        SentStatus::Pending
    );
    net.advance(30_000);
    assert_eq!(net.nodes[0].device.sent()[&o.iou].status, SentStatus::Acked);
}

#[test]
fn a_failed_spend_write_spends_nothing_and_the_next_payment_takes_the_counter() {
    let mut net = Net::new(2, &quiet());
    net.connect(0, 1);
    net.nodes[0].fail.push("spent");
    let e = net.pay_peer(0, 1, 100).unwrap_err();
    assert!(matches!(e, DeviceError::Storage(_)), "{e:?}");
    assert_eq!(
        net.nodes[0]
            .device
            .wallet()
            .allowances()
            .values()
            .next()
            .unwrap()
            .head
            .counter,
        0
    );
    let o = paid(net.pay_peer(0, 1, 100));
    assert_eq!((o.status, o.counter), (SentStatus::Acked, 1));
}

#[test]
fn a_payee_that_cannot_store_answers_unavailable_and_the_retry_is_paid() {
    let mut net = Net::new(2, &quiet());
    net.connect(0, 1);
    net.nodes[1].fail.push("received");
    let o = paid(net.pay_peer(0, 1, 900));
    assert_eq!(o.status, SentStatus::Pending);
    assert!(
        o.reason.as_deref().unwrap_or("").contains("right now"),
        "{o:?}"
    );
    // No ack went out, nothing is held as received.
    assert!(net.nodes[1].device.received().is_empty());
    net.advance(30_000);
    assert_eq!(net.nodes[0].device.sent()[&o.iou].status, SentStatus::Acked);
    assert_eq!(net.nodes[1].device.received().len(), 1);
}

#[test]
fn an_expired_request_is_refused_before_anything_is_spent() {
    let mut net = Net::new(2, &quiet());
    let r = match net.command(
        1,
        Command::Request {
            amount: 400,
            currency: "KES".into(),
            memo: "bread".into(),
        },
    ) {
        Ok(Answer::Requested(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.expires, T0 + 900);
    net.advance(901_000);
    net.connect(0, 1);
    let e = net
        .command(
            0,
            Command::Pay {
                request: r,
                key: None,
            },
        )
        .unwrap_err();
    assert!(
        matches!(e, DeviceError::Pay(PayError::RequestExpired { .. })),
        "{e:?}"
    );
    assert_eq!(net.written(0, "spent"), 0);
    let next = paid(net.pay_peer(0, 1, 400));
    assert_eq!((next.status, next.counter), (SentStatus::Acked, 1));
}

#[test]
fn requests_expired_a_day_ago_are_forgotten_by_the_purge_timer() {
    let mut net = Net::new(1, &quiet());
    let _ = net.command(
        0,
        Command::Request {
            amount: 1,
            currency: "KES".into(),
            memo: String::new(),
        },
    );
    assert_eq!(net.nodes[0].device.requests().len(), 1);
    net.advance(DAY * 1000 + 3_600_000);
    assert!(net.nodes[0].device.requests().is_empty());
    assert_eq!(net.written(0, "purged"), 1);
}

#[test]
fn asks_are_capped_per_peer() {
    let config = DeviceConfig {
        max_open_asks_per_peer: 2,
        ..quiet()
    };
    let mut net = Net::new(2, &config);
    net.connect(0, 1);
    // A payer asks three times and never pays (the IOU's answer is made to fail locally).
    for _ in 0..2 {
        let now = net.now;
        let frame = crate::message::Request::Ask(crate::message::Ask::new(5, "KES", "")).encode();
        net.next_reply += 1;
        let reply = ReplyId(net.next_reply);
        net.nodes[1].asked.insert(reply, (0, RequestId(u64::MAX)));
        let k = net.key(0);
        net.nodes[1].device.handle_request(now, reply, k, &frame);
        net.pump();
    }
    assert_eq!(net.nodes[1].device.requests().len(), 2);
    let e = net.pay_peer(0, 1, 5).unwrap_err();
    assert!(e.to_string().contains("too many"), "{e}");
    // Another payer is not held up by the first one's asks.
    let issuer = testkit::issuer();
    let cert = testkit::allowance(&issuer, 9, &testkit::device(9), 100);
    let third = Device::new(init(9, vec![cert]), quiet());
    net.nodes.push(Node::started(third, net.now));
    net.connect(2, 1);
    assert_eq!(paid(net.pay_peer(2, 1, 5)).status, SentStatus::Acked);
}

#[test]
fn a_clone_is_caught_by_the_spend_notices_and_refused_everywhere_the_proof_goes() {
    // Devices 0 and 1 hold the same allowance (1 restored a copy of 0's wallet), and 2 and 3
    // are vendors, 3 reachable only through 2.
    let issuer = testkit::issuer();
    let cert = testkit::allowance(&issuer, 1, &testkit::device(1), 10_000);
    let mut net = Net::new(4, &quiet());
    let mut clone = init(1, vec![cert]);
    clone.seed = [77; 32];
    net.nodes[1].device = Device::new(clone, quiet());
    net.nodes[1].device.start(net.now);
    net.connect(0, 2);
    let a = paid(net.pay_peer(0, 2, 100));
    assert_eq!((a.status, a.counter), (SentStatus::Acked, 1));
    net.disconnect(0, 2);
    // The clone pays vendor 3 with the same counter: accepted, 3 knows nothing yet.
    net.connect(1, 3);
    let b = paid(net.pay_peer(1, 3, 200));
    assert_eq!((b.status, b.counter), (SentStatus::Acked, 1));
    net.disconnect(1, 3);
    // Vendors meet: the notices fork, each builds the proof and refuses the allowance.
    net.connect(2, 3);
    for v in [2, 3] {
        let allowance = AllowanceId([1; 16]);
        assert!(net.nodes[v].device.book().refuses(&allowance), "vendor {v}");
        assert!(net.nodes[v].events.iter().any(
            |e| matches!(e, Event::Learned(Learned::Fraud { allowance: a, .. }) if *a == allowance)
        ));
        assert_eq!(
            net.written(v, "fraud"),
            1,
            "vendor {v} keeps the proof once"
        );
    }
    // The clone's next payment to vendor 3 is refused.
    net.connect(1, 3);
    let c = paid(net.pay_peer(1, 3, 50));
    assert_eq!(c.status, SentStatus::Refused);
}

#[test]
fn receipts_settle_payments_and_travel_to_the_payer() {
    let mut net = Net::new(3, &quiet());
    net.connect(0, 1);
    let o = paid(net.pay_peer(0, 1, 1250));
    net.disconnect(0, 1);
    // Device 1 is the gateway: its record goes to the issuer, which signs a receipt.
    let issuer = testkit::issuer();
    let receipt = SettlementReceipt::issue(&issuer, o.iou, ReceiptStatus::Settled, T0 + 60);
    let a = net.command(
        1,
        Command::Receipts {
            issuer: issuer.id(),
            receipts: vec![receipt],
            carry: true,
        },
    );
    assert!(
        matches!(
            a,
            Ok(Answer::Receipts {
                taken: 1,
                carried: 1,
                ..
            })
        ),
        "{a:?}"
    );
    assert_eq!(
        net.nodes[1].device.received()[&o.iou].settlement,
        Some(ReceiptStatus::Settled)
    );
    // The receipt reaches the payer through the mesh (via device 2).
    net.connect(1, 2);
    net.disconnect(1, 2);
    net.connect(2, 0);
    assert_eq!(
        net.nodes[0].device.sent()[&o.iou].settlement,
        Some(ReceiptStatus::Settled)
    );
    assert!(
        net.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::Settled { iou, .. } if *iou == o.iou))
    );
    assert_eq!(net.written(0, "settled"), 1);
}

#[test]
fn a_revocation_from_the_mesh_refuses_the_allowance() {
    let mut net = Net::new(2, &quiet());
    let issuer = testkit::issuer();
    let rev = crate::objects::Revocation::issue(
        &issuer,
        AllowanceId([1; 16]),
        crate::objects::RevocationReason::DeviceLost,
        T0,
    );
    let b = Bundle::new(Content::Revocation(rev));
    let file = crate::bundle::pack_file([b.bytes()]);
    let r = net.command(1, Command::Import(file));
    assert!(
        matches!(r, Ok(Answer::Imported(ImportReport { added: 1, .. }))),
        "{r:?}"
    );
    assert!(
        net.nodes[1]
            .events
            .iter()
            .any(|e| matches!(e, Event::Learned(Learned::Revoked { .. })))
    );
    net.connect(0, 1);
    let o = paid(net.pay_peer(0, 1, 10));
    assert_eq!(o.status, SentStatus::Refused);
}

#[test]
fn a_relay_takes_no_payment_and_a_peer_that_breaks_the_rules_is_dropped() {
    let config = DeviceConfig {
        relay: true,
        ..quiet()
    };
    let mut net = Net::new(2, &quiet());
    let k = testkit::device(2);
    net.nodes[1].device = Device::new(init(2, vec![]), config);
    net.nodes[1].device.start(net.now);
    assert_eq!(net.nodes[1].device.key(), k.public());
    net.connect(0, 1);
    let e = net.pay_peer(0, 1, 10).unwrap_err();
    assert!(matches!(e, DeviceError::Peer(_)), "{e:?}");
    // Garbage: answered, and the peer dropped.
    let now = net.now;
    net.next_reply += 1;
    let reply = ReplyId(net.next_reply);
    net.nodes[1].asked.insert(reply, (0, RequestId(u64::MAX)));
    let from = net.key(0);
    net.nodes[1]
        .device
        .handle_request(now, reply, from, b"\xff\x00garbage");
    net.pump();
    assert!(net.nodes[1].disconnects.contains(&from));
    assert!(
        net.nodes[1]
            .events
            .iter()
            .any(|e| matches!(e, Event::Misbehaved { .. }))
    );
}

#[test]
fn the_sync_timer_syncs_connected_peers_and_drops_expired_bundles() {
    let mut net = Net::new(3, &DeviceConfig::default());
    net.connect(0, 1);
    let _ = paid(net.pay_peer(0, 1, 10));
    // Device 2 comes in range of 1 and gets the bundles from the next timed sync.
    net.links.insert((1, 2), Loss::None);
    let (k1, k2) = (net.key(1), net.key(2));
    net.nodes[1].device.peers.insert(k2);
    net.nodes[2].device.peers.insert(k1);
    net.advance(10_000);
    assert_eq!(net.nodes[2].device.store().len(), 2);
    assert!(
        net.nodes[1]
            .events
            .iter()
            .any(|e| matches!(e, Event::Synced { .. }))
    );
    assert!(net.written(2, "mesh") >= 1);
    // Weeks later everything has expired.
    net.advance(30 * DAY * 1000);
    assert_eq!(net.nodes[2].device.store().len(), 0);
}

mod exchange;
