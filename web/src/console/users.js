// The Users section: the list, adding a user, and per user: password, enrollment link (with its
// QR code), connection package, revocation. Every change is a call of the operator API, which
// checks the role, the CSRF token and audits it (docs/api.md "Operator API").

import { openDialog, field } from "./dialog.js";
import { $, fill, h, table } from "./dom.js";
import {
  addUserBody,
  certState,
  DEFAULT_TOKEN_HOURS,
  dispositionFilename,
  errorText,
  formatTime,
  MIN_PASSWORD,
  relative,
  soonestExpiry,
  tokenHours,
} from "./format.js";

const A = "/api/v1/admin";
const userPath = (name) => `${A}/users/${encodeURIComponent(name)}`;

export class Users {
  /** ``changed()`` is called after a change that certificates may show (add, revoke). */
  constructor(api, { say, changed }) {
    this.api = api;
    this.say = say;
    this.changed = changed;
    this.users = [];
    $("add-user").addEventListener("submit", (e) => {
      e.preventDefault();
      this.add();
    });
    for (const r of document.querySelectorAll('input[name="sign-in"]')) {
      r.addEventListener("change", () => this.signInChanged());
    }
    $("users-refresh").addEventListener("click", () => this.load());
    this.signInChanged();
  }

  signInChanged() {
    const password = $("add-user").elements["sign-in"].value === "password";
    $("add-password-row").hidden = !password;
    $("add-hours-row").hidden = password;
  }

  async load() {
    try {
      const doc = await this.api.json("GET", `${A}/users`);
      this.users = doc.users ?? [];
      this.render();
    } catch (err) {
      fill($("user-list"), h("p", { class: "error" }, `Users cannot be read: ${errorText(err)}`));
      throw err;
    }
  }

  render() {
    const now = Date.now();
    const rows = this.users.map((u) => {
      const fromFile = u.source === "users_file";
      const live = fromFile && !u.revoked;
      const soonest = soonestExpiry(u.certificates);
      const certCell = h(
        "td",
        {},
        `${u.certificates.length}`,
        soonest ? h("span", { class: `cert-${certState(soonest)}` }, ` · expires ${relative(soonest.not_after, now)}`) : null,
      );
      const groups =
        u.in_groups.join(",") === u.out_groups.join(",")
          ? u.in_groups.join(", ") || "__ANON__"
          : `IN ${u.in_groups.join(", ") || "—"} / OUT ${u.out_groups.join(", ") || "—"}`;
      const signIn = [u.password ? "password" : null, u.live_tokens ? `${u.live_tokens} link${u.live_tokens > 1 ? "s" : ""}` : null]
        .filter(Boolean)
        .join(", ");
      // Accessible names start with the visible text (WCAG 2.5.3), then name the user.
      const actions = live
        ? [
            h("button", { type: "button", "aria-label": `Password for ${u.name}`, onclick: () => this.password(u) }, "Password…"),
            h("button", { type: "button", "aria-label": `Link for ${u.name}`, onclick: () => this.link(u) }, "Link…"),
            h("button", { type: "button", "aria-label": `Package for ${u.name}`, onclick: () => this.package(u) }, "Package…"),
            h("button", { type: "button", class: "danger", "aria-label": `Revoke ${u.name}`, onclick: () => this.revoke(u) }, "Revoke…"),
          ]
        : [h("span", { class: "muted" }, fromFile ? "revoked" : "directory user")];
      return h(
        "tr",
        { class: u.revoked ? "revoked" : null, "data-user": u.name },
        h("th", { scope: "row" }, h("bdi", {}, u.name)),
        h("td", {}, h("bdi", {}, u.org ?? "—")),
        h("td", {}, h("bdi", {}, groups)),
        h("td", {}, u.profile ?? "—"),
        h("td", { class: u.revoked ? "state-bad" : "" }, u.revoked ? "revoked" : u.source === "directory" ? "directory" : "active"),
        h("td", {}, signIn || "—"),
        certCell,
        h("td", {}, formatTime(u.created_at)),
        h("td", { class: "actions" }, actions),
      );
    });
    fill(
      $("user-list"),
      rows.length === 0
        ? h("p", { class: "muted" }, "No users yet.")
        : table("Users", ["Name", "Organisation", "Groups", "Profile", "State", "Sign-in", "Certificates", "Added", "Actions"], rows),
    );
    $("user-count").textContent = `${this.users.length} user${this.users.length === 1 ? "" : "s"}, ${this.users.filter((u) => u.revoked).length} revoked`;
  }

  formValues() {
    const f = $("add-user").elements;
    return {
      name: f["name"].value,
      org: f["org"].value,
      profile: f["profile"].value,
      groups: f["groups"].value,
      inGroups: f["in-groups"].value,
      outGroups: f["out-groups"].value,
      signIn: f["sign-in"].value,
      password: f["password"].value,
      hours: f["hours"].value,
    };
  }

  async add() {
    const out = $("add-result");
    const made = addUserBody(this.formValues());
    if (made.error) {
      fill(out, h("p", { class: "error", role: "alert" }, made.error));
      return;
    }
    const button = $("add-submit");
    button.disabled = true;
    try {
      const doc = await this.api.json("POST", `${A}/users`, made.body);
      $("add-user").reset();
      this.signInChanged();
      fill(out, h("p", { class: "ok" }, `Added ${doc.user.name}.`));
      this.say(`User ${doc.user.name} added.`);
      if (doc.enrollment) this.showLink(doc.user.name, doc.enrollment);
      await this.load();
      this.changed();
    } catch (err) {
      fill(out, h("p", { class: "error", role: "alert" }, `Not added: ${errorText(err)}`));
    } finally {
      button.disabled = false;
    }
  }

  /** The enrollment link, its expiry and QR code (a data:image/png URL from the API). */
  showLink(name, link) {
    const box = $("enrollment");
    const url = h("input", { type: "text", readonly: true, value: link.url, class: "link-url", "aria-label": `Enrollment link for ${name}` });
    fill(
      box,
      h("h3", {}, "Enrollment link for ", h("bdi", {}, name)),
      h("p", {}, `Valid until ${formatTime(link.expires_at)}. Shown only now: hand it to the user (scan the code with ATAK or iTAK).`),
      url,
      h("button", {
        type: "button",
        onclick: async () => {
          url.select();
          try {
            await navigator.clipboard.writeText(link.url);
            this.say("Link copied.");
          } catch {
            this.say("Select the link and copy it.");
          }
        },
      }, "Copy"),
      h("button", { type: "button", onclick: () => { box.hidden = true; fill(box); } }, "Hide"),
      h("div", {}, h("img", { src: link.qr_png, alt: `QR code of the enrollment link for ${name}`, class: "qr", width: 240, height: 240 })),
    );
    box.hidden = false;
    box.focus();
  }

  async password(u) {
    const input = h("input", { type: "password", name: "password", autocomplete: "new-password", minlength: MIN_PASSWORD });
    const remove = h("input", { type: "checkbox", name: "remove" });
    const done = await openDialog({
      title: `Password of ${u.name}`,
      body: [
        field("New password", input, `At least ${MIN_PASSWORD} characters.`),
        h("label", { class: "check" }, remove, " Remove the password (the user then signs in only with a certificate or link)"),
      ],
      submit: "Set",
      run: async () => {
        const password = remove.checked ? null : input.value;
        if (password !== null && password.length < MIN_PASSWORD) throw new Error(`The password must have at least ${MIN_PASSWORD} characters.`);
        return this.api.json("POST", `${userPath(u.name)}/password`, { password });
      },
    });
    if (done) {
      this.say(done.password ? `Password of ${u.name} set.` : `Password of ${u.name} removed.`);
      await this.load();
    }
  }

  async link(u) {
    const hours = h("input", { type: "number", name: "hours", min: "0.017", max: "720", step: "any", value: String(DEFAULT_TOKEN_HOURS) });
    const done = await openDialog({
      title: `New enrollment link for ${u.name}`,
      body: [field("Valid for (hours)", hours, "From 1 minute to 30 days. The link signs in once, to enroll a device.")],
      submit: "Create link",
      run: async () => {
        const t = tokenHours(hours.value);
        if (t.error) throw new Error(t.error);
        return this.api.json("POST", `${userPath(u.name)}/enrollment`, { token_ttl_hours: t.hours });
      },
    });
    if (done) {
      this.showLink(u.name, done);
      this.say(`New enrollment link for ${u.name}.`);
      await this.load();
    }
  }

  async package(u) {
    const client = h(
      "select",
      { name: "client" },
      h("option", { value: "atak" }, "ATAK or WinTAK"),
      h("option", { value: "itak" }, "iTAK"),
    );
    const style = h(
      "select",
      { name: "style" },
      h("option", { value: "enrollment" }, "Enrollment (no key: the device enrolls with a password or link)"),
      h("option", { value: "certificate" }, "Certificate (with the client key written when the user was added)"),
    );
    const done = await openDialog({
      title: `Connection package for ${u.name}`,
      body: [field("Client", client), field("Kind", style, "A certificate package holds a private key: hand it over like a password.")],
      submit: "Download",
      run: () => this.download(u.name, client.value, style.value),
    });
    if (done) this.say(`Package ${done} downloaded.`);
  }

  /** Fetch the package (the session's cookie; audited by the server), then save it. */
  async download(name, client, style) {
    const path = `${userPath(name)}/package?client=${encodeURIComponent(client)}&style=${encodeURIComponent(style)}`;
    const res = await this.api.request("GET", path);
    if (!res.ok) {
      let body = null;
      try {
        body = await res.json();
      } catch {
        body = null;
      }
      throw Object.assign(new Error(`GET ${path}: ${res.status}`), { status: res.status, body });
    }
    const blob = await res.blob();
    const filename = dispositionFilename(res.headers.get("Content-Disposition"), `${name}-${client}.zip`);
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: filename, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    return filename;
  }

  async revoke(u) {
    const confirmText = h("input", { type: "text", name: "confirm", autocomplete: "off" });
    const done = await openDialog({
      title: `Revoke ${u.name}`,
      body: [
        h("p", {}, "The user can no longer sign in or enroll, their links are dropped and every certificate issued to them is revoked. Their live sessions (TAK streams, web maps) end within a second. This cannot be undone."),
        field(`Type ${u.name} to confirm`, confirmText),
      ],
      submit: "Revoke",
      danger: true,
      run: async () => {
        if (confirmText.value.trim() !== u.name) throw new Error(`Type ${u.name} to confirm.`);
        return this.api.json("POST", `${userPath(u.name)}/revoke`, {});
      },
    });
    if (done) {
      const n = done.revoked_serials.length;
      this.say(`${u.name} revoked; ${n} certificate${n === 1 ? "" : "s"} revoked.`);
      await this.load();
      this.changed();
    }
  }
}
