//! Generates meshpay's Kotlin, Swift and Python bindings from the compiled library:
//! `uniffi-bindgen generate --library target/debug/libmeshpay_ffi.so --language kotlin --out-dir
//! out` (`ffi/bindings.sh` runs it for every language).

fn main() {
    uniffi::uniffi_bindgen_main();
}
