// Unit tests of the built-in style of the operator's vector tiles (docs/web.md's table).
import assert from "node:assert/strict";
import { test } from "node:test";
import { VECTOR_COLOURS, vectorStyle } from "../src/vectortiles.js";

const feature = (layer, type, props = {}) => ({
  get: (key) => (key === "layer" ? layer : props[key]),
  getType: () => type,
});
const fillOf = (style) => style.getFill()?.getColor();

test("polygons by layer name, any case, with a grey default", () => {
  assert.equal(fillOf(vectorStyle(feature("water", "Polygon"))), VECTOR_COLOURS.water);
  assert.equal(fillOf(vectorStyle(feature("Ocean", "MultiPolygon"))), VECTOR_COLOURS.water);
  assert.equal(fillOf(vectorStyle(feature("earth", "Polygon"))), VECTOR_COLOURS.land);
  assert.equal(fillOf(vectorStyle(feature("park", "Polygon"))), VECTOR_COLOURS.green);
  assert.equal(fillOf(vectorStyle(feature("building", "Polygon"))), VECTOR_COLOURS.building);
  assert.equal(fillOf(vectorStyle(feature("aeroway", "Polygon"))), VECTOR_COLOURS.other);
});

test("roads by class, boundaries dashed, unknown points not drawn", () => {
  const major = vectorStyle(feature("transportation", "LineString", { class: "motorway" }));
  assert.equal(major[1].getStroke().getColor(), VECTOR_COLOURS.majorRoad);
  const minor = vectorStyle(feature("roads", "LineString", { kind: "minor_road" }));
  assert.equal(minor[1].getStroke().getColor(), VECTOR_COLOURS.road);
  assert.ok(vectorStyle(feature("boundary", "LineString")).getStroke().getLineDash().length > 0);
  assert.equal(vectorStyle(feature("poi", "Point", { name: "Cafe" })), null);
  assert.equal(vectorStyle(feature("transportation", "Polygon")), null);
});

test("place names are isolated text; a place without a name is not drawn", () => {
  const style = vectorStyle(feature("place", "Point", { name: "Kyiv", "name:latin": "Kyiv latin" }));
  assert.equal(style.getText().getText(), "\u2068Kyiv latin\u2069");
  assert.equal(vectorStyle(feature("place", "Point", {})), null);
});
