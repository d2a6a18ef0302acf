// The operator console's pure helpers (src/console/format.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  addUserBody,
  auditSummary,
  certState,
  counterRates,
  dispositionFilename,
  errorText,
  formatDuration,
  formatTime,
  relative,
  soonestExpiry,
  splitGroups,
  tokenHours,
} from "../src/console/format.js";

const base = { name: "alice", org: "USA", signIn: "enrollment", hours: "" };

test("groups typed with commas and spaces become a list, each once", () => {
  assert.deepEqual(splitGroups(" blue, red  blue,,green "), ["blue", "red", "green"]);
  assert.deepEqual(splitGroups(""), []);
  assert.deepEqual(splitGroups(undefined), []);
});

test("an enrollment user gets the default token lifetime and groups for both directions", () => {
  assert.deepEqual(addUserBody({ ...base, groups: "blue, red" }), {
    body: { name: "alice", org: "USA", groups: ["blue", "red"], token_ttl_hours: 24 },
  });
  assert.deepEqual(addUserBody({ ...base, hours: "2" }).body.token_ttl_hours, 2);
});

test("IN and OUT groups are sent together, never with groups", () => {
  assert.deepEqual(addUserBody({ ...base, inGroups: "a", outGroups: "" }).body, {
    name: "alice",
    org: "USA",
    in_groups: ["a"],
    out_groups: [],
    token_ttl_hours: 24,
  });
  assert.match(addUserBody({ ...base, groups: "x", inGroups: "a" }).error, /not both/);
});

test("a password user sends the password and no token lifetime", () => {
  const made = addUserBody({ ...base, signIn: "password", password: "twelve chars", profile: " secret " });
  assert.deepEqual(made.body, { name: "alice", org: "USA", profile: "secret", password: "twelve chars" });
  assert.match(addUserBody({ ...base, signIn: "password", password: "short" }).error, /at least 12/);
});

test("names, organisations and lifetimes out of the API's rules are refused before sending", () => {
  assert.match(addUserBody({ ...base, name: "" }).error, /name/);
  assert.match(addUserBody({ ...base, name: "-x" }).error, /name/);
  assert.match(addUserBody({ ...base, name: "a".repeat(65) }).error, /name/);
  assert.ok(addUserBody({ ...base, name: "a".repeat(64) }).body);
  assert.ok(addUserBody({ ...base, name: "j.doe@unit_1-a" }).body);
  assert.match(addUserBody({ ...base, org: " " }).error, /organisation/);
  assert.match(addUserBody({ ...base, org: "o".repeat(65) }).error, /organisation/);
  assert.match(addUserBody({ ...base, hours: "721" }).error, /lifetime/);
  assert.match(addUserBody({ ...base, hours: "0.001" }).error, /lifetime/);
  assert.match(addUserBody({ ...base, hours: "abc" }).error, /lifetime/);
  assert.deepEqual(tokenHours("720"), { hours: 720 });
  assert.deepEqual(tokenHours(" "), { hours: 24 });
});

test("a certificate's state comes from the API's flags, revoked first", () => {
  assert.equal(certState({ revoked: true, expired: true, expiring: false }), "revoked");
  assert.equal(certState({ revoked: false, expired: true, expiring: true }), "expired");
  assert.equal(certState({ revoked: false, expired: false, expiring: true }), "expiring");
  assert.equal(certState({ revoked: false, expired: false, expiring: false }), "valid");
});

test("the soonest expiry skips revoked and expired certificates", () => {
  const certs = [
    { not_after: "2027-01-01T00:00:00.000Z", revoked: false, expired: false },
    { not_after: "2026-01-01T00:00:00.000Z", revoked: false, expired: true },
    { not_after: "2026-12-20T00:00:00.000Z", revoked: true, expired: false },
    { not_after: "2026-12-25T00:00:00.000Z", revoked: false, expired: false },
  ];
  assert.equal(soonestExpiry(certs).not_after, "2026-12-25T00:00:00.000Z");
  assert.equal(soonestExpiry([]), null);
});

test("times and durations read as short text", () => {
  assert.equal(formatTime("2026-12-07T13:40:12.345Z"), "2026-12-07 13:40 UTC");
  assert.equal(formatTime(null), "—");
  assert.equal(formatDuration(45_000), "45 s");
  assert.equal(formatDuration(12 * 60_000), "12 min");
  assert.equal(formatDuration(5 * 3600_000), "5 h");
  assert.equal(formatDuration(3 * 86400_000), "3 d");
  assert.equal(formatDuration(-5), "0 s");
  const now = Date.parse("2026-12-07T00:00:00Z");
  assert.equal(relative("2026-12-19T00:00:00Z", now), "in 12 d");
  assert.equal(relative("2026-12-06T21:00:00Z", now), "3 h ago");
});

test("counter rates: only _total counters, none across a restart or without a previous read", () => {
  const before = { liaison_subscribers: 3, liaison_events_in_total: 100, liaison_denied_total: 10 };
  const after = { liaison_subscribers: 5, liaison_events_in_total: 150, liaison_denied_total: 2 };
  assert.deepEqual(counterRates(before, after, 5000), { liaison_events_in_total: 10 });
  assert.deepEqual(counterRates(null, after, 5000), {});
  assert.deepEqual(counterRates(before, after, 0), {});
});

test("the audit summary says verified, failed (where) or no log", () => {
  assert.match(auditSummary({ enabled: false }).text, /No audit log/);
  const good = { enabled: true, ok: true, complete: true, records: 1200, checkpoints: 3, unsigned_tail: 4, signatures_checked: true, failure: null };
  assert.deepEqual(auditSummary(good), {
    ok: true,
    text: "Verified: 1,200 records, 3 checkpoints, signatures checked; 4 records after the last checkpoint.",
  });
  assert.match(auditSummary({ ...good, complete: false }).text, /Only part of the log/);
  const bad = { ...good, ok: false, failure: { line: 7, seq: 6, reason: "hash", detail: "prev mismatch" } };
  assert.deepEqual(auditSummary(bad), { ok: false, text: "FAILED at line 7 (seq 6): hash (prev mismatch). 1,200 records, 3 checkpoints checked before it." });
});

test("download names come from Content-Disposition, filename* first", () => {
  assert.equal(dispositionFilename(`attachment; filename="bob-enroll-atak.zip"; filename*=UTF-8''bob-enroll-atak.zip`), "bob-enroll-atak.zip");
  assert.equal(dispositionFilename(`attachment; filename="_.zip"; filename*=UTF-8''%C3%9C.zip`), "Ü.zip");
  assert.equal(dispositionFilename(`attachment; filename="a.zip"`), "a.zip");
  assert.equal(dispositionFilename(null, "x.zip"), "x.zip");
});

test("API refusals are shown in the server's words", () => {
  assert.equal(errorText({ status: 409, body: { error: "a user of that name exists" } }), "a user of that name exists");
  assert.equal(errorText({ status: 502, body: null }), "the server answered 502");
  assert.equal(errorText(new Error("offline")), "offline");
});
