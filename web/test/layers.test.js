// Unit tests of the switchable item layers: an item's layer from its origin (docs/web.md "Layers").
import assert from "node:assert/strict";
import { test } from "node:test";
import { layerOf } from "../src/itemstyle.js";
import { Item } from "../src/store.js";

const feature = (uid, origin) => ({
  type: "Feature",
  id: uid,
  geometry: { type: "Point", coordinates: [30, 50] },
  properties: { uid, type: "a-f-G", origin },
});

test("an item's layer follows its origin, a mission's items first", () => {
  assert.equal(layerOf(new Item(feature("a", undefined))), "feed");
  assert.equal(layerOf(new Item(feature("b", "feed:adsb"))), "feeds");
  assert.equal(layerOf(new Item(feature("c", "partner"))), "partner");
  assert.equal(layerOf(new Item(feature("d", ""))), "feed");
  const m = new Item(feature("e", "partner"));
  m.markMission();
  assert.equal(layerOf(m), "mission");
});
