// Classification banners: order labels by their classification and pick what the banner shows.
//
// A label arrives as its banner string, "SECRET//REL TO USA, UKR": "//" separates segments and the
// first segment is the classification (DoDM 5200.01 Vol. 2 banner grammar, the same grammar the
// server writes in liaison.model.labels.label_to_banner). The server's policy fixes the order of
// classifications; when /api/v1/me sends it ("classifications", lowest first) that order is used,
// otherwise DEFAULT_ORDER. A classification missing from the order ranks above every known one, so
// an unknown marking can only make the banner higher, never hide it.

export const UNLABELLED = "UNLABELLED";

// Lowest first. National and NATO names of the same level sit next to each other.
export const DEFAULT_ORDER = Object.freeze([
  "PUBLIC",
  "UNCLASSIFIED",
  "NATO UNCLASSIFIED",
  "OFFICIAL",
  "RESTRICTED",
  "NATO RESTRICTED",
  "OFFICIAL-SENSITIVE",
  "CONFIDENTIAL",
  "NATO CONFIDENTIAL",
  "SECRET",
  "NATO SECRET",
  "TOP SECRET",
  "COSMIC TOP SECRET",
]);

/** The classification segment of a banner ("SECRET//REL TO USA" -> "SECRET"), or null. */
export function classificationOf(label) {
  if (typeof label !== "string") return null;
  const head = label.split("//", 1)[0].trim().toUpperCase();
  return head.length > 0 ? head : null;
}

/** Rank of a classification in ``order`` (lowest first); unknown ones rank above all known. */
export function rankOf(classification, order = DEFAULT_ORDER) {
  const i = order.indexOf(classification);
  return i >= 0 ? i : order.length;
}

/**
 * What the banner shows for the labels on screen (null entries are unlabelled items):
 * {text, classification, others} where ``text`` is the highest label (by classification; among
 * equals, the one with the most segments, then the alphabetically first, so the choice is stable),
 * ``others`` the number of different labels at that same level, and "UNLABELLED" when nothing on
 * screen carries a label.
 */
export function bannerFor(labels, order = DEFAULT_ORDER) {
  let best = null;
  let bestRank = -1;
  const atBest = new Set();
  for (const label of labels) {
    const cls = classificationOf(label);
    if (cls === null) continue;
    const text = label.trim();
    const rank = rankOf(cls, order);
    if (rank > bestRank) {
      bestRank = rank;
      best = text;
      atBest.clear();
      atBest.add(text);
    } else if (rank === bestRank) {
      atBest.add(text);
      const segs = (s) => s.split("//").length;
      if (segs(text) > segs(best) || (segs(text) === segs(best) && text < best)) best = text;
    }
  }
  if (best === null) return { text: UNLABELLED, classification: null, others: 0 };
  return { text: best, classification: classificationOf(best), others: atBest.size - 1 };
}

/** CSS class for a classification's colour (US/NATO banner colours). */
export function levelClass(classification) {
  if (classification === null) return "level-none";
  const c = classification.replace(/^(NATO|COSMIC) /, "");
  if (c === "TOP SECRET") return "level-ts";
  if (c === "SECRET") return "level-s";
  if (c === "CONFIDENTIAL" || c === "OFFICIAL-SENSITIVE") return "level-c";
  if (c === "RESTRICTED" || c === "OFFICIAL") return "level-r";
  if (c === "UNCLASSIFIED" || c === "PUBLIC") return "level-u";
  return "level-other";
}
