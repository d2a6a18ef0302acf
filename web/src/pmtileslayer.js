// The operator's PMTiles archive (GET /api/v1/tiles says ``pmtiles``: its URL), read with HTTP
// range requests by the ``pmtiles`` library (protomaps, npm) and drawn with OpenLayers: vector
// archives (MVT tiles) in vectortiles.js's style, raster ones as images. Loaded only then.

import { FetchSource, PMTiles } from "pmtiles";
import MVT from "ol/format/MVT.js";
import TileLayer from "ol/layer/Tile.js";
import VectorTileLayer from "ol/layer/VectorTile.js";
import TileState from "ol/TileState.js";
import VectorTileSource from "ol/source/VectorTile.js";
import XYZ from "ol/source/XYZ.js";
import { vectorStyle } from "./vectortiles.js";

// Template giving each tile its own key; nothing is fetched from it (the loaders read the archive).
const KEY = "pmtiles/{z}/{x}/{y}";

/** The layer drawing the archive at ``url``; ``extent`` in EPSG:3857 or undefined. */
export function pmtilesLayer(url, vector, minzoom, maxzoom, extent) {
  const archive = new PMTiles(new FetchSource(url, undefined, "same-origin"));
  if (vector) {
    const format = new MVT();
    return new VectorTileLayer({
      source: new VectorTileSource({
        format,
        url: KEY,
        minZoom: minzoom,
        maxZoom: maxzoom,
        wrapX: false,
        tileLoadFunction: (tile) => {
          tile.setLoader(async (tileExtent, resolution, projection) => {
            const [z, x, y] = tile.getTileCoord();
            try {
              const found = await archive.getZxy(z, x, y);
              tile.setFeatures(found ? format.readFeatures(found.data, { extent: tileExtent, featureProjection: projection }) : []);
            } catch (e) {
              console.warn(`PMTiles tile ${z}/${x}/${y}: ${e.message}`);
              tile.setState(TileState.ERROR);
            }
          });
        },
      }),
      style: vectorStyle,
      declutter: "vector-tiles",
      minZoom: minzoom - 0.5,
      extent,
      renderMode: "hybrid",
    });
  }
  return new TileLayer({
    source: new XYZ({
      url: KEY,
      minZoom: minzoom,
      maxZoom: maxzoom,
      wrapX: false,
      tileLoadFunction: (tile) => {
        const [z, x, y] = tile.getTileCoord();
        const image = tile.getImage();
        archive
          .getZxy(z, x, y)
          .then((found) => {
            if (!found) {
              tile.setState(TileState.EMPTY);
              return;
            }
            // A blob: URL (the page's Content-Security-Policy allows blob: images), freed once drawn.
            const src = URL.createObjectURL(new Blob([found.data]));
            image.addEventListener("load", () => URL.revokeObjectURL(src), { once: true });
            image.addEventListener("error", () => URL.revokeObjectURL(src), { once: true });
            image.src = src;
          })
          .catch(() => tile.setState(TileState.ERROR));
      },
    }),
    minZoom: minzoom - 0.5,
    extent,
  });
}
