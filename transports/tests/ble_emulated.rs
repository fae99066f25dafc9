//! The BLE link over emulated connections: every MTU, with loss, reordering, corruption and
//! disconnects. Tokio time is paused, so the emulated radio's delays cost no wall time.

use meshpay_protocol::{DeviceKey, DeviceSecret};
use meshpay_transports::ble::emulated::{EmuConfig, pair};
use meshpay_transports::ble::{BleConfig, BleLink, PacketSink, Pipe, Role};
use meshpay_transports::{Link, LinkError, LinkEvent, LinkKind};
use std::time::Duration;
use tokio::sync::mpsc;

fn device(n: u8) -> DeviceSecret {
    DeviceSecret::from_seed(&[n; 32])
}

/// A link whose node answers every request with the frame reversed and repeated to `len`.
fn answering_link(n: u8) -> (BleLink, mpsc::Receiver<LinkEvent>) {
    let (tx, mut rx) = mpsc::channel(64);
    let link = BleLink::new(
        &[n; 32],
        BleConfig {
            request_timeout: Duration::from_secs(300),
            ..BleConfig::default()
        },
        tx,
    );
    let (out_tx, out_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            match ev {
                LinkEvent::Request { frame, reply, .. } => reply.send(answer(&frame)),
                other => {
                    let _ = out_tx.send(other).await;
                }
            }
        }
    });
    (link, out_rx)
}

fn answer(frame: &[u8]) -> Vec<u8> {
    let mut a: Vec<u8> = frame.iter().rev().copied().collect();
    a.extend(std::iter::repeat_n(0xA5, 2048 - a.len()));
    a
}

async fn connected(rx: &mut mpsc::Receiver<LinkEvent>) -> DeviceKey {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(LinkEvent::PeerConnected(info))) => {
                assert_eq!(info.link, LinkKind::Ble);
                return info.device;
            }
            Ok(Some(_)) => {}
            other => panic!("no connection: {other:?}"),
        }
    }
}

fn frames() -> Vec<Vec<u8>> {
    (0..12u32)
        .map(|i| {
            (0..=(i * 173 % 2000))
                .map(|j| u8::try_from((i + j) % 256).unwrap())
                .collect()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn requests_cross_every_mtu_through_loss_and_reordering() {
    for (mtu, seed) in [(23, 1), (185, 2), (247, 3), (512, 4)] {
        let (central, mut central_events) = answering_link(1);
        let (peripheral, mut peripheral_events) = answering_link(2);
        let (c, p, control) = pair(EmuConfig {
            mtu,
            bitrate: 100_000,
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(30),
            loss: 0.1,
            seed,
            ..EmuConfig::default()
        });
        central.attach(c, Role::Initiator);
        peripheral.attach(p, Role::Responder);
        assert_eq!(connected(&mut central_events).await, device(2).public());
        assert_eq!(connected(&mut peripheral_events).await, device(1).public());
        // Both ways, several at once.
        let mut tasks = Vec::new();
        for (i, f) in frames().into_iter().enumerate() {
            let (from, to) = if i % 2 == 0 {
                (central.clone(), device(2).public())
            } else {
                (peripheral.clone(), device(1).public())
            };
            tasks.push(tokio::spawn(async move {
                let got = from
                    .request(&to, f.clone())
                    .await
                    .unwrap_or_else(|e| panic!("mtu {mtu}: {e}"));
                assert_eq!(got, answer(&f), "mtu {mtu}");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let [up, down] = control.stats();
        assert!(up.lost + down.lost > 0, "mtu {mtu}: the link lost packets");
        let peers = central.peers().await;
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].link, LinkKind::Ble);
    }
}

#[tokio::test(start_paused = true)]
async fn corrupted_packets_never_yield_a_wrong_answer() {
    let mut ended = 0;
    for seed in 1..=6 {
        let (central, mut events) = answering_link(1);
        let (peripheral, _pe) = answering_link(2);
        let (c, p, _control) = pair(EmuConfig {
            mtu: 185,
            corrupt: 0.02,
            seed,
            ..EmuConfig::default()
        });
        let session = central.attach(c, Role::Initiator);
        peripheral.attach(p, Role::Responder);
        let mut up = false;
        for f in frames() {
            if !up {
                match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                    Ok(Some(LinkEvent::PeerConnected(_))) => up = true,
                    _ => break,
                }
            }
            match central.request(&device(2).public(), f.clone()).await {
                Ok(got) => assert_eq!(got, answer(&f)),
                Err(LinkError::Closed | LinkError::Unreachable(_) | LinkError::Timeout) => break,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        if session.is_finished() {
            ended += 1;
        }
    }
    assert!(ended > 0, "corruption ended some session");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_connection_fails_pending_requests_and_the_link_serves_the_next() {
    let (central, mut events) = answering_link(1);
    let (peripheral, _pe) = answering_link(2);
    let (c, p, control) = pair(EmuConfig {
        mtu: 23,
        bitrate: 100_000,
        ..EmuConfig::default()
    });
    central.attach(c, Role::Initiator);
    peripheral.attach(p, Role::Responder);
    connected(&mut events).await;
    let asking = {
        let central = central.clone();
        tokio::spawn(async move { central.request(&device(2).public(), vec![1; 2000]).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    control.disconnect();
    assert_eq!(asking.await.unwrap(), Err(LinkError::Closed));
    loop {
        match events.recv().await {
            Some(LinkEvent::PeerDisconnected { device: d }) => {
                assert_eq!(d, device(2).public());
                break;
            }
            Some(_) => {}
            None => panic!("events ended"),
        }
    }
    assert!(central.peers().await.is_empty());
    assert_eq!(
        central.request(&device(2).public(), vec![1]).await,
        Err(LinkError::Unreachable(
            meshpay_protocol::PrintableKey::short(&device(2).public())
        ))
    );
    // Back in range: a new connection carries requests again.
    let (c, p, _control) = pair(EmuConfig::default());
    central.attach(c, Role::Initiator);
    peripheral.attach(p, Role::Responder);
    connected(&mut events).await;
    let got = central
        .request(&device(2).public(), vec![7; 10])
        .await
        .unwrap();
    assert_eq!(got, answer(&[7; 10]));
}

/// A peer that speaks garbage instead of a handshake.
struct Garbage;

#[async_trait::async_trait]
impl PacketSink for Garbage {
    async fn send(&self, _packet: Vec<u8>) -> Result<(), LinkError> {
        Ok(())
    }
    fn max_packet(&self) -> usize {
        244
    }
    fn close(&self) {}
}

#[tokio::test(start_paused = true)]
async fn a_peer_with_a_bad_handshake_is_dropped_and_others_are_served() {
    let (peripheral, _pe) = answering_link(2);
    let (tx, rx) = mpsc::channel(8);
    let session = peripheral.attach(
        Pipe {
            sink: Box::new(Garbage),
            packets: rx,
            address: "attacker".into(),
        },
        Role::Responder,
    );
    // A well-framed message 1 of the wrong length fails the Noise handshake.
    let mut bad = vec![0x41, 0, 0];
    bad.extend_from_slice(&[9; 40]);
    tx.send(bad).await.unwrap();
    let why = session.await.unwrap();
    assert!(why.is_misbehaviour(), "{why}");
    assert!(!peripheral.is_connected_to("attacker"));
    // An honest central still gets through.
    let (central, mut events) = answering_link(1);
    let (c, p, _control) = pair(EmuConfig::default());
    central.attach(c, Role::Initiator);
    peripheral.attach(p, Role::Responder);
    connected(&mut events).await;
    assert!(
        central
            .request(&device(2).public(), b"hi".to_vec())
            .await
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_times_out_of_the_handshake() {
    let (peripheral, _pe) = answering_link(2);
    let (_tx, rx) = mpsc::channel(8);
    let session = peripheral.attach(
        Pipe {
            sink: Box::new(Garbage),
            packets: rx,
            address: "silent".into(),
        },
        Role::Responder,
    );
    let why = tokio::time::timeout(Duration::from_secs(60), session)
        .await
        .expect("the handshake deadline ends it")
        .unwrap();
    assert!(!why.is_misbehaviour());
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_keeps_too_many_requests_open_is_dropped() {
    // The peripheral's node holds every request without answering.
    let (tx, mut rx) = mpsc::channel(256);
    let peripheral = BleLink::new(&[2; 32], BleConfig::default(), tx);
    let (central, mut events) = answering_link(1);
    let (c, p, _control) = pair(EmuConfig::default());
    central.attach(c, Role::Initiator);
    let session = peripheral.attach(p, Role::Responder);
    connected(&mut events).await;
    let mut asking = Vec::new();
    for i in 0..40u8 {
        let central = central.clone();
        asking.push(tokio::spawn(async move {
            central.request(&device(2).public(), vec![i; 16]).await
        }));
    }
    let mut held = Vec::new();
    let misbehaved = loop {
        match rx.recv().await.expect("events") {
            LinkEvent::Request { reply, .. } => held.push(reply),
            LinkEvent::PeerMisbehaved { device: d, what } => {
                assert_eq!(d, device(1).public());
                break what;
            }
            _ => {}
        }
    };
    assert!(misbehaved.contains("requests open"), "{misbehaved}");
    assert!(session.await.unwrap().is_misbehaviour());
    assert!(held.len() <= 32, "{} requests reached the node", held.len());
    for a in asking {
        assert!(a.await.unwrap().is_err());
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_sent_with_drop_arrives_and_then_the_session_closes() {
    let (tx, mut rx) = mpsc::channel(16);
    let peripheral = BleLink::new(&[2; 32], BleConfig::default(), tx);
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if let LinkEvent::Request { reply, .. } = ev {
                reply.send_and_drop(b"unreadable".to_vec());
            }
        }
    });
    let (central, mut events) = answering_link(1);
    let (c, p, _control) = pair(EmuConfig::default());
    central.attach(c, Role::Initiator);
    let session = peripheral.attach(p, Role::Responder);
    connected(&mut events).await;
    let got = central
        .request(&device(2).public(), b"garbage".to_vec())
        .await
        .unwrap();
    assert_eq!(got, b"unreadable");
    tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .expect("the peripheral closes after its answer")
        .unwrap();
    assert!(
        central.peers().await.is_empty() || {
            tokio::time::sleep(Duration::from_secs(1)).await;
            central.peers().await.is_empty()
        }
    );
}
