// GeoChat: messages from GET /api/v1/chat and the stream, sent with POST /api/v1/chat.

import { SessionExpired } from "./api.js";
import { el, labelBadge, shortTime } from "./ui.js";

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
    this.status = el("p", { class: "muted small chat-status" });
    const form = el("form", { class: "chat-form" }, this.input, el("button", { type: "submit" }, "Send"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    this.root.replaceChildren(el("label", { class: "small muted" }, "To ", this.to), this.list, form, this.status);
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
      if (this.uids.has(uid)) return;
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
            el("strong", {}, m.callsign || m.sender_uid || "?"),
            el("span", { class: "muted" }, ` ${shortTime(m.timeMs, now)}`),
            m.chatroom && m.chatroom !== ALL_ROOMS ? el("span", { class: "room" }, ` → ${m.chatroom}`) : null,
            labelBadge(m.label ?? null),
          ),
          el("div", { class: "chat-text" }, String(m.text ?? "")),
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
    for (const it of contacts) options.push(el("option", { value: `uid:${it.uid}`, "data-callsign": it.callsign }, it.callsign));
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
      this.to.append(el("option", { value, "data-callsign": callsign }, callsign));
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
    this.status.textContent = "Sending…";
    try {
      const res = await this.page.api.sendChat(body);
      this.input.value = "";
      this.status.textContent = "";
      const sent = res?.message ?? (res?.uid ? res : null);
      if (sent) this.add(sent, false);
    } catch (e) {
      if (!(e instanceof SessionExpired)) this.status.textContent = `Not sent: ${e.message}`;
    }
  }
}
