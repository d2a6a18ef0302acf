// Unit tests of the picture store: snapshots, updates, deletes, trails, stale state, shapes.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ellipseRing, geometryOf, Store, TRAIL_POINTS } from "../src/store.js";

function unit(uid, lon, lat, extra = {}) {
  return {
    type: "Feature",
    geometry: { type: "Point", coordinates: [lon, lat] },
    properties: { uid, type: "a-f-G-U-C", callsign: uid.toUpperCase(), stale: "2099-01-01T00:00:00Z", label: null, ...extra },
  };
}

test("snapshot, update, delete", () => {
  const s = new Store();
  s.replaceAll([unit("a", 30, 50), unit("b", 31, 50)]);
  assert.equal(s.items.size, 2);
  const v = s.version;
  s.upsert(unit("c", 32, 50));
  assert.equal(s.items.size, 3);
  assert.ok(s.version > v);
  assert.equal(s.remove("b"), true);
  assert.equal(s.remove("b"), false);
  assert.deepEqual([...s.items.keys()], ["a", "c"]);
  s.replaceAll([unit("c", 32, 50)]);
  assert.deepEqual([...s.items.keys()], ["c"]);
});

test("trails keep the last positions of a moving unit only", () => {
  const s = new Store();
  s.upsert(unit("a", 30, 50));
  s.upsert(unit("a", 30, 50)); // same place: no trail point
  assert.equal(s.items.get("a").trail.length, 0);
  for (let i = 1; i <= TRAIL_POINTS + 5; i++) s.upsert(unit("a", 30 + i * 0.001, 50));
  const it = s.items.get("a");
  assert.equal(it.trail.length, TRAIL_POINTS * 2);
  assert.ok(it.trail[it.trail.length - 2] < it.x, "the newest trail point is behind the unit");
  // A snapshot keeps the trail of a unit that is still there.
  s.replaceAll([unit("a", 30.1, 50)]);
  assert.equal(s.items.get("a").trail.length, TRAIL_POINTS * 2);
});

test("stale state follows the clock", () => {
  const s = new Store();
  s.upsert(unit("a", 30, 50, { stale: "2030-01-01T00:00:00Z" }));
  const before = Date.parse("2029-12-31T23:59:59Z");
  const after = Date.parse("2030-01-01T00:00:01Z");
  assert.equal(s.items.get("a").isStale(before), false);
  assert.equal(s.refreshStale(before), false);
  assert.equal(s.refreshStale(after), true);
  assert.equal(s.items.get("a").isStale(after), true);
  assert.equal(s.refreshStale(after), false, "no change the second time");
});

test("shapes from properties.shape, circles from properties.ellipse", () => {
  const route = unit("r", 30, 50, { type: "b-m-r", shape: { type: "LineString", coordinates: [[30, 50], [30.1, 50.1]] } });
  assert.equal(geometryOf(route).type, "LineString");
  const s = new Store();
  const item = s.upsert(route);
  assert.equal(item.kind, "route");
  assert.equal(item.rings.length, 1);
  const circle = unit("c", 30, 50, { type: "u-d-c-c", ellipse: { major: 1000, minor: 1000, angle: 0 } });
  const g = geometryOf(circle);
  assert.equal(g.type, "Polygon");
  assert.equal(s.upsert(circle).kind, "shape");
  // A 1 km circle: north point 1 km north, east point 1 km east.
  const ring = ellipseRing(30, 50, 1000, 1000, 0);
  assert.ok(Math.abs((ring[0][1] - 50) * 111195 - 1000) < 1);
  assert.deepEqual(ring[0], ring[ring.length - 1]);
  const unitItem = s.upsert(unit("u", 30, 50));
  assert.equal(unitItem.kind, "unit");
  assert.equal(unitItem.rings, null);
});

test("extent covers every item", () => {
  const s = new Store();
  assert.equal(s.extent(), null);
  s.replaceAll([unit("a", 30, 50), unit("b", 31, 49)]);
  const [minx, miny, maxx, maxy] = s.extent();
  assert.ok(minx < maxx && miny < maxy);
});
