// Follow: keep the map centred on one item as it moves, until the user pans (drags the map or
// presses an arrow key on it) or chooses "Stop following".

import { el, isolate } from "./ui.js";

const PAN_KEYS = new Set(["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight"]);

export class Follow {
  /** ``map``: the #map element (the chip goes in it); ``view``: the map's focusable element. */
  constructor(map, view, page) {
    this.page = page;
    this.uid = null;
    this.last = null; // [x, y] the view was last centred on
    this.name = el("span", { class: "follow-name" });
    const stop = el("button", { id: "follow-stop", type: "button" }, "Stop following");
    stop.addEventListener("click", () => this.stop());
    this.chip = el("div", { id: "follow", class: "follow", role: "status" }, "Following ", this.name, " ", stop);
    this.chip.hidden = true;
    map.append(this.chip);
    // A drag that moves the map (OpenLayers' DragPan) or a keyboard pan ends following.
    page.map.map.on("pointerdrag", () => this.stop());
    view.addEventListener("keydown", (e) => {
      if (PAN_KEYS.has(e.key)) this.stop();
    });
  }

  /** Follow the item ``uid`` of the picture shown: centre on it now and whenever it moves. */
  start(uid) {
    const item = this.page.map.store.items.get(uid);
    if (!item) return;
    this.uid = uid;
    this.last = null;
    this.name.replaceChildren(isolate(item.callsign ?? uid));
    this.chip.hidden = false;
    this.track();
  }

  stop() {
    if (this.uid === null) return;
    this.uid = null;
    this.last = null;
    this.chip.hidden = true;
  }

  /** Centre on the followed item if it moved since (called before each frame is prepared). */
  track() {
    if (this.uid === null) return;
    const item = this.page.map.store.items.get(this.uid);
    if (!item) return; // gone for now (deleted, or not in playback's picture): wait for it
    if (this.last && this.last[0] === item.x && this.last[1] === item.y) return;
    this.last = [item.x, item.y];
    this.page.setView({ cx: item.x, cy: item.y });
  }
}
