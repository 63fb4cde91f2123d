#!/usr/bin/env bash
# The web package's tests: wasm-bindgen tests of the core and store under Node and in headless
# Chromium, then the chat page end to end (two Chromium profiles and the sotto CLI against the
# real relay). Needs target/debug/sotto-server and target/debug/sotto (scripts/test.sh builds them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-web.sh
bash scripts/build-web.sh

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
echo "== web: wasm tests in Node"
cargo test --locked -p sotto-web --target wasm32-unknown-unknown --test node
echo "== web: wasm tests in headless Chromium"
cargo test --locked -p sotto-web --target wasm32-unknown-unknown --test browser

if [ ! -x target/debug/sotto-server ] || [ ! -x target/debug/sotto ]; then
    cargo build --locked -p sotto-server -p sotto-cli
fi
echo "== web: chat page end to end (Playwright, Chromium)"
node tests/web/e2e.mjs
