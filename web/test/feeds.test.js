// Unit tests of the Feeds section: the rows shown for a GET /api/v1/feeds answer.
import assert from "node:assert/strict";
import { test } from "node:test";
import { feedRows } from "../src/feeds.js";

const NOW = Date.parse("2026-01-01T10:00:10.000Z");

test("each feed gives a row with its state, data age, counts and last error", () => {
  const rows = feedRows(
    {
      tracks: 3,
      feeds: [
        { name: "rx1", kind: "adsb-file", state: "running", failures: 0, last_error: null, last_data: "2026-01-01T10:00:07.000Z", reports: 9, published: 3, refused: 0, invalid: 1, failures_total: 0 },
        { name: "rx2", kind: "adsb-http", state: "failing", failures: 2, last_error: "<img src=x onerror=alert(1)>", last_data: null, reports: 0, published: 0, refused: 0, invalid: 0, failures_total: 2 },
      ],
    },
    NOW,
  );
  assert.deepEqual(
    rows.map((r) => [r.name, r.state, r.data, r.errorText]),
    [
      ["rx1", "running", "data 3 s ago", null],
      ["rx2", "failing", "no data yet", "last error: <img src=x onerror=alert(1)> (2 consecutive failures)"],
    ],
  );
  assert.equal(rows[0].counts, "3 published of 9 reports, 0 refused, 1 unreadable, 0 failures");
});

test("no feeds, a bad answer, an unknown state and a long error", () => {
  assert.deepEqual(feedRows({ tracks: 0, feeds: [] }), []);
  assert.deepEqual(feedRows(null), []);
  assert.deepEqual(feedRows({ feeds: "x" }), []);
  const [row] = feedRows({ feeds: [{ name: "a", kind: "kml", state: "exploded", last_error: "e".repeat(400) }] }, NOW);
  assert.equal(row.state, "unknown");
  assert.equal(row.errorText, `last error: ${"e".repeat(300)}…`);
  assert.equal(row.counts, "0 published of 0 reports, 0 refused, 0 unreadable, 0 failures");
});
