// The web chat page end to end: two headless Chromium profiles (alice, bob) and the `sotto` CLI
// (carol) against the real relay binary serving the page with --web-dir.
//
//   node tests/web/e2e.mjs          (after scripts/build-web.sh and `cargo build -p sotto-server -p sotto-cli`)
//
// Checks: 1:1 text both ways, a second browser linked as a new device, typing shown, delivered and read ticks, unread badge, an attachment
// downloaded and verified, a group of three (two pages + the CLI) chatting both ways, a page reload
// that keeps history (IndexedDB, unlocked with the passphrase), and the relay's database holding no
// plaintext. Screenshots go to target/web/screenshots/.
import { chromium } from "playwright-core";
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:net";
import { promisify } from "node:util";
import assert from "node:assert/strict";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const SERVER_BIN = process.env.SOTTO_SERVER_BIN || join(ROOT, "target/debug/sotto-server");
const CLI_BIN = process.env.SOTTO_CLI_BIN || join(ROOT, "target/debug/sotto");
const SITE = join(ROOT, "target/web/site");
const SHOTS = join(ROOT, "target/web/screenshots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const run = promisify(execFile);
const work = mkdtempSync(join(tmpdir(), "sotto-web-e2e-"));
mkdirSync(SHOTS, { recursive: true });

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => res(port)); });
    s.on("error", rej);
  });
}

async function startRelay() {
  const port = await freePort();
  const config = join(work, "relay.toml");
  writeFileSync(config, '[rate-limits]\nmessages = "off"\nlogin = "off"\nregistration = "off"\nbundle-fetch = "off"\nprovisioning = "off"\n');
  const db = join(work, "relay.sqlite");
  const log = join(work, "relay.log");
  const child = spawn(SERVER_BIN, [
    "--config", config, "--listen", `127.0.0.1:${port}`, "--database-url", `sqlite://${db}`,
    "--blob-dir", join(work, "blobs"), "--argon2-memory-kib", "64", "--argon2-iterations", "1",
    "--web-dir", SITE,
  ], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn" } });
  const out = [];
  child.stdout.on("data", (d) => out.push(d));
  child.stderr.on("data", (d) => out.push(d));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    try { const r = await fetch(`${url}/healthz`); if (r.ok) return { child, url, db, log: () => Buffer.concat(out).toString() }; } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`relay did not start: ${Buffer.concat(out)}`);
}

async function browser(name) {
  const dir = join(work, `chromium-${name}`);
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1100, height: 720 },
  });
  const page = context.pages()[0] || await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error" && !/Failed to load resource/.test(m.text())) errors.push(m.text()); });
  // Every failed HTTP answer, with what it was for (the console line above does not say).
  // A 409 on a send is the protocol's "your device list is stale" (the client refreshes and retries).
  page.on("response", async (r) => {
    const path = new URL(r.url()).pathname;
    if (r.status() >= 400 && !(r.status() === 409 && path === "/api/messages/send")) {
      errors.push(`${r.status()} ${r.request().method()} ${path} ${await r.text().catch(() => "")} request: ${(r.request().postData() || "").slice(0, 300)} auth: ${(await r.request().headerValue("authorization") || "").slice(0, 20)}`);
    }
  });
  return { context, page, errors, name };
}

const step = (text) => console.log(`-- ${text}`);
const shot = (p, name) => p.page.screenshot({ path: join(SHOTS, `${name}.png`) });

async function cli(profile, ...args) {
  const { stdout } = await run(CLI_BIN, ["--profile", join(work, profile), "--passphrase", "carol passphrase", ...args], { timeout: 60000 });
  return stdout;
}

async function register(p, url, username) {
  await p.page.goto(url);
  await p.page.click('.tab[data-tab="register"]');
  await p.page.fill("#auth-username", username);
  await p.page.fill("#auth-email", `${username}@example.org`);
  await p.page.fill("#auth-password", "correct horse battery");
  await p.page.fill("#auth-passphrase", `${username} store passphrase`);
  await p.page.click("#auth-submit");
  await p.page.waitForSelector("#app:not([hidden])", { timeout: 60000 });
  const id = await p.page.getAttribute("#me-id", "data-user-id");
  assert.match(id, /^[0-9a-f-]{36}$/);
  return id;
}

async function newChat(p, who, name) {
  await p.page.click("#new-chat");
  await p.page.fill("#d-user", who);
  await p.page.fill("#d-name", name);
  await p.page.click("#dialog-ok");
}

async function send(p, text) {
  await p.page.fill("#text", text);
  await p.page.press("#text", "Enter");
}

const theirs = (text) => `.msg.theirs .body:text-is(${JSON.stringify(text)})`;
const mine = (text) => `.msg.mine:has(.body:text-is(${JSON.stringify(text)}))`;

async function until(what, f, timeout = 30000) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try { const v = await f(); if (v) return v; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

const relay = await startRelay();
const alice = await browser("alice");
const bob = await browser("bob");
let laptop = null;
let failed = false;
try {
  step("the relay serves the page with a strict Content-Security-Policy");
  const index = await fetch(`${relay.url}/`);
  assert.equal(index.status, 200);
  assert.match(index.headers.get("content-security-policy"), /script-src 'self' 'wasm-unsafe-eval'/);
  assert.equal((await fetch(`${relay.url}/api/nothing-here`)).status, 404);

  step("alice and bob create accounts in their own browsers");
  const aliceId = await register(alice, relay.url, "alice_web");
  const bobId = await register(bob, relay.url, "bob_web");
  await shot(alice, "01-signed-in");

  step("alice writes to bob; bob sees it decrypted, with an unread badge");
  // By username (looked up on the relay, any case); the conversation is keyed by the user id.
  await newChat(alice, "BOB_WEB", "Bob");
  await send(alice, "Hi Bob, this is Alice in Chromium");
  await alice.page.waitForSelector(`${mine("Hi Bob, this is Alice in Chromium")}[data-status="sent"], ${mine("Hi Bob, this is Alice in Chromium")}[data-status="delivered"], ${mine("Hi Bob, this is Alice in Chromium")}[data-status="read"]`);
  await alice.page.waitForSelector(`.conversation[data-conversation="direct:${bobId}"]`);
  await bob.page.waitForSelector(`.conversation[data-conversation="direct:${aliceId}"] .badge`, { timeout: 30000 });
  await shot(bob, "02-unread-badge");
  await bob.page.click(`.conversation[data-conversation="direct:${aliceId}"]`);
  await bob.page.waitForSelector(theirs("Hi Bob, this is Alice in Chromium"));

  step("alice's message shows delivered, then read");
  await alice.page.waitForSelector(`${mine("Hi Bob, this is Alice in Chromium")}[data-status="read"]`, { timeout: 30000 });

  step("bob types: alice sees the typing indicator; bob replies");
  await bob.page.fill("#text", "Hi Al");
  await bob.page.type("#text", "ice");
  await until("typing indicator at alice", async () => (await alice.page.textContent("#typing")).includes("typing"));
  await shot(alice, "03-typing");
  await bob.page.fill("#text", "Hi Alice, Bob here. Loud and clear.");
  await bob.page.press("#text", "Enter");
  await alice.page.waitForSelector(theirs("Hi Alice, Bob here. Loud and clear."));
  await until("typing indicator cleared", async () => (await alice.page.textContent("#typing")) === "");

  step("presence: bob is online for alice");
  await until("bob's presence dot", async () => alice.page.$(`#chat-dot.online`), 30000);

  step("an attachment from alice to bob, downloaded and verified in bob's page");
  const png = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "base64");
  await alice.page.setInputFiles("#file-input", { name: "dot.png", mimeType: "image/png", buffer: png });
  await bob.page.waitForSelector('.msg.theirs .file:has-text("dot.png") button', { timeout: 30000 });
  await bob.page.click('.msg.theirs .file:has-text("dot.png") button');
  await bob.page.waitForSelector('.msg.theirs img[alt="dot.png"]', { timeout: 30000 });
  await shot(bob, "04-attachment");

  step("safety numbers match on both sides");
  await alice.page.click("#chat-safety");
  const aliceSafety = (await alice.page.textContent("#safety-number")).replace(/\s+/g, "");
  await alice.page.click("#dialog-ok");
  await bob.page.click("#chat-safety");
  const bobSafety = (await bob.page.textContent("#safety-number")).replace(/\s+/g, "");
  await bob.page.click("#dialog button[value=cancel]");
  assert.equal(aliceSafety.length, 60);
  assert.equal(aliceSafety, bobSafety);

  step("carol (the sotto CLI) and alice exchange 1:1 messages");
  const reg = await cli("carol", "register", "--server", relay.url, "--username", "carol_cli", "--email", "carol@example.org", "--password", "carol password 1");
  const carolId = /user id ([0-9a-f-]{36})/.exec(reg)[1];
  await cli("carol", "send", aliceId, "Hello Alice, from the command line");
  await alice.page.waitForSelector(`.conversation[data-conversation="direct:${carolId}"]`, { timeout: 30000 });
  await alice.page.click(`.conversation[data-conversation="direct:${carolId}"]`);
  await alice.page.waitForSelector(theirs("Hello Alice, from the command line"));
  await send(alice, "Hello Carol, from the browser");
  await alice.page.waitForSelector(`${mine("Hello Carol, from the browser")}[data-status]:not([data-status="pending"])`);
  await until("carol's CLI history shows alice's reply", async () =>
    (await cli("carol", "history", aliceId)).includes("Hello Carol, from the browser"));

  step("a group of three: alice (admin), bob (web) and carol (CLI)");
  await alice.page.click("#new-group");
  await alice.page.fill("#d-gname", "Web and CLI");
  await alice.page.fill("#d-members", `bob_web, ${carolId}`);
  await alice.page.click("#dialog-ok");
  await alice.page.waitForSelector('#chat-name:text-is("Web and CLI")');
  const groupId = await until("the group conversation", async () => {
    const k = await alice.page.getAttribute(".conversation.active", "data-conversation");
    return k && k.startsWith("group:") ? k.slice(6) : null;
  });
  await send(alice, "Welcome to the group");
  await bob.page.waitForSelector(`.conversation[data-conversation="group:${groupId}"]`, { timeout: 30000 });
  await bob.page.click(`.conversation[data-conversation="group:${groupId}"]`);
  await bob.page.waitForSelector(theirs("Welcome to the group"));
  await send(bob, "Bob in the group");
  await alice.page.waitForSelector(theirs("Bob in the group"));
  await until("carol's CLI reads the web group messages", async () => {
    const h = await cli("carol", "groups", "history", groupId);
    return h.includes("Welcome to the group") && h.includes("Bob in the group");
  });
  await cli("carol", "groups", "send", groupId, "Carol from the CLI in the group");
  await alice.page.waitForSelector(theirs("Carol from the CLI in the group"), { timeout: 30000 });
  await bob.page.waitForSelector(theirs("Carol from the CLI in the group"), { timeout: 30000 });
  await shot(alice, "05-group");
  await shot(bob, "06-group-bob");

  step("bob links a second browser as a new device; alice's next message reaches both");
  laptop = await browser("bob-laptop");
  await laptop.page.goto(relay.url);
  await laptop.page.click('.tab[data-tab="link"]');
  await laptop.page.fill("#auth-passphrase", "bob laptop passphrase");
  await laptop.page.click("#auth-submit");
  await laptop.page.waitForSelector("#link-code-box:not([hidden])", { timeout: 30000 });
  const code = (await laptop.page.textContent("#link-code")).trim();
  await bob.page.click("#devices");
  await bob.page.waitForSelector("#d-link");
  await bob.page.fill("#d-link", code);
  await bob.page.click("#dialog-ok");
  await laptop.page.waitForSelector("#app:not([hidden])", { timeout: 90000 });
  assert.equal(await laptop.page.getAttribute("#me-id", "data-user-id"), bobId);
  await bob.page.waitForSelector("#dialog[open]");
  await bob.page.click("#dialog-ok");
  await alice.page.click(`.conversation[data-conversation="direct:${bobId}"]`);
  await send(alice, "For both of your devices, Bob");
  await bob.page.click(`.conversation[data-conversation="direct:${aliceId}"]`);
  await bob.page.waitForSelector(theirs("For both of your devices, Bob"), { timeout: 30000 });
  await laptop.page.waitForSelector(`.conversation[data-conversation="direct:${aliceId}"]`, { timeout: 30000 });
  await laptop.page.click(`.conversation[data-conversation="direct:${aliceId}"]`);
  await laptop.page.waitForSelector(theirs("For both of your devices, Bob"));
  await shot(laptop, "07-linked-device");

  step("alice reloads the page: unlocks her store, and the history is still there");
  await alice.page.reload();
  await alice.page.waitForSelector("#unlock-form:not([hidden])");
  await alice.page.fill("#unlock-passphrase", "wrong passphrase");
  await alice.page.click("#unlock-form button[type=submit]");
  await until("wrong passphrase refused", async () => (await alice.page.textContent("#auth-error")).includes("Wrong passphrase"), 60000);
  await alice.page.fill("#unlock-passphrase", "alice_web store passphrase");
  await alice.page.click("#unlock-form button[type=submit]");
  await alice.page.waitForSelector("#app:not([hidden])", { timeout: 60000 });
  await alice.page.click(`.conversation[data-conversation="direct:${bobId}"]`);
  await alice.page.waitForSelector(mine("Hi Bob, this is Alice in Chromium"));
  await alice.page.waitForSelector(theirs("Hi Alice, Bob here. Loud and clear."));
  await alice.page.click(`.conversation[data-conversation="group:${groupId}"]`);
  await alice.page.waitForSelector(theirs("Carol from the CLI in the group"));
  step("after the reload the session still works both ways");
  await alice.page.click(`.conversation[data-conversation="direct:${bobId}"]`);
  await send(bob, "Still there after your reload?");
  await alice.page.waitForSelector(theirs("Still there after your reload?"), { timeout: 30000 });
  await send(alice, "Yes, and my history too");
  await bob.page.waitForSelector(theirs("Yes, and my history too"), { timeout: 30000 });
  await shot(alice, "08-after-reload");

  step("the relay's database holds no plaintext");
  const dbBytes = Buffer.concat(readdirSync(work).filter((f) => f.startsWith("relay.sqlite")).map((f) => readFileSync(join(work, f))));
  for (const text of ["Hi Bob, this is Alice", "Loud and clear", "Welcome to the group", "Web and CLI", "dot.png", "Carol from the CLI"]) {
    assert.equal(dbBytes.includes(Buffer.from(text)), false, `the relay stored "${text}" in the clear`);
  }

  const pageErrors = [...alice.errors, ...bob.errors, ...laptop.errors].filter((e) => !/favicon/.test(e));
  assert.deepEqual(pageErrors, [], "the pages logged errors");
  console.log("== web e2e ok");
} catch (e) {
  failed = true;
  console.error(e);
  for (const p of [alice, bob, laptop].filter(Boolean)) {
    await shot(p, `failure-${p.name}`).catch(() => {});
    console.error(`${p.name} page errors:`, p.errors);
  }
  console.error("relay log:\n" + relay.log());
} finally {
  await alice.context.close().catch(() => {});
  await bob.context.close().catch(() => {});
  if (laptop) await laptop.context.close().catch(() => {});
  relay.child.kill("SIGKILL");
  if (process.env.SOTTO_KEEP_E2E) console.error(`kept ${work}`); else rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
