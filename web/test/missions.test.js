// Unit tests of the missions panel: the timeline rows and refusal text.
import assert from "node:assert/strict";
import { test } from "node:test";
import { missionRefusal, timelineRows } from "../src/missions.js";

test("the timeline merges changes and log entries, newest first", () => {
  const changes = [
    { type: "CREATE_MISSION", timestamp: "2026-01-01T10:00:00.000Z", creatorUid: "A" },
    {
      type: "ADD_CONTENT",
      timestamp: "2026-01-01T10:05:00.000Z",
      creatorUid: "A",
      contentUid: "m-1",
      details: { callsign: "Bridge" },
    },
    { type: "REMOVE_CONTENT", timestamp: "2026-01-01T10:07:00.000Z", creatorUid: "B", contentUid: "m-2" },
  ];
  const logs = [{ id: "e1", content: "bridge out", servertime: "2026-01-01T10:06:00.000Z", creatorUid: "B" }];
  const rows = timelineRows(changes, logs);
  assert.deepEqual(
    rows.map((r) => [r.kind, r.text, r.who]),
    [
      ["change", "remove content: m-2", "B"],
      ["log", "bridge out", "B"],
      ["change", "add content: Bridge", "A"],
      ["change", "create mission", "A"],
    ],
  );
});

test("the timeline is bounded and survives junk", () => {
  const logs = Array.from({ length: 10 }, (_, i) => ({ content: `e${i}`, servertime: `2026-01-01T10:0${i}:00.000Z` }));
  const rows = timelineRows([null, 7, { type: "X", timestamp: "nonsense" }], logs, 5);
  assert.equal(rows.length, 5);
  assert.equal(rows[0].text, "e9");
  assert.deepEqual(timelineRows(undefined, "x"), []);
  const last = timelineRows([{ type: "X", timestamp: "nonsense" }], [{ content: "a", servertime: "2026-01-01T00:00:00Z" }]);
  assert.equal(last[1].text, "x");
});

test("refusals show the server's message, else the status", () => {
  assert.equal(missionRefusal(403, { status: "FORBIDDEN", code: 3, message: "MISSION_WRITE is required" }), "MISSION_WRITE is required");
  assert.equal(missionRefusal(404, null), "no such mission (or not one you may see)");
  assert.equal(missionRefusal(500, null), "the server answered 500");
});
