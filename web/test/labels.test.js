// Unit tests of banner ordering: the highest classification on screen wins.
import assert from "node:assert/strict";
import { test } from "node:test";
import { bannerFor, classificationOf, DEFAULT_ORDER, levelClass, rankOf, UNLABELLED } from "../src/labels.js";

test("classification is the first segment", () => {
  assert.equal(classificationOf("SECRET//REL TO USA, UKR"), "SECRET");
  assert.equal(classificationOf("UNCLASSIFIED"), "UNCLASSIFIED");
  assert.equal(classificationOf(" top secret //x"), "TOP SECRET");
  assert.equal(classificationOf(null), null);
  assert.equal(classificationOf(""), null);
  assert.equal(classificationOf("//REL TO USA"), null);
});

test("nothing labelled shows UNLABELLED", () => {
  assert.deepEqual(bannerFor([]), { text: UNLABELLED, classification: null, others: 0 });
  assert.equal(bannerFor([null, null]).text, UNLABELLED);
});

test("the highest classification wins, whatever the order seen", () => {
  const labels = ["UNCLASSIFIED//REL TO USA, UKR", "SECRET//REL TO USA", "CONFIDENTIAL//REL TO UKR", null];
  for (let i = 0; i < labels.length; i++) {
    const rotated = [...labels.slice(i), ...labels.slice(0, i)];
    assert.equal(bannerFor(rotated).text, "SECRET//REL TO USA");
  }
});

test("ties at the top level are counted and resolved stably", () => {
  const b = bannerFor(["SECRET//REL TO USA, UKR", "SECRET//HANDLING ORCON//REL TO USA", "SECRET//REL TO USA, UKR"]);
  assert.equal(b.text, "SECRET//HANDLING ORCON//REL TO USA");
  assert.equal(b.others, 1);
  assert.equal(bannerFor(["SECRET//REL TO UKR", "SECRET//REL TO USA"]).text, "SECRET//REL TO UKR");
});

test("the server's order overrides the default", () => {
  const order = ["LOW", "HIGH"];
  assert.equal(bannerFor(["HIGH//REL TO X", "LOW//REL TO X"], order).text, "HIGH//REL TO X");
  assert.equal(rankOf("LOW", order), 0);
});

test("an unknown classification ranks above every known one", () => {
  assert.equal(rankOf("MYSTERY"), DEFAULT_ORDER.length);
  assert.equal(bannerFor(["TOP SECRET//REL TO USA", "MYSTERY//REL TO USA"]).text, "MYSTERY//REL TO USA");
});

test("banner colours", () => {
  assert.equal(levelClass("SECRET"), "level-s");
  assert.equal(levelClass("NATO SECRET"), "level-s");
  assert.equal(levelClass("COSMIC TOP SECRET"), "level-ts");
  assert.equal(levelClass("UNCLASSIFIED"), "level-u");
  assert.equal(levelClass(null), "level-none");
  assert.equal(levelClass("MYSTERY"), "level-other");
});
