// Web Mercator math and the map view (centre and zoom), with no DOM: shared by the page, the
// basemap build script and the unit tests.
//
// World coordinates: x and y in [0, 1], x east from longitude -180, y south from the top edge at
// latitude MAX_LAT (the spherical Mercator of EPSG:3857, as slippy-map tiles use it). At zoom z the
// world is TILE_PX * 2^z pixels wide, so zoom levels match MBTiles tile zooms.

export const TILE_PX = 256;
// Latitude where spherical Mercator's square world ends (atan(sinh(pi)) in degrees).
export const MAX_LAT = 85.0511287798066;
export const MIN_ZOOM = 1;
export const MAX_ZOOM = 18;

/** [x, y] world coordinates of a longitude and latitude in degrees (latitude clamped). */
export function lonLatToWorld(lon, lat) {
  const clamped = Math.max(-MAX_LAT, Math.min(MAX_LAT, lat));
  const phi = (clamped * Math.PI) / 180;
  const x = (lon + 180) / 360;
  const y = (1 - Math.log(Math.tan(phi) + 1 / Math.cos(phi)) / Math.PI) / 2;
  return [x, y];
}

/** [lon, lat] in degrees of world coordinates. */
export function worldToLonLat(x, y) {
  const lon = x * 360 - 180;
  const lat = (Math.atan(Math.sinh(Math.PI * (1 - 2 * y))) * 180) / Math.PI;
  return [lon, lat];
}

/**
 * Where the map looks: centre (world coordinates), zoom and the canvas size in CSS pixels.
 * Immutable: every change returns a new View, so a frame draws from one consistent value.
 */
export class View {
  /** ``clamp: false`` keeps the centre and zoom as given (an image wider than the world). */
  constructor({ cx = 0.5, cy = 0.5, zoom = 2, width = 800, height = 600 } = {}, { clamp = true } = {}) {
    this.zoom = clamp ? Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, zoom)) : zoom;
    this.width = width;
    this.height = height;
    this.scale = TILE_PX * 2 ** this.zoom; // pixels per world unit
    // Keep the centre inside the world, and the world filling the view where it is big enough.
    const halfW = width / 2 / this.scale;
    const halfH = height / 2 / this.scale;
    this.cx = !clamp ? cx : halfW >= 0.5 ? 0.5 : Math.max(halfW, Math.min(1 - halfW, cx));
    this.cy = !clamp ? cy : halfH >= 0.5 ? 0.5 : Math.max(halfH, Math.min(1 - halfH, cy));
  }

  with(changes) {
    return new View({ ...this.fields(), ...changes });
  }

  fields() {
    return { cx: this.cx, cy: this.cy, zoom: this.zoom, width: this.width, height: this.height };
  }

  /** Screen position (CSS pixels from the top left) of a world point. */
  toScreen(x, y) {
    return [(x - this.cx) * this.scale + this.width / 2, (y - this.cy) * this.scale + this.height / 2];
  }

  /** World position of a screen point. */
  toWorld(sx, sy) {
    return [(sx - this.width / 2) / this.scale + this.cx, (sy - this.height / 2) / this.scale + this.cy];
  }

  /** The world rectangle on screen, grown by ``marginPx`` on every side: [minx, miny, maxx, maxy]. */
  bounds(marginPx = 0) {
    const [x0, y0] = this.toWorld(-marginPx, -marginPx);
    const [x1, y1] = this.toWorld(this.width + marginPx, this.height + marginPx);
    return [x0, y0, x1, y1];
  }

  /** Move by a screen distance (a drag). */
  panBy(dx, dy) {
    return this.with({ cx: this.cx - dx / this.scale, cy: this.cy - dy / this.scale });
  }

  /** Zoom by ``delta`` levels keeping the world point under screen point (sx, sy) in place. */
  zoomAround(delta, sx, sy) {
    const zoom = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, this.zoom + delta));
    const [wx, wy] = this.toWorld(sx, sy);
    const scale = TILE_PX * 2 ** zoom;
    return this.with({
      zoom,
      cx: wx - (sx - this.width / 2) / scale,
      cy: wy - (sy - this.height / 2) / scale,
    });
  }

  /** A view showing the world rectangle [minx, miny, maxx, maxy] with ``paddingPx`` around it. */
  fit(rect, paddingPx = 40, maxZoom = 12) {
    const [minx, miny, maxx, maxy] = rect;
    const w = Math.max(maxx - minx, 1e-9);
    const h = Math.max(maxy - miny, 1e-9);
    const sx = Math.max(1, this.width - 2 * paddingPx) / w;
    const sy = Math.max(1, this.height - 2 * paddingPx) / h;
    const zoom = Math.min(maxZoom, Math.log2(Math.min(sx, sy) / TILE_PX));
    return this.with({ zoom, cx: (minx + maxx) / 2, cy: (miny + maxy) / 2 });
  }
}

/** Great-circle distance in metres (haversine, mean Earth radius 6371 km). */
export function distanceM(lon1, lat1, lon2, lat2) {
  const r = Math.PI / 180;
  const dlat = (lat2 - lat1) * r;
  const dlon = (lon2 - lon1) * r;
  const a = Math.sin(dlat / 2) ** 2 + Math.cos(lat1 * r) * Math.cos(lat2 * r) * Math.sin(dlon / 2) ** 2;
  return 2 * 6371000 * Math.asin(Math.min(1, Math.sqrt(a)));
}
