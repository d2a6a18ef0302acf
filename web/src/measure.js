// The measuring tool: distance along a line or area of a polygon drawn on the map with
// OpenLayers' Draw interaction, measured on the sphere (ol/sphere: mean Earth radius 6,371,008.8 m,
// geodesic between vertices, not the Mercator plane).

import Draw from "ol/interaction/Draw.js";
import VectorLayer from "ol/layer/Vector.js";
import VectorSource from "ol/source/Vector.js";
import { getArea, getLength } from "ol/sphere.js";
import CircleStyle from "ol/style/Circle.js";
import Fill from "ol/style/Fill.js";
import Stroke from "ol/style/Stroke.js";
import Style from "ol/style/Style.js";
import { formatArea, formatLength } from "./coords.js";

const STYLE = new Style({
  stroke: new Stroke({ color: "#7c3aed", width: 2.5, lineDash: [8, 4] }),
  fill: new Fill({ color: "rgba(124, 58, 237, 0.12)" }),
  image: new CircleStyle({ radius: 4, fill: new Fill({ color: "#7c3aed" }) }),
});

export class MeasureTool {
  /** ``map``: the OpenLayers map; ``output``: the element showing the result. */
  constructor(map, output) {
    this.map = map;
    this.output = output;
    this.source = new VectorSource();
    this.layer = new VectorLayer({ source: this.source, style: STYLE });
    map.addLayer(this.layer);
    this.draw = null;
    this.mode = null;
    this.onChange = null;
  }

  get active() {
    return this.draw !== null;
  }

  /** Start measuring ``mode`` ("distance" or "area"); the same mode again stops. */
  toggle(mode) {
    const same = this.mode === mode;
    this.stop();
    if (same) return;
    this.mode = mode;
    this.source.clear();
    this.draw = new Draw({ source: this.source, type: mode === "area" ? "Polygon" : "LineString", style: STYLE });
    this.draw.on("drawstart", (e) => {
      this.source.clear();
      e.feature.getGeometry().on("change", (g) => this.show(g.target, false));
    });
    this.draw.on("drawend", (e) => this.show(e.feature.getGeometry(), true));
    this.map.addInteraction(this.draw);
    this.output.hidden = false;
    this.output.dataset.metres = "";
    this.output.textContent = mode === "area" ? "Area: click the corners, double-click the last" : "Distance: click the points, double-click the last";
    this.onChange?.();
  }

  stop() {
    if (this.draw) this.map.removeInteraction(this.draw);
    this.draw = null;
    this.mode = null;
    this.onChange?.();
  }

  /** Stop and forget the drawing. */
  clear() {
    this.stop();
    this.source.clear();
    this.output.hidden = true;
  }

  show(geometry, done) {
    const opts = { projection: "EPSG:3857" };
    if (this.mode === "area") {
      const m2 = getArea(geometry, opts);
      this.output.textContent = `Area: ${formatArea(m2)}${done ? "" : " …"}`;
      this.output.dataset.metres = String(m2);
    } else {
      const m = getLength(geometry, opts);
      this.output.textContent = `Distance: ${formatLength(m)}${done ? "" : " …"}`;
      this.output.dataset.metres = String(m);
    }
    this.output.dataset.done = String(done);
  }
}
