// Faces for Chorus pages: a person's avatar (served by the bridge, which the bot gave it),
// else their initials on a colour of their own. Shared by the space page and the index.
"use strict";

const ChorusFaces = (() => {
  function localpart(user) { return (user || "").replace(/^@/, "").split(":")[0] || user; }

  function initials(name) {
    const words = name.replace(/[^\p{L}\p{N}\s]/gu, " ").trim().split(/\s+/).filter(Boolean);
    const letters = words.slice(0, 2).map((w) => [...w][0]).join("");
    return (letters || [...name][0] || "?").toUpperCase();
  }

  function hue(user) {
    let h = 0;
    for (const ch of user || "") h = (h * 31 + ch.codePointAt(0)) % 360;
    return h;
  }

  // ``profile``: {name, avatar} as the bridge gives them (either may be null)
  function face(user, profile) {
    const name = (profile && profile.name) || localpart(user);
    const fallback = () => {
      const span = document.createElement("span");
      span.className = "avatar initials";
      span.textContent = initials(name);
      span.style.setProperty("--hue", String(hue(user)));
      return span;
    };
    if (!profile || !profile.avatar) return fallback();
    const img = document.createElement("img");
    img.className = "avatar";
    img.alt = "";
    img.decoding = "async";
    img.src = `/avatars/${encodeURIComponent(profile.avatar)}`;
    img.onerror = () => img.replaceWith(fallback());
    return img;
  }

  return { face, initials, localpart };
})();
