// Chorus space page: listen (WebCodecs Opus decode → Web Audio), speak (getUserMedia →
// AudioWorklet → WebCodecs Opus encode), hands, reactions, speaking indicators.
// Wire format: docs/protocol.md (1 byte 0x11, uint32 seq, uint32 timestamp, Opus packet).
"use strict";

const spaceId = decodeURIComponent(location.pathname.split("/")[2] || "");
const query = new URLSearchParams(location.search);
let token = query.get("token");
const $ = (id) => document.getElementById(id);
const state = {
  ws: null, me: null, role: "listener", maySpeak: false, roles: {}, levels: {},
  participants: [], hand: false,
  // live captions: the latest line per speaker; the on/off choice is the listener's own
  captionsOn: false, showCaptions: localStorage.getItem("chorus.captions") !== "off",
  captions: {},
  ctx: null, decoder: null, playAt: 0, listening: false,
  encoder: null, micStream: null, micNode: null, seq: 0,
  stats: { framesIn: 0, framesDecoded: 0, framesSent: 0, reactions: 0, errors: [] },
};
window.chorus = state; // for tests and debugging

function setOggLink() {
  $("ogg").href = `/spaces/${encodeURIComponent(spaceId)}/live.ogg` + (token ? `?token=${token}` : "");
}
setOggLink();

function status(text) { $("status").textContent = text; }

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  let url = `${proto}//${location.host}/spaces/${encodeURIComponent(spaceId)}/ws`;
  if (token) url += `?token=${encodeURIComponent(token)}`;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") onJson(JSON.parse(ev.data));
    else onAudio(ev.data);
  };
  ws.onclose = (ev) => {
    status(`Disconnected: ${ev.reason || ev.code}`);
    state.closed = { code: ev.code, reason: ev.reason };
    stopMic();
  };
}

function onJson(m) {
  switch (m.type) {
    case "hello":
      $("title").textContent = m.title;
      document.title = `${m.title} — Chorus`;
      state.me = m.user_id; state.roles = m.roles;
      setRole(m.role, m.may_speak);
      status(m.user_id ? `Signed in as ${m.user_id}` : "Listening anonymously");
      setCaptionsOn(m.captions);
      break;
    case "captions": setCaptionsOn(m.enabled); break;
    case "caption": onCaption(m); break;
    case "you": setRole(m.role, m.may_speak); break;
    case "roles": state.roles = m.roles; render(); break;
    case "participants":
      state.participants = m.participants;
      $("anon").textContent = m.anonymous ? `+ ${m.anonymous} anonymous listener(s)` : "";
      render(); break;
    case "levels": state.levels = m.levels; render(); break;
    case "reaction": showReaction(m); break;
    case "hand_raised": case "hand_lowered":
      if (m.user_id === state.me) { state.hand = m.type === "hand_raised"; setRole(state.role, state.maySpeak); }
      break;
    case "closing": status(`The space ended: ${m.reason}`); break;
    case "error": state.stats.errors.push(m); if (m.count === 1) status(m.reason); break;
  }
}

function setRole(role, maySpeak) {
  state.role = role; state.maySpeak = maySpeak;
  $("mic").hidden = !maySpeak;
  $("hand").hidden = !state.me || maySpeak;
  $("hand").textContent = state.hand ? "✋ Lower hand" : "✋ Raise hand";
  if (!maySpeak) stopMic();
  render();
}

function render() {
  const ul = $("people");
  ul.replaceChildren(...state.participants.map((p) => {
    const li = document.createElement("li");
    li.textContent = p.user_id + (p.hand_raised ? " ✋" : "");
    const r = document.createElement("span");
    r.className = "role"; r.textContent = p.role;
    li.append(r);
    if ((state.levels[p.user_id] ?? -100) > -45) li.classList.add("speaking");
    const cap = state.captions[p.user_id];
    if (state.captionsOn && state.showCaptions && cap && cap.text) {
      const c = document.createElement("div");
      c.className = cap.final ? "caption" : "caption partial";
      c.textContent = cap.text;
      li.append(c);
    }
    return li;
  }));
}

// ---- captions ------------------------------------------------------------------
function setCaptionsOn(on) {
  state.captionsOn = !!on;
  if (!on) state.captions = {};
  $("cc").hidden = !on;
  $("cc").setAttribute("aria-pressed", String(state.showCaptions));
  $("cc").textContent = state.showCaptions ? "CC Hide captions" : "CC Show captions";
  render();
}

function onCaption(m) {
  // a partial replaces the speaker's line as it grows; a final stays a few seconds
  const prev = state.captions[m.user_id];
  if (m.final && !m.text && prev && prev.utterance !== m.utterance) return;
  const cap = { text: m.text, final: m.final, utterance: m.utterance };
  state.captions[m.user_id] = cap;
  if (m.final) {
    setTimeout(() => {
      if (state.captions[m.user_id] === cap) { delete state.captions[m.user_id]; render(); }
    }, 6000);
  }
  render();
}

function showReaction(m) {
  state.stats.reactions++;
  const span = document.createElement("span");
  span.textContent = m.key;
  span.title = m.user_id || "someone";
  $("reactions-feed").append(span);
  setTimeout(() => span.remove(), 4000);
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
  state.stats.framesIn++;
  if (!state.listening || !state.decoder || buf.byteLength <= 9) return;
  const view = new DataView(buf);
  if (view.getUint8(0) !== 0x11) return;
  const ts = view.getUint32(5);
  state.decoder.decode(new EncodedAudioChunk({
    type: "key", timestamp: ts * 1e6 / 48000, data: new Uint8Array(buf, 9),
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
  if (state.playAt < now + 0.02 || state.playAt > now + 0.5) state.playAt = now + 0.08;
  src.start(state.playAt);
  state.playAt += n / 48000;
}

// ---- speaking -------------------------------------------------------------------
const WORKLET = `
class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) this.port.postMessage(ch.slice(0));
    return true;
  }
}
registerProcessor("chorus-capture", Capture);`;

async function startMic() {
  if (!("AudioEncoder" in window)) { status("This browser cannot encode Opus (no WebCodecs)."); return; }
  state.ctx = state.ctx || new AudioContext({ sampleRate: 48000 });
  await state.ctx.resume();
  state.micStream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
  await state.ctx.audioWorklet.addModule(url);
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
}

// ---- buttons ------------------------------------------------------------------
$("listen").onclick = () => (state.listening ? stopListening() : startListening());
$("mic").onclick = () => (state.micStream ? stopMic() : startMic().catch((e) => status(String(e))));
$("hand").onclick = () => {
  state.ws.send(JSON.stringify({ type: state.hand ? "lower_hand" : "raise_hand" }));
};
$("cc").onclick = () => {
  state.showCaptions = !state.showCaptions;
  localStorage.setItem("chorus.captions", state.showCaptions ? "on" : "off");
  setCaptionsOn(state.captionsOn);
};
document.querySelectorAll("#react button").forEach((b) => {
  b.onclick = () => state.ws.send(JSON.stringify({ type: "reaction", key: b.dataset.key }));
});

// ---- inside Element: the widget API gives an OpenID token, the bridge checks it --------
// Matrix widget API over postMessage: answer the client's toWidget requests (capabilities
// first), ask fromWidget "get_openid", then trade the credentials for a bridge token.
function widgetSignIn() {
  const widgetId = query.get("widgetId") || "";
  const parentOrigin = query.get("parentUrl") ? new URL(query.get("parentUrl")).origin : "*";
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
      const m = ev.data || {};
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

if (query.get("widget") === "1" && !token && window.parent !== window) {
  status("Signing in through Element…");
  widgetSignIn().then((t) => { token = t; setOggLink(); connect(); })
    .catch((err) => { status(`Could not sign you in: ${err.message}`); connect(); });
} else {
  connect();
}
