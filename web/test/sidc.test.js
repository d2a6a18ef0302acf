// Unit tests of the CoT type -> 2525C SIDC mapping, checked against milsymbol's own validator.
import assert from "node:assert/strict";
import { test } from "node:test";
import ms from "../src/milsymbol.js";
import { affiliationOf, bestSidc, cotTypeToSidc, drawKind, isAtom } from "../src/sidc.js";

const valid = (sidc) => new ms.Symbol(sidc).isValid();

test("friendly infantry maps field by field", () => {
  assert.equal(cotTypeToSidc("a-f-G-U-C-I"), "SFGPUCI--------");
});

test("every SIDC is 15 characters", () => {
  for (const t of ["a-f-G", "a-h-A-M-F", "a-u-S", "a-n-U", "a", "a-f", "a-f-G-U-C-I-Z-Z-Z-Z-Z"]) {
    assert.equal(cotTypeToSidc(t).length, 15, t);
  }
});

test("affiliation comes from the second field", () => {
  const cases = { p: "P", u: "U", a: "A", f: "F", n: "N", s: "S", h: "H", j: "J", k: "K", o: "O" };
  for (const [cot, sidc] of Object.entries(cases)) {
    assert.equal(cotTypeToSidc(`a-${cot}-G`)[1], sidc, cot);
  }
  // CoT's "." wildcard and anything else unknown: 2525 unknown.
  assert.equal(cotTypeToSidc("a-.-G")[1], "U");
  assert.equal(cotTypeToSidc("a-x-G")[1], "U");
  assert.equal(cotTypeToSidc("a")[1], "U");
});

test("battle dimension comes from the third field", () => {
  for (const d of ["P", "A", "G", "S", "U", "F", "X"]) {
    assert.equal(cotTypeToSidc(`a-h-${d}`)[2], d);
  }
  assert.equal(cotTypeToSidc("a-h-G")[3], "P", "status is present");
  assert.equal(cotTypeToSidc("a-h-Q")[2], "Z", "unknown dimension");
  assert.equal(cotTypeToSidc("a-h")[2], "Z");
});

test("function ID from the remaining one-character fields, upper-cased and padded", () => {
  assert.equal(cotTypeToSidc("a-h-A-M-F-Q").slice(4, 10), "MFQ---");
  assert.equal(cotTypeToSidc("a-f-G-E-V-A-T").slice(4, 10), "EVAT--");
  assert.equal(cotTypeToSidc("a-f-g-u-c").slice(4, 10), "UC----");
  // Stops at a field that is not a single character, and after six characters.
  assert.equal(cotTypeToSidc("a-f-G-U-C-I-dx").slice(4, 10), "UCI---");
  assert.equal(cotTypeToSidc("a-f-G-U-C-I-A-B-C-D").slice(4, 10), "UCIABC");
  assert.equal(cotTypeToSidc("a-f-G-U--C").slice(4, 10), "U-----");
});

test("non-atoms have no SIDC", () => {
  for (const t of ["b-m-p-s-m", "u-d-f", "b-m-r", "t-x-d-d", "", null, undefined, 7]) {
    assert.equal(cotTypeToSidc(t), null, String(t));
    assert.equal(isAtom(t), false);
  }
  assert.equal(isAtom("a-f-G"), true);
});

test("common CoT types give SIDCs milsymbol accepts", () => {
  const types = [
    "a-f-G-U-C-I", "a-f-G-U-C-A", "a-h-G-U-C-F", "a-n-S", "a-u-A", "a-f-A-M-F-Q", "a-h-U",
    "a-f-G-E-V-A", "a-f-G-I", "a-f-F", "a-f-P", "a-f-G", "a-h-G", "a-u-G", "a-n-G", "a-s-G",
    "a-j-G", "a-k-A", "a-p-G", "a-a-G", "a-o-G",
  ];
  for (const t of types) assert.ok(valid(cotTypeToSidc(t)), t);
});

test("bestSidc keeps what is valid and shortens what is not", () => {
  assert.equal(bestSidc("SFGPUCI--------", valid), "SFGPUCI--------");
  // UCIX is not in 2525C: the infantry symbol is the deepest known one.
  assert.equal(bestSidc(cotTypeToSidc("a-f-G-U-C-I-X"), valid), "SFGPUCI--------");
  assert.equal(bestSidc(cotTypeToSidc("a-h-G-Q-Q-Q"), valid), "SHGP-----------");
  assert.equal(bestSidc(null, valid), null);
  // Stops at the bare frame even if the validator refuses everything.
  assert.equal(bestSidc("SFGPUCI--------", () => false), "SFGP-----------");
});

test("affiliation names for colours", () => {
  assert.equal(affiliationOf("a-f-G"), "friend");
  assert.equal(affiliationOf("a-a-G"), "friend");
  assert.equal(affiliationOf("a-h-G"), "hostile");
  assert.equal(affiliationOf("a-s-G"), "hostile");
  assert.equal(affiliationOf("a-n-G"), "neutral");
  assert.equal(affiliationOf("a-u-G"), "unknown");
  assert.equal(affiliationOf("b-m-p-s-m"), "none");
});

test("draw kinds", () => {
  assert.equal(drawKind("a-f-G-U-C", "Point"), "unit");
  assert.equal(drawKind("b-m-p-s-m", "Point"), "marker");
  assert.equal(drawKind("b-m-r", "LineString"), "route");
  assert.equal(drawKind("u-d-f", "LineString"), "shape");
  assert.equal(drawKind("u-d-r", "Polygon"), "shape");
  assert.equal(drawKind("x-y", "LineString"), "line");
  assert.equal(drawKind("x-y", "Polygon"), "area");
});
