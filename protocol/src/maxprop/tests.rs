use super::*;

const T: UnixTime = 1_000_000;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn vector(source: u64, age: u32, entries: &[(u64, f64)]) -> Vector {
    Vector {
        source,
        age,
        entries: entries.to_vec(),
    }
}

#[test]
fn a_meeting_adds_alpha_and_renormalises() {
    let mut l = Likelihoods::default();
    // The first endpoint met starts at 1.
    l.meet(&[10], T);
    assert!(close(l.get(10), 1.0));
    // B: (1, 0 + 1) / 2.
    l.meet(&[20], T);
    assert!(close(l.get(10), 0.5) && close(l.get(20), 0.5));
    // A again: (0.5 + 1, 0.5) / 2.
    l.meet(&[10], T);
    assert!(close(l.get(10), 0.75) && close(l.get(20), 0.25));
    // C: (0.75, 0.25, 1) / 2.
    l.meet(&[30], T);
    assert!(close(l.get(10), 0.375) && close(l.get(20), 0.125) && close(l.get(30), 0.5));
    assert!(close(l.own().map(|(_, f)| f).sum::<f64>(), 1.0));
    // A gateway is its device and then each of its issuers.
    let mut g = Likelihoods::default();
    g.meet(&[40, 41], T);
    assert!(close(g.get(40), 0.5) && close(g.get(41), 0.5));
}

#[test]
fn the_own_vector_keeps_the_forty_nine_likeliest() {
    let mut l = Likelihoods::default();
    l.meet(&[1], T);
    l.meet(&[1], T);
    for e in 2..100 {
        l.meet(&[e], T);
    }
    assert_eq!(l.own().count(), MAX_OWN - 1);
    // The oldest meetings are the least likely, and go.
    assert!(close(l.get(99), 0.5));
    assert!(close(l.get(1), 0.0) && close(l.get(2), 0.0));
}

#[test]
fn vectors_pack_as_the_spec_says_and_unpack_back() {
    let mut l = Likelihoods::default();
    l.meet(&[7], T - 30);
    l.meet(&[5], T - 30);
    l.learn(
        &[vector(9, 10, &[(3, 0.25), (4, 0.75)])],
        &[8],
        &[1],
        false,
        T - 20,
    );
    // 8's own vector is not sent back to 8.
    l.learn(&[vector(8, 0, &[(1, 1.0)])], &[8], &[1], false, T - 20);
    assert_eq!(l.learned(8), Some(&[(1, 1.0)][..]));
    let packed = l.pack(1, 8, T);
    let wire = |source: u64, age: u32, entries: &[(u64, u16)]| {
        let mut v = [&source.to_le_bytes()[..], &age.to_le_bytes()].concat();
        v.push(u8::try_from(entries.len()).expect("a few"));
        for (e, f) in entries {
            v.extend(e.to_le_bytes());
            v.extend(f.to_le_bytes());
        }
        v
    };
    // Sources ascending: our own (1, age 30), then 9's (learned 20 s ago, 10 s old then).
    let want = [
        wire(1, 30, &[(5, 32_768), (7, 32_768)]),
        wire(9, 30, &[(3, 16_384), (4, 49_152)]),
    ]
    .concat();
    assert_eq!(packed, want);
    assert_eq!(
        unpack(&packed),
        Ok(vec![
            vector(1, 30, &[(5, 0.5), (7, 0.5)]),
            vector(9, 30, &[(3, 0.25), (4, 0.75)]),
        ])
    );
    // 1 is at most 2^16 − 1 units.
    let mut one = Likelihoods::default();
    one.meet(&[2], T);
    assert_eq!(&one.pack(1, 8, T)[21..], &u16::MAX.to_le_bytes());
}

#[test]
fn packing_stays_within_the_byte_bound() {
    let mut l = Likelihoods::default();
    for e in 0..60 {
        l.meet(&[e], T);
    }
    for s in 100..120u64 {
        let entries: Vec<(u64, f64)> = (0..32).map(|e| (e, 0.03)).collect();
        l.learn(&[vector(s, 0, &entries)], &[99], &[1000], false, T + s);
    }
    let packed = l.pack(1000, 8, T + 200);
    assert!(packed.len() <= MAX_LIKELIHOOD_BYTES);
    let v = unpack(&packed).expect("well formed");
    // Our own (its entries above 2^-17) and the two newest learned ones (333 bytes each)
    // fit.
    assert_eq!(v.len(), 3);
    assert!(v.iter().any(|v| v.source == 1000));
    assert!(v.iter().any(|v| v.source == 119));
}

#[test]
fn malformed_vectors_are_refused() {
    let entry = |e: u64| [e.to_le_bytes().to_vec(), 1u16.to_le_bytes().to_vec()].concat();
    let head = |s: u64, n: u8| [s.to_le_bytes().to_vec(), vec![0; 4], vec![n]].concat();
    let ok = [head(1, 2), entry(3), entry(4)].concat();
    assert!(unpack(&ok).is_ok());
    assert_eq!(
        unpack(&ok[..ok.len() - 1]),
        Err("likelihood vector cut short")
    );
    assert_eq!(unpack(&ok[..5]), Err("likelihood vector cut short"));
    assert_eq!(unpack(&head(1, 0)), Err("1 to 32 likelihoods a vector"));
    let many: Vec<u8> = [head(1, 33)]
        .into_iter()
        .chain((0..33).map(entry))
        .flatten()
        .collect();
    assert_eq!(unpack(&many), Err("1 to 32 likelihoods a vector"));
    let twice = [ok.clone(), ok.clone()].concat();
    assert_eq!(unpack(&twice), Err("likelihood vector sources ascending"));
    let unsorted = [head(1, 2), entry(4), entry(3)].concat();
    assert_eq!(unpack(&unsorted), Err("likelihood endpoints ascending"));
    let huge: Vec<u8> = (0..4u64)
        .flat_map(|s| {
            [head(s, 32)]
                .into_iter()
                .chain((0..32).map(entry))
                .flatten()
                .collect::<Vec<u8>>()
        })
        .collect();
    assert_eq!(unpack(&huge), Err("likelihoods at most 1152 bytes"));
}

#[test]
fn learned_vectors_are_replaced_only_by_newer_ones_and_bounded() {
    let mut l = Likelihoods::default();
    l.learn(&[vector(9, 100, &[(3, 0.5)])], &[8], &[1], false, T);
    // Older than what we hold: ignored. Newer: taken.
    l.learn(&[vector(9, 200, &[(3, 0.25)])], &[8], &[1], false, T);
    assert_eq!(l.learned(9), Some(&[(3, 0.5)][..]));
    l.learn(&[vector(9, 50, &[(3, 0.25)])], &[8], &[1], false, T);
    assert_eq!(l.learned(9), Some(&[(3, 0.25)][..]));
    // Our own vector is never taken from a peer.
    l.learn(&[vector(1, 0, &[(3, 1.0)])], &[8], &[1], false, T);
    assert_eq!(l.learned(1), None);
    // At an encounter the peer's own vector takes the meeting with us, as the peer counts it.
    l.learn(
        &[vector(8, 0, &[(3, 0.75), (4, 0.25)])],
        &[8],
        &[1],
        true,
        T,
    );
    assert_eq!(l.learned(8), Some(&[(1, 0.5), (3, 0.375), (4, 0.125)][..]));
    assert!(close(l.get(8), 1.0));
    // A peer that met nobody before: its vector is us alone.
    let mut m = Likelihoods::default();
    m.learn(&[], &[8], &[1], true, T);
    assert_eq!(m.learned(8), Some(&[(1, 1.0)][..]));
    // However many vectors peers send, at most MAX_KNOWN are kept, the newest.
    for s in 0..(MAX_KNOWN as u64 + 40) {
        l.learn(&[vector(s + 100, 0, &[(3, 0.5)])], &[8], &[1], false, T + s);
    }
    assert_eq!(l.known(), MAX_KNOWN);
    assert_eq!(l.learned(100), None);
    assert!(l.learned(MAX_KNOWN as u64 + 139).is_some());
}

#[test]
fn costs_are_shortest_paths_over_one_minus_the_likelihoods() {
    // Us (1): f(2) = f(3) = 0.5. Learned: 2 → {3: 0.25, 4: 0.75}, 3 → {1: 0.5, 4: 0.5}.
    let mut l = Likelihoods::default();
    l.meet(&[2], T);
    l.meet(&[3], T);
    l.learn(
        &[vector(2, 0, &[(3, 0.25), (4, 0.75)])],
        &[9],
        &[1],
        false,
        T,
    );
    l.learn(&[vector(3, 0, &[(1, 0.5), (4, 0.5)])], &[9], &[1], false, T);
    let from_us = l.costs(1, &[1]);
    // 4: via 2 (0.5 + 0.25) beats via 3 (0.5 + 0.5); 3: direct (0.5) beats via 2 (1.25).
    let want = [(1, 0.0), (2, 0.5), (3, 0.5), (4, 0.75)];
    assert_eq!(from_us.len(), 4);
    for (e, c) in want {
        assert!(close(from_us[&e], c), "{e}: {}", from_us[&e]);
    }
    // From 3: 4 and 1 at 0.5, then 2 through us at 1.0; 3's gateway issuer 7 costs nothing.
    let from_3 = l.costs(1, &[3, 7]);
    for (e, c) in [(3, 0.0), (7, 0.0), (4, 0.5), (1, 0.5), (2, 1.0)] {
        assert!(close(from_3[&e], c), "{e}: {}", from_3[&e]);
    }
    // Nobody's vector reaches 5.
    assert!(!from_3.contains_key(&5));
}

#[test]
fn the_threshold_follows_the_bytes_sessions_move() {
    let mut l = Likelihoods::default();
    let held = vec![(2, 100), (0, 100), (1, 100), (3, 100)];
    // No sample: no threshold.
    assert_eq!(l.threshold(10_000, held.clone()), 0);
    // Zero is not a sample; the mean of 150 and 250 is 200, under half the buffer: p = 200
    // bytes, filled by the bundles of 0 and 1 hops, so the threshold is 2.
    l.sample(0);
    l.sample(150);
    l.sample(250);
    assert_eq!(l.mean_transfer(), 200);
    assert_eq!(l.threshold(10_000, held.clone()), 2);
    // Over half the buffer: p = min(x, b − x) = 100 of 300, one bundle, threshold 1.
    assert_eq!(l.threshold(300, held.clone()), 1);
    // A session moves the whole buffer: no threshold.
    assert_eq!(l.threshold(200, held), 0);
    // A contact's bytes add up until it ends; a new encounter ends one left open.
    let mut c = Likelihoods::default();
    c.moved(7, 100);
    c.moved(7, 50);
    c.moved(8, 10);
    assert_eq!(c.mean_transfer(), 0);
    c.parted(7);
    assert_eq!(c.mean_transfer(), 150);
    c.learn(&[], &[8], &[1], true, T);
    assert_eq!(c.mean_transfer(), 80);
    c.parted(8);
    assert_eq!(c.mean_transfer(), 80);
    // Only the last ten samples count.
    for _ in 0..SAMPLES {
        l.sample(10);
    }
    assert_eq!(l.mean_transfer(), 10);
}
