#!/usr/bin/env bash
# Installs and starts everything Sotto's tests need on a fresh machine. Idempotent.
set -euo pipefail

# The crypto and wire crates must build for browsers.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi

# The relay's suite runs against a real PostgreSQL server (127.0.0.1:5432, trust auth).
pg_url_host=127.0.0.1
if ! pg_isready -q -h "$pg_url_host" -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
    fi
    for _ in $(seq 1 30); do
        pg_isready -q -h "$pg_url_host" -p 5432 2>/dev/null && break
        sleep 1
    done
fi
pg_isready -h "$pg_url_host" -p 5432 || { echo "PostgreSQL is not reachable at $pg_url_host:5432" >&2; exit 1; }

# The multi-process relay tests also run over NATS (127.0.0.1:4222), as operators may.
nats_up() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }
if ! nats_up; then
    if [ -x /usr/sbin/nats-server ]; then
        mkdir -p /var/lib/nats-server /var/log
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
            -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
    else
        echo "nats-server is not installed; installing it from Debian's packages" >&2
        apt-get update -q >/dev/null && apt-get install -y -q nats-server >/dev/null
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
            -a 127.0.0.1 -p 4222 -l /var/log/nats-server.log || true
    fi
    for _ in $(seq 1 30); do
        nats_up && break
        sleep 1
    done
fi
nats_up || { echo "NATS is not reachable at 127.0.0.1:4222" >&2; exit 1; }
