// The map page: wires the API, the live stream, the store, the map (mapview.js) and the side panels.

import "ol/ol.css";
import "./style.css";
import low110Url from "../generated/basemap-110m.bin?url";
import high50Url from "../generated/basemap-50m.bin?url";
import namesUrl from "../generated/countries.json?url";
import { Api, SessionExpired } from "./api.js";
import { Basemap, decodeBasemap } from "./basemap.js";
import { ChatPanel } from "./chat.js";
import { ContactsPanel } from "./contacts.js";
import { FeedsPanel } from "./feeds.js";
import { MissionsPanel } from "./missions.js";
import { bannerFor, DEFAULT_ORDER, levelClass } from "./labels.js";
import { showPopup } from "./popup.js";
import { LiveMap } from "./mapview.js";
import { MeasureTool } from "./measure.js";
import { DrawTool } from "./draw.js";
import { Overlays } from "./overlays.js";
import { Follow } from "./follow.js";
import { Playback } from "./playback.js";
import { SearchBox } from "./search.js";
import { FORMAT_NAMES, FORMATS, formatCoords } from "./coords.js";
import { layerOf } from "./itemstyle.js";
import { Store } from "./store.js";
import { Stream } from "./stream.js";
import { Sprites } from "./symbols.js";
import { el, isolate, labelBadge } from "./ui.js";
import { toLonLat } from "ol/proj.js";

// How often stale times are compared with the clock (ms).
const STALE_CHECK_MS = 3000;
// Data-only changes (stream updates) redraw at most this often (ms); interaction redraws every
// animation frame.
const DATA_REDRAW_MS = 100;

const $ = (id) => document.getElementById(id);

class MapPage {
  constructor(api, me, basemap) {
    this.api = api;
    this.me = me;
    this.order = Array.isArray(me.classifications) ? me.classifications : DEFAULT_ORDER;
    this.store = new Store();
    this.dpr = window.devicePixelRatio || 1;
    this.sprites = new Sprites(this.dpr);
    this.map = new LiveMap($("map-view"), basemap, this.sprites, this.store);
    this.measure = new MeasureTool(this.map.map, $("measure-result"));
    this.draw = new DrawTool(this, $("draw"));
    this.overlays = new Overlays(this.map.map, this.map.itemsLayer);
    // Playback, search and follow draw on the map over this.map.store: the live store, or
    // playback's picture at a past time (showPicture).
    this.playback = new Playback($("map"), document.querySelector("#map .controls"), this);
    this.search = new SearchBox($("map"), this);
    this.follow = new Follow($("map"), $("map-view"), this);
    this.coordFormat = "dd";
    this.pointer = null; // [lon, lat] last under the pointer
    this.selected = null;
    this.fitted = false;
    this.lastDataDraw = 0;
    this.dataTimer = null;
    this.lastStats = null;
    this.frameTimes = []; // draw time (ms) of recent frames, for measuring
    this.bannerText = null;
    this.overlayTrack = null;
    this.popupDirty = false; // the selected item changed since its popup was filled
    this.contacts = new ContactsPanel($("contacts"), this);
    this.chat = new ChatPanel($("chat"), this);
    this.missions = new MissionsPanel($("missions"), this);
  }

  start() {
    this.bindPointer();
    this.bindControls();
    setInterval(() => {
      if (this.store.refreshStale(Date.now())) this.dataChanged();
      this.refreshPopup(); // its "12 s ago" and STALE follow the clock too
    }, STALE_CHECK_MS);
    this.stream = new Stream({
      url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/stream`,
      onMessage: (m) => this.onMessage(m),
      onState: (s, delay) => this.setConnection(s, delay),
      checkSession: () => this.api.me(),
    });
    this.stream.start();
    this.api
      .picture()
      .then((fc) => {
        // The stream's snapshot is authoritative; use the REST picture only if it came first.
        if (!this.snapshotSeen) this.onSnapshot(fc.features ?? []);
      })
      .catch((e) => {
        if (!(e instanceof SessionExpired)) console.warn(e);
      });
    this.chat.loadHistory();
    this.api.tiles().then((meta) => {
      if (meta) {
        $("attribution").textContent = `${meta.attribution || meta.name || "MBTiles"} · Natural Earth`;
        this.map.addTiles(meta).then(() => this.requestFrame());
      }
    });
  }

  // --- data ---------------------------------------------------------------------------------

  onMessage(m) {
    switch (m?.kind) {
      case "snapshot":
        this.snapshotSeen = true;
        this.onSnapshot(Array.isArray(m.features) ? m.features : []);
        break;
      case "update":
        if (m.feature && this.store.upsert(m.feature)?.uid === this.selected) this.popupDirty = true;
        this.dataChanged();
        break;
      case "delete":
        this.store.remove(String(m.uid));
        if (this.selected === String(m.uid) && !this.playback.active) this.select(null);
        this.dataChanged();
        break;
      case "chat":
        if (m.message) this.chat.add(m.message);
        break;
      case "mission":
        this.missions.onNotice(m);
        break;
      default:
        break;
    }
  }

  onSnapshot(features) {
    this.store.replaceAll(features);
    if (this.selected && !this.map.store.items.has(this.selected)) this.select(null);
    else if (this.selected) this.popupDirty = true;
    if (!this.fitted && this.store.items.size > 0) {
      this.fitAll();
      this.fitted = true;
    }
    this.dataChanged();
  }

  fitAll() {
    this.follow.stop(); // showing everything is leaving the followed item
    const ext = this.map.store.extent();
    if (ext) this.map.fitWorld(ext, 60, 13);
  }

  setConnection(state, delay) {
    const c = $("conn");
    c.className = `conn conn-${state}`;
    c.textContent =
      state === "live" ? "Live" : state === "connecting" ? "Connecting…" : `Reconnecting in ${Math.ceil(delay / 1000)} s`;
  }

  // --- drawing ------------------------------------------------------------------------------

  /** Move the view to ``fields`` ({cx, cy, zoom} in world coordinates, any of them). */
  setView(fields) {
    this.map.setFields(fields);
  }

  /** The time the map shows: now, or playback's time. */
  mapTime() {
    return this.playback.now() ?? Date.now();
  }

  /** Draw ``store`` (the live store, or playback's): its items changed or it replaces the other. */
  showPicture(store) {
    if (this.map.store !== store) this.map.setStore(store);
    if (this.selected && !store.items.has(this.selected)) this.select(null);
    else if (this.selected) this.popupDirty = true;
    this.dataChanged();
  }

  requestFrame() {
    this.follow.track();
    this.map.sync(this.mapTime(), this.selected);
    this.map.render();
  }

  /** Redraw after a data change, at most every DATA_REDRAW_MS. */
  dataChanged() {
    if (this.dataTimer !== null) return;
    const wait = Math.max(0, DATA_REDRAW_MS - (performance.now() - this.lastDataDraw));
    this.dataTimer = setTimeout(() => {
      this.dataTimer = null;
      this.lastDataDraw = performance.now();
      if (this.popupDirty) this.refreshPopup();
      this.requestFrame();
      this.contacts.changed();
    }, wait);
  }

  /** After each frame OpenLayers drew: what is on screen, the banner, the popup, the scale. */
  afterFrame(ms) {
    this.frameTimes.push(ms);
    if (this.frameTimes.length > 1000) this.frameTimes.shift();
    const drawn = this.map.drawnItems();
    const labelsOnScreen = new Set();
    let unlabelled = false;
    for (const { item } of drawn) {
      if (item.label === null) unlabelled = true;
      else labelsOnScreen.add(item.label);
    }
    const stats = { drawn: drawn.length, labelsOnScreen, unlabelled, ms };
    this.lastDrawn = drawn;
    this.lastStats = stats;
    this.updateBanner(stats);
    this.updatePopupPosition();
    const past = this.playback.active ? " (playback)" : "";
    $("counts").textContent = `${this.map.store.items.size} items${past} · ${stats.drawn} in view`;
    this.updateScale();
  }

  updateBanner(stats) {
    const labels = [...stats.labelsOnScreen, ...this.chat.visibleLabels()];
    if (stats.unlabelled) labels.push(null);
    const b = bannerFor(labels, this.order);
    const text = b.others > 0 ? `${b.text}  (+${b.others} other marking${b.others > 1 ? "s" : ""})` : b.text;
    if (text === this.bannerText) return;
    this.bannerText = text;
    for (const id of ["banner-top", "banner-bottom"]) {
      const node = $(id);
      node.textContent = text;
      node.className = `banner ${levelClass(b.classification)}`;
      node.title = "Highest marking of what is on screen";
    }
  }

  updateScale() {
    // Metres per pixel at the centre, then a round length of 60-150 px.
    const mpp = this.map.metresPerPixel();
    let len = 1;
    for (const m of [1, 2, 5]) {
      for (let p = 0; p < 8; p++) {
        const v = m * 10 ** p;
        if (v / mpp >= 60 && v / mpp <= 150) len = v;
      }
    }
    const node = $("scale");
    node.style.width = `${Math.round(len / mpp)}px`;
    node.textContent = len >= 1000 ? `${len / 1000} km` : `${len} m`;
  }

  // --- interaction --------------------------------------------------------------------------

  bindPointer() {
    // Drag, wheel, double-click, the arrow keys and + / - are OpenLayers' own interactions.
    const m = this.map.map;
    m.on("click", (e) => {
      // Clicks while measuring or drawing place points; they select nothing.
      if (!this.measure.active && !this.draw.active) this.select(this.map.hit(e.pixel[0], e.pixel[1]));
    });
    m.on("pointermove", (e) => {
      this.pointer = this.map.lonLatAt(e.pixel);
      this.showCoords();
    });
    m.on("moveend", () => this.requestFrame());
    this.map.onFrame = (ms) => this.afterFrame(ms);
    $("map-view").addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        if (this.draw.active) this.draw.clear();
        else if (this.measure.active || !$("measure-result").hidden) this.measure.clear();
        else this.select(null);
        e.preventDefault();
      }
    });
  }

  zoomBy(delta) {
    this.map.zoomBy(delta);
  }

  /** The Layers panel: item layers on and off, overlays opened from files, hidden or removed. */
  bindLayers() {
    const panel = $("layers");
    this.feeds = new FeedsPanel($("feeds"), this.api, {
      button: $("layers-button"),
      badge: $("feeds-badge"),
      status: $("feeds-alert"),
    });
    this.feeds.start();
    $("layers-button").addEventListener("click", () => this.showPanel("layers", panel.hidden));
    for (const box of panel.querySelectorAll("input[data-layer]")) {
      box.addEventListener("change", () => {
        this.map.setLayerVisible(box.dataset.layer, box.checked);
        const selected = this.selected ? this.map.store.items.get(this.selected) : null;
        if (!box.checked && selected && this.map.hidden.has(layerOf(selected))) {
          this.select(null);
        }
      });
    }
    const input = $("overlay-file");
    input.addEventListener("change", async () => {
      const status = $("overlay-status");
      status.textContent = "";
      for (const file of [...input.files]) {
        try {
          await this.overlays.open(file);
        } catch (e) {
          status.textContent = `Not opened: ${file.name}: ${e.message}`;
        }
      }
      input.value = "";
      this.renderOverlayList();
    });
  }

  /** Open the draw panel on an item this user drew, to change it. */
  editDrawing(feature) {
    this.showPanel("draw", true);
    this.draw.edit(feature);
  }

  /** Open (or close) the Layers or Draw panel; they share a place, so opening one closes the other. */
  showPanel(name, open) {
    for (const which of ["layers", "draw"]) {
      const shown = which === name && open;
      $(which).hidden = !shown;
      $(`${which}-button`).setAttribute("aria-expanded", String(shown));
    }
    this.feeds.opened(!$("layers").hidden);
    // Closing the draw panel drops what was drawn and not sent.
    if ($("draw").hidden && (this.draw.active || this.draw.pending)) this.draw.clear();
  }

  renderOverlayList() {
    const list = $("overlay-list");
    list.replaceChildren(
      ...this.overlays.list.map((o) => {
        const box = el("input", { type: "checkbox" });
        box.checked = o.layer.getVisible();
        box.addEventListener("change", () => o.layer.setVisible(box.checked));
        const remove = el("button", { type: "button", title: "Remove this overlay", "aria-label": `Remove ${o.name}` }, "✕");
        remove.addEventListener("click", () => {
          this.overlays.remove(o.id);
          this.renderOverlayList();
        });
        return el("li", {}, el("label", {}, box, " ", isolate(o.name), ` (${o.count})`), remove);
      }),
    );
  }

  /** The coordinates under the pointer, in the chosen format (decimal degrees, DMS, MGRS). */
  showCoords() {
    const node = $("coords");
    node.dataset.format = this.coordFormat;
    node.textContent = this.pointer ? formatCoords(this.pointer[0], this.pointer[1], this.coordFormat) : FORMAT_NAMES[this.coordFormat];
  }

  bindControls() {
    $("zoom-in").addEventListener("click", () => this.zoomBy(1));
    $("zoom-out").addEventListener("click", () => this.zoomBy(-1));
    $("fit").addEventListener("click", () => this.fitAll());
    $("measure-distance").addEventListener("click", () => {
      this.draw.stop();
      this.measure.toggle("distance");
    });
    $("measure-area").addEventListener("click", () => {
      this.draw.stop();
      this.measure.toggle("area");
    });
    const pointing = () => $("map-view").classList.toggle("measuring", this.measure.active || this.draw.active);
    this.measure.onChange = () => {
      $("measure-distance").setAttribute("aria-pressed", String(this.measure.mode === "distance"));
      $("measure-area").setAttribute("aria-pressed", String(this.measure.mode === "area"));
      pointing();
    };
    this.draw.onChange = pointing;
    $("draw-button").addEventListener("click", () => this.showPanel("draw", $("draw").hidden));
    this.bindLayers();
    $("coords").addEventListener("click", () => {
      this.coordFormat = FORMATS[(FORMATS.indexOf(this.coordFormat) + 1) % FORMATS.length];
      const next = FORMATS[(FORMATS.indexOf(this.coordFormat) + 1) % FORMATS.length];
      $("coords").title = `${FORMAT_NAMES[this.coordFormat]} (click for ${FORMAT_NAMES[next]})`;
      this.showCoords();
    });
    $("logout").addEventListener("click", async () => {
      this.stream?.stop();
      try {
        await this.api.logout();
      } finally {
        window.location.assign("/login");
      }
    });
    for (const tab of document.querySelectorAll("[data-tab]")) {
      tab.addEventListener("click", () => this.showTab(tab.dataset.tab));
    }
  }

  showTab(name) {
    for (const tab of document.querySelectorAll("[data-tab]")) {
      tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
    }
    $("contacts").hidden = name !== "contacts";
    $("chat").hidden = name !== "chat";
    $("missions").hidden = name !== "missions";
    if (name === "chat") this.chat.seen();
    if (name === "missions") this.missions.shown();
    this.contacts.changed();
    this.requestFrame();
  }

  /** Select an item (or null): highlight it and show its popup. */
  select(uid) {
    this.selected = uid;
    if (this.overlayTrack && this.overlayTrack.uid !== uid) {
      this.overlayTrack = null;
      this.map.showTrack(null);
    }
    const item = uid ? this.map.store.items.get(uid) : null;
    showPopup($("popup"), item, this);
    this.requestFrame();
  }

  /** Fill the open popup again from the selected item as it is now (same buttons). */
  refreshPopup() {
    const popup = $("popup");
    if (popup.hidden || !this.selected) {
      this.popupDirty = false;
      return;
    }
    // Not while the user is selecting text in it (to copy a uid): the next stale check retries.
    const sel = window.getSelection();
    if (sel && !sel.isCollapsed && popup.contains(sel.anchorNode)) {
      this.popupDirty = true;
      return;
    }
    this.popupDirty = false;
    const item = this.map.store.items.get(this.selected);
    if (!item) return;
    showPopup(popup, item, this);
    this.updatePopupPosition();
  }

  /** Centre on an item, zooming in if the map is far out, and select it. */
  goTo(uid) {
    const it = this.map.store.items.get(uid);
    if (!it) return;
    if (this.follow.uid !== uid) this.follow.stop();
    this.setView({ cx: it.x, cy: it.y, zoom: Math.max(this.map.fields().zoom, 11) });
    this.select(uid);
  }

  async showTrack(uid) {
    const f = await this.api.track(uid);
    const coords = (f?.geometry?.coordinates ?? []).map(([lon, lat]) => {
      const phi = (Math.max(-85.05, Math.min(85.05, lat)) * Math.PI) / 180;
      return [(lon + 180) / 360, (1 - Math.log(Math.tan(phi) + 1 / Math.cos(phi)) / Math.PI) / 2];
    });
    this.overlayTrack = { uid, coords };
    this.map.showTrack(coords);
    return coords.length;
  }

  updatePopupPosition() {
    const popup = $("popup");
    if (popup.hidden || !this.selected) return;
    const it = this.map.store.items.get(this.selected);
    if (!it) return;
    // Above the item, centred, so its symbol and label stay visible; below when there is no
    // room above; always inside the map.
    const [sx, sy] = this.map.toScreen(it.x, it.y);
    const { width, height } = this.map.fields();
    const w = popup.offsetWidth;
    const h = popup.offsetHeight;
    const gap = 26;
    const x = Math.max(6, Math.min(width - w - 6, sx - w / 2));
    const y = sy - gap - h >= 6 ? sy - gap - h : Math.min(height - h - 6, sy + gap);
    popup.style.transform = `translate(${Math.round(x)}px, ${Math.round(y)}px)`;
  }

  // --- hooks for the browser tests and for measuring ----------------------------------------

  /** What the last frame drew: points at their screen position, outlines at their first vertex. */
  rendered() {
    const now = this.mapTime();
    const describe = (it, x, y) => ({
      uid: it.uid,
      x,
      y,
      lon: it.lon,
      lat: it.lat,
      kind: it.kind,
      callsign: it.callsign,
      sidc: it.kind === "unit" ? this.sprites.sidcFor(it.type) : null,
      stale: it.isStale(now),
      label: it.label,
    });
    return (this.lastDrawn ?? []).map(({ item, x, y }) => describe(item, x, y));
  }

  /** Draw ``frames`` frames, panning a little each time; full frame time statistics in ms. */
  benchmark(frames = 60) {
    this.requestFrame();
    return this.map.benchmark(frames);
  }
}

async function loadBasemap() {
  const [low, high, names] = await Promise.all([
    fetch(low110Url).then((r) => r.arrayBuffer()),
    fetch(high50Url).then((r) => r.arrayBuffer()),
    fetch(namesUrl).then((r) => r.json()),
  ]);
  return new Basemap(decodeBasemap(low), decodeBasemap(high), names);
}

function showUser(me) {
  $("who").textContent = me.org ? `${me.name} · ${me.org}` : me.name;
  const groups = Array.isArray(me.groups) && me.groups.length ? me.groups.join(", ") : "no groups";
  $("who").title = `Groups: ${groups}`;
  const cl = $("clearance");
  cl.replaceChildren(el("span", { class: "muted" }, "Clearance "), labelBadge(me.clearance ?? null, "none"));
  cl.title = "What your account may see";
  $("console-link").hidden = !(me.roles ?? []).includes("operator"); // operators: the console
  if (!me.csrf) {
    // Signed in by a client certificate (the certificate listener): there is no web session to
    // end, the browser presents the certificate on every connection.
    $("logout").hidden = true;
    $("who").title += " · signed in with a client certificate";
  }
}

async function main() {
  const api = new Api();
  let me;
  try {
    me = await api.me();
  } catch (e) {
    if (!(e instanceof SessionExpired)) $("fatal").textContent = `Cannot reach the server: ${e.message}`;
    return;
  }
  showUser(me);
  const basemap = await loadBasemap();
  const page = new MapPage(api, me, basemap);
  page.start();
  // A read-only handle for the browser tests and for measuring from the console.
  window.__liaison = {
    rendered: () => page.rendered(),
    benchmark: (n) => page.benchmark(n),
    stats: () => ({ ...page.lastStats, labelsOnScreen: [...(page.lastStats?.labelsOnScreen ?? [])] }),
    view: () => page.map.fields(),
    items: () => page.store.items.size,
    banner: () => page.bannerText,
    goTo: (uid) => page.goTo(uid),
    fit: () => page.fitAll(),
    frameTimes: () => page.frameTimes.splice(0),
    setView: (fields) => page.setView(fields),
    overlays: () => page.overlays.describe(toLonLat),
    playbackTime: () => page.playback.now(),
    following: () => page.follow.uid,
    tiles: () => (page.map.tileLayer ? { vector: page.map.tileLayer.get("vector"), pmtiles: page.map.tileLayer.get("pmtiles") } : null),
  };
}

main();
