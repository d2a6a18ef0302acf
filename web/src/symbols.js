// Sprites drawn once and reused every frame: 2525 symbols (milsymbol), markers and text labels.

import ms from "./milsymbol.js";
import { bestSidc, cotTypeToSidc } from "./sidc.js";
import { isolateText } from "./ui.js";

// Symbol size passed to milsymbol (its "size" option: the frame's nominal height in px).
export const SYMBOL_SIZE = 22;
// Most label sprites kept; the least recently used ones are dropped first.
const MAX_LABELS = 6000;

const LABEL_FONT = "600 12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
const SUB_FONT = "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";

function isValidSidc(sidc) {
  return new ms.Symbol(sidc).isValid();
}

/** A sprite: a canvas and the point of it that sits on the item's position (CSS pixels). */
function sprite(canvas, width, height, ax, ay) {
  return { canvas, width, height, ax, ay };
}

export class Sprites {
  constructor(dpr = 1) {
    this.dpr = dpr;
    this.bySidcType = new Map(); // CoT type -> SIDC (after the validity fallback)
    this.symbols = new Map(); // SIDC -> sprite
    this.markers = new Map();
    this.labels = new Map();
  }

  /** The SIDC drawn for a CoT atom type (the most specific one milsymbol knows). */
  sidcFor(cotType) {
    let sidc = this.bySidcType.get(cotType);
    if (sidc === undefined) {
      sidc = bestSidc(cotTypeToSidc(cotType), isValidSidc);
      this.bySidcType.set(cotType, sidc);
    }
    return sidc;
  }

  /** The 2525 symbol for a CoT atom type. */
  symbol(cotType) {
    const sidc = this.sidcFor(cotType) ?? "SUZP-----------";
    let s = this.symbols.get(sidc);
    if (!s) {
      const sym = new ms.Symbol(sidc, {
        size: SYMBOL_SIZE,
        outlineWidth: 2,
        outlineColor: "rgba(255,255,255,0.9)",
      });
      const canvas = sym.asCanvas(this.dpr);
      const anchor = sym.getAnchor();
      // Draw at the canvas's own size (milsymbol rounds it up) so frames copy it unscaled.
      s = sprite(canvas, canvas.width / this.dpr, canvas.height / this.dpr, anchor.x, anchor.y);
      this.symbols.set(sidc, s);
    }
    return s;
  }

  /** A marker for points that are not units: a diamond, in the given colour. */
  marker(colour) {
    let s = this.markers.get(colour);
    if (!s) {
      const size = 16;
      const canvas = document.createElement("canvas");
      canvas.width = size * this.dpr;
      canvas.height = size * this.dpr;
      const ctx = canvas.getContext("2d");
      ctx.scale(this.dpr, this.dpr);
      ctx.beginPath();
      ctx.moveTo(size / 2, 1.5);
      ctx.lineTo(size - 1.5, size / 2);
      ctx.lineTo(size / 2, size - 1.5);
      ctx.lineTo(1.5, size / 2);
      ctx.closePath();
      ctx.fillStyle = colour;
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#1b1b1b";
      ctx.stroke();
      s = sprite(canvas, size, size, size / 2, size / 2);
      this.markers.set(colour, s);
    }
    return s;
  }

  /**
   * A text label with a light halo: ``title`` in bold, ``sub`` (may be empty) smaller below.
   * The anchor is the left end of the title's middle line.
   */
  label(rawTitle, sub, muted = false) {
    // The title is someone's callsign: drawn isolated, so a direction override in it cannot
    // reach past it (canvas text goes through the same bidi algorithm as the page's).
    const title = isolateText(rawTitle);
    const key = `${muted ? 1 : 0}\u0000${title}\u0000${sub}`;
    let s = this.labels.get(key);
    if (s) {
      // Re-insert: Map keeps insertion order, so the first key is the least recently used.
      this.labels.delete(key);
      this.labels.set(key, s);
      return s;
    }
    const measure = document.createElement("canvas").getContext("2d");
    measure.font = LABEL_FONT;
    const w1 = measure.measureText(title).width;
    measure.font = SUB_FONT;
    const w2 = sub ? measure.measureText(sub).width : 0;
    const width = Math.ceil(Math.max(w1, w2)) + 6;
    const height = sub ? 30 : 17;
    const canvas = document.createElement("canvas");
    canvas.width = Math.ceil(width * this.dpr);
    canvas.height = Math.ceil(height * this.dpr);
    const ctx = canvas.getContext("2d");
    ctx.scale(this.dpr, this.dpr);
    ctx.lineJoin = "round";
    ctx.textBaseline = "middle";
    ctx.direction = "ltr";
    ctx.strokeStyle = "rgba(255,255,255,0.92)";
    ctx.lineWidth = 3.5;
    ctx.font = LABEL_FONT;
    ctx.strokeText(title, 3, 8.5);
    ctx.fillStyle = muted ? "#6d6d6d" : "#111";
    ctx.fillText(title, 3, 8.5);
    if (sub) {
      ctx.font = SUB_FONT;
      ctx.strokeText(sub, 3, 22);
      ctx.fillStyle = muted ? "#7d7d7d" : "#2b3a55";
      ctx.fillText(sub, 3, 22);
    }
    s = sprite(canvas, width, height, 0, 8.5);
    this.labels.set(key, s);
    if (this.labels.size > MAX_LABELS) this.labels.delete(this.labels.keys().next().value);
    return s;
  }
}
