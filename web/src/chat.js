// GeoChat: messages from GET /api/v1/chat and the stream, sent with POST /api/v1/chat.

import { ApiError, SessionExpired } from "./api.js";
import { choosableClassifications, composeBanner, MAX_REL_CHARS, refusalText } from "./chatlabel.js";
import { el, isolate, isolateText, labelBadge, shortTime } from "./ui.js";

export const ALL_ROOMS = "All Chat Rooms";
// Messages kept in the panel; older ones scroll away.
const MAX_MESSAGES = 500;
// Longest message accepted from the input (TAK clients cut GeoChat text shorter still).
const MAX_TEXT = 2000;

export class ChatPanel {
  constructor(root, page) {
    this.root = root;
    this.page = page;
    this.messages = [];
    this.uids = new Set();
    this.unread = 0;
    this.to = el("select", { "aria-label": "Send to" }, el("option", { value: `room:${ALL_ROOMS}` }, ALL_ROOMS));
    this.list = el("ol", { class: "chat-list", "aria-live": "polite" });
    this.input = el("input", { type: "text", maxlength: MAX_TEXT, placeholder: "Message", "aria-label": "Message" });
    this.status = el("p", { class: "muted small chat-status", role: "status" });
    this.sendLabel = el("span", { class: "chat-send-label" });
    const form = el(
      "form",
      { class: "chat-form" },
      this.input,
      el("div", { class: "chat-send" }, this.sendLabel, el("button", { type: "submit" }, "Send")),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    const chooser = this.buildLabelChooser();
    this.root.replaceChildren(el("label", { class: "small muted" }, "To ", this.to), this.list, chooser, form, this.status);
    this.showSendLabel();
  }

  /**
   * The label chooser, shown only when the server has a label policy: a classification (those at
   * or below the user's clearance, or "Server default", which sends no label) and the values after
   * "REL TO" (the user's own organisation to begin with). The choice stays between sends.
   */
  buildLabelChooser() {
    const me = this.page.me ?? {};
    const offered = Array.isArray(me.classifications) && me.classifications.length > 0;
    this.cls = el(
      "select",
      { class: "chat-label-cls", "aria-label": "Classification" },
      el("option", { value: "" }, "Server default"),
      ...choosableClassifications(me.classifications, me.clearance).map((c) => el("option", { value: c }, c)),
    );
    this.rel = el("input", {
      type: "text",
      class: "chat-label-rel",
      maxlength: MAX_REL_CHARS,
      value: me.org ?? "",
      placeholder: "USA, UKR",
      "aria-label": "Releasable to",
      title: "Values separated by commas, as in REL TO USA, UKR",
    });
    const changed = () => {
      this.showSendLabel();
      if (this.status.classList.contains("message")) {
        // A refusal was about the label just changed: it no longer applies.
        this.status.textContent = "";
        this.status.classList.remove("message");
      }
    };
    this.cls.addEventListener("change", changed);
    this.rel.addEventListener("input", changed);
    const chooser = el(
      "div",
      { class: "chat-label", role: "group", "aria-label": "Label of the messages you send" },
      el("span", { class: "small muted" }, "Label"),
      this.cls,
      el("span", { class: "small muted rel-prefix" }, "REL TO"),
      this.rel,
    );
    chooser.hidden = !offered;
    this.labelOffered = offered;
    return chooser;
  }

  /** The banner chosen for the next message, or null for the server's default label. */
  chosenLabel() {
    if (!this.labelOffered) return null;
    return composeBanner(this.cls.value, this.rel.value);
  }

  /** Show the label the next message goes with, next to the send button. */
  showSendLabel() {
    this.sendLabel.hidden = !this.labelOffered;
    const banner = this.chosenLabel();
    this.rel.disabled = this.cls.value === "";
    const badge = banner === null ? labelBadge(null, "server default") : labelBadge(banner);
    badge.title = banner === null ? "Sent without a label: the server applies its default label" : `Sent as ${banner}`;
    this.sendLabel.replaceChildren(badge);
  }

  async loadHistory() {
    try {
      const msgs = await this.page.api.chatHistory(200);
      if (msgs === null) {
        this.status.textContent = "This server keeps no chat history.";
        return;
      }
      for (const m of msgs) this.add(m, false);
    } catch (e) {
      if (!(e instanceof SessionExpired)) this.status.textContent = `Chat history unavailable: ${e.message}`;
    }
  }

  /** Add a message (from history, the stream or our own send); duplicates by uid are ignored. */
  add(m, notify = true) {
    if (!m || typeof m !== "object") return;
    const uid = m.uid ? String(m.uid) : null;
    if (uid !== null) {
      if (this.uids.has(uid)) {
        this.fillLabel(uid, m.label);
        return;
      }
      this.uids.add(uid);
    }
    const time = Date.parse(m.time);
    const entry = { ...m, timeMs: Number.isFinite(time) ? time : Date.now() };
    this.messages.push(entry);
    this.messages.sort((a, b) => a.timeMs - b.timeMs);
    if (this.messages.length > MAX_MESSAGES) {
      const dropped = this.messages.splice(0, this.messages.length - MAX_MESSAGES);
      for (const d of dropped) if (d.uid) this.uids.delete(String(d.uid));
    }
    this.render();
    if (notify && this.root.hidden) {
      this.unread++;
      document.getElementById("chat-unread").textContent = String(this.unread);
    }
    this.page.requestFrame(); // the banner may change
  }

  /**
   * A copy of a message already listed: when the listed one has no label and the copy has one,
   * take it. A chat sent with the server's default label is listed from the send's answer, which
   * may not say the label; the copy from the live feed carries the label it was stored under.
   */
  fillLabel(uid, label) {
    if (typeof label !== "string" || !label) return;
    const entry = this.messages.find((e) => e.uid !== undefined && String(e.uid) === uid);
    if (!entry || entry.label) return;
    entry.label = label;
    this.render();
    this.page.requestFrame(); // the banner may change
  }

  seen() {
    this.unread = 0;
    document.getElementById("chat-unread").textContent = "";
    this.list.scrollTop = this.list.scrollHeight;
  }

  render() {
    const stick = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 20;
    const now = Date.now();
    this.list.replaceChildren(
      ...this.messages.map((m) =>
        el(
          "li",
          { "data-uid": m.uid ?? "", class: m.sender_uid && m.sender_uid === this.page.me.uid ? "mine" : null },
          el(
            "div",
            { class: "chat-meta" },
            el("strong", {}, isolate(m.callsign || m.sender_uid || "?")),
            el("span", { class: "muted" }, ` ${shortTime(m.timeMs, now)}`),
            m.chatroom && m.chatroom !== ALL_ROOMS ? el("span", { class: "room" }, " → ", isolate(m.chatroom)) : null,
            labelBadge(m.label ?? null),
          ),
          el("div", { class: "chat-text" }, isolate(String(m.text ?? ""))),
        ),
      ),
    );
    if (stick) this.list.scrollTop = this.list.scrollHeight;
  }

  /** Labels of the messages shown (for the banner), when the chat panel is open. */
  visibleLabels() {
    if (this.root.hidden) return [];
    return this.messages.map((m) => m.label ?? null);
  }

  refreshRecipients(contacts) {
    const key = contacts.map((c) => `${c.uid}\u0000${c.callsign}`).join("\u0001");
    if (key === this.recipientsKey) return;
    this.recipientsKey = key;
    const current = this.to.value;
    const options = [el("option", { value: `room:${ALL_ROOMS}` }, ALL_ROOMS)];
    for (const it of contacts) {
      options.push(el("option", { value: `uid:${it.uid}`, "data-callsign": it.callsign }, isolateText(it.callsign)));
    }
    // Keep a chosen recipient even if it left the picture.
    if (current.startsWith("uid:") && !contacts.some((c) => `uid:${c.uid}` === current)) {
      const opt = [...this.to.options].find((o) => o.value === current);
      if (opt) options.push(el("option", { value: current, "data-callsign": opt.dataset.callsign }, opt.textContent));
    }
    this.to.replaceChildren(...options);
    this.to.value = current;
    if (this.to.value !== current) this.to.value = `room:${ALL_ROOMS}`;
  }

  /** Open the chat panel addressed to one contact. */
  directTo(uid, callsign) {
    const value = `uid:${uid}`;
    if (![...this.to.options].some((o) => o.value === value)) {
      this.to.append(el("option", { value, "data-callsign": callsign }, isolateText(callsign)));
    }
    this.to.value = value;
    this.page.showTab("chat");
    this.input.focus();
  }

  async send() {
    const text = this.input.value.trim();
    if (!text) return;
    const body = { text };
    const to = this.to.value;
    if (to.startsWith("uid:")) {
      body.to_uid = to.slice(4);
      const opt = this.to.selectedOptions[0];
      if (opt?.dataset.callsign) body.to_callsign = opt.dataset.callsign;
    } else {
      body.chatroom = to.slice(5);
    }
    const label = this.chosenLabel();
    if (label !== null) body.label = label;
    this.status.classList.remove("message");
    this.status.textContent = "Sending…";
    try {
      const res = await this.page.api.sendChat(body);
      this.input.value = "";
      this.status.textContent = "";
      const sent = res?.message ?? (res?.uid ? res : null);
      if (sent) this.add(sent, false);
    } catch (e) {
      if (e instanceof SessionExpired) return;
      // A refusal (400: the banner does not parse; 403: the sender may not assert it) shows the
      // server's own words; the message stays in the input to send again.
      const refused = e instanceof ApiError && (e.status === 400 || e.status === 403);
      this.status.textContent = `Not sent: ${refused ? refusalText(e.status, e.body) : e.message}`;
      if (refused) this.status.classList.add("message");
    }
  }
}
