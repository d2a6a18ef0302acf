// Unit tests of what the draw tools send (POST /api/v1/items bodies) from lon/lat geometry.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  bearingDeg,
  describe,
  distanceM,
  drawnBy,
  geometryBody,
  geometryOfFeature,
  itemBody,
  kindOf,
  markerType,
  pickerOf,
} from "../src/drawing.js";

test("the type picker writes CoT atom types, falling back to unknown ground", () => {
  assert.equal(markerType("h", "G-U-C-I"), "a-h-G-U-C-I");
  assert.equal(markerType("f", "A"), "a-f-A");
  assert.equal(markerType("x", "nonsense"), "a-u-G");
});

test("distances and bearings on the sphere", () => {
  // One degree of latitude is pi R / 180.
  assert.ok(Math.abs(distanceM([30, 50], [30, 51]) - (Math.PI * 6371008.8) / 180) < 1e-6);
  assert.equal(bearingDeg([30, 50], [30, 51]), 0);
  assert.ok(Math.abs(bearingDeg([0, 0], [1, 0]) - 90) < 1e-9);
  assert.ok(Math.abs(bearingDeg([0, 0], [-1, 0]) - 270) < 1e-9);
});

test("each kind's geometry becomes its fields", () => {
  assert.deepEqual(geometryBody("marker", [30.5234567891, 50.45]), { kind: "marker", lat: 50.45, lon: 30.5234568 });
  // A drawing made on the next copy of the world comes back to -180..180.
  assert.equal(geometryBody("marker", [390, 10]).lon, 30);
  assert.deepEqual(geometryBody("route", [[30, 50], [30.1, 50.1]]), {
    kind: "route",
    points: [
      { lat: 50, lon: 30 },
      { lat: 50.1, lon: 30.1 },
    ],
  });
  assert.equal(geometryBody("route", [[30, 50]]), null);
  const ring = [[30, 50], [30.1, 50], [30.1, 50.1], [30, 50]];
  assert.equal(geometryBody("polygon", ring).points.length, 3); // OpenLayers closes its rings
  assert.equal(geometryBody("polygon", ring.slice(0, 2)), null);
  const circle = geometryBody("circle", [[30, 50], [30, 50.001]]);
  assert.equal(circle.kind, "circle");
  assert.equal(circle.radius, 111.2);
  assert.equal(geometryBody("circle", [[30, 50], [30, 50]]), null);
  const rb = geometryBody("rangebearing", [[30, 50], [30, 50.01]]);
  assert.deepEqual([rb.lat, rb.lon, rb.range, rb.bearing], [50, 30, 1111.95, 0]);
});

test("the body carries type, callsign, remarks and label only when given", () => {
  const g = { kind: "marker", lat: 1, lon: 2 };
  assert.deepEqual(itemBody(g, { type: "a-h-G", callsign: "  ", remarks: "", label: null }), { ...g, type: "a-h-G" });
  assert.deepEqual(itemBody(g, { type: "a-h-G", callsign: " T1 ", remarks: "x", label: "SECRET//REL TO USA" }), {
    ...g,
    type: "a-h-G",
    callsign: "T1",
    remarks: "x",
    label: "SECRET//REL TO USA",
  });
  // Only markers have a type.
  assert.equal(itemBody({ kind: "route", points: [] }, { type: "a-h-G" }).type, undefined);
});

test("descriptions and ownership", () => {
  assert.equal(describe({ kind: "marker", lat: 50.45, lon: 30.52 }), "Marker at 50.45000, 30.52000");
  assert.equal(describe({ kind: "circle", lat: 1, lon: 2, radius: 99.6 }), "Circle of 100 m radius at 1.00000, 2.00000");
  const me = { uid: "liaison-web-alice" };
  assert.ok(drawnBy({ properties: { creator: "liaison-web-alice" } }, me));
  assert.ok(!drawnBy({ properties: { creator: "liaison-web-bob" } }, me));
  assert.ok(!drawnBy({ properties: {} }, me));
  assert.ok(!drawnBy({ properties: { creator: "x" } }, {}));
});

test("an item drawn here is drawn again as it is, for editing", () => {
  const marker = { geometry: { coordinates: [30.5, 50.4, 9] }, properties: { type: "a-h-G-U-C-I" } };
  assert.equal(kindOf(marker), "marker");
  assert.deepEqual(geometryOfFeature(marker), { kind: "marker", lat: 50.4, lon: 30.5 });
  assert.deepEqual(pickerOf("a-h-G-U-C-I"), { affiliation: "h", fn: "G-U-C-I" });
  assert.equal(pickerOf("a-h-G-X-Y"), null);
  const route = { geometry: { coordinates: [30, 50] }, properties: { type: "b-m-r", shape: { type: "LineString", coordinates: [[30, 50], [31, 51]] } } };
  assert.deepEqual(geometryOfFeature(route).points, [{ lat: 50, lon: 30 }, { lat: 51, lon: 31 }]);
  const ring = [[30, 50], [31, 50], [31, 51], [30, 50]];
  const poly = { geometry: { coordinates: [30.5, 50.5] }, properties: { type: "u-d-f", shape: { type: "Polygon", coordinates: [ring] } } };
  assert.equal(geometryOfFeature(poly).points.length, 3);
  const circle = { geometry: { coordinates: [30, 50] }, properties: { type: "u-d-c-c", ellipse: { major: 250, minor: 250, angle: 360 } } };
  assert.deepEqual(geometryOfFeature(circle), { kind: "circle", lat: 50, lon: 30, radius: 250 });
  const rb = { geometry: { coordinates: [30, 50] }, properties: { type: "u-rb-a", shape: { type: "LineString", coordinates: [[30, 50], [30, 50.01]] } } };
  assert.equal(geometryOfFeature(rb).bearing, 0);
  assert.equal(kindOf({ properties: { type: "u-d-r" } }), null);
  assert.equal(geometryOfFeature({ properties: { type: "b-m-p-s-m" } }), null);
});
