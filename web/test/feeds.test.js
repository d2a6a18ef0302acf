// Unit tests of the Feeds section: the rows shown for a GET /api/v1/feeds answer.
import assert from "node:assert/strict";
import { mock, test } from "node:test";
import { FeedsPanel, REFRESH_MS, failingSummary, feedRows } from "../src/feeds.js";

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

test("the failing feeds, counted and named for the Layers button", () => {
  const rows = (states) => states.map((state, i) => ({ name: `f${i}`, state }));
  assert.deepEqual(failingSummary(rows(["running", "starting", "stopped", "unknown"])), {
    count: 0,
    text: "",
    label: "Layers and overlays",
  });
  assert.deepEqual(failingSummary(rows(["running", "failing"])), {
    count: 1,
    text: "1 feed failing: f1",
    label: "Layers and overlays (1 feed failing: f1)",
  });
  assert.equal(
    failingSummary(rows(["failing", "failing", "running", "failing", "failing", "failing"])).text,
    "5 feeds failing: f0, f1, f3 and 2 more",
  );
  assert.deepEqual(failingSummary([]).count, 0);
});

// A stand-in for the few DOM pieces the panel touches (node has no DOM).
class FakeNode {
  constructor(tag) {
    this.tag = tag;
    this.attrs = {};
    this.children = [];
    this.textContent = "";
    this.hidden = false;
    this.classes = new Set();
    this.classList = { toggle: (c, on) => (on ? this.classes.add(c) : this.classes.delete(c)) };
  }
  setAttribute(k, v) {
    this.attrs[k] = String(v);
  }
  getAttribute(k) {
    return k in this.attrs ? this.attrs[k] : null;
  }
  addEventListener() {}
  append(c) {
    this.children.push(c);
  }
  replaceChildren(...c) {
    this.children = c;
  }
}

function page() {
  globalThis.Node = FakeNode;
  globalThis.document = { createElement: (t) => new FakeNode(t), createTextNode: (t) => String(t) };
  const list = new FakeNode("ul");
  const section = Object.assign(new FakeNode("section"), { querySelector: () => list });
  const button = new FakeNode("button");
  button.setAttribute("aria-label", "Layers and overlays");
  button.setAttribute("title", "Layers and overlays");
  const badge = Object.assign(new FakeNode("span"), { hidden: true });
  const status = new FakeNode("p");
  const listeners = {};
  const doc = {
    hidden: false,
    addEventListener: (name, f) => (listeners[name] = f),
    removeEventListener: (name) => delete listeners[name],
  };
  return { section, list, button, badge, status, doc, listeners };
}

const feed = (name, state) => ({ name, kind: "adsb-file", state, last_error: state === "failing" ? "down" : null });

test("the panel closed: read every 10 s while the page is visible, the badge follows the failing feeds", async () => {
  mock.timers.enable({ apis: ["setInterval"] });
  try {
    const p = page();
    const answers = [
      { feeds: [feed("a", "running"), feed("b", "failing")] },
      { feeds: [feed("a", "failing"), feed("b", "failing")] },
      { feeds: [feed("a", "running"), feed("b", "running")] },
    ];
    let reads = 0;
    const api = { feeds: async () => answers[Math.min(reads++, answers.length - 1)] };
    const panel = new FeedsPanel(p.section, api, p);
    const settle = () => new Promise((r) => setImmediate(r));
    panel.start(); // the panel is never opened
    await settle();
    assert.equal(reads, 1);
    assert.equal(p.badge.hidden, false);
    assert.equal(p.badge.textContent, "1");
    assert.equal(p.button.getAttribute("aria-label"), "Layers and overlays (1 feed failing: b)");
    assert.equal(p.status.textContent, "1 feed failing: b");
    assert.ok(p.button.classes.has("feeds-failing"));

    mock.timers.tick(REFRESH_MS);
    await settle();
    assert.equal(reads, 2);
    assert.equal(p.badge.textContent, "2");
    assert.equal(p.status.textContent, "2 feeds failing: a, b");

    // Hidden page: no read.
    p.doc.hidden = true;
    mock.timers.tick(REFRESH_MS * 3);
    await settle();
    assert.equal(reads, 2);
    // Visible again: read at once; both recovered, the badge clears.
    p.doc.hidden = false;
    p.listeners.visibilitychange();
    await settle();
    assert.equal(reads, 3);
    assert.equal(p.badge.hidden, true);
    assert.equal(p.badge.textContent, "");
    assert.equal(p.button.getAttribute("aria-label"), "Layers and overlays");
    assert.equal(p.button.getAttribute("title"), "Layers and overlays");
    assert.equal(p.status.textContent, "Feeds: none failing");
    assert.ok(!p.button.classes.has("feeds-failing"));

    // A read that fails clears the badge too (nothing known).
    panel.flag(failingSummary([{ name: "x", state: "failing" }]));
    api.feeds = async () => {
      throw new Error("GET /api/v1/feeds: 500");
    };
    const warn = mock.method(console, "warn", () => {});
    mock.timers.tick(REFRESH_MS);
    await settle();
    warn.mock.restore();
    assert.equal(p.badge.hidden, true);
    assert.equal(p.section.hidden, true);
    // A listener that does not serve the status (404, api.feeds() null): no further reads.
    api.feeds = async () => {
      reads += 1;
      return null;
    };
    p.listeners.visibilitychange();
    await settle();
    const after = reads;
    assert.equal(p.listeners.visibilitychange, undefined);
    mock.timers.tick(REFRESH_MS * 3);
    await settle();
    assert.equal(reads, after);
    // Opening the panel reads once.
    panel.opened(true);
    await settle();
    assert.equal(reads, after + 1);
    panel.stop();
  } finally {
    mock.timers.reset();
    delete globalThis.document;
    delete globalThis.Node;
  }
});
