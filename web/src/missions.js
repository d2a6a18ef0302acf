// Missions (TAK Data Sync) in the side panel, through the Marti mission API with the web session:
// the missions the user may see (GET /Marti/api/missions), subscribe and unsubscribe the page's
// own uid (the feed's), one mission's items (listed, and drawn on the map from
// GET /api/v1/missions/{name}/features, which carries their labels) and its timeline (changes and
// log entries, newest first), and a log entry to add (POST /Marti/api/missions/logs/entries).
// Live: the feed's "mission" messages (t-x-m-c, t-x-m-c-l) make the open mission re-read itself.

import { ApiError, SessionExpired } from "./api.js";
import { choosableClassifications, composeBanner, MAX_REL_CHARS } from "./chatlabel.js";
import { el, isolate, isolateText, labelBadge, shortTime } from "./ui.js";

export const MISSIONS = "/Marti/api/missions";
// Longest log entry the form takes (the server takes 65,536 characters).
export const MAX_LOG_TEXT = 4000;
// Timeline rows shown (newest first).
export const MAX_TIMELINE = 200;
// A burst of notices re-reads the open mission once, this long after the first (ms).
const REFRESH_DELAY_MS = 300;

const enc = encodeURIComponent;

/**
 * The timeline of a mission: its changes (TAK MissionChange: ``type``, ``timestamp``,
 * ``creatorUid``, ``contentUid``, ``details``) and log entries (TAK LogEntry: ``content``,
 * ``servertime``, ``creatorUid``) as rows ``{time, kind, text, who, uid}``, newest first.
 * Rows whose time does not parse go last.
 */
export function timelineRows(changes, logs, max = MAX_TIMELINE) {
  const rows = [];
  for (const c of Array.isArray(changes) ? changes : []) {
    if (!c || typeof c !== "object") continue;
    const name = c.details?.callsign ?? c.contentUid ?? "";
    const what = String(c.type ?? "CHANGE").replaceAll("_", " ").toLowerCase();
    rows.push({
      time: Date.parse(c.timestamp ?? c.serverTime),
      kind: "change",
      text: name ? `${what}: ${name}` : what,
      who: String(c.creatorUid ?? ""),
      uid: c.contentUid ?? null,
    });
  }
  for (const e of Array.isArray(logs) ? logs : []) {
    if (!e || typeof e !== "object") continue;
    rows.push({
      time: Date.parse(e.servertime ?? e.created),
      kind: "log",
      text: String(e.content ?? ""),
      who: String(e.creatorUid ?? ""),
      uid: e.id ?? null,
    });
  }
  const key = (r) => (Number.isFinite(r.time) ? r.time : -Infinity);
  rows.sort((a, b) => key(b) - key(a));
  return rows.slice(0, max);
}

/** The text of a refused mission call: TAK's error body ``{"message"}``, else the status. */
export function missionRefusal(status, body) {
  const message = typeof body?.message === "string" ? body.message.trim() : "";
  if (message) return message;
  if (status === 404) return "no such mission (or not one you may see)";
  return `the server answered ${status}`;
}

export class MissionsPanel {
  constructor(root, page) {
    this.root = root;
    this.page = page;
    this.missions = []; // Mission objects from GET /missions
    this.subscribed = new Set(); // names this page's uid is subscribed to
    this.current = null; // the name of the mission shown
    this.loaded = false;
    this.refreshTimer = null;
    this.list = el("ul", { class: "mission-list" });
    this.detail = el("div", { class: "mission-detail" });
    this.detail.hidden = true;
    this.status = el("p", { class: "muted small mission-status", role: "status" });
    const head = el(
      "div",
      { class: "mission-head" },
      el("span", { class: "small muted" }, "Missions you may see"),
      el("button", { type: "button", class: "mission-reload", onclick: () => this.load() }, "Reload"),
    );
    this.root.replaceChildren(head, this.list, this.detail, this.status);
  }

  get uid() {
    return this.page.me?.uid ?? `liaison-web-${this.page.me?.name ?? ""}`;
  }

  /** The tab was opened: read the list the first time. */
  shown() {
    if (!this.loaded) this.load();
  }

  say(text) {
    this.status.textContent = text;
  }

  async call(method, path, body) {
    try {
      return await this.page.api.json(method, path, body);
    } catch (e) {
      if (e instanceof ApiError) throw new Error(missionRefusal(e.status, e.body));
      throw e;
    }
  }

  async load() {
    this.loaded = true;
    try {
      const doc = await this.call("GET", MISSIONS);
      this.missions = Array.isArray(doc?.data) ? doc.data : [];
      const subscribed = new Set();
      await Promise.all(
        this.missions.map(async (m) => {
          const res = await this.page.api.request("GET", `${MISSIONS}/${enc(m.name)}/subscription?uid=${enc(this.uid)}`);
          if (res.ok) subscribed.add(m.name);
        }),
      );
      this.subscribed = subscribed;
      this.renderList();
      this.say(this.missions.length === 0 ? "No missions." : "");
    } catch (e) {
      if (!(e instanceof SessionExpired)) this.say(`Missions unavailable: ${e.message}`);
    }
  }

  renderList() {
    const rows = this.missions.map((m) => {
      const on = this.subscribed.has(m.name);
      const li = el(
        "li",
        { "data-mission": m.name, class: m.name === this.current ? "open" : "" },
        el(
          "button",
          { type: "button", class: "mission-name link", title: `Show ${isolateText(m.name)}`, onclick: () => this.open(m.name) },
          isolate(m.name),
        ),
        el("span", { class: "muted small mission-desc" }, isolate(m.description ?? "")),
        el(
          "button",
          { type: "button", class: `mission-sub${on ? " on" : ""}`, onclick: () => this.toggle(m.name) },
          on ? "Unsubscribe" : "Subscribe",
        ),
      );
      return li;
    });
    this.list.replaceChildren(...rows);
  }

  /**
   * Subscribe the page's uid (then the feed carries the mission's new items and notices), or
   * unsubscribe it for good (``disconnectOnly=false``: the stored subscription goes too).
   */
  async toggle(name) {
    const path = `${MISSIONS}/${enc(name)}/subscription?uid=${enc(this.uid)}`;
    try {
      if (this.subscribed.has(name)) {
        await this.page.api.request("DELETE", `${path}&disconnectOnly=false`).then((res) => {
          if (!res.ok) throw new Error(missionRefusal(res.status, null));
        });
        this.subscribed.delete(name);
        this.say(`Unsubscribed from ${name}.`);
      } else {
        await this.call("PUT", path);
        this.subscribed.add(name);
        this.say(`Subscribed to ${name}.`);
      }
      this.renderList();
    } catch (e) {
      if (!(e instanceof SessionExpired)) this.say(`${name}: ${e.message}`);
    }
  }

  async open(name) {
    this.current = name;
    this.renderList();
    await this.refresh(true);
  }

  close() {
    this.current = null;
    this.detail.hidden = true;
    this.detail.replaceChildren();
    this.renderList();
  }

  /** A mission notice came on the feed: re-read the mission if it is the one shown. */
  onNotice(m) {
    if (!m || m.name !== this.current || this.refreshTimer !== null) return;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      this.refresh(false);
    }, REFRESH_DELAY_MS);
  }

  async refresh(fit) {
    const name = this.current;
    if (name === null) return;
    const base = `${MISSIONS}/${enc(name)}`;
    try {
      const [mission, changes, logs, fc] = await Promise.all([
        this.call("GET", base),
        this.call("GET", `${base}/changes?squashed=false`),
        this.call("GET", `${base}/log`),
        this.call("GET", `/api/v1/missions/${enc(name)}/features`),
      ]);
      if (this.current !== name) return; // another mission was opened meanwhile
      const features = Array.isArray(fc?.features) ? fc.features : [];
      for (const f of features) this.page.store.upsert(f)?.markMission();
      this.page.dataChanged();
      const m = Array.isArray(mission?.data) ? mission.data[0] : null;
      this.renderDetail(m ?? { name }, features, timelineRows(changes?.data, logs?.data));
      if (fit) this.fit(features);
    } catch (e) {
      if (!(e instanceof SessionExpired)) this.say(`${name}: ${e.message}`);
    }
  }

  /** Show the mission's items on the map. */
  fit(features) {
    const uids = new Set(features.map((f) => String(f.properties?.uid ?? f.id)));
    let [minx, miny, maxx, maxy] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const uid of uids) {
      const it = this.page.store.items.get(uid);
      if (!it) continue;
      minx = Math.min(minx, it.bbox[0]);
      miny = Math.min(miny, it.bbox[1]);
      maxx = Math.max(maxx, it.bbox[2]);
      maxy = Math.max(maxy, it.bbox[3]);
    }
    if (Number.isFinite(minx)) this.page.map.fitWorld([minx, miny, maxx, maxy], 60, 13);
  }

  renderDetail(mission, features, rows) {
    const items = features
      .map((f) => ({ uid: String(f.properties?.uid ?? f.id), callsign: f.properties?.callsign, type: f.properties?.type, label: f.properties?.label ?? null }))
      .sort((a, b) => String(a.callsign ?? a.uid).localeCompare(String(b.callsign ?? b.uid)));
    const itemRows = items.map((it) => {
      const li = el(
        "li",
        { "data-uid": it.uid, title: `${isolateText(it.type ?? "")} · ${isolateText(it.uid)}` },
        el("span", { class: "callsign" }, isolate(it.callsign || it.uid)),
        labelBadge(it.label),
      );
      li.addEventListener("click", () => this.page.goTo(it.uid));
      return li;
    });
    const timeline = rows.map((r) =>
      el(
        "li",
        { class: `tl-${r.kind}`, "data-kind": r.kind },
        el("span", { class: "muted small tl-time" }, Number.isFinite(r.time) ? shortTime(r.time) : ""),
        el("span", { class: "tl-text" }, isolate(r.text)),
        el("span", { class: "muted small tl-who" }, isolate(r.who)),
      ),
    );
    this.detail.hidden = false;
    this.detail.replaceChildren(
      el(
        "div",
        { class: "mission-title" },
        el("strong", {}, isolate(mission.name)),
        el("button", { type: "button", class: "mission-fit", onclick: () => this.fit(features) }, "Show on map"),
        el("button", { type: "button", class: "mission-close", "aria-label": "Close mission", onclick: () => this.close() }, "×"),
      ),
      mission.description ? el("p", { class: "muted small" }, isolate(mission.description)) : null,
      el("h4", {}, `Items (${items.length})`),
      el("ul", { class: "mission-items" }, ...itemRows),
      el("h4", {}, "Timeline"),
      el("ol", { class: "mission-timeline" }, ...timeline),
      this.formOf(mission.name),
    );
  }

  /** The log form of the mission shown, kept across re-reads (what is typed stays). */
  formOf(name) {
    if (this.form?.name !== name) this.form = { name, node: this.logForm(name) };
    return this.form.node;
  }

  /** The form that adds a log entry, with the same label chooser as the chat. */
  logForm(name) {
    const me = this.page.me ?? {};
    const offered = Array.isArray(me.classifications) && me.classifications.length > 0;
    const text = el("textarea", { class: "log-text", maxlength: MAX_LOG_TEXT, rows: 2, placeholder: "Log entry", "aria-label": "Log entry" });
    const cls = el(
      "select",
      { class: "log-label-cls", "aria-label": "Classification of the entry" },
      el("option", { value: "" }, "Server default"),
      ...choosableClassifications(me.classifications, me.clearance).map((c) => el("option", { value: c }, c)),
    );
    const rel = el("input", { type: "text", class: "log-label-rel", maxlength: MAX_REL_CHARS, value: me.org ?? "", "aria-label": "Releasable to" });
    const chooser = el("div", { class: "chat-label" }, el("span", { class: "small muted" }, "Label"), cls, el("span", { class: "small muted rel-prefix" }, "REL TO"), rel);
    chooser.hidden = !offered;
    const form = el("form", { class: "log-form" }, text, chooser, el("button", { type: "submit", class: "log-add" }, "Add log entry"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const content = text.value.trim();
      if (!content) return;
      const banner = offered ? composeBanner(cls.value, rel.value) : null;
      const query = banner ? `?classification=${enc(banner)}` : "";
      try {
        await this.call("POST", `${MISSIONS}/logs/entries${query}`, {
          content,
          creatorUid: this.uid,
          missionNames: [name],
          dtg: new Date().toISOString(),
        });
        text.value = "";
        this.say("Log entry added.");
        await this.refresh(false);
      } catch (err) {
        if (!(err instanceof SessionExpired)) this.say(`Not added: ${err.message}`);
      }
    });
    return form;
  }
}
