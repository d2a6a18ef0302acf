// Coordinates as the page shows them: decimal degrees, degrees-minutes-seconds or MGRS (the
// `mgrs` package: UTM/UPS-based grid references, NGA's Military Grid Reference System).

// The package publishes its ES module only as "module" (Node would load the CommonJS "main").
import { forward as toMgrs } from "../node_modules/mgrs/dist/mgrs.esm.js";

export const FORMATS = ["dd", "dms", "mgrs"];
export const FORMAT_NAMES = { dd: "Decimal degrees", dms: "Degrees, minutes, seconds", mgrs: "MGRS" };

/** "50.45012, 30.52340" (latitude first, 5 decimals: about a metre). */
export function formatDD(lon, lat) {
  return `${lat.toFixed(5)}, ${lon.toFixed(5)}`;
}

function dms(value, pos, neg) {
  const hemi = value >= 0 ? pos : neg;
  let total = Math.round(Math.abs(value) * 36000); // tenths of a second
  const tenths = total % 600;
  total = (total - tenths) / 600;
  const m = total % 60;
  const d = (total - m) / 60;
  return `${d}°${String(m).padStart(2, "0")}′${(tenths / 10).toFixed(1).padStart(4, "0")}″${hemi}`;
}

/** "50°27′00.4″N 30°31′24.2″E" (tenths of a second). */
export function formatDMS(lon, lat) {
  return `${dms(lat, "N", "S")} ${dms(lon, "E", "W")}`;
}

/** "36U UU 53820 91060" (1 m precision); "outside MGRS" beyond 84°N and 80°S. */
export function formatMGRS(lon, lat) {
  if (!(lat >= -80 && lat <= 84)) return "outside MGRS";
  const ref = toMgrs([lon, lat], 5);
  // 36UUU5382091060 -> 36U UU 53820 91060
  const m = /^(\d{1,2}[A-Z])([A-Z]{2})(\d{5})(\d{5})$/.exec(ref);
  return m ? `${m[1]} ${m[2]} ${m[3]} ${m[4]}` : ref;
}

export function formatCoords(lon, lat, format) {
  if (format === "dms") return formatDMS(lon, lat);
  if (format === "mgrs") return formatMGRS(lon, lat);
  return formatDD(lon, lat);
}

/** "850 m", "12.35 km" (metres below 1 km, then km with 2 decimals). */
export function formatLength(m) {
  return m < 1000 ? `${Math.round(m)} m` : `${(m / 1000).toFixed(2)} km`;
}

/** "5,400 m²", "3.21 km²" (square metres below 0.1 km², then km² with 2 decimals). */
export function formatArea(m2) {
  return m2 < 100000 ? `${Math.round(m2).toLocaleString("en-US")} m²` : `${(m2 / 1e6).toFixed(2)} km²`;
}
