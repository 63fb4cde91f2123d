#!/usr/bin/env bash
# Sotto's test suite: every crate, the relay on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export SOTTO_TEST_POSTGRES_URL="${SOTTO_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# `cargo test --workspace` builds every binary before running any test: the SDK's end-to-end
# tests (tests/) start the `sotto-server` and `sotto` binaries it leaves in target/debug.
cargo test --workspace --locked

# The mobile binding: build it, generate Kotlin/Swift/Python, and test it from Python and the JVM
# against the real relay binary.
bash scripts/setup-bindings.sh
bash scripts/build-bindings.sh
python3 ffi/mobile/tests/python/test_sotto_ffi.py
bash ffi/mobile/tests/kotlin/run.sh

# The web package: wasm tests under Node and in headless Chromium, and the chat page end to end.
bash scripts/test-web.sh
