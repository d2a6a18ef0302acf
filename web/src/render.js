// Draws the map on one 2D canvas: cached basemap, optional MBTiles raster, shapes and routes,
// trails, speed leaders, 2525 symbols and decluttered labels. Also answers "what is under the
// pointer" from what it last drew.

import { View } from "./geo.js";

// Extra basemap drawn around the view so short drags only move an image.
const BASE_MARGIN_PX = 256;
// After the last zoom step, wait this long before redrawing the basemap at the new zoom (until
// then the old image is scaled): a wheel spin costs one basemap render, not one per step.
const BASE_SETTLE_MS = 150;
// Units further off screen than this are not drawn (half a large symbol plus its label).
const CULL_PX = 60;
// Label placement grid cell (px): labels are checked only against labels in the cells they touch.
const GRID_PX = 64;
// Pointer distance (px) within which an item is "under" it.
export const HIT_PX = 14;
// Trails and leaders
const STALE_ALPHA = 0.35;

const SHAPE_COLOUR = "#c2410c";
const ROUTE_COLOUR = "#1d4ed8";
const MARKER_COLOUR = "#facc15";
const TRAIL_COLOURS = {
  friend: "rgba(0, 120, 200, 0.55)",
  hostile: "rgba(200, 30, 30, 0.55)",
  neutral: "rgba(0, 140, 60, 0.55)",
  unknown: "rgba(150, 120, 0, 0.55)",
  none: "rgba(80, 80, 80, 0.5)",
};

/** "045° 12 km/h" for a moving unit, "" otherwise (CoT speed is in m/s, course in degrees). */
export function motionText(course, speed) {
  if (speed === null || speed < 0.5) return "";
  const kmh = Math.round(speed * 3.6);
  const dir = course === null ? "" : `${String(Math.round(course) % 360).padStart(3, "0")}° `;
  return `${dir}${kmh} km/h`;
}

class LabelGrid {
  constructor() {
    this.cells = new Map();
  }

  /** Place the box if it overlaps nothing placed; true when placed. */
  place(x0, y0, x1, y1) {
    const c0 = Math.floor(x0 / GRID_PX);
    const c1 = Math.floor(x1 / GRID_PX);
    const r0 = Math.floor(y0 / GRID_PX);
    const r1 = Math.floor(y1 / GRID_PX);
    for (let c = c0; c <= c1; c++) {
      for (let r = r0; r <= r1; r++) {
        const boxes = this.cells.get(c * 100003 + r);
        if (!boxes) continue;
        for (let i = 0; i < boxes.length; i += 4) {
          if (!(boxes[i] > x1 || boxes[i + 2] < x0 || boxes[i + 1] > y1 || boxes[i + 3] < y0))
            return false;
        }
      }
    }
    for (let c = c0; c <= c1; c++) {
      for (let r = r0; r <= r1; r++) {
        const key = c * 100003 + r;
        let boxes = this.cells.get(key);
        if (!boxes) {
          boxes = [];
          this.cells.set(key, boxes);
        }
        boxes.push(x0, y0, x1, y1);
      }
    }
    return true;
  }
}

export class Renderer {
  constructor(canvas, basemap, sprites) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.basemap = basemap;
    this.sprites = sprites;
    this.tiles = null;
    this.baseCanvas = document.createElement("canvas");
    this.baseView = null;
    this.dpr = 1;
    this.lastZoomChange = 0;
    this.lastViewZoom = null;
    this.hits = [];
    this.drawnLines = [];
    this.needsFollowUp = false;
  }

  resize(width, height, dpr) {
    this.dpr = dpr;
    this.canvas.width = Math.round(width * dpr);
    this.canvas.height = Math.round(height * dpr);
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    this.baseView = null;
  }

  invalidateBase() {
    this.baseView = null;
  }

  renderBase(view) {
    const bv = new View({
      ...view.fields(),
      width: view.width + 2 * BASE_MARGIN_PX,
      height: view.height + 2 * BASE_MARGIN_PX,
    });
    const c = this.baseCanvas;
    c.width = Math.round(bv.width * this.dpr);
    c.height = Math.round(bv.height * this.dpr);
    const ctx = c.getContext("2d");
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    this.basemap.draw(ctx, bv);
    this.baseView = bv;
  }

  /** Blit the cached basemap for ``view``, re-rendering it when it no longer fits. */
  drawBase(ctx, view, nowMs) {
    let bv = this.baseView;
    const sameZoom = bv !== null && Math.abs(bv.zoom - view.zoom) < 1e-9;
    if (view.zoom !== this.lastViewZoom) {
      this.lastViewZoom = view.zoom;
      this.lastZoomChange = nowMs;
    }
    let covered = false;
    if (sameZoom) {
      const [x0, y0] = bv.toScreen(...view.toWorld(0, 0));
      covered = x0 >= 0 && y0 >= 0 && x0 + view.width <= bv.width && y0 + view.height <= bv.height;
    }
    const settled = nowMs - this.lastZoomChange >= BASE_SETTLE_MS;
    if (bv === null || (sameZoom && !covered) || (!sameZoom && settled)) {
      this.renderBase(view);
      bv = this.baseView;
    } else if (!sameZoom) {
      this.needsFollowUp = true; // come back when the zoom has settled
    }
    const [wx, wy] = bv.toWorld(0, 0);
    const [sx, sy] = view.toScreen(wx, wy);
    const k = 2 ** (view.zoom - bv.zoom);
    if (k !== 1) {
      ctx.fillStyle = "#c9dbea";
      ctx.fillRect(0, 0, view.width, view.height);
    }
    ctx.drawImage(this.baseCanvas, sx, sy, bv.width * k, bv.height * k);
  }

  /**
   * Draw one frame. Returns {drawn, labels, labelsOnScreen, ms}: the number of items drawn,
   * labels placed, and the confidentiality labels of everything drawn (for the banner).
   */
  draw(view, store, nowMs, selectedUid = null) {
    const t0 = performance.now();
    const ctx = this.ctx;
    this.needsFollowUp = false;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    this.drawBase(ctx, view, nowMs);
    if (this.tiles) this.tiles.draw(ctx, view);
    this.basemap.drawGraticuleLabels(ctx, view);

    const hits = [];
    const lines = [];
    const points = [];
    const labelsOnScreen = new Set();
    const [bx0, by0, bx1, by1] = view.bounds(CULL_PX);
    let unlabelled = false;
    for (const it of store.items.values()) {
      const bb = it.bbox;
      if (bb[0] > bx1 || bb[2] < bx0 || bb[1] > by1 || bb[3] < by0) continue;
      if (it.label === null) unlabelled = true;
      else labelsOnScreen.add(it.label);
      if (it.rings !== null) lines.push(it);
      else points.push(it);
    }

    // Shapes, routes and other geometry.
    for (const it of lines) this.drawGeometry(ctx, view, it, it.isStale(nowMs), it.uid === selectedUid);

    // Trails, one path per colour.
    const s = view.scale;
    const ox = view.width / 2 - view.cx * s;
    const oy = view.height / 2 - view.cy * s;
    const byColour = new Map();
    for (const it of points) {
      if (it.trail.length < 2) continue;
      let arr = byColour.get(it.affiliation);
      if (!arr) byColour.set(it.affiliation, (arr = []));
      arr.push(it);
    }
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    for (const [aff, items] of byColour) {
      ctx.beginPath();
      for (const it of items) {
        const t = it.trail;
        ctx.moveTo(t[0] * s + ox, t[1] * s + oy);
        for (let i = 2; i < t.length; i += 2) ctx.lineTo(t[i] * s + ox, t[i + 1] * s + oy);
        ctx.lineTo(it.x * s + ox, it.y * s + oy);
      }
      ctx.strokeStyle = TRAIL_COLOURS[aff] ?? TRAIL_COLOURS.none;
      ctx.setLineDash([3, 3]);
      ctx.stroke();
    }
    ctx.setLineDash([]);

    // Speed leaders: a line from the symbol centre along the course, longer when faster.
    ctx.beginPath();
    for (const it of points) {
      if (it.course === null || it.speed === null || it.speed < 0.5) continue;
      // From the centre, past the frame (about 12 px from the centre), then longer when faster.
      const len = 24 + Math.min(36, it.speed * 1.5);
      const a = (it.course * Math.PI) / 180;
      const x = it.x * s + ox;
      const y = it.y * s + oy;
      ctx.moveTo(x, y);
      ctx.lineTo(x + Math.sin(a) * len, y - Math.cos(a) * len);
    }
    ctx.strokeStyle = "#111";
    ctx.lineWidth = 2;
    ctx.stroke();

    // Symbols and markers.
    let selected = null;
    for (const it of points) {
      const x = it.x * s + ox;
      const y = it.y * s + oy;
      const sp = it.kind === "unit" ? this.sprites.symbol(it.type) : this.sprites.marker(MARKER_COLOUR);
      const stale = it.isStale(nowMs);
      ctx.globalAlpha = stale ? STALE_ALPHA : 1;
      // Whole-pixel positions: a plain copy of the sprite, crisp and the fastest to draw.
      ctx.drawImage(sp.canvas, Math.round(x - sp.ax), Math.round(y - sp.ay), sp.width, sp.height);
      hits.push({ uid: it.uid, x, y, r: Math.max(HIT_PX, Math.max(sp.width, sp.height) / 2) });
      if (it.uid === selectedUid) selected = { x, y, sp };
    }
    ctx.globalAlpha = 1;

    // Labels: the selected item first, then in draw order; a label that would overlap one
    // already placed is skipped (it shows again when zoomed in).
    const grid = new LabelGrid();
    let placed = 0;
    const order = selected ? [store.items.get(selectedUid), ...points] : points;
    for (const it of order) {
      if (!it || it.rings !== null) continue;
      const title = it.callsign ?? it.uid;
      const sub = it.kind === "unit" ? motionText(it.course, it.speed) : "";
      const half = it.kind === "unit" ? this.sprites.symbol(it.type).width / 2 : 8;
      // Estimate the box before making a sprite: most labels are rejected when crowded.
      const estW = Math.max(title.length * 7.5, sub.length * 6.5) + 6;
      const estH = sub ? 30 : 17;
      // Right of the symbol, or left of it when the speed leader points right.
      const leaderRight = sub !== "" && it.course !== null && it.course % 360 > 20 && it.course % 360 < 160;
      const x = leaderRight ? it.x * s + ox - half - 2 - estW : it.x * s + ox + half + 2;
      const y = it.y * s + oy;
      if (!grid.place(x, y - 8.5, x + estW, y - 8.5 + estH)) continue;
      const sp = this.sprites.label(title, sub, it.isStale(nowMs));
      const lx = leaderRight ? x + estW - sp.width : x;
      ctx.drawImage(sp.canvas, Math.round(lx - sp.ax), Math.round(y - sp.ay), sp.width, sp.height);
      placed++;
    }

    if (selected) {
      ctx.beginPath();
      const r = Math.max(selected.sp.width, selected.sp.height) / 2 + 5;
      ctx.arc(selected.x, selected.y, r, 0, 2 * Math.PI);
      ctx.strokeStyle = "#f59e0b";
      ctx.lineWidth = 3;
      ctx.stroke();
    }

    this.hits = hits;
    this.drawnLines = lines;
    this.view = view;
    return {
      drawn: points.length + lines.length,
      labels: placed,
      labelsOnScreen,
      unlabelled,
      ms: performance.now() - t0,
    };
  }

  drawGeometry(ctx, view, it, stale, selected) {
    const s = view.scale;
    const ox = view.width / 2 - view.cx * s;
    const oy = view.height / 2 - view.cy * s;
    const closed = it.geometryType === "Polygon" || it.geometryType === "MultiPolygon";
    const colour = it.kind === "route" ? ROUTE_COLOUR : SHAPE_COLOUR;
    ctx.globalAlpha = stale ? STALE_ALPHA : 1;
    ctx.beginPath();
    for (const r of it.rings) {
      ctx.moveTo(r[0] * s + ox, r[1] * s + oy);
      for (let i = 2; i < r.length; i += 2) ctx.lineTo(r[i] * s + ox, r[i + 1] * s + oy);
      if (closed) ctx.closePath();
    }
    if (closed) {
      ctx.fillStyle = colour;
      ctx.globalAlpha *= 0.15;
      ctx.fill("evenodd");
      ctx.globalAlpha = stale ? STALE_ALPHA : 1;
    }
    if (selected) {
      ctx.strokeStyle = "#f59e0b";
      ctx.lineWidth = 7;
      ctx.stroke();
    }
    ctx.strokeStyle = colour;
    ctx.lineWidth = it.kind === "route" ? 3 : 2.5;
    if (it.kind === "route") ctx.setLineDash([10, 5]);
    ctx.stroke();
    ctx.setLineDash([]);
    if (it.kind === "route") {
      ctx.fillStyle = "#fff";
      for (const r of it.rings) {
        for (let i = 0; i < r.length; i += 2) {
          ctx.beginPath();
          ctx.arc(r[i] * s + ox, r[i + 1] * s + oy, 3.5, 0, 2 * Math.PI);
          ctx.fill();
          ctx.stroke();
        }
      }
    }
    const title = it.callsign ?? it.uid;
    const sp = this.sprites.label(title, "", stale);
    const [lx, ly] = [it.rings[0][0] * s + ox + 6, it.rings[0][1] * s + oy - 10];
    ctx.drawImage(sp.canvas, lx, ly - sp.ay, sp.width, sp.height);
    ctx.globalAlpha = 1;
  }

  /** The uid of the item under screen point (sx, sy) in the last frame, or null. */
  hit(sx, sy) {
    let best = null;
    let bestD = Infinity;
    for (const h of this.hits) {
      const d = Math.hypot(h.x - sx, h.y - sy);
      if (d <= h.r && d < bestD) {
        best = h.uid;
        bestD = d;
      }
    }
    if (best !== null || !this.view) return best;
    const view = this.view;
    for (const it of this.drawnLines) {
      for (const r of it.rings) {
        let [px, py] = view.toScreen(r[0], r[1]);
        for (let i = 2; i < r.length; i += 2) {
          const [qx, qy] = view.toScreen(r[i], r[i + 1]);
          const dx = qx - px;
          const dy = qy - py;
          const len = dx * dx + dy * dy;
          const t = len > 0 ? Math.max(0, Math.min(1, ((sx - px) * dx + (sy - py) * dy) / len)) : 0;
          const d = Math.hypot(sx - px - t * dx, sy - py - t * dy);
          if (d < 6 && d < bestD) {
            best = it.uid;
            bestD = d;
          }
          px = qx;
          py = qy;
        }
      }
    }
    return best;
  }
}
