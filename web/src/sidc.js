// CoT type -> MIL-STD-2525C symbol identification code (SIDC), and what kind of thing a CoT type is.
//
// CoT atom types ("a-<affiliation>-<dimension>-<function...>") were designed as a transliteration
// of 2525 letter SIDCs: the MITRE CoT types list ("CoTtypes.xml", the "a" tree) spells each 2525
// function ID one character per dash-separated field, so a-f-G-U-C-I (friendly ground unit,
// combat, infantry) is 2525C S-F-G-P-UCI---. The 15 characters of a 2525C (letter) SIDC are
// (MIL-STD-2525C, Appendix A, table A-I):
//   1 coding scheme  S = warfighting
//   2 affiliation    P pending, U unknown, A assumed friend, F friend, N neutral, S suspect,
//                    H hostile, J joker, K faker, O none specified
//   3 battle dimension  P space, A air, G ground, S sea surface, U subsurface, F SOF,
//                    X other, Z unknown
//   4 status         P present (A anticipated/planned)
//   5-10 function ID six characters, "-" padded
//   11-12 symbol modifier (echelon, ...), 13-14 country code, 15 order of battle: "-" when unknown.

const AFFILIATIONS = new Set(["P", "U", "A", "F", "N", "S", "H", "J", "K", "O"]);
const DIMENSIONS = new Set(["P", "A", "G", "S", "U", "F", "X", "Z"]);
const FUNCTION_CHARS = 6;
const FUNCTION_FIELD = /^[A-Za-z0-9]$/;

/** Split a CoT type into its dash-separated fields ("a-f-G-U-C" -> ["a","f","G","U","C"]). */
export function typeFields(cotType) {
  return typeof cotType === "string" && cotType.length > 0 ? cotType.split("-") : [];
}

/** True for CoT atoms ("a-..."): things that exist, drawn with a 2525 symbol. */
export function isAtom(cotType) {
  return typeFields(cotType)[0] === "a";
}

/**
 * The 2525C SIDC for a CoT atom type, or null when the type is not an atom.
 *
 * The affiliation comes from the 2nd field, the battle dimension from the 3rd, the function ID
 * from the following one-character fields (stopping at the first field that is not one letter or
 * digit, as CoT extensions such as "a-f-G-U-C-I-d" are not part of the 2525 tree). Unknown
 * affiliations (CoT's "." wildcard, "x") become U (unknown), unknown dimensions Z (unknown).
 */
export function cotTypeToSidc(cotType) {
  const fields = typeFields(cotType);
  if (fields[0] !== "a") return null;
  const affRaw = (fields[1] ?? "").toUpperCase();
  const affiliation = AFFILIATIONS.has(affRaw) ? affRaw : "U";
  const dimRaw = (fields[2] ?? "").toUpperCase();
  const dimension = DIMENSIONS.has(dimRaw) ? dimRaw : "Z";
  let fn = "";
  for (const field of fields.slice(3)) {
    if (!FUNCTION_FIELD.test(field) || fn.length >= FUNCTION_CHARS) break;
    fn += field.toUpperCase();
  }
  return `S${affiliation}${dimension}P${fn.padEnd(FUNCTION_CHARS, "-")}-----`;
}

/**
 * The most specific SIDC a renderer accepts: ``sidc`` itself when ``isValid(sidc)``, otherwise the
 * same code with the function ID shortened one character at a time, down to the bare frame
 * (affiliation and dimension only). A CoT type more specific than the symbol set still gets the
 * right frame and colour, and the deepest icon the set knows.
 */
export function bestSidc(sidc, isValid) {
  if (sidc === null) return null;
  const head = sidc.slice(0, 4);
  let fn = sidc.slice(4, 10).replace(/-+$/, "");
  for (;;) {
    const candidate = `${head}${fn.padEnd(FUNCTION_CHARS, "-")}-----`;
    if (fn.length === 0 || isValid(candidate)) return candidate;
    fn = fn.slice(0, -1);
  }
}

/** Affiliation name used for colours and the contacts list. */
export function affiliationOf(cotType) {
  const sidc = cotTypeToSidc(cotType);
  if (sidc === null) return "none";
  switch (sidc[1]) {
    case "F":
    case "A":
      return "friend";
    case "H":
    case "S":
    case "J":
    case "K":
      return "hostile";
    case "N":
      return "neutral";
    default:
      return "unknown";
  }
}

/**
 * How a feature is drawn: "unit" (2525 symbol), "route" (b-m-r), "shape" (u-d-* drawings),
 * "marker" (any other point), "line"/"area" (other geometry).
 */
export function drawKind(cotType, geometryType) {
  const fields = typeFields(cotType);
  if (fields[0] === "b" && fields[1] === "m" && fields[2] === "r") return "route";
  if (fields[0] === "u" && fields[1] === "d") return "shape";
  if (geometryType === "Point") return fields[0] === "a" ? "unit" : "marker";
  if (geometryType === "LineString") return "line";
  return "area";
}
