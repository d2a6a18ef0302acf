// The operator console (/console): users, certificates, partner links, feeds, counters and the
// audit log's check, all through the operator API (docs/api.md "Operator API"; docs/web.md
// "Console"). The server serves this page to operators only; a session that ends sends the page
// back to the sign-in page, as the map does.

import "./console.css";
import { Api, SessionExpired } from "../api.js";
import { $ } from "./dom.js";
import { errorText } from "./format.js";
import { Audit, Certificates, Status } from "./status.js";
import { Users } from "./users.js";

const api = new Api();

function say(text) {
  const m = $("message");
  m.textContent = "";
  // A fresh text node, so screen readers announce the same message twice in a row too.
  requestAnimationFrame(() => (m.textContent = text));
}

async function start() {
  let me;
  try {
    me = await api.me();
  } catch (err) {
    if (!(err instanceof SessionExpired)) $("message").textContent = `The server cannot be reached: ${errorText(err)}`;
    return;
  }
  $("who").textContent = `${me.name}${me.org ? ` (${me.org})` : ""}`;
  // Signed in by a client certificate (8443): no web session to end.
  if (!me.csrf) $("logout").hidden = true;
  const certificates = new Certificates(api);
  const users = new Users(api, { say, changed: () => certificates.load().catch(() => {}) });
  const status = new Status(api);
  new Audit(api);
  $("logout").addEventListener("click", async () => {
    status.stop();
    await api.logout().catch(() => {});
    window.location.assign("/login");
  });
  status.start();
  await Promise.allSettled([users.load(), certificates.load()]);
  document.body.dataset.ready = "1";
}

start();
