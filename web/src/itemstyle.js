// How an item of the picture looks on the OpenLayers map: 2525 symbol or marker sprite, dashed
// trail, speed leader, decluttered label, outlines of drawings and routes, stale fading and the
// selection ring, as OpenLayers styles (2D canvas). Geometry is in EPSG:3857 metres.

import LineString from "ol/geom/LineString.js";
import MultiPoint from "ol/geom/MultiPoint.js";
import Point from "ol/geom/Point.js";
import CircleStyle from "ol/style/Circle.js";
import Fill from "ol/style/Fill.js";
import Icon from "ol/style/Icon.js";
import Stroke from "ol/style/Stroke.js";
import Style from "ol/style/Style.js";

// Web Mercator: EPSG:3857 metres of world coordinates in [0, 1] (geo.js).
export const WORLD_M = 2 * Math.PI * 6378137;
export const worldToMap = (x, y) => [(x - 0.5) * WORLD_M, (0.5 - y) * WORLD_M];
export const mapToWorld = (mx, my) => [mx / WORLD_M + 0.5, 0.5 - my / WORLD_M];

export const STALE_ALPHA = 0.35;
const SHAPE_COLOUR = [194, 65, 12];
const ROUTE_COLOUR = [29, 78, 216];
export const MARKER_COLOUR = "#facc15";
const TRAIL_COLOURS = {
  friend: [0, 120, 200, 0.55],
  hostile: [200, 30, 30, 0.55],
  neutral: [0, 140, 60, 0.55],
  unknown: [150, 120, 0, 0.55],
  none: [80, 80, 80, 0.5],
};

// Drawing order inside the items layer (labels are decluttered and drawn above all of these).
const Z_OUTLINE = 0;
const Z_TRAIL = 1;
const Z_LEADER = 2;
const Z_SYMBOL = 3;
const Z_SELECTED = 4;

/**
 * The switchable layer an item is on: "mission" (opened from the Missions panel), "partner"
 * (origin "partner": it came over a federation link), "feeds" (origin "feed:NAME": a feed made
 * it), else "feed" (the live picture: this server's own clients and web users).
 */
export function layerOf(item) {
  if (item.fromMission) return "mission";
  if (item.origin === "partner") return "partner";
  if (typeof item.origin === "string" && item.origin.startsWith("feed:")) return "feeds";
  return "feed";
}

/** "045° 12 km/h" for a moving unit, "" otherwise (CoT speed is in m/s, course in degrees). */
export function motionText(course, speed) {
  if (speed === null || speed < 0.5) return "";
  const kmh = Math.round(speed * 3.6);
  const dir = course === null ? "" : `${String(Math.round(course) % 360).padStart(3, "0")}° `;
  return `${dir}${kmh} km/h`;
}

const rgba = ([r, g, b, a = 1], k = 1) => `rgba(${r}, ${g}, ${b}, ${a * k})`;

/** An OpenLayers icon for a sprite (symbols.js), made once per sprite, anchor and opacity. */
function iconFor(sp, dpr, anchor, displacement, declutterMode, opacity) {
  const key = `${anchor}|${displacement}|${declutterMode}|${opacity}`;
  sp.icons ??= new Map();
  let icon = sp.icons.get(key);
  if (!icon) {
    icon = new Icon({
      img: sp.canvas,
      anchor: [anchor[0] * dpr, anchor[1] * dpr],
      anchorXUnits: "pixels",
      anchorYUnits: "pixels",
      displacement,
      scale: 1 / dpr,
      opacity,
      declutterMode,
    });
    sp.icons.set(key, icon);
  }
  return icon;
}

/**
 * Builds the style array of one item. ``ctx``: {sprites, dpr, now, selected}.
 * Units: trail, leader, symbol, label; markers: diamond and label; outlines: stroke (and fill),
 * waypoints, label at the first vertex.
 */
export function styleItem(item, resolution, ctx) {
  if (ctx.hidden.has(layerOf(item))) return null;
  if (ctx.labels) return labelStyle(item, ctx);
  const stale = item.isStale(ctx.now);
  const alpha = stale ? STALE_ALPHA : 1;
  const selected = item.uid === ctx.selected;
  const title = item.callsign ?? item.uid;
  const out = [];
  if (item.rings !== null) {
    const route = item.kind === "route";
    const colour = route ? ROUTE_COLOUR : SHAPE_COLOUR;
    const closed = item.geometryType === "Polygon" || item.geometryType === "MultiPolygon";
    if (selected) out.push(new Style({ stroke: new Stroke({ color: "#f59e0b", width: 7 }), zIndex: Z_OUTLINE }));
    out.push(
      new Style({
        stroke: new Stroke({ color: rgba(colour, alpha), width: route ? 3 : 2.5, lineDash: route ? [10, 5] : undefined }),
        fill: closed ? new Fill({ color: rgba(colour, 0.15 * alpha) }) : undefined,
        zIndex: Z_OUTLINE,
      }),
    );
    const first = worldToMap(item.rings[0][0], item.rings[0][1]);
    if (route) {
      const pts = [];
      for (const r of item.rings) for (let i = 0; i < r.length; i += 2) pts.push(worldToMap(r[i], r[i + 1]));
      out.push(
        new Style({
          geometry: new MultiPoint(pts),
          image: new CircleStyle({
            radius: 3.5,
            fill: new Fill({ color: rgba([255, 255, 255], alpha) }),
            stroke: new Stroke({ color: rgba(colour, alpha), width: 3 }),
            declutterMode: "none",
          }),
          zIndex: Z_OUTLINE,
        }),
      );
    }
    const sp = ctx.sprites.label(title, "", stale);
    out.push(
      new Style({
        geometry: new Point(first),
        image: iconFor(sp, ctx.dpr, [0, sp.ay], [6, 10], "none", alpha),
        zIndex: Z_OUTLINE,
      }),
    );
    return out;
  }

  const [mx, my] = worldToMap(item.x, item.y);
  // Trail: the last positions, then the current one, dashed in the affiliation's colour.
  if (item.trail.length >= 2) {
    const coords = [];
    for (let i = 0; i < item.trail.length; i += 2) coords.push(worldToMap(item.trail[i], item.trail[i + 1]));
    coords.push([mx, my]);
    out.push(
      new Style({
        geometry: new LineString(coords),
        stroke: new Stroke({
          color: rgba(TRAIL_COLOURS[item.affiliation] ?? TRAIL_COLOURS.none),
          width: 2,
          lineDash: [3, 3],
          lineCap: "round",
          lineJoin: "round",
        }),
        zIndex: Z_TRAIL,
      }),
    );
  }
  // Speed leader: from the centre along the course, past the frame (about 12 px), longer when faster.
  if (item.kind === "unit" && item.course !== null && item.speed !== null && item.speed >= 0.5) {
    const len = (24 + Math.min(36, item.speed * 1.5)) * resolution;
    const a = (item.course * Math.PI) / 180;
    out.push(
      new Style({
        geometry: new LineString([
          [mx, my],
          [mx + Math.sin(a) * len, my + Math.cos(a) * len],
        ]),
        stroke: new Stroke({ color: "#111", width: 2 }),
        zIndex: Z_LEADER,
      }),
    );
  }
  const sp = item.kind === "unit" ? ctx.sprites.symbol(item.type) : ctx.sprites.marker(MARKER_COLOUR);
  out.push(new Style({ image: iconFor(sp, ctx.dpr, [sp.ax, sp.ay], [0, 0], "none", alpha), zIndex: Z_SYMBOL }));
  if (selected) {
    out.push(
      new Style({
        image: new CircleStyle({
          radius: Math.max(sp.width, sp.height) / 2 + 5,
          stroke: new Stroke({ color: "#f59e0b", width: 3 }),
          declutterMode: "none",
        }),
        zIndex: Z_SELECTED,
      }),
    );
  }
  return out;
}

/**
 * The label of a point item (drawn by a layer of its own, decluttered): right of the symbol, or
 * left of it when the speed leader points right; skipped when it would overlap a label already
 * placed (it shows again zoomed in).
 */
function labelStyle(item, ctx) {
  if (item.rings !== null) return null;
  const stale = item.isStale(ctx.now);
  const title = item.callsign ?? item.uid;
  const sub = item.kind === "unit" ? motionText(item.course, item.speed) : "";
  const half = item.kind === "unit" ? ctx.sprites.symbol(item.type).width / 2 : 8;
  const lab = ctx.sprites.label(title, sub, stale);
  const leaderRight = sub !== "" && item.course !== null && item.course % 360 > 20 && item.course % 360 < 160;
  const key = leaderRight ? `r${half}` : `l${half}`;
  lab.styles ??= new Map();
  let style = lab.styles.get(key);
  if (!style) {
    style = new Style({
      image: leaderRight
        ? iconFor(lab, ctx.dpr, [lab.width, lab.ay], [-(half + 2), 0], "declutter", 1)
        : iconFor(lab, ctx.dpr, [0, lab.ay], [half + 2, 0], "declutter", 1),
    });
    lab.styles.set(key, style);
  }
  return style;
}
