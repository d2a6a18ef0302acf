// The picture over time, from the server's history (GET /api/v1/history): the versions of each
// item, and where each was at a chosen time. No DOM: playback.js reads it, and the unit tests.

// Item types that are not things on a map (the server's picture leaves them out too,
// src/liaison/api/geojson.py NON_MAP_PREFIXES): chat, file transfers, tasking and control
// (deletions, t-x-d-d, included: they are not replayed).
const NON_MAP_PREFIXES = ["b-t-f", "b-f-t", "t-"];
// Earlier positions kept for a unit's trail in playback, as the live trail (store.js).
export const PLAYBACK_TRAIL = 20;

function parseTime(iso) {
  const t = typeof iso === "string" ? Date.parse(iso) : Number.NaN;
  return Number.isFinite(t) ? t : null;
}

/** Whether a CoT type is a thing on a map (not chat, file transfer, tasking or control). */
export function isMapType(type) {
  return typeof type === "string" && type !== "" && !NON_MAP_PREFIXES.some((p) => type.startsWith(p));
}

/** One stored version: its Feature and the times it is ordered and judged by (ms). */
function rowOf(feature) {
  const p = feature?.properties ?? {};
  const uid = String(p.uid ?? feature?.id ?? "");
  const time = parseTime(p.time);
  if (!uid || time === null || !isMapType(p.type)) return null;
  return { uid, time, received: parseTime(p.received) ?? time, stale: parseTime(p.stale), feature };
}

function compareRows(a, b) {
  return a.time - b.time || a.received - b.received;
}

/** Index of the last row of ``rows`` (sorted oldest first) whose time is at or before ``t``, or -1. */
function lastAtOrBefore(rows, t) {
  let lo = 0;
  let hi = rows.length; // the answer is lo - 1 once lo == hi
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (rows[mid].time <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

/**
 * The versions of every item the page read, by uid, oldest first. ``add`` takes history answers
 * (newest first, pages that overlap) and the live picture's features alike; of the versions of one
 * uid with the same time (ms), the first added is kept (a history answer gives the one received
 * last first).
 */
export class History {
  constructor() {
    this.byUid = new Map(); // uid -> rows sorted by (time, received)
    this.keys = new Set();
    this.size = 0;
    this.oldest = null; // time (ms) of the oldest version read
  }

  /** Add Features; the number of versions that were new. */
  add(features) {
    let added = 0;
    const touched = new Set();
    for (const f of features) {
      const row = rowOf(f);
      if (row === null) continue;
      const key = `${row.uid}\u0000${row.time}`;
      if (this.keys.has(key)) continue;
      this.keys.add(key);
      let rows = this.byUid.get(row.uid);
      if (!rows) {
        rows = [];
        this.byUid.set(row.uid, rows);
      }
      rows.push(row);
      touched.add(rows);
      added++;
      if (this.oldest === null || row.time < this.oldest) this.oldest = row.time;
    }
    for (const rows of touched) rows.sort(compareRows);
    this.size += added;
    return added;
  }

  /**
   * Where each item was at ``t`` (ms): for each uid its last version at or before ``t``, if that
   * version is not stale at ``t`` (its stale time is after ``t``; a version without a stale time
   * never goes stale). Returns [{uid, row, trail}] where ``trail`` is the [lon, lat] of up to
   * PLAYBACK_TRAIL earlier versions of a point item, oldest first.
   */
  at(t) {
    const out = [];
    for (const [uid, rows] of this.byUid) {
      const i = lastAtOrBefore(rows, t);
      if (i < 0) continue;
      const row = rows[i];
      if (row.stale !== null && row.stale <= t) continue;
      const trail = [];
      if (row.feature.geometry?.type === "Point") {
        for (let j = Math.max(0, i - PLAYBACK_TRAIL); j < i; j++) {
          const c = rows[j].feature.geometry;
          if (c?.type === "Point" && Array.isArray(c.coordinates)) trail.push([c.coordinates[0], c.coordinates[1]]);
        }
      }
      out.push({ uid, row, trail });
    }
    return out;
  }
}

/**
 * The query string of one history page: versions with ``since`` <= time < ``until`` (ms since the
 * epoch, as the API accepts), at most ``limit``.
 */
export function historyPath(since, until, limit) {
  return `/api/v1/history?since=${Math.floor(since)}&until=${Math.ceil(until)}&limit=${limit}`;
}

/**
 * Read the history of [since, until] page by page, newest first, into ``history``: each next page
 * ends just after the oldest time of the one before (``until`` is exclusive, so versions sharing
 * that time are read again and deduplicated). A short page does not prove the start was reached
 * (the server reads a bounded number of stored rows per request, docs/api.md), so reading goes on
 * until a page brings nothing new: complete when that page was short (or empty), not when it was
 * full (more versions of one millisecond than a page holds), nor after ``maxPages`` pages.
 * ``fetchPage(path)`` returns a FeatureCollection. Returns {complete, from, pages, versions}:
 * ``from`` is the time from which the history is complete (``since`` when everything was read,
 * else the oldest time read).
 */
export async function readHistory(fetchPage, history, since, until, { pageSize, maxPages }) {
  let end = until + 1; // until is the window's end, included
  let pages = 0;
  let oldest = null;
  while (pages < maxPages) {
    const fc = await fetchPage(historyPath(since, end, pageSize));
    pages++;
    const features = Array.isArray(fc?.features) ? fc.features : [];
    const added = history.add(features);
    const short = features.length < pageSize;
    for (const f of features) {
      const t = parseTime(f?.properties?.time);
      if (t !== null && (oldest === null || t < oldest)) oldest = t;
    }
    if (added === 0 || oldest === null) {
      if (short) return { complete: true, from: since, pages, versions: history.size };
      break;
    }
    end = oldest + 1;
  }
  return { complete: false, from: oldest ?? since, pages, versions: history.size };
}
