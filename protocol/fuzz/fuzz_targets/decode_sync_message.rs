//! Fuzzes the sync_message decoder: any input gives a value or a typed error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = meshpay_protocol::testkit::decode_named("sync_message", data).expect("decoder exists");
});
