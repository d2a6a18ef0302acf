// The draw tools: a marker (with a small MIL-STD-2525 type picker), route, polygon, circle or
// range-and-bearing line drawn on the map with OpenLayers' Draw interaction (as measure.js
// measures), then sent with POST /api/v1/items under the label chosen here, at or below the
// user's clearance. The server writes the CoT an ATAK client would and publishes it as this user,
// so TAK clients cleared for the label receive it. The panel is buttons and fields (keyboard
// reachable), and every kind can be drawn without pointing: pan the map (arrow keys) and add the
// point under the map's centre.

import Draw from "ol/interaction/Draw.js";
import VectorLayer from "ol/layer/Vector.js";
import VectorSource from "ol/source/Vector.js";
import Feature from "ol/Feature.js";
import CircleGeometry from "ol/geom/Circle.js";
import LineString from "ol/geom/LineString.js";
import MultiPoint from "ol/geom/MultiPoint.js";
import Polygon from "ol/geom/Polygon.js";
import { toLonLat } from "ol/proj.js";
import CircleStyle from "ol/style/Circle.js";
import Fill from "ol/style/Fill.js";
import Stroke from "ol/style/Stroke.js";
import Style from "ol/style/Style.js";
import { ApiError, SessionExpired } from "./api.js";
import { choosableClassifications, composeBanner, MAX_REL_CHARS, refusalText } from "./chatlabel.js";
import {
  AFFILIATIONS,
  describe,
  FUNCTIONS,
  geometryBody,
  geometryOfFeature,
  itemBody,
  KIND_NAMES,
  KINDS,
  kindOf,
  markerType,
  pickerOf,
} from "./drawing.js";
import { el, labelBadge } from "./ui.js";

const STYLE = new Style({
  stroke: new Stroke({ color: "#0e7490", width: 2.5 }),
  fill: new Fill({ color: "rgba(14, 116, 144, 0.15)" }),
  image: new CircleStyle({ radius: 6, fill: new Fill({ color: "#0e7490" }), stroke: new Stroke({ color: "#fff", width: 2 }) }),
});
// OpenLayers' Draw geometry type for each kind.
const DRAW_TYPES = { marker: "Point", route: "LineString", polygon: "Polygon", circle: "Circle", rangebearing: "LineString" };
const HINTS = {
  marker: "Click the map where the marker goes, or place it at the map's centre.",
  route: "Click the waypoints in order; click the last one again or double-click to finish. Or add them at the map's centre.",
  polygon: "Click the corners; click the first one or double-click to finish. Or add them at the map's centre.",
  circle: "Click the centre, then a point on the circle (or add both at the map's centre).",
  rangebearing: "Click the start, then the end of the line (or add both at the map's centre).",
};
// Points a kind takes from the keyboard before it is complete; circles and lines start again after.
const KEY_POINTS = { route: 2, polygon: 3, circle: 2, rangebearing: 2 };

/** The map geometry OpenLayers drew, as lon/lat in the form drawing.geometryBody takes. */
function lonLatsOf(kind, geometry) {
  switch (kind) {
    case "marker":
      return toLonLat(geometry.getCoordinates());
    case "polygon":
      return geometry.getCoordinates()[0].map((c) => toLonLat(c));
    case "circle": {
      const c = geometry.getCenter();
      return [toLonLat(c), toLonLat([c[0] + geometry.getRadius(), c[1]])];
    }
    default:
      return geometry.getCoordinates().map((c) => toLonLat(c));
  }
}

export class DrawTool {
  /** ``page``: the map page (api, me, map, measure); ``root``: the panel's element. */
  constructor(page, root) {
    this.page = page;
    this.root = root;
    this.map = page.map.map;
    this.source = new VectorSource();
    this.layer = new VectorLayer({ source: this.source, style: STYLE, zIndex: 10 });
    this.map.addLayer(this.layer);
    this.draw = null;
    this.kind = null;
    this.pending = null; // the geometry part of the body, once something was drawn
    this.keyPoints = []; // map coordinates added at the map's centre (no pointing)
    this.editing = null; // {uid, label} of the user's own item being changed
    this.keptType = null; // the CoT type of an edited marker the picker cannot make
    this.sending = false;
    this.onChange = null;
    this.build();
  }

  get active() {
    return this.draw !== null;
  }

  build() {
    const me = this.page.me ?? {};
    this.tools = KINDS.map((kind) => {
      const b = el("button", { type: "button", class: "draw-tool", "data-kind": kind, "aria-pressed": "false" }, KIND_NAMES[kind]);
      b.addEventListener("click", () => this.toggle(kind));
      return b;
    });
    this.affiliation = el(
      "select",
      { class: "draw-affiliation", "aria-label": "Affiliation" },
      ...AFFILIATIONS.map(([v, name]) => el("option", { value: v }, name)),
    );
    this.affiliation.value = "h";
    this.fn = el("select", { class: "draw-function", "aria-label": "Function" }, ...FUNCTIONS.map(([v, name]) => el("option", { value: v }, name)));
    this.typeText = el("span", { class: "small muted draw-type" });
    const showType = () => {
      this.keptType = null; // a type chosen here replaces one the picker lacked (edit)
      this.typeText.textContent = markerType(this.affiliation.value, this.fn.value);
    };
    this.affiliation.addEventListener("change", showType);
    this.fn.addEventListener("change", showType);
    showType();
    this.centre = el("button", { type: "button", class: "draw-centre", hidden: true }, "Place at map centre");
    this.centre.addEventListener("click", () => this.addAtCentre());
    this.markerFields = el(
      "fieldset",
      { class: "draw-marker", hidden: true },
      el("legend", { class: "small muted" }, "Marker type (MIL-STD-2525)"),
      el("div", { class: "draw-row" }, this.affiliation, this.fn),
      el("div", { class: "draw-row" }, this.typeText),
    );
    this.callsign = el("input", { type: "text", class: "draw-callsign", maxlength: 64, placeholder: "Name (callsign)", "aria-label": "Name (callsign)" });
    this.remarks = el("input", { type: "text", class: "draw-remarks", maxlength: 4000, placeholder: "Remarks", "aria-label": "Remarks" });
    // The label chooser, as the chat's: the policy's classifications up to the user's clearance.
    this.labelOffered = Array.isArray(me.classifications) && me.classifications.length > 0;
    this.cls = el(
      "select",
      { class: "draw-label-cls", "aria-label": "Classification of the drawing" },
      el("option", { value: "" }, "Server default"),
      ...choosableClassifications(me.classifications, me.clearance).map((c) => el("option", { value: c }, c)),
    );
    this.rel = el("input", {
      type: "text",
      class: "draw-label-rel",
      maxlength: MAX_REL_CHARS,
      value: me.org ?? "",
      placeholder: "USA, UKR",
      "aria-label": "Drawing releasable to",
    });
    this.sendLabel = el("span", { class: "draw-send-label" });
    for (const input of [this.cls, this.rel]) input.addEventListener("input", () => this.showLabel());
    this.cls.addEventListener("change", () => this.showLabel());
    const labelRow = el(
      "div",
      { class: "draw-label", role: "group", "aria-label": "Label of the drawing", hidden: !this.labelOffered },
      el("span", { class: "small muted" }, "Label"),
      this.cls,
      el("span", { class: "small muted" }, "REL TO"),
      this.rel,
    );
    this.hint = el("p", { class: "small muted draw-hint" }, "Choose what to draw.");
    this.editText = el("p", { class: "draw-editing", hidden: true });
    this.pendingText = el("p", { class: "draw-pending" });
    this.send = el("button", { type: "button", class: "draw-send", disabled: true }, "Send");
    this.send.addEventListener("click", () => this.sendPending());
    const clear = el("button", { type: "button", class: "draw-clear" }, "Clear");
    clear.addEventListener("click", () => this.clear());
    this.status = el("p", { class: "small draw-status", role: "status" });
    this.root.replaceChildren(
      el("h2", { class: "feeds-title" }, "Draw and send"),
      el("div", { class: "draw-tools", role: "group", "aria-label": "What to draw" }, ...this.tools),
      this.editText,
      this.markerFields,
      this.hint,
      this.centre,
      this.callsign,
      this.remarks,
      labelRow,
      this.pendingText,
      el("div", { class: "draw-row" }, this.sendLabel, this.send, clear),
      this.status,
    );
    this.showLabel();
  }

  /** The banner chosen, or null for the server's default label. */
  chosenLabel() {
    if (!this.labelOffered) return null;
    return composeBanner(this.cls.value, this.rel.value);
  }

  showLabel() {
    this.sendLabel.hidden = !this.labelOffered;
    const banner = this.chosenLabel();
    let badge;
    if (banner !== null) {
      badge = labelBadge(banner);
      badge.title = `Sent as ${banner}`;
    } else if (this.editing) {
      // An update without a label keeps the item's label (docs/api.md "Drawing on the map").
      badge = labelBadge(this.editing.label, "unchanged");
      badge.title = "Sent without a label: the item keeps its label";
    } else {
      badge = labelBadge(null, "server default");
      badge.title = "Sent without a label: the server applies its default label";
    }
    this.sendLabel.replaceChildren(badge);
  }

  /**
   * Change an item this user drew (from its popup): the panel opens on its kind with its name,
   * remarks and type; Send replaces it (same uid), where it is or where it is drawn again. The
   * label chooser starts at "Server default", which for an update keeps the item's label.
   */
  edit(feature) {
    const kind = kindOf(feature);
    const geometry = geometryOfFeature(feature);
    if (kind === null || geometry === null) return;
    const p = feature.properties ?? {};
    this.toggle(kind);
    this.editing = { uid: String(p.uid ?? feature.id), label: typeof p.label === "string" ? p.label : null };
    this.callsign.value = typeof p.callsign === "string" ? p.callsign : "";
    this.remarks.value = typeof p.remarks === "string" ? p.remarks : "";
    const picked = kind === "marker" ? pickerOf(p.type) : null;
    if (picked) {
      this.affiliation.value = picked.affiliation;
      this.fn.value = picked.fn;
      this.affiliation.dispatchEvent(new Event("change"));
    }
    // A marker whose type the picker lacks keeps it, unless the picker is changed.
    this.keptType = kind === "marker" && !picked ? p.type : null;
    if (this.keptType) this.typeText.textContent = this.keptType;
    this.cls.value = "";
    this.editText.hidden = false;
    this.editText.textContent = `Editing ${this.callsign.value || KIND_NAMES[kind]}: draw it again to move it, or Send as it is.`;
    this.setPending(geometry);
    this.showLabel();
    this.send.focus();
  }

  endEdit() {
    this.editing = null;
    this.keptType = null;
    this.typeText.textContent = markerType(this.affiliation.value, this.fn.value);
    this.editText.hidden = true;
    this.editText.textContent = "";
    this.showLabel();
  }

  /** Start drawing ``kind``; the same kind again stops. */
  toggle(kind) {
    const same = this.kind === kind && this.active;
    this.stop();
    if (this.editing) this.endEdit(); // another tool: a new item, not the one being edited
    if (same) return;
    this.page.measure.clear(); // one drawing interaction at a time
    this.kind = kind;
    this.source.clear();
    this.setPending(null);
    this.draw = new Draw({
      source: this.source,
      type: DRAW_TYPES[kind],
      style: STYLE,
      maxPoints: kind === "rangebearing" ? 2 : undefined,
    });
    this.draw.on("drawstart", () => {
      this.source.clear();
      this.keyPoints = [];
    });
    this.draw.on("drawend", (e) => this.setPending(geometryBody(kind, lonLatsOf(kind, e.feature.getGeometry()))));
    this.map.addInteraction(this.draw);
    this.hint.textContent = HINTS[kind];
    this.markerFields.hidden = kind !== "marker";
    this.centre.hidden = false;
    this.centre.textContent = kind === "marker" ? "Place at map centre" : "Add point at map centre";
    this.keyPoints = [];
    this.changed();
  }

  /** Stop the interaction (what was drawn stays, ready to send). */
  stop() {
    if (this.draw) this.map.removeInteraction(this.draw);
    this.draw = null;
    this.changed();
  }

  /** Stop and forget what was drawn. */
  clear() {
    this.stop();
    if (this.editing) this.endEdit();
    this.kind = null;
    this.source.clear();
    this.setPending(null);
    this.markerFields.hidden = true;
    this.centre.hidden = true;
    this.keyPoints = [];
    this.hint.textContent = "Choose what to draw.";
    this.changed();
  }

  changed() {
    for (const b of this.tools) b.setAttribute("aria-pressed", String(this.active && b.dataset.kind === this.kind));
    this.onChange?.();
  }

  setPending(geometry) {
    this.pending = geometry;
    this.pendingText.textContent = geometry ? describe(geometry) : "";
    this.send.disabled = geometry === null || this.sending;
    if (geometry) this.status.textContent = "";
  }

  /**
   * The point under the map's centre, added to the drawing: the way to draw without pointing
   * (pan with the arrow keys between points). A marker is placed there; a route or polygon
   * gains a vertex (complete from 2 or 3); a circle takes its centre then a point on it, a range
   * and bearing line its start then its end, and a third point starts them again.
   */
  addAtCentre() {
    const kind = this.kind ?? "marker";
    if (!this.active) this.toggle(kind);
    const centre = this.map.getView().getCenter();
    if (!centre) return;
    this.draw?.abortDrawing(); // a drawing half made with the mouse is replaced
    if (kind === "marker") {
      this.keyPoints = [centre];
    } else {
      if ((kind === "circle" || kind === "rangebearing") && this.keyPoints.length >= 2) this.keyPoints = [];
      this.keyPoints.push(centre);
    }
    const pts = this.keyPoints;
    this.source.clear();
    this.source.addFeature(new Feature(new MultiPoint(pts)));
    if (pts.length >= 2) {
      const [a, b] = pts;
      const outline =
        kind === "circle"
          ? new CircleGeometry(a, Math.hypot(b[0] - a[0], b[1] - a[1]))
          : kind === "polygon" && pts.length >= 3
            ? new Polygon([[...pts, pts[0]]])
            : new LineString(pts);
      this.source.addFeature(new Feature(outline));
    }
    const lonLats = pts.map((c) => toLonLat(c));
    const complete = kind === "marker" || pts.length >= KEY_POINTS[kind];
    this.setPending(complete ? geometryBody(kind, kind === "marker" ? lonLats[0] : lonLats) : null);
    this.status.textContent = complete ? "" : `Point ${pts.length} added; pan and add the next.`;
    if (kind === "marker") this.send.focus();
  }

  async sendPending() {
    if (!this.pending || this.sending) return;
    const label = this.chosenLabel();
    const body = itemBody(this.pending, {
      type: this.keptType ?? markerType(this.affiliation.value, this.fn.value),
      callsign: this.callsign.value,
      remarks: this.remarks.value,
      label,
    });
    const editing = this.editing;
    if (editing) body.uid = editing.uid;
    this.sending = true;
    this.send.disabled = true;
    this.status.classList.remove("error");
    try {
      const answer = await this.page.api.drawItem(body);
      const banner = answer?.item?.properties?.label ?? label;
      const name = answer?.item?.properties?.callsign ?? KIND_NAMES[this.pending.kind];
      const done = editing ? "Updated" : "Sent";
      this.status.textContent = banner ? `${done}: ${name} (${banner})` : `${done}: ${name}`;
      this.status.dataset.uid = answer?.item?.id ?? "";
      this.source.clear();
      this.keyPoints = [];
      this.pending = null;
      this.pendingText.textContent = "";
      if (editing) this.endEdit();
    } catch (e) {
      if (e instanceof SessionExpired) return;
      this.status.classList.add("error");
      this.status.textContent = `Not sent: ${e instanceof ApiError ? refusalText(e.status, e.body) : e.message}`;
    } finally {
      this.sending = false;
      this.send.disabled = this.pending === null;
    }
  }
}
