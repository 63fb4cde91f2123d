#!/usr/bin/env bash
# Sotto's test suite: every crate, the relay on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export SOTTO_TEST_POSTGRES_URL="${SOTTO_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
cargo test --workspace --locked
