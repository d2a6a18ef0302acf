// The popup of the selected item: what it is, where, how fresh, and its label. The page calls
// showPopup again whenever the item it shows changes (an update, a stale time passing), so an
// open popup is always current. Text that comes from the feed goes in isolated (ui.isolate).

import { ApiError, SessionExpired } from "./api.js";
import { refusalText } from "./chatlabel.js";
import { drawnBy, kindOf } from "./drawing.js";
import { motionText } from "./itemstyle.js";
import { ago, el, isolate, labelBadge, shortTime } from "./ui.js";

function row(name, value) {
  if (value === null || value === undefined || value === "") return null;
  return el("tr", {}, el("th", {}, name), el("td", {}, value));
}

/** ``text`` from the feed, isolated; null (no row) when empty. */
function fed(text) {
  return text === null || text === undefined || text === "" ? null : isolate(text);
}

/** Which buttons an item gets: the actions row is rebuilt only when this changes. */
function actionsShape(item, page) {
  return `${item.kind === "unit" && Boolean(item.callsign)}|${item.geometryType === "Point"}|${drawnBy(item.feature, page.me)}`;
}

/**
 * Delete, for an item this user drew: the first press asks, the second sends DELETE
 * /api/v1/items/{uid}; the live feed then removes the item (and closes the popup).
 */
function deleteButton(uid, page) {
  const button = el("button", { class: "delete", type: "button" }, "Delete");
  let armed = false;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = "Delete: press again";
      return;
    }
    button.disabled = true;
    try {
      await page.api.deleteItem(uid);
      button.textContent = "Deleted";
    } catch (e) {
      if (e instanceof SessionExpired) return;
      button.textContent = `Not deleted: ${e instanceof ApiError ? refusalText(e.status, e.body) : e.message}`;
    }
  });
  return button;
}

function buildActions(item, page) {
  const uid = item.uid;
  const actions = el("div", { class: "actions", "data-shape": actionsShape(item, page) });
  if (item.kind === "unit" && item.callsign) {
    actions.append(
      el(
        "button",
        {
          // The callsign at the time of the click: the item may have renamed itself since.
          onclick: () => page.chat.directTo(uid, page.store.items.get(uid)?.callsign ?? item.callsign),
        },
        "Message",
      ),
    );
  }
  if (item.geometryType === "Point") {
    const trackBtn = el("button", {}, "Server track");
    trackBtn.addEventListener("click", async () => {
      trackBtn.disabled = true;
      try {
        const n = await page.showTrack(uid);
        trackBtn.textContent = `Track: ${n} points`;
      } catch {
        trackBtn.textContent = "No track";
      }
    });
    actions.append(trackBtn);
    // Keep the map centred on it as it moves (follow.js), until the user pans or stops.
    actions.append(el("button", { onclick: () => page.follow.start(uid) }, "Follow"));
  }
  if (drawnBy(item.feature, page.me)) {
    if (kindOf(item.feature) !== null) {
      // The item as it is at the click (it may have changed since the popup opened).
      const edit = el("button", { class: "edit", type: "button" }, "Edit");
      edit.addEventListener("click", () => page.editDrawing(page.store.items.get(uid)?.feature ?? item.feature));
      actions.append(edit);
    }
    actions.append(deleteButton(uid, page));
  }
  return actions;
}

/**
 * Fill ``node`` for ``item`` (or hide it when null). ``page`` offers goTo, chat and showTrack.
 * Called again for the item already shown, it refreshes the content and keeps the buttons (and
 * what they show, such as "Track: 12 points").
 */
export function showPopup(node, item, page) {
  if (!item) {
    node.hidden = true;
    node.replaceChildren();
    delete node.dataset.uid;
    return;
  }
  const p = item.feature.properties ?? {};
  const now = Date.now();
  // Stale at the time the map shows (playback's time during playback).
  const stale = item.isStale(page.mapTime?.() ?? now);
  const pos =
    item.geometryType === "Point"
      ? `${item.lat.toFixed(5)}, ${item.lon.toFixed(5)}${
          Array.isArray(item.feature.geometry.coordinates) && item.feature.geometry.coordinates.length > 2
            ? ` · ${Math.round(item.feature.geometry.coordinates[2])} m HAE`
            : ""
        }`
      : `${item.geometryType}, ${item.rings.reduce((n, r) => n + r.length / 2, 0)} points`;
  const sidc = item.kind === "unit" ? page.sprites.sidcFor(item.type) : null;
  // Refreshing the item already shown keeps its buttons (their focus and what they show).
  const same = node.dataset.uid === item.uid;
  let close = same ? node.querySelector(":scope > .popup-head > .close") : null;
  if (!close) {
    close = el("button", { class: "close", title: "Close", "aria-label": "Close" }, "×");
    close.addEventListener("click", () => page.select(null));
  }
  const old = same ? node.querySelector(":scope > .actions") : null;
  const actions = old && old.dataset.shape === actionsShape(item, page) ? old : buildActions(item, page);
  const name = item.callsign ?? item.uid;
  const team = p.role
    ? el("span", {}, fed(p.team ?? ""), " · ", fed(p.role))
    : fed(p.team);
  node.replaceChildren(
    // The whole name is in the title: a very long one is cut after three lines (style.css).
    el("div", { class: "popup-head" }, el("strong", { class: "callsign", title: name }, isolate(name)), close),
    el("div", { class: "popup-label" }, labelBadge(item.label)),
    el(
      "table",
      {},
      row("Type", sidc ? el("span", {}, fed(item.type), ` (${sidc})`) : fed(item.type)),
      row("Team", team),
      row("Position", pos),
      row("Motion", item.kind === "unit" ? motionText(item.course, item.speed) || "stationary" : null),
      row("Reported", item.time !== null ? `${shortTime(item.time, now)} (${ago(item.time, now)})` : null),
      row("Stale", item.staleAt !== null ? `${shortTime(item.staleAt, now)}${stale ? " — STALE" : ""}` : null),
      row("How", fed(p.how)),
      row("UID", fed(item.uid)),
      row("Remarks", fed(p.remarks)),
    ),
    actions,
  );
  node.dataset.uid = item.uid;
  node.classList.toggle("stale", stale);
  node.hidden = false;
}
