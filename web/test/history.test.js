// Unit tests of playback's history: where each item was at a time, from history rows.
import assert from "node:assert/strict";
import { test } from "node:test";
import { History, historyPath, isMapType, PLAYBACK_TRAIL, readHistory } from "../src/history.js";

const T0 = Date.parse("2026-12-07T12:00:00.000Z");
const iso = (ms) => new Date(ms).toISOString();

/** A history row: ``uid`` at (lon, lat), reported ``t`` ms after T0, stale ``staleS`` s later. */
function row(uid, t, lon, lat, { staleS = 600, type = "a-f-G-U-C", received = null } = {}) {
  return {
    type: "Feature",
    id: uid,
    geometry: { type: "Point", coordinates: [lon, lat] },
    properties: {
      uid,
      type,
      callsign: uid.toUpperCase(),
      time: iso(T0 + t),
      stale: iso(T0 + t + staleS * 1000),
      received: iso(T0 + (received ?? t)),
      label: null,
    },
  };
}

const at = (h, t) => Object.fromEntries(h.at(T0 + t).map(({ uid, row: r }) => [uid, r.feature.geometry.coordinates]));

test("each unit is where its last report at or before the time put it", () => {
  const h = new History();
  // Newest first, as the API answers.
  h.add([row("a", 20_000, 31, 51), row("b", 15_000, 40, 10), row("a", 10_000, 30, 50)]);
  assert.deepEqual(at(h, 9_999), {}); // before anything was reported
  assert.deepEqual(at(h, 10_000), { a: [30, 50] }); // at the report's own time
  assert.deepEqual(at(h, 16_000), { a: [30, 50], b: [40, 10] });
  assert.deepEqual(at(h, 19_999), { a: [30, 50], b: [40, 10] });
  assert.deepEqual(at(h, 20_000), { a: [31, 51], b: [40, 10] });
});

test("a report stale at the time is not shown", () => {
  const h = new History();
  h.add([row("a", 0, 30, 50, { staleS: 60 }), row("b", 0, 31, 50, { staleS: 600 })]);
  assert.deepEqual(Object.keys(at(h, 59_999)).sort(), ["a", "b"]);
  assert.deepEqual(Object.keys(at(h, 60_000)), ["b"]); // stale at its stale time
  // A later report of a stale unit brings it back.
  h.add([row("a", 120_000, 32, 50, { staleS: 60 })]);
  assert.deepEqual(at(h, 130_000), { a: [32, 50], b: [31, 50] });
  // A report without a stale time never goes stale.
  const f = row("c", 0, 33, 50);
  delete f.properties.stale;
  h.add([f]);
  assert.ok("c" in at(h, 86_400_000));
});

test("chat, file transfers, tasking and deletions are not items", () => {
  assert.equal(isMapType("a-f-G-U-C"), true);
  assert.equal(isMapType("b-m-p-s-m"), true);
  for (const t of ["b-t-f", "b-t-f-d", "b-f-t-r", "t-x-d-d", "t-x-c-t", "", undefined]) assert.equal(isMapType(t), false, t);
  const h = new History();
  assert.equal(h.add([row("chat", 0, 30, 50, { type: "b-t-f" }), row("del", 0, 30, 50, { type: "t-x-d-d" })]), 0);
  assert.deepEqual(at(h, 1000), {});
});

test("overlapping pages and the live picture's versions are kept once", () => {
  const h = new History();
  assert.equal(h.add([row("a", 2000, 31, 50), row("a", 1000, 30, 50)]), 2);
  assert.equal(h.add([row("a", 1000, 30, 50), row("a", 0, 29, 50)]), 1);
  // The live feed's Feature of the newest version has no "received".
  const live = row("a", 2000, 31, 50);
  delete live.properties.received;
  assert.equal(h.add([live]), 0);
  assert.equal(h.size, 3);
  assert.equal(h.oldest, T0);
});

test("a unit's playback trail is its earlier positions, oldest first, at most PLAYBACK_TRAIL", () => {
  const h = new History();
  const rows = [];
  for (let i = 0; i < PLAYBACK_TRAIL + 5; i++) rows.push(row("a", i * 1000, 30 + i / 100, 50));
  h.add(rows.reverse());
  const [{ trail }] = h.at(T0 + 3000);
  assert.deepEqual(trail, [[30, 50], [30.01, 50], [30.02, 50]]);
  const [{ trail: full }] = h.at(T0 + 100_000);
  assert.equal(full.length, PLAYBACK_TRAIL);
  assert.deepEqual(full.at(-1), [30 + (PLAYBACK_TRAIL + 3) / 100, 50]);
});

test("reports of one time are ordered by when the server received them", () => {
  const h = new History();
  h.add([row("a", 1000, 31, 50, { received: 1500 })]);
  h.add([row("b", 1000, 30, 50, { received: 1200 }), row("b", 900, 29, 50)]);
  assert.deepEqual(at(h, 1000), { a: [31, 50], b: [30, 50] });
});

test("history is read page by page, newest first, until nothing new comes, bounded", async () => {
  // 25 versions, one a second; pages of 10.
  const all = [];
  for (let i = 0; i < 25; i++) all.push(row(`u${i % 3}`, i * 1000, 30, 50));
  const paths = [];
  const fetchPage = async (path) => {
    paths.push(path);
    const q = new URLSearchParams(path.split("?")[1]);
    const since = Number(q.get("since"));
    const until = Number(q.get("until"));
    const limit = Number(q.get("limit"));
    const rows = all
      .filter((f) => Date.parse(f.properties.time) >= since && Date.parse(f.properties.time) < until)
      .sort((a, b) => Date.parse(b.properties.time) - Date.parse(a.properties.time));
    return { type: "FeatureCollection", features: rows.slice(0, limit) };
  };
  const h = new History();
  const done = await readHistory(fetchPage, h, T0, T0 + 24_000, { pageSize: 10, maxPages: 5 });
  assert.equal(done.complete, true);
  assert.equal(done.from, T0);
  // 10 + 9 + 6 new versions, then a page that brings nothing new ends it.
  assert.equal(done.pages, 4);
  assert.equal(h.size, 25);
  assert.equal(paths[0], historyPath(T0, T0 + 24_001, 10));
  // Each next page ends just after the oldest time of the page before (until is exclusive).
  assert.equal(paths[1], historyPath(T0, T0 + 15_001, 10));

  const capped = new History();
  const part = await readHistory(fetchPage, capped, T0, T0 + 24_000, { pageSize: 10, maxPages: 2 });
  assert.equal(part.complete, false);
  assert.equal(part.pages, 2);
  assert.equal(part.from, T0 + 6000); // the oldest time read
  assert.equal(capped.size, 19);
});

test("a full page of one millisecond does not loop", async () => {
  const same = Array.from({ length: 5 }, (_, i) => row(`s${i}`, 1000, 30, 50));
  let calls = 0;
  const fetchPage = async () => {
    calls++;
    return { type: "FeatureCollection", features: same.slice(0, 3) };
  };
  const h = new History();
  const r = await readHistory(fetchPage, h, T0, T0 + 5000, { pageSize: 3, maxPages: 5 });
  assert.equal(calls, 2);
  assert.equal(r.complete, false);
  assert.equal(r.from, T0 + 1000);
});
