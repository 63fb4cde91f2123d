#!/usr/bin/env bash
# Installs what the web package's build and tests need on a fresh machine. Idempotent.
# - the wasm32 target; wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in
#   Cargo.lock (the CLI and the crate must match); Debian's Chromium and ChromeDriver; the npm
#   packages of the browser end-to-end test (tests/web, from its lockfile).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi

want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
    echo "== installing wasm-bindgen-cli $want (found: ${have:-none})"
    cargo install wasm-bindgen-cli --version "=$want" --force
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "== installing chromium and chromium-driver"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if [ ! -d tests/web/node_modules/playwright-core ]; then
    (cd tests/web && npm ci --no-audit --no-fund --loglevel=error)
fi
