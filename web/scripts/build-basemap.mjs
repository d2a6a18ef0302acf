// Converts Natural Earth (via the world-atlas TopoJSON package) into the map's basemap assets.
//
// Usage: node scripts/build-basemap.mjs <out-dir>
//
// Writes, for each scale (110m for the whole world, 50m when zoomed in):
//   basemap-<scale>.bin  projected Web Mercator geometry in the "LBM1" layout read by
//                        src/basemap.js (land rings filled even-odd, coastlines, country borders)
//   countries.json       country names and label points (from the 50m countries)
// The output depends only on the input files, so two builds give the same bytes (scripts/check-web
// relies on that).

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { feature, mesh } from "topojson-client";
import { lonLatToWorld } from "../src/geo.js";

const require = createRequire(import.meta.url);

// Layer kinds understood by src/basemap.js.
const KIND_FILL = 0; // closed rings, filled with the even-odd rule (holes are lakes)
const KIND_LINE = 1; // open polylines

// Points closer than this (in world units, 1 = the world's width) to the previous one are dropped.
// 1/2^22 is about 10 m at the equator: below what 1:50m data resolves, so nothing visible is lost.
const MIN_STEP = 1 / 2 ** 22;

function loadTopology(name) {
  return JSON.parse(readFileSync(require.resolve(`world-atlas/${name}`), "utf8"));
}

/** Project a ring or line of [lon, lat] to world coordinates, dropping repeated points. */
function projectPath(coords) {
  const out = [];
  let px = Number.NaN;
  let py = Number.NaN;
  for (const [lon, lat] of coords) {
    const [x, y] = lonLatToWorld(lon, lat);
    if (Math.abs(x - px) < MIN_STEP && Math.abs(y - py) < MIN_STEP) continue;
    out.push(x, y);
    px = x;
    py = y;
  }
  return out;
}

function ringsOf(geometry) {
  if (geometry.type === "Polygon") return geometry.coordinates;
  if (geometry.type === "MultiPolygon") return geometry.coordinates.flat();
  return [];
}

function linesOf(geometry) {
  if (geometry.type === "LineString") return [geometry.coordinates];
  if (geometry.type === "MultiLineString") return geometry.coordinates;
  return [];
}

/**
 * Encode layers as LBM1, little-endian, every field 4 bytes so typed-array views line up:
 *   u32 magic "LBM1", u32 layer count; then per layer:
 *   u32 kind, u32 path count N, u32 point count P,
 *   u32 offsets[N + 1] (in points), f32 bboxes[N * 4] (minx, miny, maxx, maxy), f32 xy[P * 2].
 */
function encode(layers) {
  const words = [];
  const u32 = new Uint32Array(1);
  const f32 = new Float32Array(u32.buffer);
  const pushU = (v) => words.push(v >>> 0);
  const pushF = (v) => {
    f32[0] = v;
    words.push(u32[0]);
  };
  pushU(0x314d424c); // "LBM1" read as a little-endian u32
  pushU(layers.length);
  for (const { kind, paths } of layers) {
    const kept = paths.filter((p) => p.length >= 4);
    pushU(kind);
    pushU(kept.length);
    pushU(kept.reduce((n, p) => n + p.length / 2, 0));
    let at = 0;
    pushU(0);
    for (const p of kept) {
      at += p.length / 2;
      pushU(at);
    }
    for (const p of kept) {
      let minx = Infinity;
      let miny = Infinity;
      let maxx = -Infinity;
      let maxy = -Infinity;
      for (let i = 0; i < p.length; i += 2) {
        minx = Math.min(minx, p[i]);
        maxx = Math.max(maxx, p[i]);
        miny = Math.min(miny, p[i + 1]);
        maxy = Math.max(maxy, p[i + 1]);
      }
      pushF(minx);
      pushF(miny);
      pushF(maxx);
      pushF(maxy);
    }
    for (const p of kept) for (const v of p) pushF(v);
  }
  return Buffer.from(new Uint32Array(words).buffer);
}

function basemapLayers(topology) {
  const land = feature(topology, topology.objects.land);
  const landRings = land.features.flatMap((f) => ringsOf(f.geometry)).map(projectPath);
  // Shared borders only (a !== b): each border once, and no border drawn along a coastline.
  const borders = linesOf(mesh(topology, topology.objects.countries, (a, b) => a !== b)).map(
    projectPath,
  );
  return [
    { kind: KIND_FILL, paths: landRings },
    { kind: KIND_LINE, paths: borders },
  ];
}

function ringArea(r) {
  let a = 0;
  for (let i = 0, j = r.length - 2; i < r.length; j = i, i += 2) {
    a += (r[j] + r[i]) * (r[j + 1] - r[i + 1]);
  }
  return Math.abs(a / 2);
}

function insideRing(x, y, r) {
  let inside = false;
  for (let i = 0, j = r.length - 2; i < r.length; j = i, i += 2) {
    const yi = r[i + 1];
    const yj = r[j + 1];
    if (yi > y !== yj > y && x < ((r[j] - r[i]) * (y - yi)) / (yj - yi) + r[i]) inside = !inside;
  }
  return inside;
}

function distanceToRing(x, y, r) {
  let best = Infinity;
  for (let i = 0, j = r.length - 2; i < r.length; j = i, i += 2) {
    const ax = r[j];
    const ay = r[j + 1];
    const dx = r[i] - ax;
    const dy = r[i + 1] - ay;
    const len = dx * dx + dy * dy;
    const t = len > 0 ? Math.max(0, Math.min(1, ((x - ax) * dx + (y - ay) * dy) / len)) : 0;
    best = Math.min(best, Math.hypot(x - ax - t * dx, y - ay - t * dy));
  }
  return best;
}

/**
 * A point well inside the ring, for the name: the grid point inside it farthest from its edge,
 * refined once around the best cell. Coarse, but it keeps names off coastlines and out of bays.
 */
function labelPoint(r) {
  let minx = Infinity;
  let miny = Infinity;
  let maxx = -Infinity;
  let maxy = -Infinity;
  for (let i = 0; i < r.length; i += 2) {
    minx = Math.min(minx, r[i]);
    maxx = Math.max(maxx, r[i]);
    miny = Math.min(miny, r[i + 1]);
    maxy = Math.max(maxy, r[i + 1]);
  }
  let best = [(minx + maxx) / 2, (miny + maxy) / 2];
  let bestD = -1;
  let cw = (maxx - minx) / 16;
  let ch = (maxy - miny) / 16;
  let ox = minx;
  let oy = miny;
  for (let pass = 0; pass < 2; pass++) {
    for (let i = 0; i <= 16; i++) {
      for (let j = 0; j <= 16; j++) {
        const x = ox + i * cw;
        const y = oy + j * ch;
        if (!insideRing(x, y, r)) continue;
        const d = distanceToRing(x, y, r);
        if (d > bestD) {
          bestD = d;
          best = [x, y];
        }
      }
    }
    ox = best[0] - cw;
    oy = best[1] - ch;
    cw /= 8;
    ch /= 8;
  }
  return best;
}

function countryLabels(topology) {
  const out = [];
  for (const f of feature(topology, topology.objects.countries).features) {
    const name = f.properties?.name;
    if (!name) continue;
    const rings = ringsOf(f.geometry).map(projectPath);
    if (rings.length === 0) continue;
    const largest = rings.reduce((a, b) => (ringArea(b) > ringArea(a) ? b : a));
    const [x, y] = labelPoint(largest);
    // Area in world units squared: the renderer shows a name only once the country is big
    // enough on screen to hold it.
    const area = ringArea(largest);
    out.push({ name, x: +x.toFixed(7), y: +y.toFixed(7), area: +area.toPrecision(3) });
  }
  out.sort((a, b) => b.area - a.area || a.name.localeCompare(b.name));
  return out;
}

function main() {
  const outDir = process.argv[2];
  if (!outDir) {
    console.error("usage: node scripts/build-basemap.mjs <out-dir>");
    process.exit(2);
  }
  mkdirSync(outDir, { recursive: true });
  const scales = [
    ["110m", loadTopology("countries-110m.json")],
    ["50m", loadTopology("countries-50m.json")],
  ];
  for (const [scale, topology] of scales) {
    const bytes = encode(basemapLayers(topology));
    writeFileSync(join(outDir, `basemap-${scale}.bin`), bytes);
    console.log(`basemap-${scale}.bin: ${bytes.length} bytes`);
  }
  const labels = countryLabels(scales[1][1]);
  writeFileSync(join(outDir, "countries.json"), `${JSON.stringify(labels)}\n`);
  console.log(`countries.json: ${labels.length} names`);
}

main();
