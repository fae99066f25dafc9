//! Frozen BLE vectors for implementers (docs/ble.md): the framer's packets and the Noise XX
//! handshake with fixed keys, then one encrypted request and response. A missing file (or
//! `MESHPAY_WRITE_VECTORS`) writes it and fails, so no vector is accepted unseen.

#[path = "../../protocol/tests/frozen/mod.rs"]
mod frozen;

use meshpay_protocol::DeviceSecret;
use meshpay_transports::ble::Role;
use meshpay_transports::ble::framer::{Framer, FramerConfig};
use meshpay_transports::ble::session::{Session, SessionConfig, SessionEvent};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::ZERO;

/// Compares `vector` with the frozen file `tests/vectors/<name>.json` (see
/// [`frozen::frozen_vector`]).
fn frozen(name: &str, vector: &Value) {
    frozen::frozen_vector(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors")),
        name,
        vector,
    );
}

/// Moves `from`'s packets to `to`; returns the DATA packets' hex, the ACK packets' hex, and
/// the reassembled framer messages' hex.
fn carry(
    from: &mut Session,
    to: &mut Session,
    max: usize,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut data, mut acks, mut messages) = (Vec::new(), Vec::new(), Vec::new());
    let mut current = Vec::new();
    while let Some(p) = from.poll_transmit(T, max) {
        if p[0] & 0xF0 == 0x40 {
            current.extend_from_slice(&p[3..]);
            if p[0] & 1 == 1 {
                messages.push(hex::encode(std::mem::take(&mut current)));
            }
            data.push(hex::encode(&p));
        } else {
            acks.push(hex::encode(&p));
        }
        to.receive(T, &p);
    }
    (data, acks, messages)
}

#[test]
fn framer_packets() {
    let mut a = Framer::new(FramerConfig {
        max_packet_in: 244,
        ..FramerConfig::default()
    });
    a.send(b"meshpay over BLE: one message in two packets")
        .unwrap();
    let mut packets = Vec::new();
    while let Some(p) = a.poll_transmit(T, 244) {
        packets.push(hex::encode(p));
    }
    let mut b = Framer::new(FramerConfig::default());
    let _ = b.poll_transmit(T, 244); // b's own size announcement
    for p in &packets {
        b.receive(T, &hex::decode(p).unwrap()).unwrap();
    }
    let ack = hex::encode(b.poll_transmit(T, 244).unwrap());
    frozen(
        "framer",
        &json!({
            "note": "a fresh sender (peer's size unknown, so 20-byte packets); the first packet is its own size announcement (max_packet 244, window 32); the receiver's cumulative ack after both DATA packets (max_packet 512, window 32)",
            "message": hex::encode(b"meshpay over BLE: one message in two packets"),
            "sender_packets": packets,
            "receiver_ack": ack,
        }),
    );
    assert_eq!(
        b.poll_message().unwrap(),
        b"meshpay over BLE: one message in two packets"
    );
}

#[test]
fn noise_handshake_and_first_messages() {
    let (i_dev, r_dev) = (
        DeviceSecret::from_seed(&[0xA1; 32]),
        DeviceSecret::from_seed(&[0xB2; 32]),
    );
    let (i_s, i_e, r_s, r_e) = ([0x11; 32], [0x12; 32], [0x21; 32], [0x22; 32]);
    let mut i =
        Session::with_keys_for_tests(Role::Initiator, &i_dev, SessionConfig::default(), i_s, i_e);
    let mut r =
        Session::with_keys_for_tests(Role::Responder, &r_dev, SessionConfig::default(), r_s, r_e);
    let (_, _, m1) = carry(&mut i, &mut r, 244);
    let (_, _, m2) = carry(&mut r, &mut i, 244);
    let (_, _, m3) = carry(&mut i, &mut r, 244);
    let _ = carry(&mut r, &mut i, 244);
    assert_eq!(
        i.poll_event(),
        Some(SessionEvent::Established(r_dev.public()))
    );
    assert_eq!(
        r.poll_event(),
        Some(SessionEvent::Established(i_dev.public()))
    );
    let id = i.request(b"hello").unwrap();
    let (_, _, request) = carry(&mut i, &mut r, 244);
    assert_eq!(
        r.poll_event(),
        Some(SessionEvent::Request {
            id,
            frame: b"hello".to_vec()
        })
    );
    r.respond(id, b"world", false).unwrap();
    let (_, _, response) = carry(&mut r, &mut i, 244);
    assert_eq!(
        i.poll_event(),
        Some(SessionEvent::Response {
            id,
            frame: b"world".to_vec()
        })
    );
    let side = |seed: u8, dev: &DeviceSecret, s: [u8; 32], e: [u8; 32]| {
        json!({
            "device_seed": hex::encode([seed; 32]),
            "device_key": hex::encode(dev.public().0),
            "static_private": hex::encode(s),
            "static_public": hex::encode(x25519(s)),
            "ephemeral_private": hex::encode(e),
            "identity_payload": hex::encode([dev.public().0.as_slice(), &dev.sign_link_key(&x25519(s)).0].concat()),
        })
    };
    frozen(
        "noise",
        &json!({
            "protocol": "Noise_XX_25519_ChaChaPoly_SHA256",
            "prologue": hex::encode(b"meshpay/v1/ble"),
            "initiator": side(0xA1, &i_dev, i_s, i_e),
            "responder": side(0xB2, &r_dev, r_s, r_e),
            "message_1": m1,
            "message_2": m2,
            "message_3": m3,
            "request": {"id": id, "plaintext": hex::encode([&[1u8, 0, 0, 0, 0][..], b"hello"].concat()), "ciphertext": request},
            "response": {"id": id, "plaintext": hex::encode([&[2u8, 0, 0, 0, 0][..], b"world"].concat()), "ciphertext": response},
        }),
    );
}

fn x25519(k: [u8; 32]) -> [u8; 32] {
    x25519_dalek::x25519(k, x25519_dalek::X25519_BASEPOINT_BYTES)
}
