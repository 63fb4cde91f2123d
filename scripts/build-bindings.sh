#!/usr/bin/env bash
# Builds the mobile binding (ffi/mobile, crate sotto-ffi) and generates its Kotlin, Swift and
# Python sources in library mode, plus the relay binary the binding tests run against.
#
#   scripts/build-bindings.sh            # debug build
#   PROFILE=release scripts/build-bindings.sh
#
# Output (target/bindings/):
#   kotlin/uniffi/sotto_ffi/sotto_ffi.kt        load with JNA (-Djna.library.path=target/bindings/lib)
#   swift/sotto_ffi.swift, sotto_ffiFFI.h, sotto_ffiFFI.modulemap
#   python/sotto_ffi.py + libsotto_ffi.so       the module loads the library from its own folder
#   lib/libsotto_ffi.so                         for the JVM (the static library stays in target/<profile>/)
# Generation reads the UNIFFI_META_* symbols, so it runs on the unstripped library; the same
# sources work with a stripped build of the same code.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
profile="${PROFILE:-debug}"
out="${BINDINGS_OUT:-$root/target/bindings}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

flags=(--locked -j"${CARGO_BUILD_JOBS:-2}")
[ "$profile" = release ] && flags+=(--release)
cargo build "${flags[@]}" -p sotto-ffi -p uniffi-bindgen -p sotto-server

dir="$target_dir/$profile"
case "$(uname -s)" in
    Darwin) lib="$dir/libsotto_ffi.dylib" ;;
    *) lib="$dir/libsotto_ffi.so" ;;
esac
[ -f "$lib" ] || { echo "missing $lib" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/lib" "$out/python" "$out/kotlin" "$out/swift"
cp "$lib" "$out/lib/"
for language in kotlin swift python; do
    # --no-format: ktlint/swift-format are not required (the generator only warns without them).
    "$dir/uniffi-bindgen" generate "$lib" --language "$language" --no-format --out-dir "$out/$language"
done
cp "$lib" "$out/python/"

for f in "$out/kotlin/uniffi/sotto_ffi/sotto_ffi.kt" "$out/swift/sotto_ffi.swift" \
    "$out/swift/sotto_ffiFFI.h" "$out/swift/sotto_ffiFFI.modulemap" "$out/python/sotto_ffi.py"; do
    [ -s "$f" ] || { echo "generation did not produce $f" >&2; exit 1; }
done
echo "bindings in $out: kotlin swift python (library: $lib)"
