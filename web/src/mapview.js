// The map, on OpenLayers (2D canvas renderer only): the offline Natural Earth basemap, a
// graticule, the user's MBTiles raster when the server offers one, and the picture's items as
// vector features styled by itemstyle.js. OpenLayers does the projection (EPSG:3857), pan and
// zoom, hit-testing and label decluttering; this module keeps the features in step with the
// store and reports what the last frame drew.

import Feature from "ol/Feature.js";
import Map from "ol/Map.js";
import View from "ol/View.js";
import { defaults as defaultInteractions } from "ol/interaction/defaults.js";
import MultiLineString from "ol/geom/MultiLineString.js";
import Point from "ol/geom/Point.js";
import Polygon from "ol/geom/Polygon.js";
import Graticule from "ol/layer/Graticule.js";
import ImageLayer from "ol/layer/Image.js";
import TileLayer from "ol/layer/Tile.js";
import VectorLayer from "ol/layer/Vector.js";
import VectorImageLayer from "ol/layer/VectorImage.js";
import { getPointResolution, toLonLat } from "ol/proj.js";
import ImageCanvasSource from "ol/source/ImageCanvas.js";
import VectorSource from "ol/source/Vector.js";
import XYZ from "ol/source/XYZ.js";
import Stroke from "ol/style/Stroke.js";
import Style from "ol/style/Style.js";
import Text from "ol/style/Text.js";
import Fill from "ol/style/Fill.js";
import { View as WorldView } from "./geo.js";
import { COLOURS } from "./basemap.js";
import { layerOf, mapToWorld, styleItem, WORLD_M, worldToMap } from "./itemstyle.js";

export const MIN_ZOOM = 1;
export const MAX_ZOOM = 18;
// Pointer distance (px) within which an item is "under" it.
export const HIT_PX = 6;
// Items further off screen than this (px) are not reported as drawn.
const CULL_PX = 60;
const HALF = WORLD_M / 2;
// How much larger than the view the items' images are (OpenLayers' VectorImage imageRatio).
const IMAGE_RATIO = 1.5;
const AFFILIATION_ORDER = { friend: 0, hostile: 1, neutral: 2, unknown: 3, none: 4 };
const WORLD_EXTENT = [-HALF, -HALF, HALF, HALF];

function toFlat(ring) {
  const out = [];
  for (let i = 0; i < ring.length; i += 2) out.push(worldToMap(ring[i], ring[i + 1]));
  return out;
}

function geometryOf(item) {
  if (item.rings === null) return new Point(worldToMap(item.x, item.y));
  const rings = item.rings.map(toFlat);
  const closed = item.geometryType === "Polygon" || item.geometryType === "MultiPolygon";
  return closed ? new Polygon(rings) : new MultiLineString(rings);
}

export class LiveMap {
  /** ``target``: the map's element; ``basemap``: basemap.js's Basemap; ``sprites``: symbols.js. */
  constructor(target, basemap, sprites, store) {
    this.store = store;
    this.sprites = sprites;
    this.dpr = window.devicePixelRatio || 1;
    this.now = Date.now();
    this.selected = null;
    this.features = new globalThis.Map(); // uid -> {feature, item, stale, selected}
    this.syncedVersion = -1;
    this.lastFrame = null; // {transform, extent, size} of the last frame drawn
    this.frameStart = 0;
    this.onFrame = null; // called with the draw time (ms) after each frame

    this.baseLayer = new ImageLayer({
      source: new ImageCanvasSource({
        // The basemap is drawn once into an image 1.5 times the view (OpenLayers' ratio) and
        // moved or scaled while panning and zooming; redrawn when the view stops.
        ratio: 1.5,
        canvasFunction: (extent, resolution, pixelRatio, size) => {
          const canvas = document.createElement("canvas");
          canvas.width = size[0];
          canvas.height = size[1];
          const c = canvas.getContext("2d");
          const width = size[0] / pixelRatio;
          const height = size[1] / pixelRatio;
          const [cx, cy] = mapToWorld((extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2);
          const scale = width / ((extent[2] - extent[0]) / WORLD_M);
          c.setTransform(pixelRatio, 0, 0, pixelRatio, 0, 0);
          basemap.draw(c, new WorldView({ cx, cy, zoom: Math.log2(scale / 256), width, height }, { clamp: false }));
          return canvas;
        },
      }),
    });
    this.graticule = new Graticule({
      strokeStyle: new Stroke({ color: COLOURS.graticule, width: 1 }),
      showLabels: true,
      wrapX: false,
      lonLabelPosition: 0.03,
      latLabelPosition: 0.04,
      lonLabelStyle: gratText("bottom", "center"),
      latLabelStyle: gratText("middle", "left"),
    });
    this.tileLayer = null;
    this.source = new VectorSource({ wrapX: false });
    this.hidden = new Set(); // switched-off item layers: "feed", "mission", "feeds", "partner"
    this.styleCtx = { sprites, dpr: this.dpr, now: this.now, selected: null, hidden: this.hidden };
    // Symbols, trails, leaders and outlines on one layer; the labels on another above it,
    // decluttered (OpenLayers draws every image of a decluttering layer in its declutter pass,
    // so the symbols must not be on it, or a later symbol would cover an earlier label). Both
    // are drawn into images 1.5 times the view, redrawn when the picture or the view changes
    // and only moved while the map is dragged.
    this.itemsLayer = new VectorImageLayer({
      source: this.source,
      imageRatio: IMAGE_RATIO,
      // Drawn grouped by affiliation, so each trail colour is one canvas path, not one per unit.
      renderOrder: (a, b) => AFFILIATION_ORDER[a.get("item").affiliation] - AFFILIATION_ORDER[b.get("item").affiliation],
      style: (feature, resolution) => styleItem(feature.get("item"), resolution, this.styleCtx),
    });
    this.labelCtx = { ...this.styleCtx, labels: true };
    this.labelsLayer = new VectorImageLayer({
      source: this.source,
      imageRatio: IMAGE_RATIO,
      declutter: true,
      // A feature drawn earlier wins a place, so the selected item's label goes first.
      renderOrder: (a, b) => (b.get("sel") ? 1 : 0) - (a.get("sel") ? 1 : 0),
      style: (feature) => styleItem(feature.get("item"), 0, this.labelCtx),
    });
    this.overlaySource = new VectorSource({ wrapX: false });
    this.overlayLayer = new VectorLayer({
      source: this.overlaySource,
      style: new Style({ stroke: new Stroke({ color: "rgba(245, 158, 11, 0.9)", width: 3 }) }),
    });
    this.map = new Map({
      target,
      controls: [],
      pixelRatio: this.dpr,
      interactions: defaultInteractions({ altShiftDragRotate: false, pinchRotate: false }),
      layers: [this.baseLayer, this.graticule, this.itemsLayer, this.labelsLayer, this.overlayLayer],
      view: new View({
        center: [0, 0],
        zoom: 2,
        minZoom: MIN_ZOOM,
        maxZoom: MAX_ZOOM,
        extent: WORLD_EXTENT,
        constrainOnlyCenter: false,
        smoothExtentConstraint: false,
        enableRotation: false,
      }),
    });
    this.map.on("precompose", () => {
      this.frameStart = performance.now();
    });
    this.itemsLayer.on("postrender", (e) => {
      // The canvas the items are drawn on: the tests read its pixels.
      const canvas = e.context?.canvas;
      if (canvas && canvas.id !== "map-canvas") {
        document.getElementById("map-canvas")?.removeAttribute("id");
        canvas.id = "map-canvas";
      }
      const fs = e.frameState;
      this.lastFrame = {
        transform: fs.coordinateToPixelTransform.slice(),
        extent: fs.extent.slice(),
        resolution: fs.viewState.resolution,
        size: fs.size.slice(),
      };
    });
    this.map.on("postcompose", () => {
      if (this.onFrame) this.onFrame(performance.now() - this.frameStart);
    });
  }

  get view() {
    return this.map.getView();
  }

  /** Show the operator's tiles (meta from GET /api/v1/tiles) over the basemap: raster tiles, or
   * vector tiles (``vector``: format pbf) in vectortiles.js's style, from the MBTiles routes or
   * (``pmtiles``: its URL) a PMTiles archive (pmtileslayer.js); those modules load only then. */
  async addTiles(meta) {
    const minzoom = Number.isInteger(meta.minzoom) ? meta.minzoom : 0;
    const maxzoom = Number.isInteger(meta.maxzoom) ? meta.maxzoom : 14;
    const b = Array.isArray(meta.bounds) && meta.bounds.length === 4 ? meta.bounds : null;
    const [w, s] = b ? lonLatToMap(b[0], b[1]) : [0, 0];
    const [e, n] = b ? lonLatToMap(b[2], b[3]) : [0, 0];
    const extent = b ? [w, s, e, n] : undefined;
    const vector = meta.vector === true || meta.format === "pbf";
    const pmtiles = typeof meta.pmtiles === "string";
    if (pmtiles) {
      const { pmtilesLayer } = await import("./pmtileslayer.js");
      this.tileLayer = pmtilesLayer(meta.pmtiles, vector, minzoom, maxzoom, extent);
    } else if (vector) {
      const { vectorTileLayer } = await import("./vectortiles.js");
      this.tileLayer = vectorTileLayer(minzoom, maxzoom, extent);
    } else {
      this.tileLayer = new TileLayer({
        // Above maxzoom OpenLayers keeps drawing the deepest tiles, scaled.
        source: new XYZ({ url: "/api/v1/tiles/{z}/{x}/{y}", minZoom: minzoom, maxZoom: maxzoom, wrapX: false }),
        minZoom: minzoom - 0.5,
        extent,
      });
    }
    this.tileLayer.set("vector", vector);
    this.tileLayer.set("pmtiles", pmtiles);
    this.map.getLayers().insertAt(1, this.tileLayer);
  }

  /** Draw another store's items (the live picture, or playback's picture at a past time). */
  setStore(store) {
    this.store = store;
    this.syncedVersion = -1;
  }

  /** Bring the features in step with the store, the clock and the selection. */
  sync(nowMs, selected) {
    this.now = nowMs;
    this.styleCtx.now = nowMs;
    this.labelCtx.now = nowMs;
    const selectionChanged = selected !== this.selected;
    this.selected = selected;
    this.styleCtx.selected = selected;
    this.labelCtx.selected = selected;
    if (this.store.version === this.syncedVersion && !selectionChanged) return;
    this.syncedVersion = this.store.version;
    const added = [];
    for (const [uid, item] of this.store.items) {
      let f = this.features.get(uid);
      const stale = item.isStale(nowMs);
      const sel = uid === selected;
      if (!f || f.item !== item) {
        if (f) this.source.removeFeature(f.feature);
        const feature = new Feature({ geometry: geometryOf(item), item, sel });
        f = { feature, item, rev: item.rev, stale, sel };
        this.features.set(uid, f);
        added.push(feature);
        continue;
      }
      if (f.rev !== item.rev) {
        f.rev = item.rev;
        f.stale = stale;
        f.feature.setGeometry(geometryOf(item)); // restyles too
      } else if (f.stale !== stale || f.sel !== sel) {
        f.feature.changed();
      }
      f.stale = stale;
      if (f.sel !== sel) {
        f.sel = sel;
        f.feature.set("sel", sel, true);
      }
    }
    for (const [uid, f] of this.features) {
      if (!this.store.items.has(uid)) {
        this.source.removeFeature(f.feature);
        this.features.delete(uid);
      }
    }
    if (added.length) this.source.addFeatures(added);
  }

  render() {
    this.map.render();
  }

  /** Show or hide the items of one layer ("feed", "mission", "feeds" or "partner": itemstyle.js layerOf). */
  setLayerVisible(name, visible) {
    if (visible) this.hidden.delete(name);
    else this.hidden.add(name);
    this.source.changed();
  }

  /** [x, y] CSS pixels of a world point in the last frame (or the current view). */
  toScreen(x, y) {
    const [mx, my] = worldToMap(x, y);
    if (!this.lastFrame) return this.map.getPixelFromCoordinate([mx, my]) ?? [0, 0];
    const t = this.lastFrame.transform;
    return [t[0] * mx + t[2] * my + t[4], t[1] * mx + t[3] * my + t[5]];
  }

  /** The items drawn in the last frame: [{item, x, y}], points at their position, outlines at their first vertex. */
  drawnItems() {
    if (!this.lastFrame) return [];
    const m = CULL_PX * this.lastFrame.resolution;
    const [x0, y0, x1, y1] = this.lastFrame.extent;
    const out = [];
    for (const f of this.features.values()) {
      const it = f.item;
      if (this.hidden.has(layerOf(it))) continue;
      const e = f.feature.getGeometry().getExtent();
      if (e[0] > x1 + m || e[2] < x0 - m || e[1] > y1 + m || e[3] < y0 - m) continue;
      const [x, y] = it.rings === null ? this.toScreen(it.x, it.y) : this.toScreen(it.rings[0][0], it.rings[0][1]);
      out.push({ item: it, x, y });
    }
    return out;
  }

  /** The uid of the item under the CSS pixel (x, y), or null. */
  hit(x, y) {
    let best = null;
    this.map.forEachFeatureAtPixel(
      [x, y],
      (feature) => {
        best = feature.get("item")?.uid ?? null;
        return best !== null;
      },
      { layerFilter: (l) => l === this.itemsLayer, hitTolerance: HIT_PX },
    );
    return best;
  }

  /** Centre and zoom as world coordinates (geo.js) and the size in CSS pixels. */
  fields() {
    const v = this.view;
    const [cx, cy] = mapToWorld(...(v.getCenter() ?? [0, 0]));
    const [width, height] = this.map.getSize() ?? [0, 0];
    return { cx, cy, zoom: v.getZoom(), width, height };
  }

  setFields({ cx, cy, zoom }) {
    const v = this.view;
    if (cx !== undefined || cy !== undefined) {
      const [ocx, ocy] = mapToWorld(...v.getCenter());
      v.setCenter(worldToMap(cx ?? ocx, cy ?? ocy));
    }
    if (zoom !== undefined) v.setZoom(Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, zoom)));
  }

  /** Fit the view to a world rectangle [minx, miny, maxx, maxy]. */
  fitWorld(rect, paddingPx = 60, maxZoom = 13) {
    const [a, b] = worldToMap(rect[0], rect[3]);
    const [c, d] = worldToMap(rect[2], rect[1]);
    const p = paddingPx;
    this.view.fit([a, b, Math.max(c, a + 1), Math.max(d, b + 1)], { padding: [p, p, p, p], maxZoom });
  }

  zoomBy(delta) {
    this.view.animate({ zoom: this.view.getZoom() + delta, duration: 150 });
  }

  /** Metres per CSS pixel at the view centre. */
  metresPerPixel() {
    const v = this.view;
    return getPointResolution("EPSG:3857", v.getResolution(), v.getCenter(), "m");
  }

  /** [lon, lat] under the CSS pixel. */
  lonLatAt(pixel) {
    return toLonLat(this.map.getCoordinateFromPixel(pixel));
  }

  showTrack(coordsWorld) {
    this.overlaySource.clear();
    if (coordsWorld && coordsWorld.length > 1) {
      this.overlaySource.addFeature(new Feature(new MultiLineString([coordsWorld.map(([x, y]) => worldToMap(x, y))])));
    }
  }

  /**
   * Draw ``frames`` frames synchronously, panning a little each time as a drag does (inside an
   * interaction, so OpenLayers replays the items it prepared); frame time statistics in ms, and
   * ``update``: the same for frames that prepare every item again (what a live update costs).
   * Reading a pixel makes the browser finish rasterising, so the times include the drawing.
   */
  benchmark(frames) {
    const v = this.view;
    const stats = (times) => {
      times.sort((a, b) => a - b);
      const n = times.length;
      const mean = times.reduce((a, b) => a + b, 0) / n;
      return { frames: n, mean, median: times[Math.floor(n / 2)], p95: times[Math.floor(n * 0.95)], max: times[n - 1] };
    };
    const frame = (i, update) => {
      const [x, y] = v.getCenter();
      v.setCenter([x + (i % 2 === 0 ? 3 : -3) * v.getResolution(), y]);
      if (update) this.source.changed();
      const t0 = performance.now();
      this.map.renderSync();
      document.getElementById("map-canvas")?.getContext("2d").getImageData(0, 0, 1, 1);
      return performance.now() - t0;
    };
    this.map.renderSync();
    v.beginInteraction();
    const pan = [];
    try {
      for (let i = 0; i < frames; i++) pan.push(frame(i, false));
    } finally {
      v.endInteraction();
    }
    const update = [];
    for (let i = 0; i < frames; i++) update.push(frame(i, true));
    return { ...stats(pan), update: stats(update) };
  }
}

function gratText(baseline, align) {
  return new Text({
    font: "10px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    textBaseline: baseline,
    textAlign: align,
    fill: new Fill({ color: "rgba(50, 65, 90, 0.8)" }),
    stroke: new Stroke({ color: "rgba(255, 255, 255, 0.8)", width: 3 }),
  });
}

export function lonLatToMap(lon, lat) {
  const [x, y] = [(lon + 180) / 360, lat];
  const phi = (Math.max(-85.0511, Math.min(85.0511, y)) * Math.PI) / 180;
  return worldToMap(x, (1 - Math.log(Math.tan(phi) + 1 / Math.cos(phi)) / Math.PI) / 2);
}
