// The label a chat is sent with: which classifications the user may choose, the banner the chooser
// composes ("SECRET//REL TO USA, UKR", sent as "label" with POST /api/v1/chat), and the text shown
// when the server refuses a send.
//
// The banner grammar is the server's (liaison.model.labels.label_from_banner; DoDM 5200.01 Vol. 2
// banner lines): segments joined by "//", the classification first, the releasability segment
// "REL TO " followed by values joined by ", ". The server parses it strictly and its ingest rules
// decide whether the sender may assert it; the page only keeps the user from choosing what they
// could never send (a classification above their clearance) and tidies what they type.

import { classificationOf } from "./labels.js";

export const REL_PREFIX = "REL TO ";
// Longest releasability text the field takes (the server accepts banners of a few hundred
// characters; a REL line longer than this is a typing accident).
export const MAX_REL_CHARS = 200;

/**
 * The classifications the user may choose for a chat: the policy's (``classifications``, lowest
 * first, from GET /api/v1/me) up to and including their clearance's classification (the first
 * segment of ``clearance``). Empty without a policy, without a clearance, or when the clearance
 * names a classification the policy does not have: nothing is offered that the page cannot place.
 */
export function choosableClassifications(classifications, clearance) {
  if (!Array.isArray(classifications) || classifications.length === 0) return [];
  const held = classificationOf(clearance);
  if (held === null) return [];
  const top = classifications.indexOf(held);
  return top < 0 ? [] : classifications.slice(0, top + 1);
}

/**
 * The values typed in the releasability field: separated by commas, each trimmed, inner runs of
 * spaces made one, upper-cased (banner values are upper case), a leading "REL TO" left out, and
 * empty or repeated values dropped. The order typed is kept: the server wants the policy's order
 * and says so when it is not.
 */
export function parseReleasability(text) {
  if (typeof text !== "string") return [];
  let body = text.trim().replace(/\s+/g, " ").toUpperCase();
  if (body.startsWith(REL_PREFIX)) body = body.slice(REL_PREFIX.length);
  else if (body === REL_PREFIX.trim()) body = "";
  const out = [];
  for (const part of body.split(",")) {
    const value = part.trim();
    if (value && !out.includes(value)) out.push(value);
  }
  return out;
}

/**
 * The banner for a chosen classification and releasability text: "SECRET//REL TO USA, UKR";
 * only the classification when no value is typed (the server then says whether REL is required);
 * null when no classification is chosen (the server's default label applies).
 */
export function composeBanner(classification, releasability) {
  if (typeof classification !== "string" || classification.trim() === "") return null;
  const values = parseReleasability(releasability);
  const cls = classification.trim();
  return values.length > 0 ? `${cls}//${REL_PREFIX}${values.join(", ")}` : cls;
}

/**
 * What to show when the server refuses a chat: the reasons of a 403 ({"error": "refused",
 * "reasons": [...]}) or the error of a 400 ({"error": "label: ..."}), else the status line.
 */
export function refusalText(status, body) {
  const reasons = Array.isArray(body?.reasons) ? body.reasons.filter((r) => typeof r === "string" && r) : [];
  const error = typeof body?.error === "string" ? body.error.trim() : "";
  if (status === 403 && reasons.length > 0) return `refused: ${reasons.join(", ")}`;
  if (error) return reasons.length > 0 ? `${error}: ${reasons.join(", ")}` : error;
  return `the server answered ${status}`;
}
