"""Binding overhead, one run: N 1:1 round trips (alice sends, bob's listener gets the message)
through the Python binding, then the same loop through the Rust API (examples/overhead.rs,
built by `cargo build -p sotto-ffi --example overhead`) against the same relay.

Run: python3 ffi/mobile/tests/python/overhead.py [rounds]
"""

import asyncio
import os
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from test_sotto_ffi import ROOT, Collector, Relay, config, is_message, s  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 50


async def python_rounds(url: str) -> float:
    sotto = s.Sotto(config(url))

    async def account(prefix):
        name = f"{prefix}{uuid.uuid4().hex[:10]}"
        await sotto.register(name, f"{name}@example.com", f"{name}-password")
        return await sotto.login(name, f"{name}-password")

    alice, bob = await account("pa"), await account("pb")
    inbox = Collector(asyncio.get_running_loop())
    sub = bob.subscribe(inbox)
    await alice.send_text(bob.user_id(), "warm-up")
    await inbox.wait("warm-up", is_message("warm-up"))
    start = time.perf_counter()
    for i in range(ROUNDS):
        text = f"round {i}"
        await alice.send_text(bob.user_id(), text)
        await inbox.wait(text, is_message(text))
        inbox.events.clear()
    took = time.perf_counter() - start
    sub.cancel()
    await alice.shutdown()
    await bob.shutdown()
    return took


def main():
    relay = Relay()
    try:
        took = asyncio.run(python_rounds(relay.url))
        print(f"python: {ROUNDS} round trips in {took:.3f} s, {took * 1000 / ROUNDS:.2f} ms each")
        exe = os.path.join(ROOT, "target", "debug", "examples", "overhead")
        out = subprocess.run([exe, relay.url, str(ROUNDS)], capture_output=True, text=True, timeout=300)
        print(out.stdout.strip() or out.stderr.strip())
        if out.returncode != 0:
            sys.exit(f"the Rust loop failed (exit {out.returncode})")
    finally:
        relay.stop()


if __name__ == "__main__":
    main()
