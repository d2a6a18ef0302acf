// One modal dialog (<dialog>, shown with showModal: focus stays inside, Escape closes it) for the
// console's confirmations and small forms. Focus goes back to the button that opened it.

import { $, fill, h } from "./dom.js";
import { errorText } from "./format.js";

/**
 * Show a dialog. ``body`` is a list of elements (a form's fields); ``submit`` the label of the
 * main button and ``run(form)`` what it does (async; its refusal is shown in the dialog, which
 * stays open). Resolves with ``run``'s result once done, or null when cancelled.
 */
export function openDialog({ title, body, submit, danger = false, run }) {
  const dialog = $("dialog");
  const opener = document.activeElement;
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const button = h("button", { type: "submit", class: danger ? "danger" : "primary" }, submit);
  const cancel = h("button", { type: "button", value: "cancel" }, "Cancel");
  const form = h(
    "form",
    { class: "dialog-form", novalidate: true },
    h("h2", { id: "dialog-title" }, title),
    body,
    error,
    h("div", { class: "dialog-actions" }, cancel, button),
  );
  dialog.setAttribute("aria-labelledby", "dialog-title");
  fill(dialog, form);
  return new Promise((resolve) => {
    let result = null;
    let busy = false;
    // While the call runs the dialog stays (Escape does nothing), so its answer is shown here.
    const hold = (e) => {
      if (busy) e.preventDefault();
    };
    const done = () => {
      dialog.removeEventListener("close", done);
      dialog.removeEventListener("cancel", hold);
      if (opener && typeof opener.focus === "function" && opener.isConnected) opener.focus();
      resolve(result);
    };
    dialog.addEventListener("close", done);
    dialog.addEventListener("cancel", hold);
    cancel.addEventListener("click", () => {
      if (!busy) dialog.close();
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (busy) return;
      busy = true;
      button.disabled = true;
      cancel.disabled = true;
      error.hidden = true;
      try {
        result = await run(form);
        busy = false;
        dialog.close();
      } catch (err) {
        error.textContent = errorText(err);
        error.hidden = false;
      } finally {
        busy = false;
        button.disabled = false;
        cancel.disabled = false;
      }
    });
    dialog.showModal();
    const first = form.querySelector("input, select, textarea") ?? button;
    first.focus();
  });
}

/** A labelled input for a dialog or form. */
export function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), input, hint ? h("span", { class: "hint" }, hint) : null);
}
