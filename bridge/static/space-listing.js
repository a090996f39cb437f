// Chorus space page, before and after: a scheduled space (its start in the viewer's own
// time zone, a countdown, the calendar file), an ended one (a summary, the recordings
// with their transcripts as captions) and a cancelled one. What the bot gave the bridge
// (GET /api/spaces/{id}, docs/protocol.md 1.5). space.js calls load() when the bridge
// says the space is not live, and gives a way back to the live page if it goes live.
// Nothing here is written as HTML: every text goes in as text.
"use strict";

const ChorusListing = (() => {
  const $ = (id) => document.getElementById(id);
  const POLL_SCHEDULED_MS = 30000;  // is it live yet?
  const POLL_DUE_MS = 5000;         // the same, in the hour after its time
  const DUE_FAST_MS = 3600000;
  const POLL_RECORDING_MS = 15000;  // the recording is being converted
  const RECORDING_WAIT_MS = 10 * 60000;
  // Not known (yet): a space that has just ended (the bot is giving the bridge its page),
  // a bridge that restarted (the bot gives it its pages again), a proxy's error: asked
  // again, less and less often.
  const RETRY_FIRST_MS = 2000;
  const RETRY_MAX_MS = 30000;
  let page = null;  // { spaceId, token(), state, view, setConn, goLive }
  let facts = null;
  let pollTimer = null;
  let tickTimer = null;
  let retries = 0;
  let liveTries = 0;  // "live" said, yet the connection did not take: not in a tight loop
  let loadedAt = 0;

  function backoff(n) { return Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(n, 8)); }

  function init(options) { page = options; }

  function tokenParam(url) {
    const token = page.token();
    return token ? `${url}?token=${encodeURIComponent(token)}` : url;
  }

  function poll(ms) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(load, ms);
  }

  async function load() {
    clearTimeout(pollTimer);
    const token = page.token();
    let res = null;
    try {
      res = await fetch(`/api/spaces/${encodeURIComponent(page.spaceId)}`, {
        cache: "no-store", headers: token ? { Authorization: `Bearer ${token}` } : {},
      });
    } catch (e) { res = null; }
    if (!res) { poll(backoff(retries++)); return; }
    let body = {};
    try { body = await res.json(); } catch (e) { body = {}; }
    if (res.status === 404 || res.status === 429 || res.status >= 500) {
      poll(backoff(retries++));
      return;
    }
    if (!res.ok) {
      page.setConn("refused", `${body.error || `The page could not be shown (${res.status})`}.`);
      return;
    }
    retries = 0;
    if (body.state === "live") {
      if (!["connected", "connecting", "waiting"].includes(page.state.conn)) {
        facts = null;
        stopTicking();
        setTimeout(page.goLive, liveTries++ ? backoff(liveTries) : 0);
      }
      return;
    }
    show(body);
  }

  // The live page is back (space.js, on its hello).
  function connected() { liveTries = 0; }

  function stopTicking() {
    clearInterval(tickTimer);
    tickTimer = null;
    clearTimeout(pollTimer);
  }

  // ---- what every state shows ------------------------------------------------------
  function show(body) {
    const first = !facts;
    facts = body;
    if (first) loadedAt = Date.now();
    document.body.dataset.page = body.state;
    page.setConn("listing", "");
    page.view.setBadge(body.state);
    $("rec").hidden = true;
    $("title").textContent = body.title;
    document.title = `${body.title} — Chorus`;
    page.state.people = body.people || {};
    page.view.setInfo({ host: body.host, room_url: body.room_url, tips: [] });
    $("before").hidden = body.state !== "scheduled";
    $("after").hidden = body.state !== "ended";
    $("cancelled").hidden = body.state !== "cancelled";
    if (body.state === "scheduled") showScheduled(body);
    else stopTicking();
    if (body.state === "ended") showEnded(body);
    if (body.state === "cancelled") {
      $("cancelled-when").textContent = body.starts_at ? `It was planned for ${longDate(body.starts_at)}.` : "";
    }
  }

  // ---- scheduled: when, in the viewer's zone, and a countdown ----------------------
  function showScheduled(body) {
    const starts = new Date(body.starts_at);
    const when = $("starts-at");
    when.dateTime = body.starts_at;
    when.textContent = new Intl.DateTimeFormat(undefined, {
      weekday: "long", day: "numeric", month: "long", year: "numeric",
      hour: "numeric", minute: "2-digit", timeZoneName: "short",
    }).format(starts);
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    $("zone").textContent = zone ? `In your time zone (${zone.replaceAll("_", " ")}).` : "In your time zone.";
    const ics = $("ics");
    ics.hidden = !body.calendar;
    ics.href = tokenParam(`/spaces/${encodeURIComponent(page.spaceId)}/calendar.ics`);
    const room = $("before-room");
    room.hidden = !body.room_url;
    if (body.room_url) room.href = body.room_url;
    const tick = () => {
      const left = starts.getTime() - Date.now();
      $("countdown").textContent = left > 0 ? `Starts in ${countdown(left)}`
        : "Starting any moment: this page turns live when the host starts.";
      $("countdown").dataset.due = left > 0 ? "no" : "yes";
    };
    tick();
    clearInterval(tickTimer);
    tickTimer = setInterval(tick, 1000);
    const left = starts.getTime() - Date.now();
    poll(left > 0 ? Math.min(POLL_SCHEDULED_MS, Math.max(1000, left))
      : -left < DUE_FAST_MS ? POLL_DUE_MS : POLL_SCHEDULED_MS);
  }

  function countdown(ms) {
    const s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    if (d > 0) return `${d} d ${h} h ${m} min`;
    if (h > 0) return `${h} h ${String(m).padStart(2, "0")} min`;
    return `${m} min ${String(sec).padStart(2, "0")} s`;
  }

  // ---- ended: a summary, the recordings and their transcripts ----------------------
  // a day and time, in the viewer's zone and language
  function longDate(iso) {
    return new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" }).format(new Date(iso));
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "unknown";
    const h = Math.floor(seconds / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = Math.floor(seconds % 60);
    return h ? `${h} h ${m} min` : `${m} min ${s} s`;
  }

  function clock(seconds) {
    const m = Math.floor(seconds / 60);
    const s = Math.floor(seconds % 60);
    return `${m}:${String(s).padStart(2, "0")}`;
  }

  function summaryRow(term, value) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    if (typeof value === "string") dd.textContent = value;
    else dd.append(value);
    return [dt, dd];
  }

  function speakerFaces(users) {
    const ul = document.createElement("ul");
    ul.className = "speaker-faces";
    for (const user of users) {
      const li = document.createElement("li");
      const face = document.createElement("span");
      face.className = "small-face";
      face.append(ChorusFaces.face(user, page.state.people[user]));
      const name = document.createElement("span");
      name.textContent = page.view.nameOf(user);
      li.append(face, name);
      ul.append(li);
    }
    return ul;
  }

  function showEnded(body) {
    const s = body.summary || {};
    const rows = [];
    if (body.started_at) {
      rows.push(summaryRow("Held", longDate(body.started_at)));
    }
    rows.push(summaryRow("Duration", duration(s.duration_seconds)));
    rows.push(summaryRow("Peak listeners", String(s.peak_listeners || 0)));
    const speakers = Array.isArray(s.speakers) && s.speakers.length ? s.speakers : [body.host];
    rows.push(summaryRow(speakers.length === 1 ? "Speaker" : "Speakers", speakerFaces(speakers)));
    const reactions = (s.reactions || []).map(([k, n]) => `${k} ×${n}`).join("  ");
    if (reactions) rows.push(summaryRow("Top reactions", reactions));
    $("summary").replaceChildren(...rows.flat());
    showRecordings(body);
  }

  function showRecordings(body) {
    const list = $("recordings");
    const wanted = (body.recordings || []).map((r) => `${r.file}:${r.transcript}`).join(" ");
    if (list.dataset.files !== wanted) {  // players kept across polls: playback goes on
      list.dataset.files = wanted;
      list.replaceChildren(...(body.recordings || []).map((r, i) => player(r, i, body.recordings.length)));
    }
    const transcripts = body.transcripts || [];
    $("transcript-files").replaceChildren(...transcripts.map((name) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = fileUrl(name);
      a.download = name;
      a.textContent = "Download the transcript (WebVTT)";
      li.append(a);
      return li;
    }));
    const s = body.summary || {};
    const waiting = s.recorded && !(body.recordings || []).length;
    const note = $("recording-note");
    if (waiting && Date.now() - loadedAt < RECORDING_WAIT_MS) {
      note.textContent = "The recording is being prepared. It appears here by itself.";
      poll(POLL_RECORDING_MS);
    } else if (waiting) {
      note.textContent = "The recording is not here yet. It is posted in the space's Matrix room when ready.";
    } else {
      note.textContent = (body.recordings || []).length || transcripts.length ? ""
        : "This space was not recorded.";
    }
  }

  function fileUrl(name) {
    return tokenParam(`/spaces/${encodeURIComponent(page.spaceId)}/files/${encodeURIComponent(name)}`);
  }

  // One recording: an audio player whose transcript is its captions track, the line being
  // said shown under it, and the whole transcript to read (a line seeks the player).
  function player(rec, i, count) {
    const fig = document.createElement("figure");
    fig.className = "player";
    const caption = document.createElement("figcaption");
    caption.textContent = (count > 1 ? `Recording ${i + 1}` : "Recording")
      + (rec.seconds ? ` (${clock(rec.seconds)})` : "");
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "metadata";
    audio.src = fileUrl(rec.file);
    audio.setAttribute("aria-label", caption.textContent);
    fig.append(caption, audio);
    const download = document.createElement("a");
    download.href = fileUrl(rec.file);
    download.download = rec.file;
    download.textContent = "Download (Ogg/Opus)";
    const links = document.createElement("p");
    links.className = "meta";
    links.append(download);
    if (rec.transcript) {
      const track = document.createElement("track");
      track.kind = "captions";
      track.label = "Transcript";
      track.srclang = "en";
      track.src = fileUrl(rec.transcript);
      track.default = true;
      audio.append(track);
      track.track.mode = "hidden";  // shown by this page, under the player
      const line = document.createElement("p");
      line.className = "cue";
      line.setAttribute("aria-live", "polite");
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = "Transcript";
      const ol = document.createElement("ol");
      ol.className = "transcript";
      details.append(summary, ol);
      track.addEventListener("load", () => fillTranscript(track.track, ol, audio));
      track.track.addEventListener("cuechange", () => {
        const cues = [...(track.track.activeCues || [])];
        line.replaceChildren(...cues.map(cueLine));
      });
      const vtt = document.createElement("a");
      vtt.href = fileUrl(rec.transcript);
      vtt.download = rec.transcript;
      vtt.textContent = "Transcript (WebVTT)";
      links.append(" · ", vtt);
      fig.append(line, details);
    }
    fig.append(links);
    return fig;
  }

  // "<v @ann:example.org>Hello" -> who and what
  function parseCue(cue) {
    const m = /^<v(?:\.[^ >]*)? ([^>]*)>/.exec(cue.text);
    const text = cue.getCueAsHTML().textContent;
    return { who: m ? m[1].replace(/&amp;/g, "&").replace(/&lt;/g, "<").replace(/&gt;/g, ">") : null, text };
  }

  function cueLine(cue) {
    const { who, text } = parseCue(cue);
    const span = document.createElement("span");
    if (who) {
      const b = document.createElement("b");
      b.textContent = `${page.view.nameOf(who)}: `;
      span.append(b);
    }
    span.append(text);
    return span;
  }

  function fillTranscript(track, ol, audio) {
    ol.replaceChildren(...[...(track.cues || [])].map((cue) => {
      const li = document.createElement("li");
      const at = document.createElement("button");
      at.className = "at";
      at.textContent = clock(cue.startTime);
      at.setAttribute("aria-label", `Play from ${clock(cue.startTime)}`);
      at.onclick = () => { audio.currentTime = cue.startTime; audio.play().catch(() => {}); };
      li.append(at, cueLine(cue));
      return li;
    }));
  }

  return { init, load, connected };
})();
