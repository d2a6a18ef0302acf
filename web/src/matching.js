// Search over the picture by callsign, uid or CoT type. No DOM: search.js shows the results, and
// the unit tests.

// Results listed at most.
export const MAX_RESULTS = 20;

// How well an item matches, best first: which field, and how.
const RANKS = [
  ["callsign", "exact"],
  ["callsign", "prefix"],
  ["uid", "exact"],
  ["uid", "prefix"],
  ["type", "prefix"],
  ["callsign", "contains"],
  ["uid", "contains"],
  ["type", "contains"],
];

function rankOf(item, q) {
  const fields = {
    callsign: (item.callsign ?? "").toLowerCase(),
    uid: String(item.uid ?? "").toLowerCase(),
    type: (item.type ?? "").toLowerCase(),
  };
  for (let r = 0; r < RANKS.length; r++) {
    const [field, how] = RANKS[r];
    const v = fields[field];
    if (v === "") continue;
    if (how === "exact" ? v === q : how === "prefix" ? v.startsWith(q) : v.includes(q)) return { rank: r, field };
  }
  return null;
}

/**
 * The items matching ``query`` (case-insensitive; surrounding spaces ignored) by callsign, uid or
 * CoT type: an exact callsign first, then a callsign starting with it, an exact uid, a uid
 * starting with it, a type starting with it (``a-h`` finds hostile units), then a callsign, uid or
 * type containing it; equal ranks by callsign (else uid). Returns {results: [{item, field}],
 * total}: at most ``limit`` results, ``total`` every match. An empty query matches nothing.
 */
export function matchItems(items, query, limit = MAX_RESULTS) {
  const q = String(query ?? "")
    .trim()
    .toLowerCase();
  if (q === "") return { results: [], total: 0 };
  const found = [];
  for (const item of items) {
    const m = rankOf(item, q);
    if (m) found.push({ item, field: m.field, rank: m.rank, name: item.callsign ?? String(item.uid) });
  }
  found.sort((a, b) => a.rank - b.rank || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { results: found.slice(0, limit).map(({ item, field }) => ({ item, field })), total: found.length };
}
