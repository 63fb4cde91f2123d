// JVM smoke test of the generated Kotlin binding against the real relay: two accounts, one
// message sent and received through the listener, one typed error. Exits non-zero on failure.
import java.util.UUID
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import uniffi.sotto_ffi.ClientConfig
import uniffi.sotto_ffi.Event
import uniffi.sotto_ffi.IdentityPolicy
import uniffi.sotto_ffi.Listener
import uniffi.sotto_ffi.LoginException
import uniffi.sotto_ffi.SendException
import uniffi.sotto_ffi.Sotto
import uniffi.sotto_ffi.StoreKey

class Queue : Listener {
    val events = LinkedBlockingQueue<Event>()
    override fun onEvent(event: Event) {
        events.add(event)
    }
}

fun main(args: Array<String>) = runBlocking {
    val url = args.getOrNull(0) ?: error("usage: MainKt <relay url>")
    val config = ClientConfig(url, null, StoreKey.InsecureTestPassphrase("correct horse"), IdentityPolicy.REQUIRE_APPROVAL)
    val sotto = Sotto(config)
    suspend fun account(): uniffi.sotto_ffi.Client {
        val name = "k" + UUID.randomUUID().toString().replace("-", "").take(12)
        sotto.register(name, "$name@example.com", "$name-password")
        return sotto.login(name, "$name-password")
    }
    val alice = account()
    val bob = account()
    val inbox = Queue()
    val sub = bob.subscribe(inbox)

    val sent = withTimeout(20_000) { alice.sendText(bob.userId(), "hello from the JVM") }
    check(sent.id.length == 32) { "unexpected $sent" }
    val deadline = System.nanoTime() + 20_000_000_000L
    var received: Event.MessageReceived? = null
    while (received == null && System.nanoTime() < deadline) {
        val e = inbox.events.poll(500, TimeUnit.MILLISECONDS) ?: continue
        if (e is Event.MessageReceived && e.message.id == sent.id) received = e
    }
    checkNotNull(received) { "bob did not receive the message" }
    check(received.message.text == "hello from the JVM")
    check(received.message.senderUserId == alice.userId())

    try {
        alice.sendText(bob.userId(), "x".repeat(1001))
        error("a 1001-character text was accepted")
    } catch (e: SendException.TextTooLong) {
        check(e.length == 1001uL && e.max == 1000uL) { "unexpected $e" }
    }
    try {
        sotto.login("nobody-" + UUID.randomUUID(), "wrong password")
        error("login with a wrong password worked")
    } catch (e: LoginException.InvalidCredentials) {
    }
    sub.cancel()
    alice.shutdown()
    bob.shutdown()
    println("JVM smoke: sent and received one message through the relay, typed errors ok")
}
