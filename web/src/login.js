// The sign-in page: posts the form with fetch so a refusal shows here instead of a bare error
// page; without JavaScript the form still posts normally.

import "./style.css";

const form = document.getElementById("login-form");
const message = document.getElementById("message");

function say(text) {
  message.textContent = text;
  message.hidden = !text;
}

const params = new URLSearchParams(window.location.search);
if (params.has("expired")) say("Your session has ended. Please sign in again.");
else if (params.has("error") || params.has("failed")) say("Wrong user name or password.");

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const button = document.getElementById("sign-in");
  button.disabled = true;
  say("");
  try {
    const res = await fetch("/login", {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
    });
    // Success is a redirect to the map, which fetch followed.
    const landed = new URL(res.url, window.location.href);
    if (res.ok && res.redirected && !landed.pathname.startsWith("/login")) {
      window.location.assign("/");
      return;
    }
    if (res.status === 429) {
      const wait = res.headers.get("Retry-After");
      say(`Too many failed attempts. Try again${wait ? ` in ${wait} s` : " later"}.`);
    } else if (res.ok && !landed.pathname.startsWith("/login")) {
      window.location.assign("/");
      return;
    } else {
      say("Wrong user name or password.");
    }
  } catch {
    say("The server cannot be reached.");
  } finally {
    button.disabled = false;
  }
});
