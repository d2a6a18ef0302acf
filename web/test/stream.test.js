// Unit tests of the reconnect backoff.
import assert from "node:assert/strict";
import { test } from "node:test";
import { BACKOFF_BASE_MS, BACKOFF_CAP_MS, backoffDelay } from "../src/stream.js";

test("backoff doubles up to the cap, with full jitter", () => {
  assert.equal(backoffDelay(0, () => 0.999999), Math.floor(BACKOFF_BASE_MS * 0.999999));
  assert.equal(backoffDelay(3, () => 0.5), BACKOFF_BASE_MS * 4);
  assert.equal(backoffDelay(50, () => 0.999999), Math.floor(BACKOFF_CAP_MS * 0.999999));
  assert.equal(backoffDelay(5, () => 0), 250, "never a busy loop");
});
