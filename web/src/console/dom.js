// Building the console's elements: text always goes in as text (textContent), never as HTML,
// so a user name or an error holding markup is shown, not run.

/** ``h("td", {class: "x"}, "text", child)``: an element with attributes and children. Attributes
 * whose value is false, null or undefined are left out; ``true`` sets an empty one. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** A table with a caption (for screen readers), column heads and rows of cells. */
export function table(caption, heads, rows, className = "grid") {
  return h(
    "table",
    { class: className },
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, heads.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows),
  );
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export const $ = (id) => document.getElementById(id);
