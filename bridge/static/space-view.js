// Chorus space page: what it shows. The stage (faces, names, roles, a ring on whoever is
// talking), the audience row and count, captions, the hand's state, reactions floating up
// over who sent them, the host, the tip jar and sharing. space.js holds the connection
// and the audio and calls these with what the bridge says (docs/protocol.md, 1.4).
// Nothing here is written as HTML: every text goes in as text.
"use strict";

const ChorusView = (() => {
  const $ = (id) => document.getElementById(id);
  const STAGE_ROLES = { host: "Host", cohost: "Co-host", speaker: "Speaker" };
  const STAGE_ORDER = { host: 0, cohost: 1, speaker: 2 };
  const SPEAKING_DBFS = -45;  // louder than this is talking (the ring)
  const AUDIENCE_FACES = 12;  // listener faces shown; the rest are counted
  const CAPTION_LINES = 3;
  const CAPTION_KEEP_MS = 8000;  // a finished line stays this long
  const FLOATS_MAX = 24;
  let state = null;
  const tiles = new Map();  // user id -> the stage tile kept across renders (images stay loaded)

  function init(pageState) { state = pageState; }

  // ---- who is who ------------------------------------------------------------------
  function participant(user) { return state.participants.find((p) => p.user_id === user); }
  function profile(user) {
    const given = state.people[user] || participant(user) || {};
    return { name: given.name || null, avatar: given.avatar || null };
  }
  function nameOf(user) { return profile(user).name || ChorusFaces.localpart(user); }
  function face(user) { return ChorusFaces.face(user, profile(user)); }

  // ---- the top ---------------------------------------------------------------------
  const BADGES = { connecting: "Connecting", live: "● Live", ended: "Ended", notlive: "Not live",
                   scheduled: "Scheduled", cancelled: "Cancelled" };
  function setBadge(kind) {
    const badge = $("state");
    badge.dataset.state = kind;
    badge.textContent = BADGES[kind] || kind;
  }

  function renderHost() {
    const host = state.info.host;
    $("host").hidden = !host;
    if (!host) return;
    $("host-name").textContent = nameOf(host);
    const slot = $("host-face");
    if (slot.dataset.key !== `${host}|${profile(host).avatar}`) {
      slot.dataset.key = `${host}|${profile(host).avatar}`;
      slot.replaceChildren(face(host));
    }
  }

  function renderTips() {
    const tips = Array.isArray(state.info.tips) ? state.info.tips : [];
    $("tips").hidden = tips.length === 0;
    $("tip-links").replaceChildren(...tips.map((t) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = t.url;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      a.textContent = t.label;
      li.append(a);
      return li;
    }));
  }

  // ---- the stage -------------------------------------------------------------------
  function stageMembers() {
    return Object.entries(state.roles || {})
      .filter(([, role]) => role in STAGE_ROLES)
      .sort(([a, ra], [b, rb]) => STAGE_ORDER[ra] - STAGE_ORDER[rb] || nameOf(a).localeCompare(nameOf(b)))
      .map(([user, role]) => ({ user, role }));
  }

  function tileFor(user) {
    let li = tiles.get(user);
    if (!li) {
      li = document.createElement("li");
      li.className = "tile";
      li.dataset.user = user;
      const ring = document.createElement("div");
      ring.className = "face";
      const name = document.createElement("span");
      name.className = "name";
      const role = document.createElement("span");
      role.className = "role";
      const away = document.createElement("span");
      away.className = "away-note";
      li.append(ring, name, role, away);
      tiles.set(user, li);
    }
    return li;
  }

  function renderStage() {
    const members = stageMembers();
    const connected = new Set(state.participants.map((p) => p.user_id));
    const shown = members.map(({ user, role }) => {
      const li = tileFor(user);
      const name = nameOf(user);
      li.dataset.role = role;
      li.querySelector(".name").textContent = name;
      li.querySelector(".role").textContent = STAGE_ROLES[role];
      const away = state.participantsSeen && !connected.has(user);  // not said yet: not away
      li.classList.toggle("away", away);
      li.querySelector(".away-note").textContent = away ? "not connected" : "";
      const key = profile(user).avatar || `initials:${name}`;
      if (li.dataset.face !== key) {
        li.dataset.face = key;
        li.querySelector(".face").replaceChildren(face(user));
      }
      return li;
    });
    for (const user of [...tiles.keys()]) {
      if (!members.some((m) => m.user === user)) tiles.delete(user);
    }
    if (shown.length === 0) {
      const li = document.createElement("li");
      li.className = "empty-stage";
      li.textContent = "Nobody is on stage yet.";
      shown.push(li);
    }
    $("stage").replaceChildren(...shown);
    updateLevels();
  }

  // The ring: on whoever is louder than SPEAKING_DBFS, thicker the louder they are.
  function updateLevels() {
    for (const [user, li] of tiles) {
      const level = state.levels[user] ?? -100;
      const speaking = level > SPEAKING_DBFS;
      li.classList.toggle("speaking", speaking);
      li.querySelector(".face").style.setProperty(
        "--level", String(Math.max(0, Math.min(1, (level - SPEAKING_DBFS) / 35))));
      li.setAttribute("aria-label", `${nameOf(user)}, ${STAGE_ROLES[li.dataset.role] || ""}` +
        (speaking ? ", speaking" : ""));
    }
  }

  // ---- the audience ----------------------------------------------------------------
  function renderAudience() {
    const listeners = state.participants.filter((p) => !(state.roles[p.user_id] in STAGE_ROLES));
    listeners.sort((a, b) => Number(b.hand_raised) - Number(a.hand_raised));
    const total = listeners.length + (state.anonymous || 0);
    $("count").textContent = String(total);
    $("count-noun").textContent = "listening";
    const row = listeners.slice(0, AUDIENCE_FACES).map((p) => {
      const li = document.createElement("li");
      const name = nameOf(p.user_id);
      li.title = p.hand_raised ? `${name} (hand raised)` : name;
      li.setAttribute("aria-label", li.title);
      li.dataset.user = p.user_id;
      li.append(face(p.user_id));
      if (p.hand_raised) {
        const hand = document.createElement("span");
        hand.className = "hand-badge";
        hand.textContent = "✋";
        li.append(hand);
      }
      return li;
    });
    const rest = total - row.length;
    if (rest > 0) {
      const li = document.createElement("li");
      li.className = "more";
      li.textContent = `+${rest}`;
      li.setAttribute("aria-label", `and ${rest} more`);
      row.push(li);
    }
    $("audience").replaceChildren(...row);
  }

  function render() {
    renderHost();
    renderStage();
    renderAudience();
  }

  function setInfo(info) {
    state.info = { host: info.host || null, room_url: info.room_url || null,
                   tips: Array.isArray(info.tips) ? info.tips : [] };
    const room = $("room-link");
    room.hidden = !state.info.room_url;
    if (state.info.room_url) room.href = state.info.room_url;
    renderHost();
    renderTips();
  }

  // ---- the hand --------------------------------------------------------------------
  const HAND_TEXT = {
    raised: "✋ Your hand is raised. The host will answer.",
    approved: "🎙 You can speak now. Press Unmute when you are ready.",
    declined: "The host declined your request to speak. You are still listening.",
  };
  function showHandState(kind) {
    state.handState = kind;
    // never hidden (a live region must be there before its words change): empty is invisible
    const el = $("hand-state");
    el.dataset.state = kind || "";
    el.textContent = kind ? HAND_TEXT[kind] : "";
  }

  // ---- captions --------------------------------------------------------------------
  function setCaptions(on, shown) {
    $("captions-panel").hidden = !(on && shown);
    const cc = $("cc");
    cc.hidden = !on;
    cc.setAttribute("aria-pressed", String(shown));
    cc.textContent = shown ? "CC Hide captions" : "CC Show captions";
    if (!on) { state.captions = {}; renderCaptions(); }
  }

  // A partial replaces its utterance's line as it grows; a final stays a few seconds and
  // is read out (the visible lines are hidden from screen readers, which get finals only).
  function onCaption(m) {
    if (m.final && !m.text) { delete state.captions[m.utterance]; renderCaptions(); return; }
    const line = { user: m.user_id, text: m.text, final: m.final, utterance: m.utterance };
    state.captions[m.utterance] = line;
    if (m.final) {
      const said = document.createElement("p");
      said.textContent = `${nameOf(m.user_id)}: ${m.text}`;
      const live = $("captions-live");
      live.append(said);
      while (live.childElementCount > 5) live.firstElementChild.remove();
      setTimeout(() => {
        if (state.captions[m.utterance] === line) { delete state.captions[m.utterance]; renderCaptions(); }
      }, CAPTION_KEEP_MS);
    }
    renderCaptions();
  }

  function renderCaptions() {
    const lines = Object.values(state.captions).sort((a, b) => a.utterance - b.utterance)
      .slice(-CAPTION_LINES);
    $("captions").replaceChildren(...lines.map((c) => {
      const li = document.createElement("li");
      li.className = c.final ? "final" : "partial";
      const who = document.createElement("b");
      who.textContent = nameOf(c.user);
      const text = document.createElement("span");
      text.textContent = c.text;
      li.append(who, text);
      return li;
    }));
  }

  // ---- reactions -------------------------------------------------------------------
  // Reactions from people on stage rise from their face; the audience's from the bar.
  function floatAt(rect, key, times) {
    const layer = $("floats");
    const el = document.createElement("span");
    el.className = "float";
    el.textContent = key;
    if (times > 1) {
      const small = document.createElement("small");
      small.textContent = `×${times}`;
      el.append(small);
    }
    const jitter = (Math.random() - 0.5) * Math.min(rect.width, 60);
    el.style.left = `${rect.left + rect.width / 2 + jitter}px`;
    el.style.top = `${rect.top}px`;
    el.addEventListener("animationend", () => el.remove());
    setTimeout(() => el.remove(), 4000);
    layer.append(el);
    while (layer.childElementCount > FLOATS_MAX) layer.firstElementChild.remove();
    return el;
  }

  function showReactions(counts, from) {
    const left = { ...counts };
    for (const [user, key] of Object.entries(from || {})) {
      const tile = tiles.get(user);
      if (!tile || typeof key !== "string") continue;
      const el = floatAt(tile.querySelector(".face").getBoundingClientRect(), key, 1);
      el.dataset.from = user;
      if (left[key] > 0) left[key] -= 1;
    }
    const bar = $("react").getBoundingClientRect();
    for (const [key, n] of Object.entries(left)) {
      if (typeof n === "number" && n >= 1) floatAt(bar, key, n);
    }
  }

  // ---- sharing ---------------------------------------------------------------------
  function shareLink(spaceId) {
    return `${location.origin}/spaces/${encodeURIComponent(spaceId)}`;
  }

  function setUpSharing(spaceId) {
    const panel = $("share-panel");
    const button = $("share");
    const close = () => { panel.hidden = true; button.setAttribute("aria-expanded", "false"); button.focus(); };
    button.onclick = () => {
      if (!panel.hidden) { close(); return; }
      $("share-link").value = shareLink(spaceId);
      $("copied").textContent = "";
      panel.hidden = false;
      button.setAttribute("aria-expanded", "true");
      $("share-link").focus();
      $("share-link").select();
    };
    $("share-close").onclick = close;
    panel.addEventListener("keydown", (ev) => { if (ev.key === "Escape") close(); });
    $("copy").onclick = async () => {
      const link = $("share-link");
      try {
        await navigator.clipboard.writeText(link.value);
        $("copied").textContent = "Link copied.";
      } catch {
        link.select();
        $("copied").textContent = document.execCommand("copy")
          ? "Link copied." : "Select the link and copy it.";
      }
    };
  }

  return { init, render, renderStage, renderAudience, updateLevels, setBadge, setInfo,
           showHandState, setCaptions, onCaption, showReactions, setUpSharing, nameOf };
})();
