#!/usr/bin/env bash
# Generates meshpay's Kotlin, Swift and Python bindings from the compiled library.
#
#   ffi/bindings.sh [OUT_DIR] [PROFILE]     (defaults: target/bindings, debug)
#
# OUT_DIR/kotlin/org/meshpay/meshpay.kt, OUT_DIR/swift/{meshpay.swift,meshpayFFI.h,
# meshpayFFI.modulemap} and OUT_DIR/python/meshpay.py, each beside a copy of the library
# (libmeshpay_ffi.so) for the JVM and Python to load.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/bindings}
profile=${2:-debug}
target=${CARGO_TARGET_DIR:-$root/target}
flag=()
[ "$profile" = release ] && flag=(--release)
cargo build -p meshpay-ffi --lib --bin uniffi-bindgen "${flag[@]}" --manifest-path "$root/Cargo.toml"
lib=$target/$profile/libmeshpay_ffi.so
for lang in kotlin swift python; do
    mkdir -p "$out/$lang"
    "$target/$profile/uniffi-bindgen" generate --library "$lib" --language "$lang" \
        --out-dir "$out/$lang" --no-format
    cp "$lib" "$out/$lang/"
done
echo "bindings in $out"
