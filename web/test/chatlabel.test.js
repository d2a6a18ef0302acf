// Unit tests of the chat label chooser: what may be chosen, the banner composed, refusal text.
import assert from "node:assert/strict";
import { test } from "node:test";
import { choosableClassifications, composeBanner, parseReleasability, refusalText } from "../src/chatlabel.js";

const POLICY = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET", "TOP SECRET"];

test("only classifications at or below the clearance are offered", () => {
  assert.deepEqual(choosableClassifications(POLICY, "SECRET//HANDLING ORCON//REL TO USA, LIAISON"), [
    "UNCLASSIFIED",
    "RESTRICTED",
    "CONFIDENTIAL",
    "SECRET",
  ]);
  assert.deepEqual(choosableClassifications(POLICY, "UNCLASSIFIED//REL TO UKR, LIAISON"), ["UNCLASSIFIED"]);
  assert.deepEqual(choosableClassifications(POLICY, "TOP SECRET"), POLICY);
});

test("nothing is offered without a policy, a clearance, or a clearance the policy lacks", () => {
  assert.deepEqual(choosableClassifications([], "SECRET//REL TO USA"), []);
  assert.deepEqual(choosableClassifications(undefined, "SECRET"), []);
  assert.deepEqual(choosableClassifications(POLICY, null), []);
  assert.deepEqual(choosableClassifications(POLICY, ""), []);
  assert.deepEqual(choosableClassifications(POLICY, "NATO SECRET//REL TO USA"), []);
});

test("the banner is the classification and the REL TO line", () => {
  assert.equal(composeBanner("SECRET", "USA, UKR"), "SECRET//REL TO USA, UKR");
  assert.equal(composeBanner("UNCLASSIFIED", "USA"), "UNCLASSIFIED//REL TO USA");
  assert.equal(composeBanner("TOP SECRET", "USA"), "TOP SECRET//REL TO USA");
});

test("server default composes no banner", () => {
  assert.equal(composeBanner("", "USA"), null);
  assert.equal(composeBanner(null, "USA, UKR"), null);
  assert.equal(composeBanner("  ", "USA"), null);
});

test("no releasability value leaves the classification alone (the server decides)", () => {
  assert.equal(composeBanner("SECRET", ""), "SECRET");
  assert.equal(composeBanner("SECRET", " , ,"), "SECRET");
  assert.equal(composeBanner("SECRET", "REL TO"), "SECRET");
});

test("typed releasability is tidied: spaces, case, a typed REL TO, empties and repeats", () => {
  assert.deepEqual(parseReleasability("USA,UKR"), ["USA", "UKR"]);
  assert.deepEqual(parseReleasability("  usa ,  ukr  "), ["USA", "UKR"]);
  assert.deepEqual(parseReleasability("REL TO USA, UKR"), ["USA", "UKR"]);
  assert.deepEqual(parseReleasability("rel to  usa"), ["USA"]);
  assert.deepEqual(parseReleasability("USA, , UKR,"), ["USA", "UKR"]);
  assert.deepEqual(parseReleasability("USA, UKR, usa"), ["USA", "UKR"]);
  assert.deepEqual(parseReleasability("FIVE   EYES"), ["FIVE EYES"]);
  assert.deepEqual(parseReleasability(undefined), []);
  assert.equal(composeBanner("SECRET", "rel to usa,ukr,USA"), "SECRET//REL TO USA, UKR");
});

test("the order typed is kept: the policy's order is the server's to check", () => {
  assert.equal(composeBanner("SECRET", "UKR, USA"), "SECRET//REL TO UKR, USA");
});

test("a refused send shows the server's reasons or error", () => {
  assert.equal(
    refusalText(403, { error: "refused", reasons: ["excludes_sender_org", "not_readable_by_sender"] }),
    "refused: excludes_sender_org, not_readable_by_sender",
  );
  assert.equal(
    refusalText(400, { error: "label: out_of_order:REL: values follow the policy order" }),
    "label: out_of_order:REL: values follow the policy order",
  );
  assert.equal(refusalText(403, { error: "forbidden" }), "forbidden");
  assert.equal(refusalText(403, { error: "refused", reasons: [] }), "refused");
  assert.equal(refusalText(400, null), "the server answered 400");
  assert.equal(refusalText(400, "not json"), "the server answered 400");
});
