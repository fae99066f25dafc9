//! Hostile input for every decoder: random bytes, truncations and mutations of valid
//! encodings, deep nesting and huge declared lengths. Each must give a typed error (or, for a
//! mutation that happens to be valid, a value), never a panic and never a large allocation
//! (decoders refuse input over the type's size limit before parsing it).

mod common;

use meshpay_protocol::DecodeError;
use meshpay_protocol::testkit::DECODERS;
use proptest::prelude::*;

fn run_all(bytes: &[u8]) {
    for (_, decode) in DECODERS {
        let _ = decode(bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        run_all(&bytes);
    }

    #[test]
    fn random_cbor_headers_never_panic(
        head in prop::collection::vec(prop::sample::select(vec![0x80u8, 0x8a, 0x9f, 0x58, 0x59, 0x5a, 0x5b, 0x78, 0x7b, 0x1b, 0xa1, 0xc0, 0xf9, 0xff]), 1..40),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = head;
        bytes.extend(tail);
        run_all(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn truncations_are_errors_and_mutations_never_panic(
        obj in common::any_object(),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let bytes = obj.bytes();
        for cut in 0..bytes.len() {
            for (name, decode) in DECODERS {
                prop_assert!(decode(&bytes[..cut]).is_err(), "{name} accepted a {cut}-byte prefix");
            }
        }
        let mut mutated = bytes.clone();
        for (i, b) in mutations {
            let i = i.index(mutated.len());
            mutated[i] = b;
        }
        run_all(&mutated);
    }
}

#[test]
fn deep_nesting_is_refused() {
    for depth in [100usize, 500, 5000] {
        let mut bytes = vec![0x81u8; depth];
        bytes.push(0x00);
        for (name, decode) in DECODERS {
            assert!(
                decode(&bytes).is_err(),
                "{name} accepted {depth}-deep nesting"
            );
        }
    }
}

#[test]
fn huge_declared_lengths_are_refused_without_allocating() {
    let cases: [&[u8]; 4] = [
        // An array of 2^64-1 elements.
        &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        // A byte string of 2^63 bytes inside a 10-array.
        &[0x8a, 0x01, 0x5b, 0x80, 0, 0, 0, 0, 0, 0, 0],
        // A text string of 4 GiB inside a 2-array.
        &[0x82, 0x7a, 0xff, 0xff, 0xff, 0xff],
        // A 2-array whose first element claims 2^32 elements.
        &[0x82, 0x9a, 0xff, 0xff, 0xff, 0xff, 0x00],
    ];
    for bytes in cases {
        for (name, decode) in DECODERS {
            let r = decode(bytes);
            assert!(
                matches!(r, Err(DecodeError::Malformed { .. })),
                "{name}: {r:?}"
            );
        }
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let big = vec![0u8; 4 << 20];
    for (name, decode) in DECODERS {
        assert!(
            matches!(
                decode(&big),
                Err(DecodeError::TooLarge { len: 4_194_304, .. })
            ),
            "{name}"
        );
    }
}

/// Every fuzz target names a decoder that exists, and every decoder has a fuzz target.
#[test]
fn every_decoder_has_a_fuzz_target() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_start_matches("decode_")
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    targets.sort();
    let mut decoders: Vec<String> = DECODERS.iter().map(|(n, _)| (*n).to_owned()).collect();
    decoders.sort();
    assert_eq!(targets, decoders);
    for name in &targets {
        assert!(
            meshpay_protocol::testkit::decode_named(name, &[]).is_some(),
            "{name}"
        );
    }
}
