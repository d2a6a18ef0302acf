// Playback: the picture at a past time, from the server's history (GET /api/v1/history, which
// the server answers through the same access decision as the live feed). A bar over the map
// chooses the window (the last 1, 6 or 24 hours), the time (a slider), play or pause and the
// speed; the map then draws, with the live symbols, each item where its last report at or before
// that time put it, unless that report was stale by then. "Live" returns to the live picture.

import "./playback.css";
import { lonLatToWorld } from "./geo.js";
import { History, readHistory } from "./history.js";
import { layerOf } from "./itemstyle.js";
import { Item, Store } from "./store.js";
import { el } from "./ui.js";

// History read per window: pages of the API's largest limit, at most MAX_PAGES of them (so at
// most 50,000 versions), newest first. Past that, playback starts at the oldest time read.
export const PAGE_SIZE = 10000;
export const MAX_PAGES = 5;
// The windows offered (hours before the moment playback starts) and the speeds (x real time).
export const WINDOW_HOURS = [1, 6, 24];
export const SPEEDS = [1, 10, 60, 600];
// While playing, the time advances (and the map is redrawn) this often (ms).
const TICK_MS = 250;

/** "2026-12-07 12:34:56Z" */
function fullTime(ms) {
  const iso = new Date(ms).toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}Z`;
}

export class Playback {
  /** ``map``: the #map element (the bar goes in it); ``controls``: where its button goes. */
  constructor(map, controls, page) {
    this.page = page;
    this.store = new Store(); // the picture at this.time, drawn instead of the live one
    this.cache = new Map(); // uid -> {row, item}: an item whose version did not change is kept
    this.history = null;
    this.active = false;
    this.loads = 0; // bumped to forget a read still running
    this.timer = null;
    this.time = 0;
    this.start = 0;
    this.end = 0;

    this.button = el("button", {
      id: "playback-button",
      type: "button",
      title: "Playback: the picture over time",
      "aria-label": "Playback",
      "aria-pressed": "false",
      "aria-controls": "playback",
    }, "◷");
    this.button.addEventListener("click", () => (this.bar.hidden ? this.open() : this.close()));
    controls.append(this.button);

    this.windowSel = el(
      "select",
      { id: "playback-window", "aria-label": "Playback window" },
      ...WINDOW_HOURS.map((h) => el("option", { value: String(h) }, `last ${h} h`)),
    );
    this.windowSel.addEventListener("change", () => this.load(Number(this.windowSel.value)));
    this.playBtn = el("button", { id: "playback-play", type: "button", "aria-label": "Play", title: "Play" }, "▶");
    this.playBtn.addEventListener("click", () => (this.timer === null ? this.play() : this.pause()));
    this.slider = el("input", { id: "playback-time", type: "range", step: "1", "aria-label": "Playback time" });
    this.slider.disabled = true;
    this.slider.addEventListener("input", () => {
      this.seek(Number(this.slider.value) * 1000);
    });
    this.clock = el("output", { id: "playback-clock", for: "playback-time", class: "playback-clock" }, "");
    this.speedSel = el(
      "select",
      { id: "playback-speed", "aria-label": "Playback speed" },
      ...SPEEDS.map((s) => el("option", { value: String(s) }, `${s}×`)),
    );
    this.status = el("span", { id: "playback-status", class: "playback-status", role: "status" }, "");
    const live = el("button", { id: "playback-live", type: "button", title: "Back to the live picture" }, "Live");
    live.addEventListener("click", () => this.close());
    this.bar = el(
      "div",
      { id: "playback", class: "playback", role: "group", "aria-label": "Playback" },
      el("strong", { class: "playback-title" }, "Playback"),
      this.windowSel,
      this.playBtn,
      this.slider,
      this.clock,
      this.speedSel,
      this.status,
      live,
    );
    this.bar.hidden = true;
    map.append(this.bar);
  }

  /** The time the map shows (ms), or null for the live picture. */
  now() {
    return this.active ? this.time : null;
  }

  open() {
    this.bar.hidden = false;
    this.button.setAttribute("aria-pressed", "true");
    this.load(Number(this.windowSel.value));
  }

  /** Leave playback: the live picture again. */
  close() {
    this.pause();
    this.loads++;
    this.bar.hidden = true;
    this.button.setAttribute("aria-pressed", "false");
    this.slider.disabled = true;
    this.status.textContent = "";
    this.clock.textContent = "";
    const was = this.active;
    this.active = false;
    this.history = null;
    this.cache.clear();
    this.store.replaceAll([]);
    document.getElementById("map")?.classList.remove("playback-on");
    if (was) this.page.showPicture(this.page.store);
  }

  /** Read the last ``hours`` of history and show the picture at its end. */
  async load(hours) {
    this.pause();
    const load = ++this.loads;
    const end = Date.now();
    const since = end - hours * 3600_000;
    const history = new History();
    this.status.textContent = "Reading history…";
    this.slider.disabled = true;
    let read;
    try {
      read = await readHistory((path) => this.page.api.json("GET", path), history, since, end, {
        pageSize: PAGE_SIZE,
        maxPages: MAX_PAGES,
      });
    } catch (e) {
      if (load === this.loads) this.status.textContent = `History not read: ${e.message}`;
      return;
    }
    if (load !== this.loads) return; // closed, or another window chosen meanwhile
    // The live picture's items are their latest versions: an item whose last report is older
    // than the window but not stale yet is still placed.
    const live = [];
    for (const item of this.page.store.items.values()) if (layerOf(item) !== "mission") live.push(item.feature);
    history.add(live);
    this.history = history;
    this.start = read.complete ? since : read.from;
    this.end = end;
    this.slider.min = String(Math.ceil(this.start / 1000));
    this.slider.max = String(Math.ceil(end / 1000)); // at the maximum, the window's end itself
    this.slider.disabled = false;
    const n = `${read.versions} report${read.versions === 1 ? "" : "s"}`;
    this.status.textContent = read.complete
      ? `${n} from ${fullTime(since)}`
      : `${n}; limit reached: from ${fullTime(this.start)}`;
    this.status.title = `Read ${read.pages} page${read.pages === 1 ? "" : "s"} of at most ${PAGE_SIZE} reports`;
    this.cache.clear();
    this.active = true;
    document.getElementById("map")?.classList.add("playback-on");
    this.seek(end);
  }

  /** Show the picture at ``t`` (ms), kept inside the window. */
  seek(t) {
    if (!this.history) return;
    this.time = Math.max(Math.ceil(this.start / 1000) * 1000, Math.min(this.end, t));
    this.slider.value = String(Math.floor(this.time / 1000));
    this.clock.textContent = fullTime(this.time);
    this.slider.setAttribute("aria-valuetext", this.clock.textContent); // not epoch seconds
    const items = new Map();
    const cache = new Map();
    for (const { uid, row, trail } of this.history.at(this.time)) {
      const old = this.cache.get(uid);
      let item = old?.row === row ? old.item : null;
      if (item === null) {
        item = new Item(row.feature);
        item.trail = trail.flatMap(([lon, lat]) => lonLatToWorld(lon, lat));
      }
      items.set(uid, item);
      cache.set(uid, { row, item });
    }
    this.cache = cache;
    this.store.items = items;
    this.store.staleUids.clear();
    this.store.version++;
    this.page.showPicture(this.store);
  }

  play() {
    if (!this.history || this.timer !== null) return;
    if (this.time >= this.end) this.seek(this.start);
    this.playBtn.textContent = "▮▮";
    this.playBtn.setAttribute("aria-label", "Pause");
    this.playBtn.title = "Pause";
    this.timer = setInterval(() => {
      const next = this.time + TICK_MS * Number(this.speedSel.value);
      this.seek(next);
      if (next >= this.end) this.pause();
    }, TICK_MS);
  }

  pause() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.playBtn.textContent = "▶";
    this.playBtn.setAttribute("aria-label", "Play");
    this.playBtn.title = "Play";
  }
}
