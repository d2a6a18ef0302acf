// Overlays opened from the user's own files (KML, KMZ, GeoJSON), parsed in the page with
// OpenLayers' formats and drawn above the basemap. Nothing is sent to the server; nothing a file
// names (icons, network links) is fetched: a KML's styles are dropped before it is read and the
// page's own style is used for every placemark.

import GeoJSON from "ol/format/GeoJSON.js";
import KML from "ol/format/KML.js";
import VectorLayer from "ol/layer/Vector.js";
import VectorSource from "ol/source/Vector.js";
import CircleStyle from "ol/style/Circle.js";
import Fill from "ol/style/Fill.js";
import Stroke from "ol/style/Stroke.js";
import Style from "ol/style/Style.js";
import Text from "ol/style/Text.js";
import { isolateText } from "./ui.js";

// Largest file opened (bytes): a bigger one is refused with a message, not parsed.
export const MAX_OVERLAY_BYTES = 50 * 1024 * 1024;
const COLOUR = "#0f766e";

function overlayStyle(feature) {
  const name = feature.get("name");
  return new Style({
    stroke: new Stroke({ color: COLOUR, width: 2 }),
    fill: new Fill({ color: "rgba(15, 118, 110, 0.12)" }),
    image: new CircleStyle({ radius: 5, fill: new Fill({ color: COLOUR }), stroke: new Stroke({ color: "#fff", width: 1.5 }) }),
    text:
      typeof name === "string" && name !== ""
        ? new Text({
            text: isolateText(name), // someone else's text: no direction override leaks out
            font: "600 11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
            offsetY: -12,
            fill: new Fill({ color: "#134e4a" }),
            stroke: new Stroke({ color: "rgba(255,255,255,0.9)", width: 3 }),
          })
        : undefined,
  });
}

/**
 * The first .kml file inside a KMZ (a ZIP archive; PKWARE APPNOTE 4.3.7 local headers, 4.3.12
 * central directory): stored or deflated entries, inflated with the browser's
 * DecompressionStream("deflate-raw").
 */
export async function kmlFromKmz(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(buffer);
  // End of central directory record: signature 0x06054b50, within the last 64 KiB + 22 bytes.
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 65557); i--) {
    if (view.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error("not a KMZ (ZIP) file");
  const entries = view.getUint16(eocd + 10, true);
  let at = view.getUint32(eocd + 16, true);
  const decoder = new TextDecoder();
  for (let n = 0; n < entries; n++) {
    if (view.getUint32(at, true) !== 0x02014b50) break;
    const method = view.getUint16(at + 10, true);
    const size = view.getUint32(at + 20, true);
    const nameLen = view.getUint16(at + 28, true);
    const extraLen = view.getUint16(at + 30, true);
    const commentLen = view.getUint16(at + 32, true);
    const local = view.getUint32(at + 42, true);
    const name = decoder.decode(bytes.subarray(at + 46, at + 46 + nameLen));
    at += 46 + nameLen + extraLen + commentLen;
    if (!name.toLowerCase().endsWith(".kml")) continue;
    const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    const data = bytes.subarray(start, start + size);
    if (method === 0) return decoder.decode(data);
    if (method !== 8) throw new Error(`KMZ entry ${name} uses an unsupported compression (${method})`);
    const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
    return await new Response(stream).text();
  }
  throw new Error("no .kml file in the KMZ");
}

/**
 * A KML document without its styles: OpenLayers would load the icons a style names (even with
 * ``extractStyles: false``), and the page fetches nothing a file names.
 */
export function kmlWithoutStyles(text) {
  const doc = new DOMParser().parseFromString(text, "application/xml");
  if (doc.getElementsByTagName("parsererror").length > 0) throw new Error("not valid XML");
  for (const tag of ["Style", "StyleMap", "styleUrl"]) {
    for (const node of [...doc.getElementsByTagNameNS("*", tag)]) node.remove();
  }
  return doc;
}

/** Features (EPSG:3857) of a file's contents; ``name`` decides the format. */
export async function parseOverlay(name, buffer) {
  const lower = name.toLowerCase();
  const opts = { featureProjection: "EPSG:3857" };
  if (lower.endsWith(".kmz")) {
    return new KML({ extractStyles: false, showPointNames: false }).readFeatures(kmlWithoutStyles(await kmlFromKmz(buffer)), opts);
  }
  const text = new TextDecoder().decode(buffer);
  if (lower.endsWith(".kml")) {
    return new KML({ extractStyles: false, showPointNames: false }).readFeatures(kmlWithoutStyles(text), opts);
  }
  if (lower.endsWith(".geojson") || lower.endsWith(".json")) return new GeoJSON().readFeatures(text, opts);
  throw new Error("not a .kml, .kmz, .geojson or .json file");
}

/** The overlays opened in this page, each an OpenLayers layer the user can hide or remove. */
export class Overlays {
  /** ``below``: the layer overlays go under (the picture's items). */
  constructor(map, below) {
    this.map = map;
    this.below = below;
    this.list = []; // {id, name, layer, count}
    this.nextId = 1;
  }

  /** Open a File (from an <input type=file>); resolves to the overlay added. */
  async open(file) {
    if (file.size > MAX_OVERLAY_BYTES) throw new Error(`larger than ${MAX_OVERLAY_BYTES / 1024 / 1024} MB`);
    const features = await parseOverlay(file.name, await file.arrayBuffer());
    if (features.length === 0) throw new Error("no placemarks or features in it");
    const layer = new VectorLayer({ source: new VectorSource({ features }), style: overlayStyle, declutter: "overlays" });
    // Above the basemap, graticule and tiles, below the picture's items.
    const layers = this.map.getLayers();
    layers.insertAt(layers.getArray().indexOf(this.below), layer);
    const overlay = { id: this.nextId++, name: file.name, layer, count: features.length };
    this.list.push(overlay);
    return overlay;
  }

  remove(id) {
    const i = this.list.findIndex((o) => o.id === id);
    if (i < 0) return;
    this.map.removeLayer(this.list[i].layer);
    this.list.splice(i, 1);
  }

  /** What each overlay has: {name, count, visible, placemarks: [{name, lon, lat}]} (for the tests). */
  describe(toLonLat) {
    return this.list.map((o) => ({
      name: o.name,
      count: o.count,
      visible: o.layer.getVisible(),
      placemarks: o.layer
        .getSource()
        .getFeatures()
        .map((f) => {
          const g = f.getGeometry();
          const c = g && g.getType() === "Point" ? toLonLat(g.getCoordinates()) : null;
          return { name: f.get("name") ?? null, lon: c ? c[0] : null, lat: c ? c[1] : null };
        }),
    }));
  }
}
