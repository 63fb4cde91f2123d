#!/usr/bin/env bash
# Sotto's test suite: every crate, the relay on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export SOTTO_TEST_POSTGRES_URL="${SOTTO_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# The SDK's end-to-end tests (tests/) start the real relay binary: build it first.
cargo build --locked -p sotto-server -p sotto-cli
cargo test --workspace --locked
