// Raster tiles from the user's own MBTiles file, served by Liaison at /api/v1/tiles/{z}/{x}/{y}
// (XYZ numbering), drawn over the Natural Earth basemap where the tile set has data.

import { tilesFor } from "./geo.js";

// Tile images kept in memory; the least recently used ones are dropped first.
const MAX_TILES = 384;

export class TileLayer {
  /** ``meta``: {minzoom, maxzoom, format, name?, attribution?} from GET /api/v1/tiles. */
  constructor(meta, requestRedraw) {
    this.minzoom = Number.isInteger(meta.minzoom) ? meta.minzoom : 0;
    this.maxzoom = Number.isInteger(meta.maxzoom) ? meta.maxzoom : 14;
    this.name = typeof meta.name === "string" ? meta.name : "MBTiles";
    this.attribution = typeof meta.attribution === "string" ? meta.attribution : "";
    this.requestRedraw = requestRedraw;
    this.cache = new Map(); // "z/x/y" -> {img, ok}
  }

  /** The tile zoom drawn for a view zoom, or null outside the tile set's range. */
  zoomFor(viewZoom) {
    const z = Math.round(viewZoom);
    if (z < this.minzoom) return null;
    return Math.min(this.maxzoom, z);
  }

  get(z, x, y) {
    const key = `${z}/${x}/${y}`;
    let t = this.cache.get(key);
    if (t) {
      this.cache.delete(key);
      this.cache.set(key, t);
      return t;
    }
    const img = new Image();
    t = { img, ok: false, failed: false };
    img.onload = () => {
      t.ok = true;
      this.requestRedraw();
    };
    img.onerror = () => {
      t.failed = true; // missing tile: the basemap shows through
    };
    img.src = `/api/v1/tiles/${key}`;
    this.cache.set(key, t);
    if (this.cache.size > MAX_TILES) this.cache.delete(this.cache.keys().next().value);
    return t;
  }

  draw(ctx, view) {
    const z = this.zoomFor(view.zoom);
    if (z === null) return;
    const n = 2 ** z;
    const size = view.scale / n;
    for (const [tz, tx, ty] of tilesFor(view, z)) {
      const t = this.get(tz, tx, ty);
      if (!t.ok) continue;
      const [sx, sy] = view.toScreen(tx / n, ty / n);
      // Round to whole pixels so neighbouring tiles meet without hairline gaps.
      const x0 = Math.round(sx);
      const y0 = Math.round(sy);
      ctx.drawImage(t.img, x0, y0, Math.round(sx + size) - x0, Math.round(sy + size) - y0);
    }
  }
}
