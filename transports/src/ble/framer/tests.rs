use super::*;

fn framer(mtu: usize) -> Framer {
    Framer::new(FramerConfig {
        max_packet_in: mtu - 3,
        send_buffer: 1 << 20,
        ..FramerConfig::default()
    })
}

/// Moves every packet `from` has now to `to`, dropping those `lose` picks.
fn pump(
    now: Duration,
    from: &mut Framer,
    to: &mut Framer,
    link_max: usize,
    lose: &mut impl FnMut(&[u8]) -> bool,
    reverse: bool,
) -> usize {
    let mut batch = Vec::new();
    while let Some(p) = from.poll_transmit(now, link_max) {
        assert!(p.len() <= link_max);
        batch.push(p);
    }
    if reverse {
        batch.reverse();
    }
    let n = batch.len();
    for p in batch {
        if !lose(&p) {
            to.receive(now, &p).expect("stream stays up");
        }
    }
    n
}

fn transfer(mtu: usize, messages: &[Vec<u8>], mut lose: impl FnMut(&[u8]) -> bool) -> Framer {
    let mut a = framer(mtu);
    let mut b = framer(mtu);
    for m in messages {
        a.send(m).unwrap();
    }
    let mut now = Duration::ZERO;
    let mut got = Vec::new();
    for step in 0..20_000 {
        let reverse = step % 3 == 1;
        pump(now, &mut a, &mut b, mtu - 3, &mut lose, reverse);
        pump(now, &mut b, &mut a, mtu - 3, &mut lose, false);
        while let Some(m) = b.poll_message() {
            got.push(m);
        }
        if got.len() == messages.len() && a.is_idle() {
            break;
        }
        now += Duration::from_millis(10);
        if a.poll_timeout().is_some_and(|t| t <= now) {
            a.handle_timeout(now).unwrap();
        }
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.handle_timeout(now).unwrap();
        }
    }
    assert_eq!(got.len(), messages.len(), "mtu {mtu}: {:?}", a.stats());
    assert!(got == messages, "mtu {mtu}: messages differ");
    assert!(a.is_idle());
    a
}

fn messages() -> Vec<Vec<u8>> {
    (0..40u32)
        .map(|i| {
            (0..=(i * 97 % 2048))
                .map(|j| u8::try_from((i * 31 + j) % 251).unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn every_mtu_carries_messages_in_order() {
    for mtu in [23, 185, 247, 515] {
        let a = transfer(mtu, &messages(), |_| false);
        assert_eq!(a.stats().retransmits, 0, "mtu {mtu}");
    }
}

#[test]
fn lost_and_reordered_packets_are_recovered() {
    for mtu in [23, 185, 247, 515] {
        let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ mtu as u64;
        let a = transfer(mtu, &messages(), |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 100 < 15
        });
        assert!(a.stats().retransmits > 0, "mtu {mtu}");
    }
}

#[test]
fn packets_grow_once_the_peer_says_its_size() {
    let mut a = framer(247);
    let mut b = framer(247);
    a.send(&[7; 600]).unwrap();
    let now = Duration::ZERO;
    // Before hearing from b, a sends minimal packets.
    let first = a.poll_transmit(now, 244).unwrap(); // a's own size announcement
    assert_eq!(first[0], ACK);
    let data = a.poll_transmit(now, 244).unwrap();
    assert_eq!(data.len(), MIN_PACKET);
    b.receive(now, &data).unwrap();
    let ack = b.poll_transmit(now, 244).unwrap();
    a.receive(now, &ack).unwrap();
    assert_eq!(a.peer_max_packet(), 244);
    let next = a.poll_transmit(now, 244).unwrap();
    assert_eq!(next.len(), 244);
}

#[test]
fn oversized_messages_are_refused_both_ways() {
    let mut a = framer(247);
    assert_eq!(
        a.send(&vec![0; 4097]),
        Err(FrameError::TooLarge {
            len: 4097,
            limit: 4096
        })
    );
    // A peer that never ends its message is cut off at the limit.
    let mut b = framer(247);
    let mut seq = 0u16;
    let result = loop {
        let mut p = vec![DATA];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[1; 200]);
        seq += 1;
        if let Err(e) = b.receive(Duration::ZERO, &p) {
            break e;
        }
    };
    assert!(matches!(result, FrameError::TooLarge { .. }));
    assert_eq!(
        b.poll_transmit(Duration::ZERO, 244),
        Some(vec![RESET, reason::TOO_LARGE])
    );
}

#[test]
fn garbage_and_forged_acks_are_dropped_without_harm() {
    let mut a = framer(247);
    a.send(b"hello").unwrap();
    let _ = a.poll_transmit(Duration::ZERO, 244);
    let _ = a.poll_transmit(Duration::ZERO, 244);
    for junk in [
        &[][..],
        &[0xFF, 1, 2],
        &[DATA, 0],
        &[ACK, 0, 9, 0, 0, 0, 0, 0, 244, 0, 32],
        &[0x42, 0, 0, 1],
    ] {
        a.receive(Duration::ZERO, junk).unwrap();
    }
    assert_eq!(a.stats().rejected, 5);
    assert!(!a.is_idle(), "the forged ack acknowledged nothing");
}

#[test]
fn a_lying_selective_ack_does_not_stop_a_lost_packet_from_going_again() {
    let mut a = framer(247);
    a.send(&[4; 40]).unwrap();
    let now = Duration::ZERO;
    let _ = a.poll_transmit(now, 244); // a's size announcement
    let sent: Vec<Vec<u8>> = std::iter::from_fn(|| a.poll_transmit(now, 244)).collect();
    assert_eq!(
        sent.len(),
        3,
        "20-byte packets before a knows the peer's size"
    );
    // A forged ack claims packet 1 arrived; then the peer's real ack: packet 0 arrived,
    // and packet 2 is held. Packet 1 is lost and now first in line.
    a.receive(now, &[ACK, 0, 0, 0, 0, 0, 0b1, 0, 244, 0, 32])
        .unwrap();
    a.receive(now, &[ACK, 0, 1, 0, 0, 0, 0b1, 0, 244, 0, 32])
        .unwrap();
    // It goes again: at once (a later packet arrived) or when its timer fires.
    let again = a.poll_transmit(now, 244).or_else(|| {
        let due = a.poll_timeout()?;
        a.handle_timeout(due).unwrap();
        a.poll_transmit(due, 244)
    });
    assert_eq!(again, Some(sent[1].clone()));
    assert_eq!(a.send(&[]), Err(FrameError::Empty));
}

#[test]
fn back_pressure_and_give_up() {
    let mut a = Framer::new(FramerConfig {
        send_buffer: 1000,
        ..FramerConfig::default()
    });
    a.send(&[0; 600]).unwrap();
    assert_eq!(a.send(&[0; 600]), Err(FrameError::Full));
    // Nobody answers: after max_sends the stream ends with a RESET.
    let mut now = Duration::ZERO;
    let outcome = loop {
        while a.poll_transmit(now, 244).is_some() {}
        now = a.poll_timeout().expect("a packet is in flight");
        if let Err(e) = a.handle_timeout(now) {
            break e;
        }
    };
    assert_eq!(outcome, FrameError::Timeout);
    assert_eq!(
        a.poll_transmit(now, 244),
        Some(vec![RESET, reason::TIMEOUT])
    );
}

#[test]
fn sequence_numbers_wrap() {
    let mut a = framer(23);
    let mut b = framer(23);
    let big: Vec<Vec<u8>> = (0..600u32).map(|i| vec![(i % 251) as u8; 2000]).collect();
    let mut now = Duration::ZERO;
    let mut got = 0;
    for m in &big {
        a.send(m).unwrap();
        loop {
            pump(now, &mut a, &mut b, 20, &mut |_| false, false);
            pump(now, &mut b, &mut a, 20, &mut |_| false, false);
            while b.poll_message().is_some() {
                got += 1;
            }
            now += Duration::from_millis(20);
            if a.is_idle() {
                break;
            }
        }
    }
    assert_eq!(got, 600);
    assert!(a.stats().packets_sent > 65_536, "sequence numbers wrapped");
}

mod jitter {
    use super::*;
    use std::collections::BTreeMap;

    /// Both ends send at once over a link that loses 10 % of packets and delays each by
    /// 20–50 ms, so packets and acks overtake each other.
    #[test]
    #[allow(clippy::needless_range_loop)]
    fn full_duplex_over_a_lossy_jittery_link() {
        let config = FramerConfig {
            send_buffer: 1 << 20,
            ..FramerConfig::default()
        };
        let mut f = [Framer::new(config.clone()), Framer::new(config)];
        let msgs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 2000]).collect();
        for m in &msgs {
            f[0].send(m).unwrap();
            f[1].send(m).unwrap();
        }
        let mut air: BTreeMap<(Duration, u64), (usize, Vec<u8>)> = BTreeMap::new();
        let mut x = 12345u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut order = 0;
        let mut got = [Vec::new(), Vec::new()];
        let mut now = Duration::ZERO;
        while now < Duration::from_secs(600) {
            for side in 0..2 {
                while let Some(p) = f[side].poll_transmit(now, 20) {
                    if rnd() % 10 == 0 {
                        continue;
                    }
                    let at = now + Duration::from_millis(20 + rnd() % 30);
                    order += 1;
                    air.insert((at, order), (1 - side, p));
                }
            }
            let t = [
                air.keys().next().map(|k| k.0),
                f[0].poll_timeout(),
                f[1].poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(t) = t else { break };
            now = now.max(t);
            while let Some(entry) = air.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let (to, p) = entry.remove();
                f[to].receive(now, &p).unwrap();
                while let Some(m) = f[to].poll_message() {
                    got[to].push(m);
                }
            }
            for side in &mut f {
                if side.poll_timeout().is_some_and(|d| d <= now) {
                    side.handle_timeout(now).unwrap();
                }
            }
            if got[0].len() == 20 && got[1].len() == 20 {
                break;
            }
        }
        assert!(
            got[0] == msgs && got[1] == msgs,
            "both directions complete in order"
        );
    }
}
