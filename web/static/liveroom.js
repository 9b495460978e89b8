// liveroom.js — the browser client of a liveroom gateway (PROTOCOL.md §4). An ES module, no
// build step: `import { LiveroomClient } from "/static/liveroom.js"`.
//
// What it keeps for you:
// - the resume cursor: `since=<epoch>:<id>` of the last HISTORY event received (an ack's `id`
//   is never a cursor), so a reconnect replays exactly what was missed;
// - reconnects with exponential backoff and full jitter, and no reconnect where the server
//   said not to (1008, 1009, 4401 token expired, 4403 access ended);
// - ops with a `ref` and a promise for the reply; ops sent while the socket is down wait for
//   the next connection, and unanswered ones are resent with the SAME ref when it opens (the
//   server answers a resend of a ref with the first answer, never a second effect);
// - one small event API: `client.on("danmaku", (ev) => ...)`, `"*"` for every event, and
//   `"status"` for the connection's state.
//
// Documented in docs/web.md.

const FINAL_CLOSES = new Map([
  [1008, "policy"],
  [1009, "too_big"],
  [4401, "token_expired"],
  [4403, "access_ended"],
]);
const STATE_EVENTS = new Set(["likes", "online", "sale.stock"]);
const REPLIES = new Set(["ack", "error"]);

/** An `error` reply, or a request that could not be answered. */
export class LiveroomError extends Error {
  constructor(code, message, ref = null) {
    super(message || code);
    this.name = "LiveroomError";
    this.code = code;
    this.ref = ref;
  }
}

/** True for events that are part of room history (they carry the resume cursor). */
export function isHistory(ev) {
  return typeof ev.id === "string" && !REPLIES.has(ev.type) && !STATE_EVENTS.has(ev.type);
}

/** Where a page finds the gateway and media (`GET /api/config`), fetched once per page. */
let configPromise = null;
export function fetchConfig(base = "") {
  if (!configPromise) {
    configPromise = fetch(base + "/api/config").then((r) => {
      if (!r.ok) throw new LiveroomError("unavailable", "GET /api/config answered " + r.status);
      return r.json();
    });
    configPromise.catch(() => { configPromise = null; });
  }
  return configPromise;
}

export class LiveroomClient {
  /**
   * @param {object} o
   * @param {string} o.room      the room id
   * @param {string} o.token     a JWT (PROTOCOL.md §1)
   * @param {string} [o.wsUrl]   e.g. "ws://host:8081"; default: from /api/config
   * @param {boolean} [o.resume] resume with `since` after a drop (default true)
   * @param {number} [o.backoffMs]     first reconnect delay (default 500)
   * @param {number} [o.maxBackoffMs]  longest reconnect delay (default 15000)
   * @param {number} [o.timeoutMs]     how long a request waits for its reply (default 10000)
   * @param {number} [o.maxQueued]     ops kept while disconnected (default 200)
   */
  constructor(o) {
    this.room = o.room;
    this.token = o.token;
    this.wsUrl = o.wsUrl || null;
    this.resume = o.resume !== false;
    this.backoffMs = o.backoffMs ?? 500;
    this.maxBackoffMs = o.maxBackoffMs ?? 15000;
    this.timeoutMs = o.timeoutMs ?? 10000;
    this.maxQueued = o.maxQueued ?? 200;
    this.epoch = null;
    this.lastId = null;
    this.state = "idle"; // idle | connecting | open | reconnecting | ended
    this.welcome = null;
    this.attempt = 0;
    this.reconnects = 0;
    this._ws = null;
    this._handlers = new Map();
    this._pending = new Map(); // ref -> {op, resolve, reject, timer, sent}
    this._queue = []; // ops without a reply, waiting for a connection
    this._refs = 0;
    this._timer = null;
    this._stopped = false;
  }

  /** Subscribe to an event type ("danmaku", "welcome", "*", "status", ...); returns an unsubscribe. */
  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this._handlers.get(type).delete(fn);
  }

  /** Open the connection (and keep it open until `close()` or a final close code). */
  async connect() {
    this._stopped = false;
    if (!this.wsUrl) this.wsUrl = (await fetchConfig()).ws_url;
    this._open();
    return this;
  }

  /** Close for good: no reconnect; pending requests reject with `closed`. */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    if (this._ws) this._ws.close(1000, "bye");
    this._end("closed", "closed by the page");
  }

  /** The `since` cursor a reconnect would send, or null. */
  get cursor() {
    return this.epoch && this.lastId ? `${this.epoch}:${this.lastId}` : null;
  }

  /** Send an op that has a reply; resolves with the `ack`, rejects with a LiveroomError. */
  request(op, { timeoutMs = this.timeoutMs } = {}) {
    const ref = op.ref || `r${Date.now().toString(36)}${(++this._refs).toString(36)}`;
    const message = { ...op, ref };
    if (this.state === "ended") return Promise.reject(new LiveroomError("closed", "the connection has ended", ref));
    const earlier = this._pending.get(ref);
    if (earlier) return earlier.promise; // the same ref twice: one answer for both
    let entry;
    const promise = new Promise((resolve, reject) => {
      entry = { message, resolve, reject, sent: false };
    });
    entry.promise = promise;
    entry.timer = setTimeout(() => {
      this._pending.delete(ref);
      entry.reject(new LiveroomError("timeout", `no reply within ${timeoutMs} ms; resend with the same ref`, ref));
    }, timeoutMs);
    this._pending.set(ref, entry);
    if (this._isOpen()) {
      this._ws.send(JSON.stringify(message));
      entry.sent = true;
    }
    return promise;
  }

  /** Send an op without a reply (likes); queued while disconnected, bounded. */
  send(op) {
    if (this._isOpen()) this._ws.send(JSON.stringify(op));
    else if (this._queue.length < this.maxQueued) this._queue.push(op);
  }

  danmaku(text, ref) { return this.request({ op: "danmaku", text, ...(ref ? { ref } : {}) }); }
  like(count = 1) { this.send({ op: "like", count: Math.max(1, Math.min(100, count | 0)) }); }
  buy(sale, qty = 1, ref) { return this.request({ op: "buy", sale, qty, ...(ref ? { ref } : {}) }); }
  enter(lottery, ref) { return this.request({ op: "enter", lottery, ...(ref ? { ref } : {}) }); }

  // -- internals ------------------------------------------------------------------------------

  _isOpen() { return this._ws !== null && this._ws.readyState === 1 && this.welcome !== null; }

  _emit(type, ev) {
    for (const key of [type, "*"]) {
      const fns = this._handlers.get(key);
      if (!fns) continue;
      for (const fn of fns) {
        try { fn(ev); } catch (err) { console.error("liveroom handler failed", err); }
      }
    }
  }

  _status(state, extra = {}) {
    this.state = state;
    this._emit("status", { type: "status", state, attempt: this.attempt, ...extra });
  }

  _open() {
    let url = `${this.wsUrl}/ws/rooms/${encodeURIComponent(this.room)}?token=${encodeURIComponent(this.token)}`;
    if (this.resume && this.cursor) url += `&since=${encodeURIComponent(this.cursor)}`;
    this.welcome = null;
    this._status(this.attempt === 0 && this.reconnects === 0 ? "connecting" : "reconnecting");
    const ws = new WebSocket(url, ["liveroom.v1.json"]);
    this._ws = ws;
    let opened = false;
    ws.onopen = () => { opened = true; };
    ws.onmessage = (m) => {
      let events;
      try { events = JSON.parse(m.data); } catch { return; }
      if (!Array.isArray(events)) return;
      for (const ev of events) this._receive(ev);
    };
    ws.onclose = (e) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this.welcome = null;
      for (const entry of this._pending.values()) entry.sent = false;
      if (this._stopped) return;
      const final = FINAL_CLOSES.get(e.code);
      if (final) { this._end(final, e.reason, e.code); return; }
      this._retry(e.code, e.reason, opened);
    };
  }

  _receive(ev) {
    if (ev.type === "welcome") {
      this.epoch = ev.epoch;
      if (!ev.recovered) this.lastId = ev.last_id;
      this.welcome = ev;
      this.attempt = 0;
      this._status("open", { recovered: ev.recovered });
      this._emit("welcome", ev);
      this._flush();
      return;
    }
    if (isHistory(ev)) this.lastId = ev.id; // history only: an ack's `id` is no cursor
    if (REPLIES.has(ev.type) && ev.ref) {
      const entry = this._pending.get(ev.ref);
      if (entry) {
        this._pending.delete(ev.ref);
        clearTimeout(entry.timer);
        if (ev.type === "ack") entry.resolve(ev);
        else entry.reject(new LiveroomError(ev.code, ev.message, ev.ref));
      }
    }
    this._emit(ev.type, ev);
  }

  _flush() {
    for (const entry of this._pending.values()) {
      if (!entry.sent) { this._ws.send(JSON.stringify(entry.message)); entry.sent = true; }
    }
    const queued = this._queue.splice(0);
    for (const op of queued) this._ws.send(JSON.stringify(op));
  }

  _retry(code, reason, opened) {
    if (opened) this.reconnects += 1;
    this.attempt += 1;
    // Full jitter: a random wait up to the (doubling, capped) backoff, so a restarted gateway
    // is not met by every viewer in the same millisecond.
    const ceiling = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** Math.min(this.attempt - 1, 10));
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this._status("reconnecting", { code, reason, delayMs: delay });
    this._timer = setTimeout(() => { if (!this._stopped) this._open(); }, delay);
  }

  _end(why, reason, code = null) {
    this._status("ended", { why, reason, code });
    this.state = "ended";
    for (const [ref, entry] of this._pending) {
      clearTimeout(entry.timer);
      entry.reject(new LiveroomError(why, reason || why, ref));
    }
    this._pending.clear();
    this._queue = [];
  }
}

/**
 * Play a room over WHEP (PROTOCOL.md §6) into a <video>: video and, when the room has it,
 * audio. Returns {pc, stop(), location}; throws a LiveroomError with the server's code.
 */
export async function playWhep(video, { room, token, whepUrl, audio = true, iceWaitMs = 3000 }) {
  if (!whepUrl) whepUrl = (await fetchConfig()).whep_url;
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  if (audio) pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    video.srcObject = stream;
    video.play().catch(() => {});
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === "complete") return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
    setTimeout(done, iceWaitMs);
  });
  let res;
  try {
    res = await fetch(whepUrl.replace("{room}", encodeURIComponent(room)), {
      method: "POST",
      headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + token },
      body: pc.localDescription.sdp,
    });
  } catch (err) {
    pc.close(); // a page that retries must not pile up peer connections
    throw new LiveroomError("unavailable", "the media server is unreachable: " + err.message);
  }
  if (res.status !== 201) {
    pc.close();
    const body = await res.json().catch(() => ({}));
    throw new LiveroomError(body.error || "http_" + res.status, body.message || `WHEP answered ${res.status}`);
  }
  const location = res.headers.get("Location");
  const base = new URL(whepUrl.replace("{room}", "x")).origin;
  try {
    await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  } catch (err) {
    pc.close();
    if (location) fetch(base + location, { method: "DELETE" }).catch(() => {});
    throw new LiveroomError("bad_answer", "the WHEP answer could not be applied: " + err.message);
  }
  return {
    pc,
    location,
    stream,
    stop() {
      pc.close();
      video.srcObject = null;
      if (location) fetch(base + location, { method: "DELETE", headers: { Authorization: "Bearer " + token } }).catch(() => {});
    },
  };
}

/** The API, with errors as LiveroomError (the §3 JSON body's `error` and `message`). */
export async function api(method, path, { token, body } = {}) {
  const headers = { Authorization: "Bearer " + token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new LiveroomError("unavailable", "the server is unreachable: " + err.message);
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    throw new LiveroomError((data && data.error) || "http_" + res.status, (data && data.message) || `${method} ${path} answered ${res.status}`);
  }
  return data;
}

/**
 * Check a drawn lottery's proof (PROTOCOL.md §5) with WebCrypto, as `liveroom verify-lottery`
 * does: sha256(seed) == commit; the entrants sorted, unique, `entrants_count` of them and
 * hashing to `entrants_sha256` (where published); the winners recomputed. Returns
 * {ok, reasons[], expected, ranked} — `ranked` is every entrant with its HMAC, smallest first.
 */
export async function verifyLottery(record) {
  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  const bytes = (h) => new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16)));
  const reasons = [];
  if (!record.seed) return { ok: false, reasons: ["not drawn yet"], expected: [], ranked: [] };
  if (!/^(?:[0-9a-fA-F]{2})+$/.test(record.seed)) return { ok: false, reasons: ["the seed is not hex"], expected: [], ranked: [] };
  const entrants = Array.isArray(record.entrants) ? record.entrants : [];
  const winners = Array.isArray(record.winners) ? record.winners : [];
  const seed = bytes(record.seed);
  const commit = hex(await crypto.subtle.digest("SHA-256", seed));
  if (commit !== String(record.commit || "").toLowerCase()) reasons.push(`sha256(seed) is ${commit}, not the published commit ${record.commit}`);
  for (let i = 1; i < entrants.length; i++) {
    if (entrants[i - 1] >= entrants[i]) {
      reasons.push(`entrant ${entrants[i]} is listed ${entrants[i - 1] === entrants[i] ? "twice" : "out of order"}`);
      break;
    }
  }
  if (typeof record.entrants_count === "number" && record.entrants_count !== entrants.length) {
    reasons.push(`${entrants.length} entrants listed but entrants_count says ${record.entrants_count}`);
  }
  const enc = new TextEncoder();
  if (record.entrants_sha256) {
    const digest = hex(await crypto.subtle.digest("SHA-256", enc.encode(entrants.join("\n"))));
    if (digest !== record.entrants_sha256) reasons.push("the entrants are not the list that was drawn (their sha256 differs from entrants_sha256)");
  }
  const key = await crypto.subtle.importKey("raw", seed, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const scored = [];
  for (const user of entrants) {
    scored.push([hex(await crypto.subtle.sign("HMAC", key, enc.encode(user))), user]);
  }
  scored.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const expected = scored.slice(0, record.winners_count ?? winners.length).map((x) => x[1]);
  const strangers = winners.filter((w) => !entrants.includes(w));
  if (strangers.length) reasons.push(`winner ${strangers[0]} is not an entrant`);
  else if (JSON.stringify([...expected].sort()) !== JSON.stringify([...winners].sort())) {
    reasons.push(`the winners recomputed from the entrants are ${expected.join(", ") || "nobody"}`);
  }
  return { ok: reasons.length === 0, reasons, expected, ranked: scored.map(([hmac, user]) => ({ user, hmac })) };
}
