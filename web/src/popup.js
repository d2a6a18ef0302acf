// The popup of the selected item: what it is, where, how fresh, and its label.

import { motionText } from "./render.js";
import { ago, el, labelBadge, shortTime } from "./ui.js";

function row(name, value) {
  if (value === null || value === undefined || value === "") return null;
  return el("tr", {}, el("th", {}, name), el("td", {}, value));
}

/** Fill ``node`` for ``item`` (or hide it when null). ``page`` offers goTo, chat and showTrack. */
export function showPopup(node, item, page) {
  if (!item) {
    node.hidden = true;
    node.replaceChildren();
    return;
  }
  const p = item.feature.properties ?? {};
  const now = Date.now();
  const stale = item.isStale(now);
  const pos =
    item.geometryType === "Point"
      ? `${item.lat.toFixed(5)}, ${item.lon.toFixed(5)}${
          Array.isArray(item.feature.geometry.coordinates) && item.feature.geometry.coordinates.length > 2
            ? ` · ${Math.round(item.feature.geometry.coordinates[2])} m HAE`
            : ""
        }`
      : `${item.geometryType}, ${item.rings.reduce((n, r) => n + r.length / 2, 0)} points`;
  const sidc = item.kind === "unit" ? page.sprites.sidcFor(item.type) : null;
  const close = el("button", { class: "close", title: "Close", "aria-label": "Close" }, "×");
  close.addEventListener("click", () => page.select(null));
  const actions = el("div", { class: "actions" });
  if (item.kind === "unit" && item.callsign) {
    actions.append(
      el("button", { onclick: () => page.chat.directTo(item.uid, item.callsign) }, "Message"),
    );
  }
  if (item.geometryType === "Point") {
    const trackBtn = el("button", {}, "Server track");
    trackBtn.addEventListener("click", async () => {
      trackBtn.disabled = true;
      try {
        const n = await page.showTrack(item.uid);
        trackBtn.textContent = `Track: ${n} points`;
      } catch {
        trackBtn.textContent = "No track";
      }
    });
    actions.append(trackBtn);
  }
  node.replaceChildren(
    el("div", { class: "popup-head" }, el("strong", {}, item.callsign ?? item.uid), close),
    el("div", { class: "popup-label" }, labelBadge(item.label)),
    el(
      "table",
      {},
      row("Type", sidc ? `${item.type} (${sidc})` : item.type),
      row("Team", p.role ? `${p.team ?? ""} · ${p.role}` : p.team),
      row("Position", pos),
      row("Motion", item.kind === "unit" ? motionText(item.course, item.speed) || "stationary" : null),
      row("Reported", item.time !== null ? `${shortTime(item.time, now)} (${ago(item.time, now)})` : null),
      row("Stale", item.staleAt !== null ? `${shortTime(item.staleAt, now)}${stale ? " — STALE" : ""}` : null),
      row("How", p.how),
      row("UID", item.uid),
      row("Remarks", p.remarks),
    ),
    actions,
  );
  node.classList.toggle("stale", stale);
  node.hidden = false;
}
