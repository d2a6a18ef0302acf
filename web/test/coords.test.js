import assert from "node:assert/strict";
import test from "node:test";
import { formatArea, formatCoords, formatDD, formatDMS, formatLength, formatMGRS } from "../src/coords.js";

test("decimal degrees: latitude first, 5 decimals", () => {
  assert.equal(formatDD(30.5234, 50.4501), "50.45010, 30.52340");
  assert.equal(formatDD(-77.0365, 38.8977), "38.89770, -77.03650");
});

test("DMS with hemispheres and carried rounding", () => {
  assert.equal(formatDMS(30.5234, 50.4501), "50°27′00.4″N 30°31′24.2″E");
  assert.equal(formatDMS(-77.0365, -38.8977), "38°53′51.7″S 77°02′11.4″W");
  // 59.99999 s rounds up into the next minute and degree.
  assert.equal(formatDMS(0, 10.99999999), "11°00′00.0″N 0°00′00.0″E");
});

test("MGRS at 1 m, grouped; none outside its latitudes", () => {
  // The White House (38.8977 N, 77.0365 W) is in grid zone 18S, square UJ.
  assert.match(formatMGRS(-77.0365, 38.8977), /^18S UJ 233\d\d 07[34]\d\d$/);
  // Kyiv: zone 36U.
  assert.match(formatMGRS(30.5234, 50.4501), /^36U [A-Z]{2} \d{5} \d{5}$/);
  assert.equal(formatMGRS(0, 85), "outside MGRS");
  assert.equal(formatCoords(30.5, 50.4, "dd"), "50.40000, 30.50000");
});

test("lengths and areas", () => {
  assert.equal(formatLength(850.4), "850 m");
  assert.equal(formatLength(12345), "12.35 km");
  assert.equal(formatArea(5400), "5,400 m²");
  assert.equal(formatArea(3210000), "3.21 km²");
});
