// Unit tests of the Web Mercator math and the view.
import assert from "node:assert/strict";
import { test } from "node:test";
import { distanceM, lonLatToWorld, MAX_LAT, View, worldToLonLat } from "../src/geo.js";

const near = (a, b, eps = 1e-9) => assert.ok(Math.abs(a - b) < eps, `${a} != ${b}`);

test("projection corners and round trip", () => {
  assert.deepEqual(lonLatToWorld(0, 0), [0.5, 0.5]);
  near(lonLatToWorld(-180, MAX_LAT)[1], 0);
  near(lonLatToWorld(180, -MAX_LAT)[1], 1);
  near(lonLatToWorld(0, 90)[1], 0, 1e-12); // clamped
  for (const [lon, lat] of [[30.52, 50.45], [-77.03, 38.9], [151.2, -33.87]]) {
    const [x, y] = lonLatToWorld(lon, lat);
    const [lon2, lat2] = worldToLonLat(x, y);
    near(lon2, lon);
    near(lat2, lat);
  }
});

test("screen and world are inverse, and zoomAround keeps the anchor still", () => {
  const v = new View({ cx: 0.58, cy: 0.33, zoom: 8, width: 1000, height: 700 });
  const [sx, sy] = v.toScreen(0.581, 0.332);
  const [wx, wy] = v.toWorld(sx, sy);
  near(wx, 0.581);
  near(wy, 0.332);
  const z = v.zoomAround(1.5, 200, 100);
  const [ax, ay] = v.toWorld(200, 100);
  const [bx, by] = z.toScreen(ax, ay);
  near(bx, 200, 1e-6);
  near(by, 100, 1e-6);
  assert.equal(z.zoom, 9.5);
});

test("the view stays inside the world and within zoom limits", () => {
  const v = new View({ cx: 5, cy: -3, zoom: 40, width: 800, height: 600 });
  assert.equal(v.zoom, 18);
  assert.ok(v.cx <= 1 && v.cy >= 0);
  const small = new View({ cx: 0.1, cy: 0.9, zoom: 1, width: 2000, height: 1000 });
  assert.equal(small.cx, 0.5); // the whole world fits: centred
});

test("fit shows the rectangle", () => {
  const v = new View({ width: 800, height: 600 }).fit([0.55, 0.3, 0.56, 0.31]);
  const [x0, y0] = v.toScreen(0.55, 0.3);
  const [x1, y1] = v.toScreen(0.56, 0.31);
  assert.ok(x0 >= 39 && y0 >= 39 && x1 <= 761 && y1 <= 561);
});

test("distance", () => {
  near(distanceM(0, 0, 0, 1), 111195, 1);
});
