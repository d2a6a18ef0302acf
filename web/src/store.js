// The picture the page holds: features by uid, with projected geometry, short track trails and
// stale state. No DOM: the renderer reads it, the stream and the REST calls write it.

import { lonLatToWorld } from "./geo.js";
import { affiliationOf, drawKind } from "./sidc.js";

// Positions kept per unit for its trail: enough to show where it came from, small enough that
// 2,000 units cost well under a megabyte.
export const TRAIL_POINTS = 20;
// A new trail point is recorded only after the unit moved this far (world units, about 2 m at
// the equator), so a unit reporting the same position does not fill its trail with duplicates.
export const TRAIL_MIN_STEP = 1 / 2 ** 24;

function parseTime(iso) {
  const t = typeof iso === "string" ? Date.parse(iso) : Number.NaN;
  return Number.isFinite(t) ? t : null;
}

function projectLine(coords) {
  const out = new Float64Array(coords.length * 2);
  coords.forEach(([lon, lat], i) => {
    const [x, y] = lonLatToWorld(lon, lat);
    out[2 * i] = x;
    out[2 * i + 1] = y;
  });
  return out;
}

const OUTLINE_TYPES = new Set(["LineString", "Polygon", "MultiLineString", "MultiPolygon"]);
// Vertices of the polygon drawn for an ellipse (circle drawings, u-d-c-c).
const ELLIPSE_POINTS = 72;
const EARTH_RADIUS_M = 6371000;

/**
 * A ring approximating an ellipse centred on (lon, lat): semi-axes ``major`` and ``minor`` in
 * metres, ``angle`` in degrees clockwise from north for the major axis (ATAK's
 * <shape><ellipse major minor angle/>).
 */
export function ellipseRing(lon, lat, major, minor, angle = 0) {
  const ring = [];
  const a = (angle * Math.PI) / 180;
  const mPerDegLat = (Math.PI * EARTH_RADIUS_M) / 180;
  const mPerDegLon = mPerDegLat * Math.max(1e-6, Math.cos((lat * Math.PI) / 180));
  for (let i = 0; i <= ELLIPSE_POINTS; i++) {
    const t = (2 * Math.PI * (i % ELLIPSE_POINTS)) / ELLIPSE_POINTS;
    // Point on the ellipse with the major axis north, then rotated clockwise by ``angle``.
    const north = major * Math.cos(t);
    const east = minor * Math.sin(t);
    const n = north * Math.cos(a) - east * Math.sin(a);
    const e = north * Math.sin(a) + east * Math.cos(a);
    ring.push([lon + e / mPerDegLon, lat + n / mPerDegLat]);
  }
  return ring;
}

/**
 * The geometry to draw. Liaison's feed keeps every item a Point (its position) and gives the
 * outline of drawings and routes in ``properties.shape`` and of circles in
 * ``properties.ellipse``; a feature whose own geometry is a line or polygon is drawn as it is.
 */
export function geometryOf(feature) {
  const g = feature.geometry ?? { type: "Point", coordinates: [0, 0] };
  const p = feature.properties ?? {};
  if (g.type === "Point" && p.shape && OUTLINE_TYPES.has(p.shape.type) && Array.isArray(p.shape.coordinates)) {
    return p.shape;
  }
  const e = p.ellipse;
  if (g.type === "Point" && e && Number.isFinite(e.major) && Number.isFinite(e.minor) && e.major > 0) {
    const [lon, lat] = g.coordinates;
    return { type: "Polygon", coordinates: [ellipseRing(lon, lat, e.major, e.minor, e.angle ?? 0)] };
  }
  return g;
}

/** One item of the picture, ready to draw. */
export class Item {
  constructor(feature) {
    this.trail = [];
    this.update(feature);
  }

  update(feature) {
    this.rev = (this.rev ?? 0) + 1; // the map redraws an item whose rev changed
    const p = feature.properties ?? {};
    const g = geometryOf(feature);
    this.feature = feature;
    this.uid = String(p.uid ?? feature.id ?? "");
    this.type = typeof p.type === "string" ? p.type : "";
    this.callsign = typeof p.callsign === "string" && p.callsign !== "" ? p.callsign : null;
    this.label = typeof p.label === "string" && p.label !== "" ? p.label : null;
    // Where the server got it: "feed:NAME", "partner", or null (docs/api.md, the Feature shape).
    this.origin = typeof p.origin === "string" && p.origin !== "" ? p.origin : null;
    this.staleAt = parseTime(p.stale);
    this.time = parseTime(p.time);
    this.course = typeof p.course === "number" && Number.isFinite(p.course) ? p.course : null;
    this.speed = typeof p.speed === "number" && Number.isFinite(p.speed) ? p.speed : null;
    this.kind = drawKind(this.type, g.type);
    this.affiliation = affiliationOf(this.type);
    this.geometryType = g.type;
    if (g.type === "Point") {
      const [lon, lat] = g.coordinates;
      this.lon = lon;
      this.lat = lat;
      const [x, y] = lonLatToWorld(lon, lat);
      this.moveTo(x, y);
      this.rings = null;
    } else {
      const lines =
        g.type === "LineString"
          ? [g.coordinates]
          : g.type === "Polygon"
            ? g.coordinates
            : g.type === "MultiLineString"
              ? g.coordinates
              : g.type === "MultiPolygon"
                ? g.coordinates.flat()
                : [];
      this.rings = lines.map(projectLine);
      const first = lines[0]?.[0] ?? [0, 0];
      this.lon = first[0];
      this.lat = first[1];
      let [minx, miny, maxx, maxy] = [Infinity, Infinity, -Infinity, -Infinity];
      for (const r of this.rings) {
        for (let i = 0; i < r.length; i += 2) {
          minx = Math.min(minx, r[i]);
          maxx = Math.max(maxx, r[i]);
          miny = Math.min(miny, r[i + 1]);
          maxy = Math.max(maxy, r[i + 1]);
        }
      }
      this.bbox = [minx, miny, maxx, maxy];
      this.x = this.rings[0]?.[0] ?? 0.5;
      this.y = this.rings[0]?.[1] ?? 0.5;
    }
  }

  /** This item came from a mission (the Missions panel), for the map's "Mission items" layer. */
  markMission() {
    this.fromMission = true;
  }

  /** Record a new position; the previous one joins the trail when the unit really moved. */
  moveTo(x, y) {
    if (this.x !== undefined && this.kind === "unit") {
      const moved = Math.abs(x - this.x) > TRAIL_MIN_STEP || Math.abs(y - this.y) > TRAIL_MIN_STEP;
      if (moved) {
        this.trail.push(this.x, this.y);
        if (this.trail.length > TRAIL_POINTS * 2) this.trail.splice(0, 2);
      }
    }
    this.x = x;
    this.y = y;
    this.bbox = [x, y, x, y];
  }

  isStale(nowMs) {
    return this.staleAt !== null && this.staleAt <= nowMs;
  }
}

/** All items by uid, plus a version number that changes whenever anything drawn changes. */
export class Store {
  constructor() {
    this.items = new Map();
    this.version = 0;
    this.staleUids = new Set();
  }

  /** Replace everything with a snapshot; trails of units still present are kept. */
  replaceAll(features) {
    const keep = new Map();
    for (const f of features) {
      const uid = String(f?.properties?.uid ?? f?.id ?? "");
      if (!uid) continue;
      const old = this.items.get(uid);
      if (old) {
        old.update(f);
        keep.set(uid, old);
      } else {
        keep.set(uid, new Item(f));
      }
    }
    this.items = keep;
    this.staleUids.clear();
    this.version++;
  }

  upsert(feature) {
    const uid = String(feature?.properties?.uid ?? feature?.id ?? "");
    if (!uid) return null;
    let item = this.items.get(uid);
    if (item) item.update(feature);
    else {
      item = new Item(feature);
      this.items.set(uid, item);
    }
    this.version++;
    return item;
  }

  remove(uid) {
    if (this.items.delete(uid)) {
      this.staleUids.delete(uid);
      this.version++;
      return true;
    }
    return false;
  }

  /** Re-check stale times against the clock; true when any item's stale state changed. */
  refreshStale(nowMs) {
    let changed = false;
    for (const item of this.items.values()) {
      const stale = item.isStale(nowMs);
      if (stale !== this.staleUids.has(item.uid)) {
        if (stale) this.staleUids.add(item.uid);
        else this.staleUids.delete(item.uid);
        changed = true;
      }
    }
    if (changed) this.version++;
    return changed;
  }

  /** World bounding box of every item, or null when empty. */
  extent() {
    let [minx, miny, maxx, maxy] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const it of this.items.values()) {
      minx = Math.min(minx, it.bbox[0]);
      miny = Math.min(miny, it.bbox[1]);
      maxx = Math.max(maxx, it.bbox[2]);
      maxy = Math.max(maxy, it.bbox[3]);
    }
    return Number.isFinite(minx) ? [minx, miny, maxx, maxy] : null;
  }
}
