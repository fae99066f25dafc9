//! The BLE link over the emulated radio: a whole payment exchange (first contact: the Noise
//! handshake, then ask → payment request, pay → ack, with real encoded messages) and bulk
//! goodput of 2 KiB frames (the size sync transfers fill), at ATT MTU 23, 185 and 247 and
//! application throughputs of 100 and 700 kbit/s, with 15 ms one-way latency.
//!
//! Times are on the emulated radio's clock (tokio's paused time), so they are the air and
//! protocol time a real link of those properties would take, not this machine's speed.
//!
//! ```sh
//! cargo bench -p meshpay-transports --bench ble
//! ```

#![allow(clippy::cast_precision_loss)]

use meshpay_protocol::message::{Ask, Pay, Request, Response};
use meshpay_protocol::testkit;
use meshpay_protocol::{PaymentAck, codec::VERSION};
use meshpay_transports::ble::emulated::{EmuConfig, EmuStats, pair};
use meshpay_transports::ble::{BleConfig, BleLink, Role};
use meshpay_transports::{Link as _, LinkEvent};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

struct Frames {
    ask: Vec<u8>,
    request: Vec<u8>,
    pay: Vec<u8>,
    ack: Vec<u8>,
}

fn frames() -> Frames {
    let issuer = testkit::issuer();
    let payer = testkit::device(1);
    let payee = testkit::device(2);
    let cert = testkit::allowance(&issuer, 1, &payer, 100_000);
    let mut wallet = testkit::wallet([cert.clone()]);
    let request = testkit::request(&payee, 1_250, 7);
    let iou = testkit::pay(&mut wallet, &payer, &request);
    let ack = PaymentAck::sign(&payee, iou.id(), testkit::T0);
    Frames {
        ask: Request::Ask(Ask {
            version: VERSION,
            amount: 1_250,
            currency: "KES".into(),
            memo: "two mangoes".into(),
        })
        .encode(),
        request: Response::Request(request).encode(),
        // First contact: the payer sends its allowance certificate along.
        pay: Request::Pay(Box::new(Pay {
            version: VERSION,
            iou,
            cert: Some(cert),
        }))
        .encode(),
        ack: Response::Ack(ack).encode(),
    }
}

/// A link whose node answers `f.ask` with `f.request`, `f.pay` with `f.ack`, anything else
/// with a short frame.
fn payee_link(n: u8, f: &Frames) -> (BleLink, mpsc::Receiver<()>) {
    let (ask, request, pay, ack) = (
        f.ask.clone(),
        f.request.clone(),
        f.pay.clone(),
        f.ack.clone(),
    );
    let (tx, mut rx) = mpsc::channel(64);
    let (up_tx, up_rx) = mpsc::channel(4);
    let link = BleLink::new(&[n; 32], BleConfig::default(), tx);
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            match ev {
                LinkEvent::Request { frame, reply, .. } => reply.send(if frame == ask {
                    request.clone()
                } else if frame == pay {
                    ack.clone()
                } else {
                    vec![0; 8]
                }),
                LinkEvent::PeerConnected(_) => {
                    let _ = up_tx.send(()).await;
                }
                _ => {}
            }
        }
    });
    (link, up_rx)
}

fn air(stats: [EmuStats; 2]) -> u64 {
    stats[0].air_bytes + stats[1].air_bytes
}

async fn run(mtu: usize, bitrate: u64, f: &Frames) -> (Duration, u64, Duration, u64, f64) {
    let config = EmuConfig {
        mtu,
        bitrate,
        latency: Duration::from_millis(15),
        ..EmuConfig::default()
    };
    let (payer, mut payer_up) = payee_link(1, f);
    let (payee, _payee_up) = payee_link(2, f);
    let (c, p, control) = pair(config);
    let to = testkit::device(2).public();
    let start = Instant::now();
    payer.attach(c, Role::Initiator);
    payee.attach(p, Role::Responder);
    payer_up.recv().await.expect("connected");
    let answer = payer.request(&to, f.ask.clone()).await.expect("ask");
    assert_eq!(answer, f.request);
    let answer = payer.request(&to, f.pay.clone()).await.expect("pay");
    assert_eq!(answer, f.ack);
    let first = start.elapsed();
    let first_bytes = air(control.stats());
    // The same exchange on the open session.
    let before = air(control.stats());
    let start = Instant::now();
    payer.request(&to, f.ask.clone()).await.expect("ask");
    payer.request(&to, f.pay.clone()).await.expect("pay");
    let warm = start.elapsed();
    let warm_bytes = air(control.stats()) - before;
    // Bulk: 64 frames of 2 KiB, several in flight.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..64u8 {
        let payer = payer.clone();
        tasks.push(tokio::spawn(async move {
            payer
                .request(&to, vec![i | 0x80; 2048])
                .await
                .expect("bulk")
        }));
        if tasks.len() >= 4 {
            tasks.remove(0).await.expect("task");
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    let goodput = 64.0 * 2048.0 * 8.0 / start.elapsed().as_secs_f64() / 1000.0;
    (first, first_bytes, warm, warm_bytes, goodput)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let f = frames();
    println!(
        "frames: ask {} B, payment request {} B, pay {} B (with certificate), ack {} B",
        f.ask.len(),
        f.request.len(),
        f.pay.len(),
        f.ack.len()
    );
    println!(
        "{:>4} {:>9}  {:>22}  {:>22}  {:>14}",
        "MTU", "kbit/s", "first contact (ms, B)", "warm session (ms, B)", "goodput kbit/s"
    );
    for mtu in [23, 185, 247] {
        for bitrate in [100_000, 700_000] {
            let (first, first_bytes, warm, warm_bytes, goodput) =
                rt.block_on(run(mtu, bitrate, &f));
            println!(
                "{mtu:>4} {:>9}  {:>12.1} {:>9}  {:>12.1} {:>9}  {goodput:>14.1}",
                bitrate / 1000,
                first.as_secs_f64() * 1e3,
                first_bytes,
                warm.as_secs_f64() * 1e3,
                warm_bytes,
            );
        }
    }
}
