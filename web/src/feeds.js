// The Feeds section of the Layers panel: each feed the server runs (GET /api/v1/feeds,
// docs/api.md "Feeds") with its state, its last error and its counts, read again every
// REFRESH_MS while the panel is open. The section is hidden when the server has no feeds.
// Everything shown is inserted as text: a feed's last error quotes what its upstream sent.

import { ago, el, isolate } from "./ui.js";

// How often the status is read again while the Layers panel is open (ms).
export const REFRESH_MS = 10_000;
// The states the server reports (docs/feeds.md, "Status"); anything else is shown as "unknown".
const STATES = new Set(["starting", "running", "failing", "stopped"]);
// At most this many characters of a last error are shown (the whole text is its tooltip).
const ERROR_CHARS = 300;

const count = (v) => (Number.isFinite(v) ? v : 0);

/**
 * The rows to show for a ``GET /api/v1/feeds`` answer: one per feed, in the server's order, with
 * ``state`` one of STATES or "unknown", ``data`` ("data 3 s ago", "no data yet"), ``counts`` and
 * ``error`` (the last failure's message while the feed fails, else null) and
 * ``errorText`` ("last error: ..." cut to ERROR_CHARS, with the consecutive failures if any).
 */
export function feedRows(doc, now = Date.now()) {
  const feeds = Array.isArray(doc?.feeds) ? doc.feeds : [];
  return feeds.map((f) => {
    const state = STATES.has(f?.state) ? f.state : "unknown";
    const last = typeof f?.last_data === "string" ? Date.parse(f.last_data) : NaN;
    const error = typeof f?.last_error === "string" && f.last_error !== "" ? f.last_error : null;
    const failures = count(f?.failures);
    return {
      name: String(f?.name ?? "?"),
      kind: String(f?.kind ?? "?"),
      state,
      data: Number.isFinite(last) ? `data ${ago(last, now)}` : "no data yet",
      counts: `${count(f?.published)} published of ${count(f?.reports)} reports, ${count(f?.refused)} refused, ${count(f?.invalid)} unreadable, ${count(f?.failures_total)} failures`,
      error,
      errorText:
        error === null
          ? null
          : `last error: ${error.length > ERROR_CHARS ? `${error.slice(0, ERROR_CHARS)}…` : error}${failures > 0 ? ` (${failures} consecutive failure${failures > 1 ? "s" : ""})` : ""}`,
    };
  });
}

export class FeedsPanel {
  /** ``section`` holds the list; ``isOpen()`` says whether the Layers panel is open. */
  constructor(section, api, isOpen) {
    this.section = section;
    this.api = api;
    this.isOpen = isOpen;
    this.list = section.querySelector("ul");
    this.loading = false;
    this.timer = null;
  }

  /** The Layers panel was opened or closed: read now and every REFRESH_MS while open. */
  opened(open) {
    clearInterval(this.timer);
    this.timer = null;
    if (!open) return;
    this.refresh();
    this.timer = setInterval(() => {
      if (this.isOpen()) this.refresh();
    }, REFRESH_MS);
  }

  async refresh() {
    if (this.loading) return; // one request at a time
    this.loading = true;
    try {
      this.show(await this.api.feeds());
    } catch (e) {
      this.show(null);
      console.warn(e);
    } finally {
      this.loading = false;
    }
  }

  /** Show the answer (null: none, or the server serves no feed status): hidden without feeds. */
  show(doc) {
    const rows = doc ? feedRows(doc) : [];
    this.section.hidden = rows.length === 0;
    this.list.replaceChildren(
      ...rows.map((r) =>
        el(
          "li",
          { class: `feed feed-${r.state}`, tabindex: "0", "data-feed": r.name },
          el("div", { class: "feed-head" }, isolate(r.name), " ", el("span", { class: "feed-state" }, r.state)),
          el("div", { class: "feed-meta" }, `${r.kind} · ${r.data}`),
          el("div", { class: "feed-meta" }, r.counts),
          r.errorText === null ? null : el("div", { class: "feed-error", title: r.error }, r.errorText),
        ),
      ),
    );
  }
}
