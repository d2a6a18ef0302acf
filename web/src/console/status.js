// The read-only sections: certificates (expiring ones highlighted), partner links, feeds and
// live counters (one GET /api/v1/admin/status every STATUS_REFRESH_MS, never two at once), and
// the audit log's check (on demand: it reads the whole log).

import { SessionExpired } from "../api.js";
import { $, fill, h, table } from "./dom.js";
import { auditSummary, certState, counterRates, errorText, formatCount, formatTime, relative } from "./format.js";

const A = "/api/v1/admin";
// How often the status (links, feeds, counters) is read while the page is visible.
export const STATUS_REFRESH_MS = 5000;

export class Certificates {
  constructor(api) {
    this.api = api;
    $("certs-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.load().catch(() => {});
    });
  }

  async load() {
    const days = $("within-days").value.trim() || "30";
    const out = $("cert-list");
    let doc;
    try {
      doc = await this.api.json("GET", `${A}/certificates?within_days=${encodeURIComponent(days)}`);
    } catch (err) {
      fill(out, h("p", { class: "error", role: "alert" }, `Certificates cannot be read: ${errorText(err)}`));
      throw err;
    }
    const now = Date.now();
    const certs = [...doc.certificates].sort((a, b) => Date.parse(a.not_after) - Date.parse(b.not_after));
    const rows = certs.map((c) => {
      const state = certState(c);
      return h(
        "tr",
        { class: `cert-${state}` },
        h("td", {}, h("bdi", {}, c.common_name)),
        h("td", { class: "mono" }, c.serial),
        h("td", {}, formatTime(c.not_after), h("span", { class: "muted" }, ` (${relative(c.not_after, now)})`)),
        h("td", { class: `state state-${state}` }, state === "revoked" ? `revoked ${formatTime(c.revoked_at)}` : state),
      );
    });
    const expiring = certs.filter((c) => certState(c) === "expiring").length;
    const expired = certs.filter((c) => certState(c) === "expired").length;
    fill(
      out,
      h(
        "p",
        { class: expiring || expired ? "warn" : "muted", id: "cert-summary" },
        `${certs.length} client certificates; ${expiring} expiring within ${doc.within_days} days, ${expired} expired.`,
      ),
      doc.expiring.length
        ? h(
            "div",
            { class: "doctor" },
            h("h3", {}, `Expiring within ${doc.within_days} days (liaison doctor)`),
            h("ul", {}, doc.expiring.map((e) => h("li", { class: e.expired ? "state-bad" : "state-warn" }, h("bdi", {}, e.what), ` — ${formatTime(e.not_after)}${e.expired ? " (expired)" : ""}`))),
          )
        : null,
      doc.problems.length
        ? h("div", { class: "doctor" }, h("h3", {}, "Problems"), h("ul", {}, doc.problems.map((p) => h("li", { class: "state-bad" }, p))))
        : null,
      rows.length
        ? h("div", { class: "table-wrap" }, table("Client certificates, soonest expiry first", ["Common name", "Serial", "Expires", "State"], rows))
        : h("p", { class: "muted" }, "No client certificates issued."),
    );
  }
}

export class Status {
  constructor(api) {
    this.api = api;
    this.previous = null; // {at, counters}: the last answer, for rates
    this.timer = null;
    this.busy = false;
    this.stopped = false;
    $("refresh-auto").addEventListener("change", () => this.schedule());
    $("refresh-now").addEventListener("click", () => this.tick());
    document.addEventListener("visibilitychange", () => this.schedule());
  }

  start() {
    this.tick();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** The next read, STATUS_REFRESH_MS after the last one ended; none while hidden or paused. */
  schedule() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped || this.busy || document.hidden || !$("refresh-auto").checked) return;
    this.timer = setTimeout(() => this.tick(), STATUS_REFRESH_MS);
  }

  async tick() {
    if (this.busy || this.stopped) return;
    this.busy = true;
    clearTimeout(this.timer);
    try {
      const doc = await this.api.json("GET", `${A}/status`);
      this.render(doc);
      $("status-time").textContent = `Updated ${formatTime(doc.time)} (${new Date().toLocaleTimeString("en-GB")} here)`;
      $("status-time").classList.remove("error");
    } catch (err) {
      $("status-time").textContent = `Status not read: ${errorText(err)}`;
      $("status-time").classList.add("error");
      if (err instanceof SessionExpired) this.stopped = true;
    } finally {
      this.busy = false;
      this.schedule();
    }
  }

  render(doc) {
    const now = Date.parse(doc.time) || Date.now();
    const peers = doc.federation.peers ?? [];
    fill(
      $("link-list"),
      h("p", { class: "muted" }, doc.federation.server_id ? `This server: ${doc.federation.server_id}` : "No partner link runs."),
      peers.length
        ? h(
            "div",
            { class: "table-wrap" },
            table(
              "Partner links",
              ["Name", "Protocol", "State", "Since", "Backlog", "Sent / acked", "Received", "Last error"],
              peers.map((p) =>
                h(
                  "tr",
                  { "data-peer": p.name },
                  h("th", { scope: "row" }, h("bdi", {}, p.name), p.dial ? h("div", { class: "muted small mono" }, p.dial) : null),
                  h("td", {}, p.protocol),
                  h("td", { class: `state state-${p.state === "up" ? "ok" : p.state === "refused" ? "bad" : "warn"}` }, p.state),
                  h("td", {}, p.since_ms ? relative(new Date(p.since_ms).toISOString(), now) : "—"),
                  h("td", { class: p.backlog > 0 ? "num state-warn" : "num" }, formatCount(p.backlog)),
                  h("td", { class: "num" }, `${formatCount(p.counts?.sent ?? 0)} / ${formatCount(p.counts?.acked ?? 0)}`),
                  h("td", { class: "num" }, formatCount(p.counts?.received ?? 0)),
                  h("td", { class: p.last_error ? "state-bad wrap" : "wrap" }, p.last_error ?? "—"),
                ),
              ),
            ),
          )
        : null,
    );
    const feeds = doc.feeds.feeds ?? [];
    fill(
      $("feed-list"),
      h("p", { class: "muted" }, `${feeds.length} feed${feeds.length === 1 ? "" : "s"}; ${formatCount(doc.feeds.tracks)} tracks remembered.`),
      feeds.length
        ? h(
            "div",
            { class: "table-wrap" },
            table(
              "Feeds",
              ["Name", "Kind", "State", "Last data", "Reports", "Published", "Refused", "Invalid", "Failures", "Last error"],
              feeds.map((f) =>
                h(
                  "tr",
                  { "data-feed": f.name },
                  h("th", { scope: "row" }, h("bdi", {}, f.name)),
                  h("td", {}, f.kind),
                  h("td", { class: `state state-${f.state === "running" ? "ok" : f.state === "failing" ? "bad" : "warn"}` }, f.state),
                  h("td", {}, f.last_data ? relative(f.last_data, now) : "never"),
                  h("td", { class: "num" }, formatCount(f.reports)),
                  h("td", { class: "num" }, formatCount(f.published)),
                  h("td", { class: "num" }, formatCount(f.refused)),
                  h("td", { class: "num" }, formatCount(f.invalid)),
                  h("td", { class: "num" }, `${formatCount(f.failures)} (${formatCount(f.failures_total)} in all)`),
                  h("td", { class: f.last_error ? "state-bad wrap" : "wrap" }, f.last_error ?? "—"),
                ),
              ),
            ),
          )
        : null,
    );
    const at = performance.now();
    const rates = this.previous ? counterRates(this.previous.counters, doc.counters, at - this.previous.at) : {};
    this.previous = { at, counters: doc.counters };
    fill(
      $("counter-list"),
      table(
        "Counters",
        ["Metric", "Value", "Per second"],
        Object.entries(doc.counters).map(([name, value]) =>
          h(
            "tr",
            { "data-counter": name },
            h("th", { scope: "row", class: "mono" }, name),
            h("td", { class: "num" }, formatCount(value)),
            h("td", { class: "num" }, name in rates ? formatCount(Math.round(rates[name] * 100) / 100) : ""),
          ),
        ),
        "grid counters",
      ),
    );
  }
}

export class Audit {
  constructor(api) {
    this.api = api;
    $("audit-check").addEventListener("click", () => this.check());
  }

  async check() {
    const button = $("audit-check");
    const out = $("audit-result");
    button.disabled = true;
    fill(out, h("p", { class: "muted" }, "Checking… (at most 5 seconds)"));
    try {
      const doc = await this.api.json("GET", `${A}/audit`);
      const s = auditSummary(doc);
      const details = doc.enabled
        ? h(
            "dl",
            { class: "facts" },
            h("dt", {}, "Records"),
            h("dd", {}, formatCount(doc.records)),
            h("dt", {}, "Checkpoints"),
            h("dd", {}, formatCount(doc.checkpoints)),
            h("dt", {}, "Last good record"),
            h("dd", { class: "mono" }, `seq ${doc.head_seq}, ${doc.head_hash}`),
            h("dt", {}, "After the last checkpoint"),
            h("dd", {}, formatCount(doc.unsigned_tail)),
            h("dt", {}, "Whole log checked"),
            h("dd", {}, doc.complete ? "yes" : "no (time limit)"),
          )
        : null;
      fill(out, h("p", { class: s.ok ? "ok" : "error", id: "audit-summary" }, s.text), details, h("p", { class: "muted small" }, `Checked ${new Date().toLocaleTimeString("en-GB")}.`));
    } catch (err) {
      fill(out, h("p", { class: "error", role: "alert", id: "audit-summary" }, `Not checked: ${errorText(err)}`));
    } finally {
      button.disabled = false;
    }
  }
}
