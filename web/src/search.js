// The search box over the map: items of the picture shown (live, or playback's) by callsign, uid
// or CoT type, listed as the user types; choosing one centres the map on it and opens its popup.
// Keyboard: Down and Up move through the results, Enter chooses (the first when none is
// highlighted), Escape closes the list (and clears the box when the list is closed).

import "./search.css";
import { layerOf } from "./itemstyle.js";
import { matchItems } from "./matching.js";
import { el, isolate } from "./ui.js";

export class SearchBox {
  /** ``map``: the #map element (the box goes in it). */
  constructor(map, page) {
    this.page = page;
    this.results = [];
    this.active = -1;
    this.input = el("input", {
      id: "search-input",
      type: "search",
      placeholder: "Search callsign, uid or type",
      "aria-label": "Search the picture by callsign, uid or type",
      role: "combobox",
      "aria-autocomplete": "list",
      "aria-expanded": "false",
      "aria-controls": "search-results",
      autocomplete: "off",
      spellcheck: "false",
    });
    this.list = el("ul", { id: "search-results", class: "search-results", role: "listbox", "aria-label": "Search results" });
    this.list.hidden = true;
    this.count = el("p", { id: "search-count", class: "search-count", role: "status" });
    this.count.hidden = true;
    map.append(el("div", { class: "search", role: "search" }, this.input, this.list, this.count));
    this.input.addEventListener("input", () => this.update());
    this.input.addEventListener("focus", () => {
      if (this.input.value.trim() !== "") this.update();
    });
    this.input.addEventListener("blur", () => {
      // After a click on a result (which keeps the focus, see below) the list is closed anyway.
      setTimeout(() => this.close(), 150);
    });
    this.input.addEventListener("keydown", (e) => this.onKey(e));
  }

  /** Match the box's text against the picture shown and list the results. */
  update() {
    const hidden = this.page.map.hidden;
    const items = [...this.page.map.store.items.values()].filter((it) => !hidden.has(layerOf(it)));
    const { results, total } = matchItems(items, this.input.value);
    this.results = results;
    this.active = -1;
    this.list.replaceChildren(
      ...results.map(({ item }, i) =>
        el(
          "li",
          {
            id: `search-result-${i}`,
            role: "option",
            "aria-selected": "false",
            "data-uid": item.uid,
            onmousedown: (e) => e.preventDefault(), // keep the focus in the box
            onclick: () => this.choose(i),
          },
          el("span", { class: "search-name" }, isolate(item.callsign ?? item.uid)),
          el("span", { class: "search-detail" }, isolate(item.type || "no type"), " · ", isolate(item.uid)),
        ),
      ),
    );
    const query = this.input.value.trim() !== "";
    this.list.hidden = results.length === 0;
    this.input.setAttribute("aria-expanded", String(results.length > 0));
    this.input.removeAttribute("aria-activedescendant");
    this.count.hidden = !query;
    this.count.textContent =
      total === 0 ? "No match" : total > results.length ? `${results.length} of ${total} matches` : `${total} match${total === 1 ? "" : "es"}`;
  }

  close() {
    this.list.hidden = true;
    this.count.hidden = true;
    this.active = -1;
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
  }

  highlight(i) {
    this.active = i;
    this.list.querySelectorAll("[role=option]").forEach((li, j) => li.setAttribute("aria-selected", String(j === i)));
    if (i >= 0) {
      this.input.setAttribute("aria-activedescendant", `search-result-${i}`);
      this.list.children[i]?.scrollIntoView({ block: "nearest" });
    } else this.input.removeAttribute("aria-activedescendant");
  }

  onKey(e) {
    const n = this.results.length;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      if (this.list.hidden) this.update();
      if (this.results.length === 0) return;
      const step = e.key === "ArrowDown" ? 1 : -1;
      this.highlight(this.active < 0 ? (step > 0 ? 0 : n - 1) : (this.active + step + n) % n);
      e.preventDefault();
    } else if (e.key === "Enter") {
      if (n > 0) this.choose(this.active >= 0 ? this.active : 0);
      e.preventDefault();
    } else if (e.key === "Escape") {
      if (this.list.hidden) this.input.value = "";
      this.close();
      e.preventDefault();
    }
  }

  /** Centre on the result ``i`` and open its popup. */
  choose(i) {
    const r = this.results[i];
    if (!r) return;
    this.close();
    this.page.goTo(r.item.uid);
  }
}
