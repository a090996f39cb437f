// The bridge's home page: its live public spaces as cards (title, host, faces on stage,
// listeners, Listen), busiest first, then the upcoming public ones (title, host, start
// time in the viewer's zone), soonest first; refreshed every 5 s (GET /api/spaces).
"use strict";

const FACES = 6;

function nameOf(space, user) {
  const p = (space.people || {})[user];
  return (p && p.name) || ChorusFaces.localpart(user);
}

function hostLine(space) {
  const host = document.createElement("p");
  host.className = "host";
  const face = document.createElement("span");
  face.className = "host-face";
  face.append(ChorusFaces.face(space.host, (space.people || {})[space.host]));
  const who = document.createElement("span");
  who.textContent = "Hosted by ";
  const b = document.createElement("b");
  b.textContent = nameOf(space, space.host);
  who.append(b);
  host.append(face, who);
  return host;
}

// A card's top: its state, its title (a link to its page) and its host.
function cardTop(space, href, state, label) {
  const li = document.createElement("li");
  li.className = "card";
  li.dataset.space = space.space_id;
  const head = document.createElement("div");
  head.className = "card-head";
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.dataset.state = state;
  badge.textContent = label;
  const title = document.createElement("h2");
  const link = document.createElement("a");
  link.href = href;
  link.textContent = space.title;
  title.append(link);
  head.append(badge, title);
  li.append(head);
  if (space.host) li.append(hostLine(space));
  return li;
}

function upcomingCard(space) {
  const href = "/spaces/" + encodeURIComponent(space.space_id);
  const li = cardTop(space, href, "scheduled", "Scheduled");
  const when = document.createElement("time");
  when.className = "starts";
  when.dateTime = space.starts_at;
  when.textContent = new Intl.DateTimeFormat(undefined, {
    weekday: "short", day: "numeric", month: "short", hour: "numeric", minute: "2-digit",
    timeZoneName: "short" }).format(new Date(space.starts_at));
  const foot = document.createElement("div");
  foot.className = "card-foot";
  const more = document.createElement("a");
  more.className = "button";
  more.href = href;
  more.textContent = "Details";
  more.setAttribute("aria-label", `Details of ${space.title}`);
  foot.append(when, more);
  li.append(foot);
  return li;
}

function card(space) {
  const href = "/spaces/" + encodeURIComponent(space.space_id);
  const li = cardTop(space, href, "live", "● Live");
  const faces = document.createElement("ul");
  faces.className = "card-faces";
  faces.setAttribute("aria-label", "On stage");
  for (const user of (space.on_stage || []).slice(0, FACES)) {
    const f = document.createElement("li");
    f.title = nameOf(space, user);
    f.setAttribute("aria-label", f.title);
    f.append(ChorusFaces.face(user, (space.people || {})[user]));
    faces.append(f);
  }
  const more = (space.on_stage_count || 0) - faces.childElementCount;
  if (more > 0) {
    const f = document.createElement("li");
    f.className = "more";
    f.textContent = `+${more}`;
    faces.append(f);
  }
  const foot = document.createElement("div");
  foot.className = "card-foot";
  const count = document.createElement("span");
  count.className = "meta";
  const n = space.listeners;
  count.textContent = `${n} listening · ${space.speakers} speaking`;
  const listen = document.createElement("a");
  listen.className = "button primary";
  listen.href = href;
  listen.textContent = "▶ Listen";
  listen.setAttribute("aria-label", `Listen to ${space.title}`);
  foot.append(count, listen);
  li.append(faces, foot);
  return li;
}

async function refresh() {
  const list = document.getElementById("spaces");
  try {
    const res = await fetch("/api/spaces");
    const { spaces, upcoming = [] } = await res.json();
    list.replaceChildren(...spaces.map(card));
    document.getElementById("empty").hidden = spaces.length > 0;
    document.getElementById("upcoming").replaceChildren(...upcoming.map(upcomingCard));
    document.getElementById("upcoming-section").hidden = upcoming.length === 0;
  } catch (e) { /* try again on the next refresh */ }
}
refresh();
setInterval(refresh, 5000);
