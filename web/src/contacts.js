// The contacts list: units with a callsign, searchable; click to go to one, or message it.

import { el, isolate, isolateText } from "./ui.js";

// Rows shown at once; more are reached by typing in the filter. Keeps the list cheap at 2,000.
const MAX_ROWS = 300;
// The list is rebuilt at most this often while visible (ms).
const REFRESH_MS = 1000;

export class ContactsPanel {
  constructor(root, page) {
    this.root = root;
    this.page = page;
    this.filter = el("input", { type: "search", placeholder: "Filter by callsign, team or type", "aria-label": "Filter contacts" });
    this.list = el("ul", { class: "contact-list" });
    this.more = el("p", { class: "muted small" });
    this.root.replaceChildren(this.filter, this.list, this.more);
    this.filter.addEventListener("input", () => this.render());
    this.timer = null;
    this.lastRender = 0;
  }

  /** Something changed: re-render soon if the panel is visible. */
  changed() {
    if (this.timer !== null) return;
    const wait = Math.max(0, REFRESH_MS - (performance.now() - this.lastRender));
    this.timer = setTimeout(() => {
      this.timer = null;
      this.render();
    }, wait);
  }

  /** Units with a callsign, sorted by callsign (what the chat panel offers as recipients). */
  contacts() {
    const out = [];
    for (const it of this.page.store.items.values()) {
      if (it.kind === "unit" && it.callsign) out.push(it);
    }
    out.sort((a, b) => a.callsign.localeCompare(b.callsign));
    return out;
  }

  render() {
    this.lastRender = performance.now();
    if (!this.page.chat.root.hidden) this.page.chat.refreshRecipients(this.contacts());
    if (this.root.hidden) return;
    const q = this.filter.value.trim().toLowerCase();
    const now = Date.now();
    const all = this.contacts().filter(
      (it) =>
        !q ||
        it.callsign.toLowerCase().includes(q) ||
        String(it.feature.properties?.team ?? "").toLowerCase().includes(q) ||
        it.type.toLowerCase().includes(q),
    );
    const rows = all.slice(0, MAX_ROWS).map((it) => {
      const stale = it.isStale(now);
      const li = el(
        "li",
        { class: stale ? "stale" : "", "data-uid": it.uid, title: `${isolateText(it.type)} · ${isolateText(it.uid)}` },
        el("span", { class: `dot aff-${it.affiliation}` }),
        el("span", { class: "callsign" }, isolate(it.callsign)),
        el("span", { class: "team muted" }, isolate(it.feature.properties?.team ?? "")),
        el("span", { class: "state muted" }, stale ? "stale" : ""),
        el("button", { class: "icon", title: `Message ${isolateText(it.callsign)}`, "aria-label": `Message ${isolateText(it.callsign)}`, onclick: (e) => {
          e.stopPropagation();
          this.page.chat.directTo(it.uid, it.callsign);
        } }, "✉"),
      );
      li.addEventListener("click", () => this.page.goTo(it.uid));
      return li;
    });
    this.list.replaceChildren(...rows);
    this.more.textContent =
      all.length > MAX_ROWS ? `${all.length - MAX_ROWS} more: type to narrow the list` : `${all.length} contacts`;
  }
}
