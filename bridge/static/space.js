// Chorus space page: listen (WebCodecs Opus decode → Web Audio), speak (getUserMedia →
// AudioWorklet → WebCodecs Opus encode), hands, reactions. What the page shows (stage,
// audience, captions, floating reactions, sharing) is space-view.js's.
// Wire format: docs/protocol.md (1 byte 0x11, uint32 seq, uint32 timestamp, Opus packet;
// while listen-only the page asks for bundles: 0x12, a count, then length-prefixed frames).
// The connection comes back by itself (backoff with jitter) unless the space ended or the
// link was refused; the banner at the top says which. After a lost connection, "no such
// space" is tried again for a while: a bridge that restarted knows the space again once
// the bot has opened it there.
// With edges (docs/architecture.md), a listener's page moves its connection to the edge
// the origin names first in its hello; a listener given the mic moves back to the origin
// to speak; a page whose edge is lost goes on to the next edge, then to the origin.
"use strict";

const spaceId = decodeURIComponent(location.pathname.split("/")[2] || "");
const query = new URLSearchParams(location.search);
// The personal token comes in the link (?token=…). It leaves the address bar at once, so
// it is not bookmarked, shared in a screenshot or kept in the history, and is kept for
// this tab only (sessionStorage): a reload of the tab still works, a new tab needs the link.
// Inside a Matrix client (widget=1) the page signs in afresh each time it is shown, and
// keeps nothing: a token kept from an earlier showing may have run out.
const TOKEN_KEY = `chorus.token.${spaceId}`;
const inWidget = query.get("widget") === "1";
let token = query.get("token") || (inWidget ? null : storedToken());
if (query.has("token")) {
  const clean = new URL(location.href);
  clean.searchParams.delete("token");
  history.replaceState(null, "", clean);
}
keepToken(token);
function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch (e) { return null; }  // storage refused
}
function keepToken(t) {
  try {
    if (t && !inWidget) sessionStorage.setItem(TOKEN_KEY, t);
  } catch (e) { /* storage refused: the token lives in this page only */ }
}
const $ = (id) => document.getElementById(id);
const state = {
  ws: null, me: null, role: "listener", maySpeak: false, roles: {}, levels: {},
  participants: [], participantsSeen: false, anonymous: 0, hand: false, streamUrl: null, helloed: false,
  // names and avatars of the people on stage, and the host, room link and tip jar (1.4)
  people: {}, info: { host: null, room_url: null, tips: [] },
  // the answer to this person's hand: null | "raised" | "approved" | "declined"
  handState: null,
  // live captions: the line of each utterance; the on/off choice is the listener's own
  captionsOn: false, showCaptions: localStorage.getItem("chorus.captions") !== "off",
  captions: {},
  ctx: null, decoder: null, playAt: 0, listening: false, bundleMs: 20,
  encoder: null, micStream: null, micNode: null, seq: 0,
  stats: { framesIn: 0, bundlesIn: 0, framesDecoded: 0, framesSent: 0, reactions: 0, errors: [] },
  // connection: "connecting" | "connected" | "waiting" (to reconnect) | "ended" | "refused"
  conn: "connecting", closed: null, reconnects: 0, retryAttempt: 0, retryTimer: null,
  retryAt: 0, countdownTimer: null, connectedAt: 0, lost: false, noSpaceSince: 0,
  expiresAt: null, renewTimer: null, renewals: 0,
  // where the connection goes: null is this page's own bridge, else another's http(s) base
  base: null, onEdge: false, origin: null, edges: [], moves: 0,
  failedEdges: new Map(),  // edge -> when it was lost: passed over for a while
};
const FAILED_EDGE_MS = 60000;
window.chorus = state; // for tests and debugging
const view = ChorusView;
view.init(state);
view.setUpSharing(spaceId);
// Not live: the page of a scheduled, ended or cancelled space (space-listing.js); back to
// the live page when the host starts it.
ChorusListing.init({ spaceId, token: () => token, state, view, setConn, goLive });
function goLive() {
  document.body.dataset.page = "live";
  for (const id of ["before", "after", "cancelled"]) $(id).hidden = true;
  state.reconnects++;
  connect();
}

// The any-player link: the bridge's own live.ogg, or, for a public space the bridge feeds
// to an Icecast relay (hello.stream_url), the relay's address (it needs no token).
function setOggLink() {
  $("ogg").href = state.streamUrl
    || `/spaces/${encodeURIComponent(spaceId)}/live.ogg` + (token ? `?token=${token}` : "");
}
setOggLink();

function status(text) { $("status").textContent = text; }

// ---- the connection, and getting it back ------------------------------------------
// Close codes after which trying again cannot help (docs/protocol.md): say why, stop.
const FINAL_CLOSES = {
  4401: ["refused", "Your link was refused. Ask the Chorus bot for a new one"],
  4403: ["refused", "You cannot listen here"],
  4404: ["ended", "This space is not live"],
  4410: ["ended", "The space ended"],
};
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;
const STABLE_MS = 10000;  // a connection that lasted this long resets the backoff
const RESTORE_WAIT_MS = 90000;  // from the first 4404 after a loss: the space may yet come back

function setConn(kind, text) {
  state.conn = kind;
  const banner = $("conn");
  banner.dataset.state = kind;
  $("conn-text").textContent = text;
  $("retry").hidden = kind !== "waiting";
  banner.hidden = kind === "connected" || kind === "listing";
}

function connect() {
  clearTimeout(state.retryTimer);
  state.retryTimer = null;
  setConn("connecting", state.reconnects ? "Reconnecting…" : "Connecting…");
  const base = (state.base || location.origin).replace(/^http/, "ws");
  let url = `${base}/spaces/${encodeURIComponent(spaceId)}/ws?bundles=1`;
  if (token) url += `&token=${encodeURIComponent(token)}`;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onmessage = (ev) => {
    if (ws !== state.ws) return;
    if (typeof ev.data !== "string") { onAudio(ev.data); return; }
    let m;
    try { m = JSON.parse(ev.data); } catch { return; }
    if (m && typeof m === "object") onJson(m);
  };
  // A connection the browser refuses to open (an address this page's Content-Security-
  // Policy does not list, e.g. an edge started after the page loaded) gets an error and
  // no close: it is taken as lost (1006) all the same.
  ws.onerror = () => {
    setTimeout(() => {
      if (!ws.handled && ws.readyState === WebSocket.CLOSED) ws.onclose({ code: 1006, reason: "" });
    }, 1000);
  };
  ws.onclose = (ev) => {
    if (ws.handled) return;
    ws.handled = true;
    if (ws !== state.ws) return;
    state.closed = { code: ev.code, reason: ev.reason };
    stopMic();
    if (state.connectedAt) state.lost = true;
    if (state.onEdge && (ev.code === 4404 || !FINAL_CLOSES[ev.code])) {
      // the edge itself failed (it is passed over for a while), or only the space's
      // origin went away or is not known there yet (no fault of the edge)
      failOver(ev.code === 1006 || (ev.code === 1001 && !/origin/.test(ev.reason)));
    }
    if (ev.code === 4404 && state.lost) {
      // the bridge answers but has not got the space (back) yet: wait a while for it
      state.noSpaceSince = state.noSpaceSince || Date.now();
      if (Date.now() - state.noSpaceSince < RESTORE_WAIT_MS) {
        scheduleReconnect("the audio side restarted; waiting for the space to come back");
        return;
      }
    }
    const final = FINAL_CLOSES[ev.code];
    if (final) {
      const [kind, text] = final;
      if (ev.code === 4410) view.setBadge("ended");
      else if (ev.code === 4404) view.setBadge("notlive");
      setConn(kind, ev.reason ? `${text} (${ev.reason}).` : `${text}.`);
      status("");
      if (ev.code === 4404 || ev.code === 4410) ChorusListing.load();
      return;
    }
    if (state.connectedAt && Date.now() - state.connectedAt >= STABLE_MS) state.retryAttempt = 0;
    state.connectedAt = 0;
    scheduleReconnect(ev.reason || `code ${ev.code}`);
  };
}

// Exponential backoff, capped, with jitter (a random half to full delay) so that a whole
// audience dropped at once does not come back at the same instant.
function retryDelay(attempt) {
  const ceiling = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(attempt, 16));
  return ceiling / 2 + Math.random() * ceiling / 2;
}

function scheduleReconnect(why) {
  const delay = retryDelay(state.retryAttempt++);
  state.retryAt = Date.now() + delay;
  // one countdown at a time: an earlier one must not write its own reason over this one
  clearTimeout(state.countdownTimer);
  const show = () => {
    if (state.conn !== "waiting") return;
    const left = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    $("conn-text").textContent = `Connection lost (${why}). Reconnecting in ${left} s…`;
    if (left > 0) state.countdownTimer = setTimeout(show, 1000);
  };
  setConn("waiting", "");
  show();
  state.retryTimer = setTimeout(() => { state.reconnects++; connect(); }, delay);
}

// Another bridge for this page's connection, at once (the old one's close is not a loss).
function moveTo(base) {
  state.base = base;
  state.onEdge = base !== state.origin;
  state.moves++;
  const old = state.ws;
  state.ws = null;
  if (old) old.close(1000, "moving");
  connect();
}

// Edges this page may still try: not one it lost a minute ago.
function liveEdges(edges) {
  const now = Date.now();
  return edges.filter((u) => !(now - (state.failedEdges.get(u) || -Infinity) < FAILED_EDGE_MS));
}

// The edge this page listened on is gone: the next edge it knows, else the origin.
function failOver(edgeFailed) {
  const gone = state.base || location.origin;
  if (edgeFailed) state.failedEdges.set(gone, Date.now());
  state.edges = liveEdges(state.edges.filter((u) => u !== gone));
  if (state.edges.length) {
    state.base = state.edges[0];
  } else if (state.origin) {
    state.base = state.origin;
    state.onEdge = false;
  }
}

function reconnectNow() {
  if (state.conn !== "waiting") return;
  state.reconnects++;
  connect();
}
$("retry").onclick = reconnectNow;
window.addEventListener("online", reconnectNow);

function sendJson(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function onJson(m) {
  switch (m.type) {
    case "hello":
      state.connectedAt = Date.now();
      state.lost = false; state.noSpaceSince = 0;
      setConn("connected", "");
      ChorusListing.connected();
      $("title").textContent = m.title;
      document.title = `${m.title} — Chorus`;
      view.setBadge("live");
      $("rec").hidden = !m.recording;
      state.me = m.user_id; state.roles = m.roles;
      state.people = m.people || {};
      view.setInfo(m.info || {});
      state.bundleMs = m.bundle_ms || 20;
      state.streamUrl = m.stream_url || null; setOggLink();
      setRole(m.role, m.may_speak);
      state.helloed = true;
      status(m.user_id ? `Signed in as ${m.user_id}` : "Listening anonymously");
      setCaptionsOn(m.captions);
      planRenewal(m.expires_at, m.expires_in);
      state.onEdge = !!m.edge; state.origin = m.origin_url || null;
      state.edges = liveEdges(m.edges || []);
      // on the origin and listen-only: listen on the (first live) edge it names; on an
      // edge and allowed to speak: speak on the origin
      if (!state.onEdge && !m.may_speak && state.edges.length) moveTo(state.edges[0]);
      else if (state.onEdge && m.may_speak && state.origin) moveTo(state.origin);
      break;
    case "token": onToken(m); break;
    case "captions": setCaptionsOn(m.enabled); break;
    case "caption": onCaption(m); break;
    case "you":
      setRole(m.role, m.may_speak);
      if (state.onEdge && m.may_speak && state.origin) moveTo(state.origin);
      break;
    case "roles": state.roles = m.roles; render(); break;
    case "people": state.people = m.people || {}; render(); break;
    case "info": view.setInfo(m); break;
    case "answer":  // the host's no to this person's raised hand
      if (m.answer === "declined") { setHand(false); view.showHandState("declined"); }
      break;
    case "participants": {
      state.participants = m.participants;
      state.participantsSeen = true;
      state.anonymous = m.anonymous || 0;
      const mine = m.participants.find((p) => p.user_id === state.me);
      if (mine) setHand(mine.hand_raised);
      if (mine && mine.name && $("status").textContent === `Signed in as ${state.me}`) {
        status(`Signed in as ${mine.name} (${state.me})`);
      }
      render(); break;
    }
    case "levels": state.levels = m.levels; view.updateLevels(); break;
    case "activity":  // reactions counted since the last batch, the latest hand per user
      showReactions(m.reactions || {}, m.from || {});
      if (m.hands && state.me && Object.hasOwn(m.hands, state.me)) setHand(m.hands[state.me]);
      break;
    case "closing": status(`The space ended: ${m.reason}`); view.setBadge("ended"); break;
    case "error": state.stats.errors.push(m); if (m.count === 1) status(m.reason); break;
  }
}

// ---- the token ends: ask for a fresh one well before -------------------------------
// The bridge closes a connection whose token has ended (4401 "token expired"). A signed-in
// page asks for a fresh token when four fifths of the present one's life have gone, keeps
// it for its reconnects and for this tab (sessionStorage), so that a reload works too.
// Planned from expires_in, the time left by the bridge's clock: this browser's may be off.
function planRenewal(expiresAt, expiresIn) {
  clearTimeout(state.renewTimer);
  state.expiresAt = expiresAt || null;
  if (expiresIn === null || expiresIn === undefined) return;
  const left = expiresIn * 1000;
  const wait = Math.min(Math.max(left * 0.8, 1000), 2 ** 31 - 1);
  state.renewTimer = setTimeout(() => sendJson({ type: "renew" }), wait);
}

function onToken(m) {
  token = m.token;
  state.renewals++;
  keepToken(token);
  setOggLink();
  planRenewal(m.expires_at, m.expires_in);
}

// The hand: raised by this page (or another of this person's), then answered: a yes is
// the microphone (a roles push), a no is an "answer" message; either lowers it.
function setHand(raised) {
  if (state.hand === !!raised) return;
  state.hand = !!raised;
  if (state.hand) view.showHandState("raised");
  else if (state.handState === "raised") view.showHandState(null);  // lowered by the person
  setRole(state.role, state.maySpeak);
}

function setRole(role, maySpeak) {
  const promoted = state.helloed && !state.maySpeak && maySpeak;
  state.role = role; state.maySpeak = maySpeak;
  if (promoted) view.showHandState("approved");
  else if (!maySpeak && state.handState === "approved") view.showHandState(null);
  $("mic").hidden = !maySpeak;
  $("hand").hidden = !state.me || maySpeak;
  $("hand").textContent = state.hand ? "✋ Lower hand" : "✋ Raise hand";
  $("hand").setAttribute("aria-pressed", String(state.hand));
  if (!maySpeak) stopMic();
  render();
}

function render() { view.render(); }

// ---- captions ------------------------------------------------------------------
function setCaptionsOn(on) {
  state.captionsOn = !!on;
  view.setCaptions(state.captionsOn, state.showCaptions);
}

function onCaption(m) { if (state.captionsOn) view.onCaption(m); }

function showReactions(counts, from) {
  let n = 0;
  for (const v of Object.values(counts)) if (typeof v === "number" && v > 0) n += v;
  state.stats.reactions += n;
  view.showReactions(counts, from);
}

// ---- listening ----------------------------------------------------------------
async function startListening() {
  if (state.listening) return;
  if (!("AudioDecoder" in window)) {
    status("This browser has no WebCodecs; use the live.ogg link below.");
    return;
  }
  state.ctx = state.ctx || new AudioContext({ sampleRate: 48000 });
  await state.ctx.resume();
  state.decoder = new AudioDecoder({
    output: (data) => { playFrame(data); },
    error: (e) => { state.stats.errors.push(String(e)); },
  });
  state.decoder.configure({ codec: "opus", sampleRate: 48000, numberOfChannels: 1 });
  state.listening = true;
  $("listen").textContent = "⏸ Stop";
}

function stopListening() {
  state.listening = false;
  if (state.decoder && state.decoder.state !== "closed") state.decoder.close();
  state.decoder = null;
  $("listen").textContent = "▶ Listen";
}

function onAudio(buf) {
  const view = new DataView(buf);
  if (buf.byteLength >= 2 && view.getUint8(0) === 0x12) { // a bundle of frames
    state.stats.bundlesIn++;
    let pos = 2;
    for (let i = view.getUint8(1); i > 0 && pos + 2 <= buf.byteLength; i--) {
      const n = view.getUint16(pos);
      if (pos + 2 + n > buf.byteLength) return;
      onFrame(new DataView(buf, pos + 2, n));
      pos += 2 + n;
    }
    return;
  }
  onFrame(view);
}

function onFrame(view) {
  state.stats.framesIn++;
  if (!state.listening || !state.decoder || view.byteLength <= 9) return;
  if (view.getUint8(0) !== 0x11) return;
  const ts = view.getUint32(5);
  state.decoder.decode(new EncodedAudioChunk({
    type: "key", timestamp: ts * 1e6 / 48000,
    data: new Uint8Array(view.buffer, view.byteOffset + 9, view.byteLength - 9),
  }));
}

function playFrame(data) {
  const ctx = state.ctx;
  const n = data.numberOfFrames;
  const pcm = new Float32Array(n);
  data.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
  data.close();
  state.stats.framesDecoded++;
  let energy = 0;
  for (let i = 0; i < n; i++) energy += pcm[i] * pcm[i];
  state.stats.lastRms = Math.sqrt(energy / n);
  state.stats.maxRms = Math.max(state.stats.maxRms || 0, state.stats.lastRms);
  const buffer = ctx.createBuffer(1, n, 48000);
  buffer.copyToChannel(pcm, 0);
  const src = ctx.createBufferSource();
  src.buffer = buffer;
  src.connect(ctx.destination);
  const now = ctx.currentTime;
  // start (or restart after a gap) 80 ms ahead, plus a bundle's length when audio comes
  // in bundles, so the next bundle arrives before this one has played out
  const lead = 0.08 + (state.maySpeak ? 0 : (state.bundleMs - 20) / 1000);
  if (state.playAt < now + 0.02 || state.playAt > now + 0.5 + lead) state.playAt = now + lead;
  src.start(state.playAt);
  state.playAt += n / 48000;
}

// ---- speaking -------------------------------------------------------------------
async function startMic() {
  if (!("AudioEncoder" in window)) { status("This browser cannot encode Opus (no WebCodecs)."); return; }
  state.ctx = state.ctx || new AudioContext({ sampleRate: 48000 });
  await state.ctx.resume();
  state.micStream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  await state.ctx.audioWorklet.addModule("/static/capture-worklet.js");
  const source = state.ctx.createMediaStreamSource(state.micStream);
  const node = new AudioWorkletNode(state.ctx, "chorus-capture");
  state.encoder = new AudioEncoder({
    output: (chunk) => sendPacket(chunk),
    error: (e) => { state.stats.errors.push(String(e)); },
  });
  state.encoder.configure({
    codec: "opus", sampleRate: 48000, numberOfChannels: 1, bitrate: 32000,
    opus: { frameDuration: 20000, format: "opus" },
  });
  let pending = new Float32Array(0);
  let t = 0;
  node.port.onmessage = (ev) => {
    if (!state.encoder || state.encoder.state !== "configured") return;
    const merged = new Float32Array(pending.length + ev.data.length);
    merged.set(pending); merged.set(ev.data, pending.length);
    let off = 0;
    while (merged.length - off >= 960) {
      const frame = merged.slice(off, off + 960);
      off += 960;
      state.encoder.encode(new AudioData({
        format: "f32", sampleRate: 48000, numberOfFrames: 960, numberOfChannels: 1,
        timestamp: t * 1e6 / 48000, data: frame,
      }));
      t += 960;
    }
    pending = merged.slice(off);
  };
  source.connect(node);
  state.micNode = node;
  $("mic").textContent = "🔇 Mute";
  $("mic").setAttribute("aria-pressed", "true");
}

function sendPacket(chunk) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  const out = new Uint8Array(9 + chunk.byteLength);
  const view = new DataView(out.buffer);
  view.setUint8(0, 0x11);
  view.setUint32(1, state.seq >>> 0);
  view.setUint32(5, (state.seq * 960) >>> 0);
  chunk.copyTo(out.subarray(9));
  state.seq = (state.seq + 1) >>> 0;
  state.ws.send(out);
  state.stats.framesSent++;
}

function stopMic() {
  if (state.micNode) { state.micNode.disconnect(); state.micNode = null; }
  if (state.micStream) { state.micStream.getTracks().forEach((t) => t.stop()); state.micStream = null; }
  if (state.encoder && state.encoder.state !== "closed") state.encoder.close();
  state.encoder = null;
  $("mic").textContent = "🎙 Unmute";
  $("mic").setAttribute("aria-pressed", "false");
}

// ---- buttons ------------------------------------------------------------------
$("listen").onclick = () => (state.listening ? stopListening() : startListening());
$("mic").onclick = () => (state.micStream ? stopMic() : startMic().catch((e) => status(String(e))));
$("hand").onclick = () => sendJson({ type: state.hand ? "lower_hand" : "raise_hand" });
$("cc").onclick = () => {
  state.showCaptions = !state.showCaptions;
  localStorage.setItem("chorus.captions", state.showCaptions ? "on" : "off");
  setCaptionsOn(state.captionsOn);
};
document.querySelectorAll("#react button").forEach((b) => {
  b.onclick = () => sendJson({ type: "reaction", key: b.dataset.key });
});

// ---- inside Element: the widget API gives an OpenID token, the bridge checks it --------
// Matrix widget API over postMessage: answer the client's toWidget requests (capabilities
// first), ask fromWidget "get_openid", then trade the credentials for a bridge token.
// Only the parent that embeds us, at the origin it was given as (parentUrl), is listened
// to: a message from any other window or origin is ignored.
function widgetParentOrigin() {
  try {
    const origin = new URL(query.get("parentUrl")).origin;
    return origin && origin !== "null" ? origin : null;
  } catch {
    return null;
  }
}

function widgetSignIn() {
  const widgetId = query.get("widgetId") || "";
  const parentOrigin = widgetParentOrigin();
  if (!parentOrigin) return Promise.reject(new Error("the widget host did not say where it is (no parentUrl)"));
  let requestNo = 0;
  const pending = {};
  const post = (msg) => window.parent.postMessage(msg, parentOrigin);
  const ask = (action, data) => new Promise((resolve) => {
    const requestId = `chorus-${++requestNo}`;
    pending[requestId] = resolve;
    post({ api: "fromWidget", widgetId, requestId, action, data });
  });
  return new Promise((resolve, reject) => {
    let asked = false;
    const useCredentials = async (c) => {
      if (!c || c.state !== "allowed") { reject(new Error("Element did not share your identity (OpenID was refused)")); return; }
      const resp = await fetch(`/spaces/${encodeURIComponent(spaceId)}/openid`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ access_token: c.access_token, matrix_server_name: c.matrix_server_name }),
      });
      const body = await resp.json();
      if (!resp.ok) { reject(new Error(body.error || `sign-in failed (${resp.status})`)); return; }
      resolve(body.token);
    };
    const askOpenId = async () => {
      if (asked) return;
      asked = true;
      const reply = await ask("get_openid", {});
      if (reply && reply.state === "request") return;  // Element asks the user; openid_credentials follows
      useCredentials(reply).catch(reject);
    };
    window.addEventListener("message", (ev) => {
      if (ev.source !== window.parent || ev.origin !== parentOrigin) return;
      const m = ev.data || {};
      if (typeof m !== "object") return;
      if (m.api === "fromWidget" && m.response !== undefined && pending[m.requestId]) {
        pending[m.requestId](m.response); delete pending[m.requestId]; return;
      }
      if (m.api !== "toWidget") return;
      if (m.action === "capabilities") {
        post({ ...m, response: { capabilities: [] } });
        askOpenId();
      } else if (m.action === "openid_credentials") {
        post({ ...m, response: {} });
        useCredentials(m.data).catch(reject);
      } else {
        post({ ...m, response: {} });
      }
    });
    // some hosts never send "capabilities" to a widget that asks for none
    setTimeout(askOpenId, 1500);
  });
}

if (inWidget && !token && window.parent !== window) {
  status("Signing in through Element…");
  widgetSignIn().then((t) => { token = t; setOggLink(); connect(); })
    .catch((err) => { status(`Could not sign you in: ${err.message}`); connect(); });
} else {
  connect();
}
