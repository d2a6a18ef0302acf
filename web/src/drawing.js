// What the draw tools send: the JSON body of POST /api/v1/items (docs/api.md "Drawing on the
// map") built from what was drawn, in longitude/latitude. No DOM and no OpenLayers here: draw.js
// turns the map's geometry into lon/lat and calls these.

// The sphere the page measures on (OpenLayers' ol/sphere and the server's range-and-bearing
// lines): mean Earth radius in metres.
export const EARTH_RADIUS_M = 6371008.8;

export const KINDS = ["marker", "route", "polygon", "circle", "rangebearing"];
export const KIND_NAMES = {
  marker: "Marker",
  route: "Route",
  polygon: "Polygon",
  circle: "Circle",
  rangebearing: "Range & bearing",
};

// The marker type picker: MIL-STD-2525 affiliation and a few common functions, written as CoT
// atom types one letter per field (a-<affiliation>-<dimension>[-<function>...]; a-h-G-U-C-I is
// a hostile infantry unit).
export const AFFILIATIONS = [
  ["f", "Friend"],
  ["h", "Hostile"],
  ["n", "Neutral"],
  ["u", "Unknown"],
];
export const FUNCTIONS = [
  ["G", "Ground (any)"],
  ["G-U-C", "Combat unit"],
  ["G-U-C-I", "Infantry"],
  ["G-U-C-A", "Armour"],
  ["G-U-C-F", "Field artillery"],
  ["G-U-C-R", "Reconnaissance"],
  ["G-U-H", "Headquarters"],
  ["G-E-V", "Ground vehicle"],
  ["A", "Air"],
  ["S", "Sea surface"],
];

/** The CoT type of a marker: ``markerType("h", "G-U-C-I")`` is ``a-h-G-U-C-I``. */
export function markerType(affiliation, fn) {
  const aff = AFFILIATIONS.some(([a]) => a === affiliation) ? affiliation : "u";
  const f = FUNCTIONS.some(([x]) => x === fn) ? fn : "G";
  return `a-${aff}-${f}`;
}

const rad = (d) => (d * Math.PI) / 180;
const deg = (r) => (r * 180) / Math.PI;

/** Great-circle distance in metres between two [lon, lat] (haversine). */
export function distanceM([lon1, lat1], [lon2, lat2]) {
  const dlat = rad(lat2 - lat1);
  const dlon = rad(lon2 - lon1);
  const a = Math.sin(dlat / 2) ** 2 + Math.cos(rad(lat1)) * Math.cos(rad(lat2)) * Math.sin(dlon / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(a)));
}

/** Initial bearing in degrees clockwise from true north, 0 to less than 360, from a to b. */
export function bearingDeg([lon1, lat1], [lon2, lat2]) {
  const y = Math.sin(rad(lon2 - lon1)) * Math.cos(rad(lat2));
  const x = Math.cos(rad(lat1)) * Math.sin(rad(lat2)) - Math.sin(rad(lat1)) * Math.cos(rad(lat2)) * Math.cos(rad(lon2 - lon1));
  return (deg(Math.atan2(y, x)) + 360) % 360;
}

/** Longitude wrapped into -180..180 (a drawing may be made on a copy of the world). */
function wrapLon(lon) {
  return ((((lon + 180) % 360) + 360) % 360) - 180;
}

const round = (v, digits) => Number(v.toFixed(digits));
// Seven decimals of a degree: about 1 cm, more than a click can mean.
const point = ([lon, lat]) => ({ lat: round(Math.max(-90, Math.min(90, lat)), 7), lon: round(wrapLon(lon), 7) });

/**
 * The geometry part of a drawing, from lon/lat: ``kind`` and
 * - marker: ``coords`` = [lon, lat];
 * - route: ``coords`` = [[lon, lat], ...] (2 or more);
 * - polygon: ``coords`` = a ring [[lon, lat], ...] (a closing point repeating the first is dropped);
 * - circle: ``coords`` = [centre, a point on the circle];
 * - rangebearing: ``coords`` = [start, end].
 * Null when the geometry is not enough for the kind (a route of one point, a circle of no size).
 */
export function geometryBody(kind, coords) {
  switch (kind) {
    case "marker":
      return { kind, ...point(coords) };
    case "route":
      return coords.length >= 2 ? { kind, points: coords.map(point) } : null;
    case "polygon": {
      const ring = coords.length > 3 && coords[0][0] === coords.at(-1)[0] && coords[0][1] === coords.at(-1)[1] ? coords.slice(0, -1) : coords;
      return ring.length >= 3 ? { kind, points: ring.map(point) } : null;
    }
    case "circle": {
      const radius = round(distanceM(coords[0], coords[1]), 2);
      return radius > 0 ? { kind, ...point(coords[0]), radius } : null;
    }
    case "rangebearing": {
      const range = round(distanceM(coords[0], coords[1]), 2);
      if (!(range > 0)) return null;
      return { kind, ...point(coords[0]), range, bearing: round(bearingDeg(coords[0], coords[1]), 3) };
    }
    default:
      return null;
  }
}

/**
 * The whole body to send: the geometry, the marker's type, the callsign and remarks typed (left
 * out when empty: the server names the item) and the chosen label banner (left out for the
 * server's default).
 */
export function itemBody(geometry, { type, callsign, remarks, label } = {}) {
  const body = { ...geometry };
  if (geometry.kind === "marker" && type) body.type = type;
  const cs = typeof callsign === "string" ? callsign.trim() : "";
  if (cs) body.callsign = cs;
  const rm = typeof remarks === "string" ? remarks.trim() : "";
  if (rm) body.remarks = rm;
  if (typeof label === "string" && label) body.label = label;
  return body;
}

/** A short description of what is about to be sent: "Marker at 50.45000, 30.52000". */
export function describe(geometry) {
  const at = (p) => `${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}`;
  switch (geometry.kind) {
    case "marker":
      return `Marker at ${at(geometry)}`;
    case "route":
      return `Route of ${geometry.points.length} points`;
    case "polygon":
      return `Polygon of ${geometry.points.length} corners`;
    case "circle":
      return `Circle of ${Math.round(geometry.radius)} m radius at ${at(geometry)}`;
    case "rangebearing":
      return `Range & bearing: ${Math.round(geometry.range)} m at ${geometry.bearing.toFixed(1)}° from ${at(geometry)}`;
    default:
      return "";
  }
}

/** Whether the signed-in user drew ``feature`` (its ``creator`` is their web uid). */
export function drawnBy(feature, me) {
  const creator = feature?.properties?.creator;
  return typeof creator === "string" && typeof me?.uid === "string" && creator === me.uid;
}

/**
 * Which draw tool made an item like ``feature`` (so the user can edit their own): markers are
 * CoT atoms (a-*), then routes (b-m-r), polygons (u-d-f with a closed outline), circles
 * (u-d-c-c) and range-and-bearing lines (u-rb-a); null for anything else.
 */
export function kindOf(feature) {
  const p = feature?.properties ?? {};
  const type = typeof p.type === "string" ? p.type : "";
  if (type.startsWith("a-")) return "marker";
  if (type === "b-m-r") return "route";
  if (type === "u-d-f" && p.shape?.type === "Polygon") return "polygon";
  if (type === "u-d-c-c") return "circle";
  if (type === "u-rb-a") return "rangebearing";
  return null;
}

/** The geometry part of the body that would draw ``feature`` again where it is (null if unknown). */
export function geometryOfFeature(feature) {
  const kind = kindOf(feature);
  const p = feature?.properties ?? {};
  const at = feature?.geometry?.coordinates;
  const lonLat = Array.isArray(at) ? [at[0], at[1]] : null;
  switch (kind) {
    case "marker":
      return lonLat ? geometryBody(kind, lonLat) : null;
    case "route":
      return p.shape?.type === "LineString" ? geometryBody(kind, p.shape.coordinates) : null;
    case "polygon":
      return geometryBody(kind, p.shape.coordinates[0] ?? []);
    case "circle": {
      const r = p.ellipse?.major;
      if (!lonLat || !(r > 0)) return null;
      const centre = geometryBody("marker", lonLat);
      return { kind, lat: centre.lat, lon: centre.lon, radius: r };
    }
    case "rangebearing":
      return p.shape?.type === "LineString" ? geometryBody(kind, p.shape.coordinates) : null;
    default:
      return null;
  }
}

/** The affiliation and function of the picker that make ``type``, or null when it has none. */
export function pickerOf(type) {
  const m = /^a-([fhnu])-(.+)$/.exec(typeof type === "string" ? type : "");
  if (!m || !FUNCTIONS.some(([f]) => f === m[2])) return null;
  return { affiliation: m[1], fn: m[2] };
}
