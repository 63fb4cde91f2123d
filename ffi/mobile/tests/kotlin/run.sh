#!/usr/bin/env bash
# Compiles the generated Kotlin binding with Main.kt and runs it on the JVM against the real relay.
# Needs scripts/setup-bindings.sh (kotlinc, JNA, coroutines) and scripts/build-bindings.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
# shellcheck source=/dev/null
source "$root/target/bindings-env.sh"
out="${BINDINGS_OUT:-$root/target/bindings}"
server="${SOTTO_SERVER_BIN:-$root/target/debug/sotto-server}"
work="$(mktemp -d -t sotto-jvm-XXXXXX)"
relay_pid=""
cleanup() {
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

cp_compile="$JNA_JAR:$KOTLINX_COROUTINES_JAR"
jar="$root/target/bindings/jvm-smoke.jar"
"$KOTLINC" -jvm-target 17 -nowarn "$out/kotlin/uniffi/sotto_ffi/sotto_ffi.kt" \
    "$root/ffi/mobile/tests/kotlin/Main.kt" -cp "$cp_compile" -d "$jar"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
printf '[rate-limits]\nmessages = "off"\nlogin = "off"\nregistration = "off"\nbundle-fetch = "off"\nprovisioning = "off"\n' >"$work/relay.toml"
RUST_LOG=warn "$server" --config "$work/relay.toml" --listen "127.0.0.1:$port" \
    --database-url "sqlite://$work/relay.sqlite" --blob-dir "$work/blobs" \
    --argon2-memory-kib 64 --argon2-iterations 1 >"$work/relay.log" 2>&1 &
relay_pid=$!
for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$relay_pid" 2>/dev/null || { cat "$work/relay.log"; exit 1; }
    sleep 0.1
done

java -Djna.library.path="$out/lib" -cp "$jar:$cp_compile:$KOTLIN_STDLIB_JAR" MainKt "http://127.0.0.1:$port"
