// The offline basemap: Natural Earth land, coastlines, borders and country names, drawn on a
// canvas from the LBM1 files that scripts/build-basemap.mjs writes at build time.

const MAGIC = 0x314d424c; // "LBM1"
export const KIND_FILL = 0;
export const KIND_LINE = 1;
// Below this zoom the 1:110m data is drawn (the whole world on screen); above it, 1:50m.
export const DETAIL_ZOOM = 3.5;

export const COLOURS = Object.freeze({
  sea: "#c9dbea",
  land: "#f4f1e8",
  coast: "#7f98b0",
  border: "#b7a3a8",
  graticule: "rgba(90, 110, 140, 0.18)",
  countryName: "#7a7468",
});

/** Decode an LBM1 buffer into layers of typed-array views (no copies). */
export function decodeBasemap(buffer) {
  const words = new Uint32Array(buffer);
  if (words[0] !== MAGIC) throw new Error("not an LBM1 basemap");
  const layers = [];
  let at = 2;
  for (let l = 0; l < words[1]; l++) {
    const kind = words[at];
    const n = words[at + 1];
    const points = words[at + 2];
    at += 3;
    const offsets = words.subarray(at, at + n + 1);
    at += n + 1;
    const bboxes = new Float32Array(buffer, at * 4, n * 4);
    at += n * 4;
    const xy = new Float32Array(buffer, at * 4, points * 2);
    at += points * 2;
    layers.push({ kind, n, offsets, bboxes, xy });
  }
  return layers;
}

function intersects(bboxes, i, b) {
  return !(
    bboxes[4 * i] > b[2] ||
    bboxes[4 * i + 2] < b[0] ||
    bboxes[4 * i + 1] > b[3] ||
    bboxes[4 * i + 3] < b[1]
  );
}

/** Add a layer's paths in view to the current canvas path, skipping sub-pixel steps. */
function tracePaths(ctx, layer, view, close) {
  const b = view.bounds(2);
  const { offsets, bboxes, xy } = layer;
  const s = view.scale;
  const ox = view.width / 2 - view.cx * s;
  const oy = view.height / 2 - view.cy * s;
  // Paths smaller than a pixel are dropped; points closer than half a pixel are merged.
  const minSize = 1 / s;
  const minStep = 0.5;
  for (let i = 0; i < layer.n; i++) {
    if (!intersects(bboxes, i, b)) continue;
    if (bboxes[4 * i + 2] - bboxes[4 * i] < minSize && bboxes[4 * i + 3] - bboxes[4 * i + 1] < minSize)
      continue;
    const start = offsets[i];
    const end = offsets[i + 1];
    let px = xy[2 * start] * s + ox;
    let py = xy[2 * start + 1] * s + oy;
    ctx.moveTo(px, py);
    for (let k = start + 1; k < end; k++) {
      const x = xy[2 * k] * s + ox;
      const y = xy[2 * k + 1] * s + oy;
      if (k < end - 1 && Math.abs(x - px) < minStep && Math.abs(y - py) < minStep) continue;
      ctx.lineTo(x, y);
      px = x;
      py = y;
    }
    if (close) ctx.closePath();
  }
}

export class Basemap {
  /** ``low`` and ``high``: decoded LBM1 layers (110m, 50m); ``names``: countries.json. */
  constructor(low, high, names) {
    this.low = low;
    this.high = high;
    this.names = names;
  }

  /** Draw the whole basemap for ``view`` on ``ctx`` (whose transform maps CSS pixels). */
  draw(ctx, view) {
    ctx.fillStyle = COLOURS.sea;
    ctx.fillRect(0, 0, view.width, view.height);
    const layers = view.zoom < DETAIL_ZOOM ? this.low : this.high;
    const fill = layers.find((l) => l.kind === KIND_FILL);
    const lines = layers.find((l) => l.kind === KIND_LINE);
    if (fill) {
      ctx.beginPath();
      tracePaths(ctx, fill, view, true);
      ctx.fillStyle = COLOURS.land;
      ctx.fill("evenodd");
      ctx.strokeStyle = COLOURS.coast;
      ctx.lineWidth = 1;
      ctx.stroke();
    }
    if (lines) {
      ctx.beginPath();
      tracePaths(ctx, lines, view, false);
      ctx.strokeStyle = COLOURS.border;
      ctx.lineWidth = view.zoom < DETAIL_ZOOM ? 0.8 : 1.2;
      ctx.setLineDash([4, 3]);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    this.drawNames(ctx, view);
  }

  drawNames(ctx, view) {
    if (!this.names) return;
    const areaPx = view.scale * view.scale;
    ctx.font = "italic 12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillStyle = COLOURS.countryName;
    const placed = [];
    for (const c of this.names) {
      // Only names whose country is big on screen (about 60 x 60 px and up).
      if (c.area * areaPx < 3600) break; // sorted by area, largest first
      const [sx, sy] = view.toScreen(c.x, c.y);
      if (sx < -100 || sy < -20 || sx > view.width + 100 || sy > view.height + 20) continue;
      const w = ctx.measureText(c.name).width;
      const box = [sx - w / 2 - 4, sy - 9, sx + w / 2 + 4, sy + 9];
      if (placed.some((p) => !(p[0] > box[2] || p[2] < box[0] || p[1] > box[3] || p[3] < box[1])))
        continue;
      placed.push(box);
      ctx.fillText(c.name, sx, sy);
    }
    ctx.textAlign = "left";
    ctx.textBaseline = "alphabetic";
  }
}
