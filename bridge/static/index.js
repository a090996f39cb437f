// The list of live public spaces on the bridge's home page, refreshed every 5 s.
async function refresh() {
  const list = document.getElementById("spaces");
  try {
    const res = await fetch("/api/spaces");
    const { spaces } = await res.json();
    list.replaceChildren(...spaces.map((s) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "/spaces/" + encodeURIComponent(s.space_id);
      a.textContent = s.title;
      const meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = ` ${s.speakers} speaking · ${s.listeners} listening`;
      li.append(a, meta);
      return li;
    }));
    document.getElementById("empty").hidden = spaces.length > 0;
  } catch (e) { /* try again on the next refresh */ }
}
refresh();
setInterval(refresh, 5000);
