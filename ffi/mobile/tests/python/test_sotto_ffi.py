"""The generated Python binding of sotto-ffi against the real relay binary.

Run: python3 ffi/mobile/tests/python/test_sotto_ffi.py   (after scripts/build-bindings.sh)
Environment: SOTTO_BINDINGS_PY (default target/bindings/python), SOTTO_SERVER_BIN (default
target/debug/sotto-server). Exits non-zero when a test fails.
"""

import asyncio
import gc
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
sys.path.insert(0, os.environ.get("SOTTO_BINDINGS_PY", os.path.join(ROOT, "target", "bindings", "python")))

import sotto_ffi as s  # noqa: E402  (generated; libsotto_ffi.so sits beside it)

SERVER_BIN = os.environ.get("SOTTO_SERVER_BIN", os.path.join(ROOT, "target", "debug", "sotto-server"))
RELAY_CONFIG = """[rate-limits]
messages = "off"
login = "off"
registration = "off"
bundle-fetch = "off"
provisioning = "off"
"""
WAIT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Relay:
    """The real relay binary on a temp SQLite file and a free loopback port."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="sotto-ffi-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = os.path.join(self.dir.name, "relay.toml")
        with open(config, "w") as f:
            f.write(RELAY_CONFIG)
        self.log = open(os.path.join(self.dir.name, "relay.log"), "wb")
        self.proc = subprocess.Popen(
            [SERVER_BIN, "--config", config, "--listen", f"127.0.0.1:{self.port}",
             "--database-url", f"sqlite://{os.path.join(self.dir.name, 'relay.sqlite')}",
             "--blob-dir", os.path.join(self.dir.name, "blobs"),
             "--argon2-memory-kib", "64", "--argon2-iterations", "1", "--sqlite-synchronous", "normal"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"relay did not start: {self.read_log()}")
                time.sleep(0.05)

    def read_log(self) -> str:
        with open(os.path.join(self.dir.name, "relay.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
        self.dir.cleanup()


def config(url: str, **kw) -> s.ClientConfig:
    return s.ClientConfig(
        server_url=url,
        store_path=kw.get("store_path"),
        store_key=kw.get("store_key", s.StoreKey.INSECURE_TEST_PASSPHRASE(passphrase="correct horse")),
        identity_policy=s.IdentityPolicy.REQUIRE_APPROVAL,
    )


class Collector(s.Listener):
    """Hands every event to the asyncio loop; never blocks the Rust thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.events: list = []
        self.threads: set[int] = set()
        self.changed = asyncio.Event()

    def on_event(self, event):
        self.threads.add(threading.get_ident())
        self.loop.call_soon_threadsafe(self._add, event)

    def _add(self, event):
        self.events.append(event)
        self.changed.set()

    async def wait(self, what: str, pred, timeout: float = WAIT):
        deadline = self.loop.time() + timeout
        while True:
            for e in self.events:
                if pred(e):
                    return e
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; events: {self.events!r}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


def is_message(text):
    return lambda e: e.is_MESSAGE_RECEIVED() and e.message.text == text


class RelayTest(unittest.IsolatedAsyncioTestCase):
    relay: Relay

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay()

    @classmethod
    def tearDownClass(cls):
        cls.relay.stop()

    async def user(self, name=None):
        name = name or f"u{uuid.uuid4().hex[:12]}"
        sotto = s.Sotto(config(self.relay.url))
        user_id = await sotto.register(name, f"{name}@example.com", f"{name}-password")
        client = await sotto.login(name, f"{name}-password")
        self.assertEqual(client.user_id(), user_id)
        self.addAsyncCleanup(client.shutdown)
        listener = Collector(asyncio.get_running_loop())
        sub = client.subscribe(listener)
        self.addCleanup(sub.cancel)
        return name, client, listener


class MessagingTest(RelayTest):
    async def test_two_clients_exchange_messages_and_receipts(self):
        _, alice, alice_ev = await self.user()
        _, bob, bob_ev = await self.user()
        sent = await asyncio.wait_for(alice.send_text(bob.user_id(), "hello bob"), WAIT)
        self.assertIsInstance(sent, s.SentMessage)
        self.assertEqual(len(sent.id), 32)
        got = await bob_ev.wait("bob receives", is_message("hello bob"))
        self.assertEqual(got.message.sender_user_id, alice.user_id())
        self.assertFalse(got.message.outgoing)
        self.assertEqual(got.message.status, s.MessageStatus.RECEIVED)
        self.assertEqual(got.message.conversation, s.ConversationId.DIRECT(user_id=alice.user_id()))
        await alice_ev.wait("delivered receipt", lambda e: e.is_DELIVERED() and e.message_id == sent.id
                            and e.user_id == bob.user_id())

        convs = bob.conversations()
        self.assertEqual(len(convs), 1)
        self.assertEqual(convs[0].unread_count, 1)
        self.assertEqual(convs[0].last_message.text, "hello bob")
        await bob.mark_read(s.ConversationId.DIRECT(user_id=alice.user_id()))
        self.assertEqual(bob.conversations()[0].unread_count, 0)
        await alice_ev.wait("read receipt", lambda e: e.is_READ() and sent.id in e.message_ids
                            and e.user_id == bob.user_id())

        reply = await asyncio.wait_for(bob.send_text(alice.user_id(), "hi alice ✓"), WAIT)
        got = await alice_ev.wait("alice receives", is_message("hi alice ✓"))
        self.assertEqual(got.message.id, reply.id)

        page = await alice.history(s.ConversationId.DIRECT(user_id=bob.user_id()), None, 10)
        self.assertEqual([m.text for m in page.messages], ["hi alice ✓", "hello bob"])
        self.assertTrue(page.messages[1].outgoing)
        self.assertIsNone(page.next_cursor)
        first = await alice.history(s.ConversationId.DIRECT(user_id=bob.user_id()), None, 1)
        self.assertEqual(len(first.messages), 1)
        older = await alice.history(s.ConversationId.DIRECT(user_id=bob.user_id()), first.next_cursor, 1)
        self.assertEqual(older.messages[0].text, "hello bob")

    async def test_typing_presence_and_devices(self):
        alice_name, alice, alice_ev = await self.user()
        bob_name, bob, bob_ev = await self.user()
        # People are found by username (any case); the relay answers with the registered spelling.
        found = await alice.lookup_user(bob_name.upper())
        self.assertEqual((found.user_id, found.username), (bob.user_id(), bob_name))
        self.assertEqual((await bob.user_profile(alice.user_id())).username, alice_name)
        with self.assertRaises(s.QueryError.Unknown):
            await alice.lookup_user("nobody_" + uuid.uuid4().hex[:8])
        with self.assertRaises(s.QueryError.Invalid):
            await alice.lookup_user("no")
        await alice.send_text(bob.user_id(), "session first")
        await bob_ev.wait("message", is_message("session first"))
        await bob.send_text(alice.user_id(), "and back")
        await alice_ev.wait("message", is_message("and back"))

        await bob.set_typing(alice.user_id(), True)
        typing = await alice_ev.wait("typing", lambda e: e.is_TYPING() and e.typing)
        self.assertEqual(typing.user_id, bob.user_id())

        p = await alice.presence(bob.user_id())
        self.assertEqual((p.user_id, p.status), (bob.user_id(), s.PresenceStatus.ONLINE))
        await bob.set_away(True)
        p = await alice.presence(bob.user_id())
        self.assertEqual(p.status, s.PresenceStatus.AWAY)

        devices = await alice.devices()
        self.assertEqual(len(devices), 1)
        self.assertTrue(devices[0].this_device)
        self.assertEqual(devices[0].device_id, alice.device_id())

        n = alice.safety_number(bob.user_id())
        self.assertEqual(n, bob.safety_number(alice.user_id()))
        self.assertFalse(n.verified)
        await alice.set_verified(bob.user_id(), True)
        self.assertTrue(alice.safety_number(bob.user_id()).verified)

    async def test_concurrent_sends(self):
        _, alice, _ = await self.user()
        _, bob, bob_ev = await self.user()
        texts = [f"m{i}" for i in range(10)]
        sent = await asyncio.wait_for(asyncio.gather(*(alice.send_text(bob.user_id(), t) for t in texts)), WAIT)
        self.assertEqual(len({m.id for m in sent}), 10)
        for t in texts:
            await bob_ev.wait(t, is_message(t))


def is_group_message(group_id, text):
    return lambda e: (e.is_MESSAGE_RECEIVED() and e.message.text == text
                      and e.message.conversation == s.ConversationId.GROUP(group_id=group_id))


class GroupTest(RelayTest):
    async def test_a_group_of_three_chats_and_a_removed_member_is_closed_out(self):
        _, alice, alice_ev = await self.user()
        _, bob, bob_ev = await self.user()
        _, carol, carol_ev = await self.user()
        # Bob and Carol wrote to Alice before, so her adds make them members at once.
        await asyncio.wait_for(bob.send_text(alice.user_id(), "hi from bob"), WAIT)
        await alice_ev.wait("bob's hello", is_message("hi from bob"))
        await asyncio.wait_for(carol.send_text(alice.user_id(), "hi from carol"), WAIT)
        await alice_ev.wait("carol's hello", is_message("hi from carol"))

        with self.assertRaises(s.GroupError.InvalidName):
            await alice.create_group([bob.user_id()], "")
        with self.assertRaises(s.GroupError.InvalidMembers):
            await alice.create_group([alice.user_id()], "x")
        group_id = await asyncio.wait_for(
            alice.create_group([bob.user_id(), carol.user_id()], "Choir"), WAIT)
        for client, ev in ((bob, bob_ev), (carol, carol_ev)):
            await ev.wait("the roster", lambda e, c=client: e.is_GROUP_CHANGED()
                          and c.group(group_id) is not None)
            g = client.group(group_id)
            self.assertEqual(g.name, "Choir")
            self.assertTrue(g.active)
            self.assertEqual(sorted((m.user_id, m.admin) for m in g.members),
                             sorted([(alice.user_id(), True), (bob.user_id(), False),
                                     (carol.user_id(), False)]))

        await asyncio.wait_for(alice.send_group_text(group_id, "rehearsal at 7"), WAIT)
        await bob_ev.wait("bob reads", is_group_message(group_id, "rehearsal at 7"))
        await carol_ev.wait("carol reads", is_group_message(group_id, "rehearsal at 7"))
        await asyncio.wait_for(bob.send_group_text(group_id, "see you there"), WAIT)
        await alice_ev.wait("alice reads", is_group_message(group_id, "see you there"))
        await bob.set_group_typing(group_id, True)
        await carol_ev.wait("bob typing in the group", lambda e: e.is_TYPING()
                            and e.conversation == s.ConversationId.GROUP(group_id=group_id)
                            and e.user_id == bob.user_id() and e.typing)
        await carol_ev.wait("carol reads bob", is_group_message(group_id, "see you there"))
        conv = [c for c in carol.conversations()
                if c.id == s.ConversationId.GROUP(group_id=group_id)][0]
        self.assertEqual(conv.unread_count, 2)

        with self.assertRaises(s.GroupError.NotAdmin):
            await bob.rename_group(group_id, "Mine")
        with self.assertRaises(s.GroupError.NotAdmin):
            await bob.remove_group_member(group_id, carol.user_id())
        await asyncio.wait_for(alice.remove_group_member(group_id, carol.user_id()), WAIT)
        await carol_ev.wait("carol removed", lambda e: e.is_GROUP_CHANGED()
                            and not carol.group(group_id).active)
        with self.assertRaises(s.SendError):
            await carol.send_group_text(group_id, "hello?")
        await bob_ev.wait("bob sees the removal", lambda e: e.is_GROUP_CHANGED()
                          and len(bob.group(group_id).members) == 2)
        await asyncio.wait_for(bob.send_group_text(group_id, "after carol"), WAIT)
        await alice_ev.wait("alice reads", is_group_message(group_id, "after carol"))
        await asyncio.sleep(0.5)
        self.assertFalse(any(is_group_message(group_id, "after carol")(e) for e in carol_ev.events))


class ErrorTest(RelayTest):
    async def test_login_errors(self):
        name, _, _ = await self.user()
        sotto = s.Sotto(config(self.relay.url))
        with self.assertRaises(s.LoginError.InvalidCredentials):
            await sotto.login(name, "wrong password")
        with self.assertRaises(s.LoginError.InvalidCredentials):
            await sotto.login(f"nobody{uuid.uuid4().hex[:8]}", "whatever-password")
        with self.assertRaises(s.LoginError.DeviceExists):
            await sotto.login(name, f"{name}-password")
        with self.assertRaises(s.RegisterError.UsernameTaken):
            await sotto.register(name, f"other-{name}@example.com", "another-password")
        with self.assertRaises(s.LoginError.NoAccount):
            await sotto.open()

    async def test_send_errors_change_nothing(self):
        _, alice, _ = await self.user()
        _, bob, _ = await self.user()
        with self.assertRaises(s.SendError.TextTooLong) as ctx:
            await alice.send_text(bob.user_id(), "x" * 1001)
        self.assertEqual((ctx.exception.length, ctx.exception.max), (1001, 1000))
        self.assertEqual(s.max_text_chars(), 1000)
        with self.assertRaises(s.SendError.EmptyText):
            await alice.send_text(bob.user_id(), "")
        with self.assertRaises(s.SendError.TextTooLong):
            await alice.queue_text(bob.user_id(), "é" * 1001)
        with self.assertRaises(s.SendError.UnknownUser):
            await asyncio.wait_for(alice.send_text(str(uuid.uuid4()), "anyone there?"), WAIT)
        with self.assertRaises(s.SendError.InvalidRecipient):
            await alice.send_text(alice.user_id(), "me")
        page = await alice.history(s.ConversationId.DIRECT(user_id=bob.user_id()), None, 10)
        self.assertEqual(page.messages, [])
        # Still works afterwards.
        await alice.send_text(bob.user_id(), "x" * 1000)

    async def test_relay_down(self):
        down = s.Sotto(config(f"http://127.0.0.1:{free_port()}"))
        with self.assertRaises(s.RegisterError.Unreachable):
            await asyncio.wait_for(down.register("someone", "someone@example.com", "a-password"), WAIT)
        with self.assertRaises(s.LoginError.Unreachable):
            await asyncio.wait_for(down.login("someone", "a-password"), WAIT)

    def test_config_errors(self):
        for url in ["", "relay.example", "ftp://x", "http://", "https://" + "a" * 5000]:
            with self.assertRaises(s.ConfigError.InvalidUrl, msg=url):
                s.Sotto(config(url))
        for key in [b"", b"\x00" * 31, b"\xff" * 33, b"\xff" * 100_000]:
            with self.assertRaises(s.ConfigError.InvalidStoreKey) as ctx:
                s.Sotto(config(self.relay.url, store_key=s.StoreKey.KEY(bytes=key)))
            self.assertEqual(ctx.exception.length, len(key))
        s.Sotto(config(self.relay.url, store_key=s.StoreKey.KEY(bytes=b"\xff" * 32)))
        with self.assertRaises(s.ConfigError.EmptyPassphrase):
            s.Sotto(config(self.relay.url, store_key=s.StoreKey.PASSPHRASE(passphrase="")))
        for path in ["", "a\0b", "p" * 5000]:
            with self.assertRaises(s.ConfigError.InvalidStorePath):
                s.Sotto(config(self.relay.url, store_path=path))


class DeviceAndAttachmentTest(RelayTest):
    async def test_link_a_second_device(self):
        _, alice, _ = await self.user()
        _, bob, bob_ev = await self.user()
        sotto = s.Sotto(config(self.relay.url))
        pending = await sotto.begin_link()
        self.assertIn(":", pending.code())
        linked, _ = await asyncio.wait_for(asyncio.gather(
            sotto.finish_link(pending, 30), alice.link_device(pending.code())), WAIT * 2)
        self.addAsyncCleanup(linked.shutdown)
        self.assertEqual(linked.user_id(), alice.user_id())
        self.assertNotEqual(linked.device_id(), alice.device_id())
        self.assertEqual(len(await alice.devices()), 2)
        with self.assertRaises(s.LoginError.LinkAlreadyUsed):
            await sotto.finish_link(pending, 1)
        with self.assertRaises(s.QueryError):
            await alice.link_device("not-a-code")
        # Bob's message reaches both of alice's devices.
        events = Collector(asyncio.get_running_loop())
        sub = linked.subscribe(events)
        self.addCleanup(sub.cancel)
        await bob.send_text(alice.user_id(), "to both devices")
        await events.wait("on the linked device", is_message("to both devices"))

    async def test_send_and_receive_an_attachment(self):
        _, alice, _ = await self.user()
        _, bob, bob_ev = await self.user()
        with tempfile.TemporaryDirectory(prefix="sotto-ffi-att-") as d:
            src = os.path.join(d, "photo.bin")
            data = os.urandom(300_000)
            with open(src, "wb") as f:
                f.write(data)
            sent = await asyncio.wait_for(alice.send_attachment(bob.user_id(), src, "image/jpeg"), WAIT)
            got = await bob_ev.wait("attachment", lambda e: e.is_MESSAGE_RECEIVED() and e.message.id == sent.id)
            att = got.message.attachment
            self.assertEqual((att.size, att.file_name, att.content_type), (len(data), "photo.bin", "image/jpeg"))
            self.assertNotIn(att.key, repr(att))
            dest = os.path.join(d, "out.bin")
            self.assertEqual(await bob.download_attachment(att, dest), len(data))
            with open(dest, "rb") as f:
                self.assertEqual(f.read(), data)
            # Typed errors: empty file, missing file, tampered key.
            empty = os.path.join(d, "empty")
            open(empty, "wb").close()
            with self.assertRaises(s.AttachmentError.Size):
                await alice.send_attachment(bob.user_id(), empty, "text/plain")
            with self.assertRaises(s.AttachmentError.File):
                await alice.send_attachment(bob.user_id(), os.path.join(d, "missing"), "text/plain")
            bad = s.Attachment(attachment_id=att.attachment_id, key="00" * 32, digest=att.digest,
                               size=att.size, file_name=att.file_name, content_type=att.content_type)
            with self.assertRaises(s.AttachmentError):
                await bob.download_attachment(bad, os.path.join(d, "bad.bin"))


class StoreTest(RelayTest):
    async def test_sqlite_store_reopens_with_the_right_key_only(self):
        _, bob, bob_ev = await self.user()
        with tempfile.TemporaryDirectory(prefix="sotto-ffi-store-") as d:
            path = os.path.join(d, "profile", "store.sqlite")
            key = s.StoreKey.KEY(bytes=bytes(range(32)))
            sotto = s.Sotto(config(self.relay.url, store_path=path, store_key=key))
            name = f"u{uuid.uuid4().hex[:12]}"
            user_id = await sotto.register(name, f"{name}@example.com", "pw-pw-pw-pw")
            alice = await sotto.login(name, "pw-pw-pw-pw")
            await alice.send_text(bob.user_id(), "persisted")
            await bob_ev.wait("persisted", is_message("persisted"))
            await alice.shutdown()
            del alice
            gc.collect()
            with self.assertRaises(s.LoginError.WrongStoreKey):
                await s.Sotto(config(self.relay.url, store_path=path,
                                     store_key=s.StoreKey.KEY(bytes=bytes(32)))).open()
            again = await sotto.open()
            self.addAsyncCleanup(again.shutdown)
            self.assertEqual(again.user_id(), user_id)
            page = await again.history(s.ConversationId.DIRECT(user_id=bob.user_id()), None, 10)
            self.assertEqual([m.text for m in page.messages], ["persisted"])


class ListenerTest(RelayTest):
    async def test_events_arrive_on_a_rust_thread_and_callbacks_may_reenter(self):
        _, alice, _ = await self.user()
        _, bob, bob_ev = await self.user()
        loop = asyncio.get_running_loop()
        seen = []

        class Reentrant(s.Listener):
            def on_event(self, event):
                # Calling back into Rust from inside the callback: sync methods, cancel.
                seen.append((threading.get_ident(), len(bob.conversations()), bob.user_id()))
                if event.is_MESSAGE_RECEIVED():
                    sub.cancel()
                    loop.call_soon_threadsafe(done.set)

        done = asyncio.Event()
        sub = bob.subscribe(Reentrant())
        await alice.send_text(bob.user_id(), "first")
        await asyncio.wait_for(done.wait(), WAIT)
        self.assertFalse(sub.is_active())
        count = len(seen)
        await alice.send_text(bob.user_id(), "second")
        await bob_ev.wait("second via the other listener", is_message("second"))
        self.assertEqual(len(seen), count, "a cancelled listener got events")
        self.assertNotIn(threading.get_ident(), {t for t, _, _ in seen} | bob_ev.threads)
        self.assertTrue(all(u == bob.user_id() for _, _, u in seen))

    async def test_dropping_the_subscription_cancels(self):
        _, alice, _ = await self.user()
        _, bob, bob_ev = await self.user()
        extra = Collector(asyncio.get_running_loop())
        sub = bob.subscribe(extra)
        await alice.send_text(bob.user_id(), "one")
        await extra.wait("one", is_message("one"))
        del sub
        gc.collect()
        await alice.send_text(bob.user_id(), "two")
        await bob_ev.wait("two", is_message("two"))
        await asyncio.sleep(0.2)
        self.assertFalse(any(is_message("two")(e) for e in extra.events))

    async def test_many_events_while_awaiting(self):
        _, alice, alice_ev = await self.user()
        _, bob, bob_ev = await self.user()
        # Both directions at once: callbacks from two pump threads while both loops await sends.
        await asyncio.wait_for(asyncio.gather(
            *(alice.send_text(bob.user_id(), f"a{i}") for i in range(15)),
            *(bob.send_text(alice.user_id(), f"b{i}") for i in range(15)),
        ), WAIT * 2)
        for i in range(15):
            await bob_ev.wait(f"a{i}", is_message(f"a{i}"))
            await alice_ev.wait(f"b{i}", is_message(f"b{i}"))

    async def test_subscribe_after_close_is_refused(self):
        sotto = s.Sotto(config(self.relay.url))
        name = f"u{uuid.uuid4().hex[:12]}"
        await sotto.register(name, f"{name}@example.com", "pw-pw-pw-pw")
        client = await sotto.login(name, "pw-pw-pw-pw")
        await client.shutdown()
        with self.assertRaises(s.SubscribeError.Closed):
            client.subscribe(Collector(asyncio.get_running_loop()))


HUGE = "x" * 1_000_000
HOSTILE = ["", " ", "\0", "../../etc/passwd", "%2e%2e/%00", "😀" * 2000, HUGE]
ANY_ERROR = (s.GroupError, s.AttachmentError, s.SendError, s.QueryError, s.IdentityError, s.RegisterError, s.LoginError, s.ConfigError)


class HostileArgumentsTest(RelayTest):
    async def test_every_export_with_hostile_arguments(self):
        _, alice, alice_ev = await self.user()
        _, bob, bob_ev = await self.user()
        sotto = s.Sotto(config(self.relay.url))
        outcomes = 0

        async def expect_error(coro_or_fn, *args):
            nonlocal outcomes
            try:
                r = coro_or_fn(*args)
                if asyncio.iscoroutine(r):
                    r = await asyncio.wait_for(r, WAIT)
            except ANY_ERROR:
                outcomes += 1
                return
            self.fail(f"{coro_or_fn.__name__}{tuple(a[:20] if isinstance(a, str) else a for a in args)} "
                      f"returned {r!r:.100}")

        queued = []
        for bad in HOSTILE:
            await expect_error(alice.send_text, bad, "hi")
            # Queuing reports a recipient the relay does not know later, as SendFailed.
            try:
                queued.append(await alice.queue_text(bad, "hi"))
            except s.SendError:
                outcomes += 1
            await expect_error(alice.set_typing, bad, True)
            await expect_error(alice.presence, bad)
            await expect_error(alice.lookup_user, bad)
            await expect_error(alice.user_profile, bad)
            await expect_error(alice.safety_number, bad)
            await expect_error(alice.set_verified, bad, True)
            await expect_error(alice.approve_identity, bad)
            await expect_error(sotto.login, bad, bad)
            await expect_error(sotto.register, bad, bad, bad)
            await expect_error(s.Sotto, config(bad))
            await expect_error(alice.link_device, bad)
            await expect_error(alice.send_group_text, bad, "hi")
            await expect_error(alice.leave_group, bad)
            await expect_error(alice.rename_group, bad, "x")
            await expect_error(alice.remove_group_member, bad, bad)
            await expect_error(alice.add_group_members, bad, [bad])
            await expect_error(alice.accept_group_invitation, bad)
            await expect_error(alice.create_group, [bad], "x")
            await expect_error(alice.set_group_role, bad, bad, True)
            await expect_error(alice.set_group_typing, bad, True)
            await expect_error(alice.send_group_attachment, bad, "/nonexistent-dir/x", "text/plain")
            self.assertIsNone(alice.group(bad))
            # The app names the file (a real path is read and sent, as asked): hostile names here
            # point into a directory that does not exist.
            await expect_error(alice.send_attachment, bob.user_id(), "/nonexistent-dir/" + bad, bad)
            await expect_error(alice.send_attachment, bad, "/nonexistent-dir/x", "text/plain")
            await expect_error(alice.download_attachment, s.Attachment(
                attachment_id=bad, key=bad, digest=bad, size=0, file_name=bad, content_type=bad), "/nonexistent/x")
            # Not errors by contract, but must not crash or change anything visible.
            await alice.mark_read(s.ConversationId.DIRECT(user_id=bad))
            await alice.mark_read(s.ConversationId.GROUP(group_id=bad))
            page = await alice.history(s.ConversationId.GROUP(group_id=bad), None, 5)
            self.assertEqual(page.messages, [])
        for text in ["", HUGE, "😀" * 1001]:
            await expect_error(alice.send_text, bob.user_id(), text)
        for limit in [0, 101, 2**32 - 1]:
            await expect_error(alice.history, s.ConversationId.DIRECT(user_id=bob.user_id()), None, limit)
        await expect_error(alice.history, s.ConversationId.DIRECT(user_id=bob.user_id()), 2**64 - 1, 0)
        for device in [0, alice.device_id() + 1000, 2**32 - 1]:
            await expect_error(alice.remove_device, device)
        # Unknown user ids of the right shape.
        await expect_error(alice.presence, str(uuid.uuid4()))
        await expect_error(alice.approve_identity, bob.user_id())
        # Strings Python cannot encode as UTF-8 never reach Rust.
        with self.assertRaises(UnicodeEncodeError):
            await alice.send_text(bob.user_id(), "\ud800")
        # Wrong types are refused by the generated checks, not by a crash.
        with self.assertRaises((TypeError, ValueError)):
            await alice.remove_device(-1)
        with self.assertRaises((TypeError, ValueError)):
            await alice.history(s.ConversationId.DIRECT(user_id=bob.user_id()), None, 2**32)
        self.assertGreaterEqual(outcomes, len(HOSTILE) * 15 + 12)
        for message_id in queued:
            await alice_ev.wait(f"failure of {message_id}", lambda e: e.is_SEND_FAILED() and e.message_id == message_id)
        page = await alice.history(s.ConversationId.DIRECT(user_id=bob.user_id()), None, 10)
        self.assertEqual(page.messages, [])
        self.assertEqual(len(await alice.devices()), 1)
        self.assertTrue(s.sotto_version())
        # Both clients still work.
        await alice.send_text(bob.user_id(), "still fine")
        await bob_ev.wait("still fine", is_message("still fine"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
