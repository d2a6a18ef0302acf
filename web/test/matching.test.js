// Unit tests of the search over the picture: callsign, uid or CoT type, ranked, bounded.
import assert from "node:assert/strict";
import { test } from "node:test";
import { matchItems, MAX_RESULTS } from "../src/matching.js";

const item = (uid, callsign, type = "a-f-G-U-C") => ({ uid, callsign, type });
const ITEMS = [
  item("ANDROID-1", "RED1"),
  item("ANDROID-2", "RED10"),
  item("ANDROID-3", "TIRED"),
  item("uid-hostile", "BANDIT", "a-h-G-U-C-I"),
  item("marker-1", null, "b-m-p-s-m"),
  item("red", "BLUE2"),
];
const names = (r) => r.results.map(({ item: it }) => it.uid);

test("by callsign: exact, then starting with, then containing; any case", () => {
  assert.deepEqual(names(matchItems(ITEMS, "red1")), ["ANDROID-1", "ANDROID-2"]);
  // "red": RED1, RED10 start with it; the uid "red" is exact; TIRED contains it.
  assert.deepEqual(names(matchItems(ITEMS, "  Red ")), ["ANDROID-1", "ANDROID-2", "red", "ANDROID-3"]);
});

test("by uid and by CoT type", () => {
  const r = matchItems(ITEMS, "android-3");
  assert.deepEqual(names(r), ["ANDROID-3"]);
  assert.equal(r.results[0].field, "uid");
  const h = matchItems(ITEMS, "a-h");
  assert.deepEqual(names(h), ["uid-hostile"]);
  assert.equal(h.results[0].field, "type");
  // An item without a callsign is found by its uid or type.
  assert.deepEqual(names(matchItems(ITEMS, "b-m-p")), ["marker-1"]);
  assert.deepEqual(names(matchItems(ITEMS, "marker")), ["marker-1"]);
});

test("no query, no match; results are bounded and the total counted", () => {
  assert.deepEqual(matchItems(ITEMS, ""), { results: [], total: 0 });
  assert.deepEqual(matchItems(ITEMS, "   "), { results: [], total: 0 });
  assert.deepEqual(matchItems(ITEMS, "zulu"), { results: [], total: 0 });
  const many = Array.from({ length: 50 }, (_, i) => item(`u${i}`, `UNIT${String(i).padStart(2, "0")}`));
  const r = matchItems(many, "unit");
  assert.equal(r.results.length, MAX_RESULTS);
  assert.equal(r.total, 50);
  assert.equal(r.results[0].item.callsign, "UNIT00"); // equal ranks by callsign
  assert.equal(matchItems(many, "unit", 5).results.length, 5);
});
