// Small DOM helpers. Text always goes in through textContent, never as HTML: callsigns, remarks
// and chat come from other people.

import { classificationOf, levelClass, UNLABELLED } from "./labels.js";

/** el("div", {class: "x", title: "y"}, child, "text", ...) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Unicode bidirectional isolates (UAX #9, section 2.7, "Explicit Directional Isolates"): FIRST
// STRONG ISOLATE ... POP DIRECTIONAL ISOLATE. Text between them takes its direction from its own
// first strong character and cannot reorder what is around it; the PDI also ends any embedding or
// override (RLO, LRE, ...) left open inside (UAX #9, rule X6a).
const FSI = "\u2068";
const PDI = "\u2069";

/**
 * Someone else's text (callsign, team, remarks) as an isolated run: ``<bdi dir="auto">`` holding
 * one text node, so a right-to-left override in it cannot reorder the rest of the line.
 */
export function isolate(text) {
  return el("bdi", { dir: "auto" }, String(text));
}

/** The same for places that take plain strings only (attributes, <option>, canvas text). */
export function isolateText(text) {
  return `${FSI}${String(text)}${PDI}`;
}

/** A coloured badge showing a label banner (or ``empty`` text when the label is null). */
export function labelBadge(label, empty = UNLABELLED) {
  const cls = classificationOf(label);
  return el("span", { class: `badge ${levelClass(cls)}`, title: label ?? empty }, label ?? empty);
}

/** "12 s ago", "3 min ago", "2 h ago", or the date for older times. */
export function ago(ms, now = Date.now()) {
  if (ms === null) return "";
  const s = Math.round((now - ms) / 1000);
  if (s < 0) return "now";
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 86400 * 2) return `${Math.round(s / 3600)} h ago`;
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
}

/** ISO time as "HH:MM:SSZ" today, else "YYYY-MM-DD HH:MMZ". */
export function shortTime(ms, now = Date.now()) {
  if (ms === null || !Number.isFinite(ms)) return "";
  const iso = new Date(ms).toISOString();
  const sameDay = iso.slice(0, 10) === new Date(now).toISOString().slice(0, 10);
  return sameDay ? `${iso.slice(11, 19)}Z` : `${iso.slice(0, 10)} ${iso.slice(11, 16)}Z`;
}
