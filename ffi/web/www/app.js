// Sotto's web chat: the whole client (keys, sessions, groups, the encrypted IndexedDB store) runs
// in this page through the `sotto-web` package; the relay that serves the page sees ciphertext only.
import init, { SottoClient } from "./pkg/sotto_web.js";

const $ = (id) => document.getElementById(id);
const SERVER = location.origin;
const PROFILE_KEY = "sotto.profile"; // { name, userId, username } of the store in IndexedDB: no secret

let client = null;
let profile = null;
let current = null;                 // ConversationId being shown
let shown = new Map();              // message id -> { message, li }
let typingNow = new Map();          // conversation key -> Map(userId -> timer)
let presence = new Map();           // userId -> "online" | "away" | "offline"
let identityPending = new Set();    // users whose new identity waits for approval
let invitations = [];
let authMode = "login";

const key = (c) => `${c.kind}:${c.id}`;
const same = (a, b) => a && b && a.kind === b.kind && a.id === b.id;

// ---- contact names (local only: the relay knows user ids, never who they are to you) ----
function names() {
  try { return JSON.parse(localStorage.getItem(`sotto.names.${profile.userId}`) || "{}"); } catch { return {}; }
}
function setName(userId, name) {
  const n = names(); n[userId] = name;
  localStorage.setItem(`sotto.names.${profile.userId}`, JSON.stringify(n));
}
function userName(userId) {
  if (userId === profile.userId) return "You";
  return names()[userId] || `user ${userId.slice(0, 8)}`;
}
function conversationName(c) {
  if (c.kind === "group") return client.group(c.id)?.name || "Group";
  return userName(c.id);
}
function colorFor(s) {
  let h = 0; for (const ch of s) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${h}, 55%, 50%)`;
}
function avatar(label, seed, status) {
  const a = document.createElement("div");
  a.className = "avatar";
  a.style.background = colorFor(seed);
  a.textContent = (label.replace(/^user /, "")[0] || "?").toUpperCase();
  if (status !== undefined) {
    const d = document.createElement("span");
    d.className = `dot ${status}`;
    d.dataset.presence = seed;
    a.append(d);
  }
  return a;
}
const time = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

// ---- sign in, create account, unlock ----
function showAuth() {
  $("app").hidden = true;
  $("auth").hidden = false;
  const saved = JSON.parse(localStorage.getItem(PROFILE_KEY) || "null");
  $("unlock-form").hidden = !saved;
  $("auth-form").hidden = !!saved;
  $("auth-tabs").hidden = !!saved;
  if (saved) { $("unlock-name").textContent = saved.username; $("unlock-passphrase").focus(); }
}
function busy(on, message = "") {
  $("auth-busy").hidden = !on;
  $("auth-error").textContent = message;
  for (const b of document.querySelectorAll("#auth button")) b.disabled = on;
}
function describe(e) {
  return e && e.code ? `${e.message}` : String(e);
}

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    authMode = tab.dataset.tab;
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    $("email-row").hidden = authMode !== "register";
    $("username-row").hidden = authMode === "link";
    $("password-row").hidden = authMode === "link";
    $("auth-username").required = authMode !== "link";
    $("auth-password").required = authMode !== "link";
    $("link-help").hidden = authMode !== "link";
    $("auth-submit").textContent = { register: "Create account", login: "Sign in", link: "Show link code" }[authMode];
  });
}

$("auth-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const username = $("auth-username").value.trim();
  const password = $("auth-password").value;
  const passphrase = $("auth-passphrase").value;
  busy(true);
  if (authMode === "link") { await linkThisBrowser(passphrase); return; }
  try {
    if (authMode === "register") {
      const email = $("auth-email").value.trim() || `${username}@example.invalid`;
      await SottoClient.register(SERVER, username, email, password);
    }
    const name = `sotto-${username}`;
    // A store left by an earlier device of this name in this browser is replaced.
    await SottoClient.deleteStore(name);
    client = await SottoClient.login({ serverUrl: SERVER, username, password, store: { name, passphrase } });
    profile = { name, username, userId: client.userId };
    localStorage.setItem(PROFILE_KEY, JSON.stringify(profile));
    busy(false);
    startApp();
  } catch (e) {
    busy(false, describe(e));
  }
});

async function linkThisBrowser(passphrase) {
  try {
    const pending = await SottoClient.beginLink(SERVER);
    $("link-code").textContent = pending.code;
    $("link-code-box").hidden = false;
    $("auth-busy").hidden = true;
    const name = `sotto-linked-${Date.now()}`;
    client = await SottoClient.finishLink(pending, { store: { name, passphrase } }, 600);
    profile = { name, username: `device ${client.deviceId}`, userId: client.userId };
    localStorage.setItem(PROFILE_KEY, JSON.stringify(profile));
    $("link-code-box").hidden = true;
    busy(false);
    startApp();
  } catch (e) {
    $("link-code-box").hidden = true;
    busy(false, describe(e));
  }
}

$("unlock-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const saved = JSON.parse(localStorage.getItem(PROFILE_KEY));
  busy(true);
  try {
    client = await SottoClient.open({ store: { name: saved.name, passphrase: $("unlock-passphrase").value } });
    profile = saved;
    busy(false);
    startApp();
  } catch (e) {
    busy(false, e.code === "wrongPassphrase" ? "Wrong passphrase." : describe(e));
  }
});

$("forget-profile").addEventListener("click", () => {
  localStorage.removeItem(PROFILE_KEY);
  showAuth();
});

// ---- the app ----
function startApp() {
  $("auth").hidden = true;
  $("app").hidden = false;
  $("me-name").textContent = profile.username;
  $("me-id").textContent = profile.userId;
  $("me-id").dataset.userId = profile.userId;
  $("me-avatar").replaceWith(Object.assign(avatar(profile.username, profile.userId), { id: "me-avatar" }));
  client.onEvent(onEvent);
  renderConversations();
  refreshInvitations();
  refreshPresence();
  setInterval(refreshPresence, 10000);
  setInterval(refreshInvitations, 15000);
}

function onEvent(e) {
  switch (e.type) {
    case "message": {
      const c = e.message.conversation;
      if (same(c, current)) {
        appendMessage(e.message);
        if (!e.message.outgoing && document.visibilityState === "visible") client.markRead(current).catch(() => {});
      }
      clearTyping(c, e.message.senderUserId);
      renderConversations();
      break;
    }
    case "messageSent": setStatus(e.messageId, "sent"); break;
    case "sendFailed": setStatus(e.messageId, "failed"); break;
    case "delivered": setStatus(e.messageId, "delivered"); break;
    case "read": if (e.userId !== profile.userId) for (const id of e.messageIds) setStatus(id, "read"); break;
    case "conversationUpdated": renderConversations(); break;
    case "typing": setTyping(e.conversation, e.userId, e.typing); break;
    case "presence": presence.set(e.userId, e.status); paintPresence(); break;
    case "groupChanged": renderConversations(); if (current && current.kind === "group" && current.id === e.groupId) renderHeader(); break;
    case "groupInvitation": refreshInvitations(); break;
    case "identityChanged":
      if (e.needsApproval) identityPending.add(e.userId);
      if (current && current.kind === "direct" && current.id === e.userId) renderHeader();
      break;
    case "connection": {
      const label = { connecting: "Connecting…", connected: "Connected", caughtUp: "Connected · up to date",
        disconnected: "Offline · reconnecting…", closed: "Signed out" }[e.state];
      $("connection").textContent = label;
      $("connection").classList.toggle("ok", e.state === "connected" || e.state === "caughtUp");
      break;
    }
    case "storeFailed": $("connection").textContent = `Local store failed: ${e.reason}`; break;
  }
}

function renderConversations() {
  const list = $("conversations");
  const items = client.conversations();
  const known = new Set(items.map((c) => key(c.id)));
  // Groups and chats started here show up before their first message.
  for (const g of client.groups()) {
    if (g.active && !known.has(`group:${g.groupId}`)) items.push({ id: { kind: "group", id: g.groupId }, name: g.name, lastMessage: null, unreadCount: 0 });
  }
  if (current && !items.some((c) => same(c.id, current))) items.unshift({ id: current, name: null, lastMessage: null, unreadCount: 0 });
  list.replaceChildren(...items.map((c) => {
    const li = document.createElement("li");
    li.className = "conversation" + (same(c.id, current) ? " active" : "");
    li.dataset.conversation = key(c.id);
    const name = conversationName(c.id);
    li.append(avatar(name, c.id.id, c.id.kind === "direct" ? (presence.get(c.id.id) || "offline") : undefined));
    const text = document.createElement("div");
    text.className = "conv-text";
    const top = document.createElement("div");
    top.className = "conv-top";
    const n = document.createElement("span"); n.className = "conv-name"; n.textContent = name;
    const t = document.createElement("span"); t.className = "conv-time"; t.textContent = c.lastMessage ? time(c.lastMessage.sentAt) : "";
    top.append(n, t);
    const bottom = document.createElement("div");
    bottom.className = "conv-top";
    const last = document.createElement("span");
    last.className = "conv-last";
    const typers = typingNow.get(key(c.id));
    if (typers && typers.size) { last.classList.add("typing"); last.textContent = "typing…"; }
    else if (c.lastMessage) last.textContent = (c.lastMessage.senderUserId === profile.userId ? "You: " : "") + c.lastMessage.text;
    bottom.append(last);
    if (c.unreadCount > 0) {
      const b = document.createElement("span"); b.className = "badge"; b.dataset.unread = String(c.unreadCount); b.textContent = c.unreadCount;
      bottom.append(b);
    }
    text.append(top, bottom);
    li.append(text);
    li.addEventListener("click", () => openConversation(c.id));
    return li;
  }));
}

async function openConversation(c) {
  current = c;
  shown = new Map();
  $("empty").hidden = true;
  $("chat-header").hidden = false;
  $("composer").hidden = false;
  $("messages").replaceChildren();
  renderHeader();
  renderConversations();
  try {
    const page = await client.history(c, null, 100);
    if (!same(c, current)) return;
    for (const m of page.messages.reverse()) appendMessage(m);
    await client.markRead(c);
  } catch (e) {
    console.error(e);
  }
  renderConversations();
  $("text").focus();
}

function renderHeader() {
  const c = current;
  $("chat-name").textContent = conversationName(c);
  $("chat-dot").hidden = c.kind !== "direct";
  $("chat-safety").hidden = c.kind !== "direct";
  $("chat-members").hidden = c.kind !== "group";
  $("identity-banner").hidden = !(c.kind === "direct" && identityPending.has(c.id));
  if (c.kind === "group") {
    const g = client.group(c.id);
    $("chat-sub").textContent = g ? g.members.map((m) => userName(m.userId)).join(", ") : "";
  } else {
    $("chat-sub").textContent = c.id;
    $("chat-dot").className = `dot ${presence.get(c.id) || "offline"}`;
    $("chat-dot").dataset.presence = c.id;
  }
}

function appendMessage(m) {
  if (shown.has(m.id)) return;
  const li = document.createElement("li");
  li.className = `msg ${m.outgoing ? "mine" : "theirs"}`;
  li.dataset.messageId = m.id;
  if (!m.outgoing && current.kind === "group") {
    const s = document.createElement("div"); s.className = "sender"; s.textContent = userName(m.senderUserId);
    li.append(s);
  }
  if (m.attachment) li.append(attachmentView(m.attachment));
  if (m.text) {
    const body = document.createElement("div"); body.className = "body"; body.textContent = m.text;
    li.append(body);
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  const t = document.createElement("span"); t.textContent = time(m.sentAt);
  meta.append(t);
  if (m.outgoing) { const tick = document.createElement("span"); tick.className = "tick"; meta.append(tick); }
  li.append(meta);
  $("messages").append(li);
  shown.set(m.id, { message: m, li });
  if (m.outgoing) setStatus(m.id, m.status);
  li.scrollIntoView({ block: "end" });
}

const RANK = { pending: 0, sent: 1, delivered: 2, read: 3, failed: 4 };
function setStatus(id, status) {
  const s = shown.get(id);
  if (!s || !s.message.outgoing) return;
  const before = s.li.dataset.status;
  if (before && status !== "failed" && RANK[status] < RANK[before]) return;
  s.li.dataset.status = status;
  s.li.classList.toggle("failed", status === "failed");
  const tick = s.li.querySelector(".tick");
  tick.textContent = { pending: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓", failed: "!" }[status] || "";
  tick.classList.toggle("read", status === "read");
  tick.title = status;
}

function attachmentView(a) {
  const box = document.createElement("div");
  box.className = "file";
  const label = document.createElement("span");
  label.textContent = `${a.fileName} (${Math.max(1, Math.round(a.size / 1024))} KB)`;
  const get = document.createElement("button");
  get.type = "button";
  get.textContent = a.contentType.startsWith("image/") ? "Show" : "Download";
  get.addEventListener("click", async () => {
    get.disabled = true;
    try {
      const bytes = await client.downloadAttachment(a);
      const url = URL.createObjectURL(new Blob([bytes], { type: a.contentType || "application/octet-stream" }));
      if (a.contentType.startsWith("image/")) {
        const img = document.createElement("img"); img.src = url; img.alt = a.fileName;
        box.after(img);
        get.remove();
      } else {
        const link = document.createElement("a"); link.href = url; link.download = a.fileName; link.click();
        get.disabled = false;
      }
    } catch (e) {
      get.textContent = describe(e);
    }
  });
  box.append(label, get);
  return box;
}

// ---- typing ----
function setTyping(c, userId, typing) {
  const k = key(c);
  let m = typingNow.get(k);
  if (!m) { m = new Map(); typingNow.set(k, m); }
  clearTimeout(m.get(userId));
  if (typing) m.set(userId, setTimeout(() => setTyping(c, userId, false), 6000));
  else m.delete(userId);
  paintTyping();
  renderConversations();
}
function clearTyping(c, userId) {
  const m = typingNow.get(key(c));
  if (m && m.has(userId)) { clearTimeout(m.get(userId)); m.delete(userId); paintTyping(); }
}
function paintTyping() {
  const m = current && typingNow.get(key(current));
  const who = m ? [...m.keys()].map(userName) : [];
  $("typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
}

let typingSent = false, typingTimer = null;
$("text").addEventListener("input", () => {
  const el = $("text");
  el.style.height = "auto";
  el.style.height = `${Math.min(el.scrollHeight, 140)}px`;
  if (!current) return;
  if (!typingSent && el.value) { typingSent = true; client.setTyping(current, true).catch(() => {}); }
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, 3000);
});
function stopTyping() {
  if (typingSent && current) client.setTyping(current, false).catch(() => {});
  typingSent = false;
}
$("text").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("composer").requestSubmit(); }
});

// ---- sending ----
$("composer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text || !current) return;
  $("text").value = "";
  $("text").style.height = "auto";
  clearTimeout(typingTimer);
  typingSent = false;
  const c = current;
  try {
    if (c.kind === "group") await client.sendGroupText(c.id, text);
    else await client.sendText(c.id, text);
  } catch (e) {
    notice(`Not sent: ${describe(e)}`);
  }
  if (same(c, current)) await reloadCurrent();
  renderConversations();
});

$("file-input").addEventListener("change", async () => {
  const file = $("file-input").files[0];
  $("file-input").value = "";
  if (!file || !current) return;
  const c = current;
  try {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const to = c.kind === "group" ? { groupId: c.id } : { userId: c.id };
    await client.sendAttachment(to, bytes, file.name, file.type || "application/octet-stream");
  } catch (e) {
    notice(`Not sent: ${describe(e)}`);
  }
  if (same(c, current)) await reloadCurrent();
  renderConversations();
});

async function reloadCurrent() {
  const page = await client.history(current, null, 100);
  for (const m of page.messages.reverse()) {
    if (shown.has(m.id)) setStatus(m.id, m.status); else appendMessage(m);
  }
}

// ---- presence ----
$("me-status").addEventListener("change", () => client.setAway($("me-status").value === "away").catch(() => {}));
async function refreshPresence() {
  const users = new Set(client.conversations().filter((c) => c.id.kind === "direct").map((c) => c.id.id));
  if (current && current.kind === "direct") users.add(current.id);
  await Promise.all([...users].map(async (u) => {
    try { presence.set(u, (await client.presence(u)).status); } catch { /* unknown or unreachable */ }
  }));
  paintPresence();
}
function paintPresence() {
  for (const d of document.querySelectorAll("[data-presence]")) d.className = `dot ${presence.get(d.dataset.presence) || "offline"}`;
}

// ---- invitations ----
async function refreshInvitations() {
  try { invitations = await client.groupInvitations(); } catch { return; }
  $("invitations").replaceChildren(...invitations.map((i) => {
    const li = document.createElement("li");
    li.className = "invitation";
    li.dataset.groupId = i.groupId;
    const t = document.createElement("span");
    t.textContent = `${userName(i.fromUserId)} invited you to a group`;
    const b = document.createElement("button");
    b.className = "primary"; b.textContent = "Join";
    b.addEventListener("click", async () => {
      try { await client.acceptGroupInvitation(i.groupId); li.remove(); } catch (e) { notice(describe(e)); }
    });
    li.append(t, b);
    return li;
  }));
}

// ---- dialogs ----
function dialog(title, build) {
  return new Promise((resolve) => {
    $("dialog-title").textContent = title;
    $("dialog-error").textContent = "";
    $("dialog-body").replaceChildren(...build());
    const d = $("dialog");
    d.onclose = () => resolve(d.returnValue === "ok");
    d.returnValue = "";
    d.showModal();
  });
}
function field(label, id, attrs = {}) {
  const l = document.createElement("label");
  l.textContent = label;
  const i = Object.assign(document.createElement("input"), { id }, attrs);
  l.append(i);
  return l;
}
function notice(text) {
  dialog("Sotto", () => [Object.assign(document.createElement("p"), { textContent: text })]);
}

$("me-id").addEventListener("click", () => navigator.clipboard?.writeText(profile.userId).catch(() => {}));

// A username (looked up on the relay) or a user id, as the person typed it.
const USER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
async function resolveUser(text) {
  if (USER_ID.test(text)) return { userId: text.toLowerCase(), username: null };
  return client.lookupUser(text);
}

$("new-chat").addEventListener("click", async () => {
  const ok = await dialog("New chat", () => [
    field("Their username or user id", "d-user", { required: true, placeholder: "e.g. bob", autocomplete: "off" }),
    field("Name (only you see it)", "d-name", { placeholder: "Bob" }),
  ]);
  if (!ok) return;
  const who = $("d-user").value.trim();
  if (!who) return;
  let found;
  try { found = await resolveUser(who); } catch (e) { notice(`No chat started: ${describe(e)}`); return; }
  const name = $("d-name").value.trim() || (names()[found.userId] ? "" : found.username || "");
  if (name) setName(found.userId, name);
  openConversation({ kind: "direct", id: found.userId });
});

$("new-group").addEventListener("click", async () => {
  const ok = await dialog("New group", () => [
    field("Group name", "d-gname", { required: true, maxLength: 100 }),
    field("Members' usernames or user ids (comma separated)", "d-members", { required: true, autocomplete: "off" }),
  ]);
  if (!ok) return;
  const name = $("d-gname").value.trim();
  const entered = $("d-members").value.split(/[\s,]+/).filter(Boolean);
  try {
    const members = [];
    for (const who of entered) {
      const found = await resolveUser(who);
      if (found.username && !names()[found.userId]) setName(found.userId, found.username);
      members.push(found.userId);
    }
    const groupId = await client.createGroup(members, name);
    openConversation({ kind: "group", id: groupId });
  } catch (e) {
    notice(`The group was not created: ${describe(e)}`);
  }
});

$("chat-safety").addEventListener("click", async () => {
  if (!current || current.kind !== "direct") return;
  let s;
  try { s = client.safetyNumber(current.id); } catch (e) { notice("No safety number yet: exchange a message first."); return; }
  const grid = document.createElement("div");
  grid.className = "safety";
  grid.id = "safety-number";
  for (const block of s.display.split(/\s+/)) grid.append(Object.assign(document.createElement("span"), { textContent: block }));
  const p = Object.assign(document.createElement("p"), {
    className: "muted small",
    textContent: s.verified ? "You marked this contact verified." : "Compare these numbers with your contact in person or on a call. If they match, mark them verified.",
  });
  const ok = await dialog(`Safety number with ${userName(current.id)}`, () => [grid, p]);
  if (ok && !s.verified) await client.setVerified(current.id, true).catch(() => {});
});

$("identity-approve").addEventListener("click", async () => {
  if (!current) return;
  try { await client.approveIdentity(current.id); identityPending.delete(current.id); renderHeader(); } catch (e) { notice(describe(e)); }
});

$("devices").addEventListener("click", async () => {
  let list = [];
  try { list = await client.devices(); } catch (e) { notice(describe(e)); return; }
  const ul = document.createElement("ul");
  ul.className = "devices";
  for (const d of list) {
    const li = document.createElement("li");
    li.append(Object.assign(document.createElement("span"), {
      textContent: `Device ${d.deviceId}${d.thisDevice ? " (this browser)" : ""} · since ${new Date(d.createdAt).toLocaleDateString()}`,
    }));
    ul.append(li);
  }
  const ok = await dialog("Devices", () => [ul,
    field("Link a device: the code it shows", "d-link", { autocomplete: "off", placeholder: "address:key" })]);
  const code = ok && $("d-link").value.trim();
  if (!code) return;
  try { await client.linkDevice(code); notice("Linked. The new device is getting ready."); } catch (e) { notice(`Not linked: ${describe(e)}`); }
});

$("chat-members").addEventListener("click", () => {
  const g = current && client.group(current.id);
  if (!g) return;
  const ul = document.createElement("ul");
  ul.className = "members";
  for (const m of g.members) {
    const li = document.createElement("li");
    li.append(Object.assign(document.createElement("span"), { textContent: userName(m.userId) }),
      Object.assign(document.createElement("span"), { className: "muted small", textContent: m.admin ? "admin" : "" }));
    ul.append(li);
  }
  dialog(g.name, () => [ul]);
});

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && current && client) client.markRead(current).then(renderConversations).catch(() => {});
});

await init();
showAuth();
