// The map page: wires the API, the live stream, the store, the renderer and the side panels.

import "./style.css";
import low110Url from "../generated/basemap-110m.bin?url";
import high50Url from "../generated/basemap-50m.bin?url";
import namesUrl from "../generated/countries.json?url";
import { Api, SessionExpired } from "./api.js";
import { Basemap, decodeBasemap } from "./basemap.js";
import { ChatPanel } from "./chat.js";
import { ContactsPanel } from "./contacts.js";
import { MissionsPanel } from "./missions.js";
import { View, worldToLonLat } from "./geo.js";
import { bannerFor, DEFAULT_ORDER, levelClass } from "./labels.js";
import { showPopup } from "./popup.js";
import { Renderer } from "./render.js";
import { Store } from "./store.js";
import { Stream } from "./stream.js";
import { Sprites } from "./symbols.js";
import { TileLayer } from "./tiles.js";
import { el, labelBadge } from "./ui.js";

// How often stale times are compared with the clock (ms).
const STALE_CHECK_MS = 3000;
// Data-only changes (stream updates) redraw at most this often (ms); interaction redraws every
// animation frame.
const DATA_REDRAW_MS = 100;
// Wheel: zoom levels per pixel of wheel delta (a notch is about 100 px).
const WHEEL_ZOOM_PER_PX = 1 / 240;

const $ = (id) => document.getElementById(id);

class MapPage {
  constructor(api, me, basemap) {
    this.api = api;
    this.me = me;
    this.order = Array.isArray(me.classifications) ? me.classifications : DEFAULT_ORDER;
    this.store = new Store();
    this.dpr = window.devicePixelRatio || 1;
    this.sprites = new Sprites(this.dpr);
    this.canvas = $("map-canvas");
    this.renderer = new Renderer(this.canvas, basemap, this.sprites);
    this.view = new View({ cx: 0.5, cy: 0.4, zoom: 2, width: 800, height: 600 });
    this.selected = null;
    this.fitted = false;
    this.frameRequested = false;
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
    this.resize();
    new ResizeObserver(() => this.resize()).observe($("map"));
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
        this.renderer.tiles = new TileLayer(meta, () => this.requestFrame());
        $("attribution").textContent = `${meta.attribution || meta.name || "MBTiles"} · Natural Earth`;
        this.requestFrame();
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
        if (this.selected === String(m.uid)) this.select(null);
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
    if (this.selected && !this.store.items.has(this.selected)) this.select(null);
    else if (this.selected) this.popupDirty = true;
    if (!this.fitted && this.store.items.size > 0) {
      this.fitAll();
      this.fitted = true;
    }
    this.dataChanged();
  }

  fitAll() {
    const ext = this.store.extent();
    if (ext) this.setView(this.view.fit(ext, 60, 13));
  }

  setConnection(state, delay) {
    const c = $("conn");
    c.className = `conn conn-${state}`;
    c.textContent =
      state === "live" ? "Live" : state === "connecting" ? "Connecting…" : `Reconnecting in ${Math.ceil(delay / 1000)} s`;
  }

  // --- drawing ------------------------------------------------------------------------------

  setView(view) {
    this.view = view;
    this.requestFrame();
  }

  requestFrame() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      this.drawNow();
    });
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

  drawNow() {
    const stats = this.renderer.draw(this.view, this.store, Date.now(), this.selected);
    this.frameTimes.push(stats.ms);
    if (this.frameTimes.length > 1000) this.frameTimes.shift();
    if (this.overlayTrack) this.drawTrackOverlay();
    this.lastStats = stats;
    this.updateBanner(stats);
    this.updatePopupPosition();
    $("counts").textContent = `${this.store.items.size} items · ${stats.drawn} in view`;
    this.updateScale();
    if (this.renderer.needsFollowUp) setTimeout(() => this.requestFrame(), 160);
  }

  drawTrackOverlay() {
    const ctx = this.renderer.ctx;
    const coords = this.overlayTrack.coords;
    ctx.beginPath();
    coords.forEach(([x, y], i) => {
      const [sx, sy] = this.view.toScreen(x, y);
      if (i === 0) ctx.moveTo(sx, sy);
      else ctx.lineTo(sx, sy);
    });
    ctx.strokeStyle = "rgba(245, 158, 11, 0.9)";
    ctx.lineWidth = 3;
    ctx.stroke();
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
    // Metres per pixel at the centre latitude, then a round length of 60-150 px.
    const [, lat] = worldToLonLat(this.view.cx, this.view.cy);
    const mpp = (40075016.686 * Math.cos((lat * Math.PI) / 180)) / this.view.scale;
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

  resize() {
    const box = $("map").getBoundingClientRect();
    const width = Math.max(100, Math.floor(box.width));
    const height = Math.max(100, Math.floor(box.height));
    this.dpr = window.devicePixelRatio || 1;
    this.renderer.resize(width, height, this.dpr);
    this.view = this.view.with({ width, height });
    this.requestFrame();
  }

  // --- interaction --------------------------------------------------------------------------

  bindPointer() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, moved: 0, id: e.pointerId };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      const r = c.getBoundingClientRect();
      const [lon, lat] = worldToLonLat(...this.view.toWorld(e.clientX - r.left, e.clientY - r.top));
      $("coords").textContent = `${lat.toFixed(5)}, ${lon.toFixed(5)}`;
      if (!drag || drag.id !== e.pointerId) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      drag.moved += Math.abs(dx) + Math.abs(dy);
      drag.x = e.clientX;
      drag.y = e.clientY;
      c.classList.add("dragging");
      this.setView(this.view.panBy(dx, dy));
    });
    const end = (e) => {
      if (!drag || drag.id !== e.pointerId) return;
      c.classList.remove("dragging");
      const click = drag.moved < 4;
      drag = null;
      if (click && e.type === "pointerup") {
        const r = c.getBoundingClientRect();
        this.select(this.renderer.hit(e.clientX - r.left, e.clientY - r.top));
      }
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        const r = c.getBoundingClientRect();
        const px = e.deltaMode === 1 ? e.deltaY * 40 : e.deltaY;
        this.setView(this.view.zoomAround(-px * WHEEL_ZOOM_PER_PX, e.clientX - r.left, e.clientY - r.top));
      },
      { passive: false },
    );
    c.addEventListener("dblclick", (e) => {
      const r = c.getBoundingClientRect();
      this.setView(this.view.zoomAround(1, e.clientX - r.left, e.clientY - r.top));
    });
    c.tabIndex = 0;
    c.addEventListener("keydown", (e) => {
      const step = 80;
      const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
      if (moves[e.key]) this.setView(this.view.panBy(...moves[e.key]));
      else if (e.key === "+" || e.key === "=") this.zoomBy(1);
      else if (e.key === "-") this.zoomBy(-1);
      else if (e.key === "Escape") this.select(null);
      else return;
      e.preventDefault();
    });
  }

  zoomBy(delta) {
    this.setView(this.view.zoomAround(delta, this.view.width / 2, this.view.height / 2));
  }

  bindControls() {
    $("zoom-in").addEventListener("click", () => this.zoomBy(1));
    $("zoom-out").addEventListener("click", () => this.zoomBy(-1));
    $("fit").addEventListener("click", () => this.fitAll());
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
    if (this.overlayTrack && this.overlayTrack.uid !== uid) this.overlayTrack = null;
    const item = uid ? this.store.items.get(uid) : null;
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
    const item = this.store.items.get(this.selected);
    if (!item) return;
    showPopup(popup, item, this);
    this.updatePopupPosition();
  }

  /** Centre on an item, zooming in if the map is far out, and select it. */
  goTo(uid) {
    const it = this.store.items.get(uid);
    if (!it) return;
    this.setView(this.view.with({ cx: it.x, cy: it.y, zoom: Math.max(this.view.zoom, 11) }));
    this.select(uid);
  }

  async showTrack(uid) {
    const f = await this.api.track(uid);
    const coords = (f?.geometry?.coordinates ?? []).map(([lon, lat]) => {
      const phi = (Math.max(-85.05, Math.min(85.05, lat)) * Math.PI) / 180;
      return [(lon + 180) / 360, (1 - Math.log(Math.tan(phi) + 1 / Math.cos(phi)) / Math.PI) / 2];
    });
    this.overlayTrack = { uid, coords };
    this.requestFrame();
    return coords.length;
  }

  updatePopupPosition() {
    const popup = $("popup");
    if (popup.hidden || !this.selected) return;
    const it = this.store.items.get(this.selected);
    if (!it) return;
    // Above the item, centred, so its symbol and label stay visible; below when there is no
    // room above; always inside the map.
    const [sx, sy] = this.view.toScreen(it.x, it.y);
    const w = popup.offsetWidth;
    const h = popup.offsetHeight;
    const gap = 26;
    const x = Math.max(6, Math.min(this.view.width - w - 6, sx - w / 2));
    const y = sy - gap - h >= 6 ? sy - gap - h : Math.min(this.view.height - h - 6, sy + gap);
    popup.style.transform = `translate(${Math.round(x)}px, ${Math.round(y)}px)`;
  }

  // --- hooks for the browser tests and for measuring ----------------------------------------

  /** What the last frame drew: points at their screen position, outlines at their first vertex. */
  rendered() {
    const now = Date.now();
    const describe = (it, x, y) => ({
      uid: it.uid,
      x,
      y,
      kind: it.kind,
      callsign: it.callsign,
      sidc: it.kind === "unit" ? this.sprites.sidcFor(it.type) : null,
      stale: it.isStale(now),
      label: it.label,
    });
    const out = [];
    for (const h of this.renderer.hits) {
      const it = this.store.items.get(h.uid);
      if (it) out.push(describe(it, h.x, h.y));
    }
    for (const it of this.renderer.drawnLines) {
      const [x, y] = this.renderer.view.toScreen(it.rings[0][0], it.rings[0][1]);
      out.push(describe(it, x, y));
    }
    return out;
  }

  /** Draw ``frames`` frames, panning a little each time; full frame time statistics in ms. */
  benchmark(frames = 60) {
    const times = [];
    let view = this.view;
    for (let i = 0; i < frames; i++) {
      view = view.panBy(i % 2 === 0 ? 3 : -3, 0);
      const t0 = performance.now();
      this.renderer.draw(view, this.store, Date.now(), this.selected);
      // Reading a pixel makes the browser finish rasterising the frame now, so the time
      // includes the drawing itself, not just the recording of the commands.
      this.renderer.ctx.getImageData(0, 0, 1, 1);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    const mean = times.reduce((a, b) => a + b, 0) / times.length;
    return { frames, mean, median: times[Math.floor(frames / 2)], p95: times[Math.floor(frames * 0.95)], max: times[frames - 1] };
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
    view: () => page.view.fields(),
    items: () => page.store.items.size,
    banner: () => page.bannerText,
    goTo: (uid) => page.goTo(uid),
    fit: () => page.fitAll(),
    frameTimes: () => page.frameTimes.splice(0),
    setView: (fields) => page.setView(page.view.with(fields)),
  };
}

main();
