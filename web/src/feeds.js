// The Layers panel's Feeds section and the failing-feeds badge on the Layers button: each feed the
// server runs (GET /api/v1/feeds, docs/api.md "Feeds") with its state, its last error and its
// counts, read when the page loads and every REFRESH_MS while the page is visible, whether the
// panel is open or closed, so a failing feed is flagged on the Layers button (a count, an updated
// button label and a polite status message) while the panel is closed. The section is hidden when
// the server has no feeds. Everything shown is inserted as text: a feed's last error quotes what
// its upstream sent.

import { ago, el, isolate } from "./ui.js";

// How often the status is read again while the page is visible (ms).
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

// At most this many failing feeds are named in the button's label and the status message.
const NAMED = 3;

/**
 * What the Layers button says of the rows (``feedRows``): ``count`` the feeds whose state is
 * "failing"; ``text`` "" when none, else "1 feed failing: rx2" or "4 feeds failing: a, b, c and
 * 1 more"; ``label`` the button's accessible name.
 */
export function failingSummary(rows, base = "Layers and overlays") {
  const failing = rows.filter((r) => r.state === "failing").map((r) => r.name);
  const count = failing.length;
  if (count === 0) return { count, text: "", label: base };
  const named = failing.slice(0, NAMED).join(", ");
  const more = count > NAMED ? ` and ${count - NAMED} more` : "";
  const text = `${count} feed${count > 1 ? "s" : ""} failing: ${named}${more}`;
  return { count, text, label: `${base} (${text})` };
}

export class FeedsPanel {
  /**
   * ``section`` holds the list; ``button`` is the Layers button, ``badge`` the count on it and
   * ``status`` a polite live region for the failing feeds; ``doc`` the page's document (its
   * visibility pauses the reads).
   */
  constructor(section, api, { button, badge, status, doc = document }) {
    this.section = section;
    this.api = api;
    this.button = button;
    this.badge = badge;
    this.status = status;
    this.doc = doc;
    this.base = button.getAttribute("aria-label") ?? "Layers and overlays";
    this.title = button.getAttribute("title") ?? this.base;
    this.list = section.querySelector("ul");
    this.loading = false;
    this.timer = null;
    this.onVisible = () => {
      if (!this.doc.hidden) this.refresh();
    };
  }

  /** Read now and every REFRESH_MS while the page is visible (and at once when it shows again). */
  start() {
    this.stop();
    this.doc.addEventListener("visibilitychange", this.onVisible);
    this.timer = setInterval(() => {
      if (!this.doc.hidden) this.refresh();
    }, REFRESH_MS);
    if (!this.doc.hidden) this.refresh();
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.doc.removeEventListener("visibilitychange", this.onVisible);
  }

  /** The Layers panel was opened or closed: opening it reads the status at once. */
  opened(open) {
    if (open && !this.doc.hidden) this.refresh();
  }

  async refresh() {
    if (this.loading) return; // one request at a time
    this.loading = true;
    try {
      const doc = await this.api.feeds();
      // null: this listener does not serve the status (404): no more reads but when the panel opens.
      if (doc === null) this.stop();
      this.show(doc);
    } catch (e) {
      this.show(null);
      console.warn(e);
    } finally {
      this.loading = false;
    }
  }

  /**
   * Show the answer (null: none, or the server serves no feed status): hidden without feeds; the
   * badge and the status message follow the feeds that fail (none when the read failed).
   */
  show(doc) {
    const rows = doc ? feedRows(doc) : [];
    this.flag(failingSummary(rows, this.base));
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

  /** The badge, the button's name and the live message; each changed only when it changes. */
  flag(summary) {
    const count = summary.count > 0 ? String(summary.count) : "";
    if (this.badge.textContent !== count) this.badge.textContent = count;
    this.badge.hidden = summary.count === 0;
    this.button.classList.toggle("feeds-failing", summary.count > 0);
    if (this.button.getAttribute("aria-label") !== summary.label) {
      this.button.setAttribute("aria-label", summary.label);
      this.button.setAttribute("title", summary.count > 0 ? `${this.title} (${summary.text})` : this.title);
    }
    const message = summary.count > 0 ? summary.text : this.status.textContent ? "Feeds: none failing" : "";
    if (this.status.textContent !== message) this.status.textContent = message;
  }
}
