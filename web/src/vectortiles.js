// The operator's vector MBTiles (Mapbox Vector Tiles from GET /api/v1/tiles/{z}/{x}/{y}), drawn
// with OpenLayers' VectorTile layer and MVT format in one built-in style: the layer names of the
// OpenMapTiles schema, Mapbox Streets and Protomaps basemaps are recognised (land, water, parks,
// buildings, roads, railways, boundaries, places); any other layer gets a plain grey default.

import MVT from "ol/format/MVT.js";
import VectorTileLayer from "ol/layer/VectorTile.js";
import VectorTileSource from "ol/source/VectorTile.js";
import CircleStyle from "ol/style/Circle.js";
import Fill from "ol/style/Fill.js";
import Stroke from "ol/style/Stroke.js";
import Style from "ol/style/Style.js";
import Text from "ol/style/Text.js";
import { isolateText } from "./ui.js";

export const VECTOR_COLOURS = Object.freeze({
  land: "#f4f1e8",
  water: "#9cc3e4",
  green: "#cfe3b4",
  landuse: "#ebe5d6",
  building: "#d8cfc6",
  road: "#ffffff",
  roadCasing: "#b8ae9c",
  majorRoad: "#f6c37a",
  rail: "#8f8f8f",
  boundary: "#9e7fa3",
  place: "#3d3a33",
  other: "rgba(150, 150, 150, 0.35)",
  otherLine: "#a0a0a0",
});

// Which drawing each source layer name gets (lower case).
const KINDS = {
  earth: "land",
  land: "land",
  water: "water",
  ocean: "water",
  waterway: "waterway",
  water_line: "waterway",
  park: "green",
  landcover: "green",
  natural: "green",
  landuse: "landuse",
  building: "building",
  buildings: "building",
  transportation: "road",
  road: "road",
  roads: "road",
  railway: "rail",
  boundary: "boundary",
  boundaries: "boundary",
  admin: "boundary",
  place: "place",
  places: "place",
  place_label: "place",
};
const MAJOR_ROADS = new Set(["motorway", "trunk", "primary", "highway", "major_road"]);
const FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";

const fill = (color) => new Style({ fill: new Fill({ color }) });
const line = (color, width, lineDash) => new Style({ stroke: new Stroke({ color, width, lineDash }) });
const STYLES = {
  land: fill(VECTOR_COLOURS.land),
  water: fill(VECTOR_COLOURS.water),
  waterway: line(VECTOR_COLOURS.water, 1.5),
  green: fill(VECTOR_COLOURS.green),
  landuse: fill(VECTOR_COLOURS.landuse),
  building: new Style({ fill: new Fill({ color: VECTOR_COLOURS.building }), stroke: new Stroke({ color: "#c4b9ae", width: 0.5 }) }),
  road: [line(VECTOR_COLOURS.roadCasing, 3), line(VECTOR_COLOURS.road, 1.6)],
  majorRoad: [line(VECTOR_COLOURS.roadCasing, 4.5), line(VECTOR_COLOURS.majorRoad, 3)],
  rail: line(VECTOR_COLOURS.rail, 1.2, [5, 3]),
  boundary: line(VECTOR_COLOURS.boundary, 1.2, [6, 3, 2, 3]),
  otherFill: new Style({ fill: new Fill({ color: VECTOR_COLOURS.other }), stroke: new Stroke({ color: VECTOR_COLOURS.otherLine, width: 0.5 }) }),
  otherLine: line(VECTOR_COLOURS.otherLine, 1),
};
const placeText = new Text({
  font: FONT,
  fill: new Fill({ color: VECTOR_COLOURS.place }),
  stroke: new Stroke({ color: "rgba(255, 255, 255, 0.9)", width: 3 }),
  overflow: true,
});
const placeStyle = new Style({ text: placeText, image: new CircleStyle({ radius: 2, fill: new Fill({ color: VECTOR_COLOURS.place }) }) });

/** The name a feature is labelled with: ``name:latin``, ``name_en``, ``name``, else none. */
function nameOf(feature) {
  for (const key of ["name:latin", "name_en", "name:en", "name"]) {
    const v = feature.get(key);
    if (typeof v === "string" && v !== "") return v;
  }
  return null;
}

/** The OpenLayers style of one vector tile feature (its source layer in ``layer``). */
export function vectorStyle(feature) {
  const kind = KINDS[String(feature.get("layer") ?? "").toLowerCase()];
  const type = feature.getType(); // Point, LineString, Polygon (and Multi*)
  const polygon = type.endsWith("Polygon");
  const isLine = type.endsWith("LineString");
  switch (kind) {
    case "land":
    case "water":
    case "green":
    case "landuse":
    case "building":
      return polygon ? STYLES[kind] : kind === "water" && isLine ? STYLES.waterway : null;
    case "waterway":
      return isLine ? STYLES.waterway : polygon ? STYLES.water : null;
    case "road": {
      if (!isLine) return null;
      const cls = String(feature.get("class") ?? feature.get("kind") ?? "");
      return MAJOR_ROADS.has(cls) ? STYLES.majorRoad : STYLES.road;
    }
    case "rail":
      return isLine ? STYLES.rail : null;
    case "boundary":
      return isLine || polygon ? STYLES.boundary : null;
    case "place": {
      const name = nameOf(feature);
      if (!name || !type.endsWith("Point")) return null;
      placeText.setText(isolateText(name)); // the operator's tiles, still shown as text only
      return placeStyle;
    }
    default:
      return polygon ? STYLES.otherFill : isLine ? STYLES.otherLine : null;
  }
}

/**
 * The layer drawing the operator's vector tiles; ``extent`` in EPSG:3857 or undefined. Above the
 * tile set's maxzoom its deepest tiles are drawn, scaled.
 */
export function vectorTileLayer(minzoom, maxzoom, extent) {
  return new VectorTileLayer({
    source: new VectorTileSource({
      format: new MVT(),
      url: "/api/v1/tiles/{z}/{x}/{y}",
      minZoom: minzoom,
      maxZoom: maxzoom,
      wrapX: false,
    }),
    style: vectorStyle,
    declutter: "vector-tiles", // place names declutter among themselves, not with the items' labels
    minZoom: minzoom - 0.5,
    extent,
    renderMode: "hybrid",
  });
}
